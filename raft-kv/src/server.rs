//! The client port: a TCP listener thread, and one thread per connection up to
//! [`CONNECTIONS_MAX`] (more are answered `Busy` and closed). Each request is handled
//! against the node's [`NodeHost`], so the port keeps answering while the node is
//! stopped (with `Stopped`), and the node can be started again through it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use raft_core::node::{KvResponse, NodeError};
use raft_core::ProposeError;

use crate::client::{
    write_frame, ErrorKind, Framed, Greeting, Request, Response, CLIENT_PROTOCOL_VERSION,
};
use crate::cluster::NodeHost;
use crate::store::Command;

/// Most client connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running client port. Stops (and joins its listener) on drop.
pub struct ClientServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

impl ClientServer {
    /// Binds `addr` and serves requests for `host`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(addr: &str, host: Arc<NodeHost>) -> Result<Self> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot bind client port {addr}"))?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let name = format!("kv-client-listener-n{}", host.id());
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || accept_loop(listener, host, stop))
            .context("cannot spawn the client listener thread")?;
        log::info!("client port listening on {addr}");
        Ok(Self {
            addr,
            stopping,
            listener: Some(handle),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ClientServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, host: Arc<NodeHost>, stopping: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("client port: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
            log::warn!("client port: {CONNECTIONS_MAX} connections already; refusing one");
            let _ = write_frame(
                &mut stream,
                &Greeting::Refused {
                    message: format!("{CONNECTIONS_MAX} client connections already; retry"),
                },
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (host, active2) = (host.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("kv-client-n{}", host.id()))
            .spawn(move || {
                serve(stream, &host);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
            log::warn!("client port: cannot spawn a connection thread");
        }
    }
}

fn serve(stream: TcpStream, host: &NodeHost) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut conn = Framed::new(stream);
    if !greet(&mut conn, host, &peer) {
        return;
    }
    loop {
        let request: Request = match conn.read() {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if conn.is_secure() && e.kind() == std::io::ErrorKind::InvalidData {
                    log::warn!("client {peer}: closing: {e}");
                } else {
                    log::debug!("client {peer}: closing: {e}");
                }
                return;
            }
        };
        log::debug!("client {peer}: {request:?}");
        let response = handle(host, request);
        let written = match conn.write(&response) {
            // Too large for one frame (a status with many big entries): say so instead.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => conn.write(&error(
                ErrorKind::BadRequest,
                &format!("the answer is too large: {e}; ask for fewer entries"),
            )),
            other => other,
        };
        if let Err(e) = written {
            log::debug!("client {peer}: cannot answer: {e}");
            return;
        }
    }
}

/// Sends the greeting and, on an encrypted cluster, checks the client's proof of the
/// password and switches the connection to the session keys. Returns whether to go on
/// serving.
fn greet(conn: &mut Framed<TcpStream>, host: &NodeHost, peer: &str) -> bool {
    let key = host.client_key();
    let challenge = key.map(|_| crate::auth::nonce());
    let welcome = Greeting::Welcome {
        protocol: CLIENT_PROTOCOL_VERSION,
        challenge,
    };
    if conn.write(&welcome).is_err() {
        return false;
    }
    let (Some(key), Some(nonce)) = (key, challenge) else {
        return true;
    };
    match conn.read::<Request>() {
        Ok(Some(Request::Auth {
            proof,
            client_nonce,
        })) if key.verify(&nonce, &client_nonce, &proof) => {
            if conn.write(&Response::Done).is_err() {
                return false;
            }
            let (to_node, to_client) = key.session(&nonce, &client_nonce);
            conn.secure(to_client, to_node);
            true
        }
        Ok(None) => false,
        Ok(Some(_)) | Err(_) => {
            log::warn!("client {peer}: failed to prove the cluster password; closing");
            let _ = conn.write(&error(
                ErrorKind::Unauthorized,
                "authentication failed: the client's cluster password differs from the node's",
            ));
            false
        }
    }
}

/// Answers one request.
pub fn handle(host: &NodeHost, request: Request) -> Response {
    let timeout = Duration::from_millis(host.config().timing.request_timeout_ms);
    match request {
        Request::Auth { .. } => error(ErrorKind::BadRequest, "already authenticated"),
        Request::Status { entries_max } => {
            Response::Status(Box::new(host.view(entries_max.min(10_000) as usize)))
        }
        Request::Stop => {
            host.stop();
            Response::Done
        }
        Request::Start => match host.start() {
            Ok(()) => Response::Done,
            Err(e) => error(ErrorKind::Internal, &format!("{e:#}")),
        },
        Request::SetLogLevel { level } => match crate::logger::parse_level(&level) {
            Ok(l) => {
                crate::logger::set_level(l);
                log::info!("log level set to {l} by a client");
                Response::Done
            }
            Err(e) => error(ErrorKind::BadRequest, &e),
        },
        Request::Put { key, value } => write(host, Command::Put { key, value }, timeout),
        Request::Delete { key } => write(host, Command::Delete { key }, timeout),
        Request::Get { key, stale } => {
            let Some(node) = host.node() else {
                return stopped(host);
            };
            if stale {
                return Response::Value(node.read_stale(|sm| sm.get(&key).cloned()));
            }
            read_with_retry(&node, &key, timeout)
        }
    }
}

/// A linearizable read, retried while an election is under way, until `timeout`.
fn read_with_retry(node: &crate::cluster::KvNode, key: &str, timeout: Duration) -> Response {
    let deadline = std::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match node.read(left, |sm| sm.get(key).cloned()) {
            Ok(v) => return Response::Value(v),
            Err(NodeError::NoLeader | NodeError::Busy) if !left.is_zero() => {
                std::thread::sleep(backoff.min(left));
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
            Err(NodeError::NoLeader) => {
                return error(
                    ErrorKind::Unavailable,
                    &format!("no leader known after {timeout:?}"),
                )
            }
            Err(e) => return node_error(&e),
        }
    }
}

fn write(host: &NodeHost, command: Command, timeout: Duration) -> Response {
    let Some(node) = host.node() else {
        return stopped(host);
    };
    match node.propose_with_retry(command.encode(), timeout) {
        Ok(KvResponse::Previous(previous)) => Response::Written { previous },
        Ok(KvResponse::Swapped { current, .. }) => Response::Written { previous: current },
        Ok(KvResponse::Invalid(e)) => error(ErrorKind::BadRequest, &e),
        Err(e) => node_error(&e),
    }
}

fn stopped(host: &NodeHost) -> Response {
    error(
        ErrorKind::Stopped,
        &format!("{} is stopped", host.entry().name),
    )
}

fn node_error(e: &NodeError) -> Response {
    let kind = match e {
        NodeError::Rejected(ProposeError::TooLarge { .. }) => ErrorKind::BadRequest,
        NodeError::Timeout(_) => ErrorKind::Timeout,
        NodeError::Stopped => ErrorKind::Stopped,
        NodeError::NoLeader | NodeError::Busy | NodeError::Rejected(_) | NodeError::Dropped => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Internal,
    };
    error(kind, &e.to_string())
}

fn error(kind: ErrorKind, message: &str) -> Response {
    Response::Error {
        kind,
        message: message.to_string(),
    }
}
