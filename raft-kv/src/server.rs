//! The client port: a TCP listener thread, and one thread per connection (small stacks,
//! [`CONNECTION_STACK_BYTES`]), within the limits of the config's `[client_port]`
//! ([`ClientPort`]). Each request is handled against the node's [`NodeHost`], so the
//! port keeps answering while the node is stopped (with `Stopped`), and the node can be
//! started again through it.
//!
//! Admission (see [`Slots`]): a connection takes a slot when accepted and is
//! *unauthenticated* until it completes the handshake (on an unencrypted cluster: until
//! its first request has arrived). It must do so within `client_handshake_timeout_ms` of
//! being accepted: the deadline is absolute, and every read is given only the time left,
//! so a client trickling one byte a second cannot stretch it. At most
//! `max_unauthenticated_connections` connections (and `max_unauthenticated_per_ip` from
//! one address) are unauthenticated at once; a new connection beyond either bound evicts
//! the oldest unauthenticated one (of that address, for the per-address bound), so idle
//! or slow sockets can never keep a client that authenticates promptly out. Only when
//! every one of the `max_client_connections` slots is held by an authenticated client is
//! a new connection refused with [`Greeting::Refused`]. An authenticated connection is
//! closed when its next request has not fully arrived `client_idle_timeout_ms` after the
//! previous answer. Every closure is counted ([`ClientPortView`], shown by
//! `raft-kv status`), and logged at most once per kind every
//! [`LOG_THROTTLE_INTERVAL`] with a count of what was suppressed.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;
use raft_core::node::{KvResponse, NodeError};
use raft_core::{NodeId, ProposeError};
use serde::{Deserialize, Serialize};

use crate::client::{
    write_frame, ErrorKind, Framed, Greeting, Request, Response, AUTH_FRAME_BYTES_MAX,
    CLIENT_PROTOCOL_VERSION, FRAME_BYTES_MAX,
};
use crate::cluster::NodeHost;
use crate::config::ClientPort;
use crate::store::Command;

/// Stack size of each connection thread. A connection's work (framing, sealing, handing
/// the request to the node and waiting) needs a few KiB; only touched pages count
/// toward memory, so this bounds address space, not RSS.
pub const CONNECTION_STACK_BYTES: usize = 128 * 1024;

/// Warnings of one kind (refused, evicted, handshake timeouts...) are logged at most
/// once per this interval, with the count of those suppressed meanwhile.
pub const LOG_THROTTLE_INTERVAL: Duration = Duration::from_secs(10);

/// Connections the kernel queues for the listener before it drops new ones (capped by
/// `net.core.somaxconn`). Deep enough that a burst of connections does not make a client
/// wait for its SYN to be sent again (1 s).
pub const LISTEN_BACKLOG: i32 = 1_024;

/// File descriptors the process needs besides its client connections (listeners,
/// the Raft socket, sled's files, stdio), for the `ulimit -n` check at start.
const FDS_OTHER_MAX: u64 = 64;

/// A client port's counters, as `raft-kv status` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPortView {
    /// Connections open now (the one asking for the status included).
    pub open: usize,
    /// Of those, connections still in the handshake.
    pub unauthenticated: usize,
    /// Connections accepted since the port opened.
    pub accepted: u64,
    /// Connections refused because every slot was held by an authenticated client.
    pub refused: u64,
    /// Unauthenticated connections closed to make room for a newer one.
    pub evicted: u64,
    /// Connections closed for not completing the handshake within
    /// `client_handshake_timeout_ms`.
    pub handshake_timeouts: u64,
    /// Authenticated connections closed after `client_idle_timeout_ms` without a request.
    pub idle_timeouts: u64,
    /// Handshakes that failed: a wrong password proof, or bytes that are not the protocol.
    pub handshake_failures: u64,
    /// The configured `max_client_connections`.
    pub max_client_connections: usize,
    /// The configured `max_unauthenticated_connections`.
    pub max_unauthenticated_connections: usize,
}

/// What [`Slots::admit`] decided for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It takes a free slot.
    Admitted,
    /// It takes the slot of this unauthenticated connection, which must be closed.
    Evicting(u64),
    /// Every slot is held by an authenticated connection.
    Refused,
}

/// Which connections hold slots: pure bookkeeping (no sockets), so the admission rules
/// can be tested alone. Connections are named by ids that grow with their age.
///
/// Invariants, asserted after every change:
/// `unauthenticated <= max_unauthenticated_connections`,
/// per address `unauthenticated <= max_unauthenticated_per_ip`,
/// `unauthenticated + authenticated <= max_client_connections`.
#[derive(Debug)]
pub struct Slots {
    limits: ClientPort,
    /// Unauthenticated connections by id (oldest first) and their source address.
    pending: BTreeMap<u64, IpAddr>,
    pending_per_ip: HashMap<IpAddr, usize>,
    authenticated: usize,
}

impl Slots {
    /// No connections yet, under `limits` (assumed valid: see [`ClientPort::validate`]).
    pub fn new(limits: ClientPort) -> Self {
        Self {
            limits,
            pending: BTreeMap::new(),
            pending_per_ip: HashMap::new(),
            authenticated: 0,
        }
    }

    /// Connections holding a slot.
    pub fn open(&self) -> usize {
        self.pending.len() + self.authenticated
    }

    /// Connections still in the handshake.
    pub fn unauthenticated(&self) -> usize {
        self.pending.len()
    }

    /// Decides on connection `id` (newer than every id before it) from `ip`; unless
    /// refused, it then holds an unauthenticated slot.
    pub fn admit(&mut self, id: u64, ip: IpAddr) -> Admission {
        let l = &self.limits;
        let of_ip = self.pending_per_ip.get(&ip).copied().unwrap_or(0);
        let victim = if of_ip >= l.max_unauthenticated_per_ip {
            self.pending
                .iter()
                .find(|(_, a)| **a == ip)
                .map(|(old, _)| *old)
        } else if self.pending.len() >= l.max_unauthenticated_connections
            || self.open() >= l.max_client_connections
        {
            match self.pending.keys().next() {
                Some(old) => Some(*old),
                None => return Admission::Refused,
            }
        } else {
            None
        };
        if let Some(old) = victim {
            self.remove_pending(old);
        }
        self.pending.insert(id, ip);
        *self.pending_per_ip.entry(ip).or_insert(0) += 1;
        self.check();
        victim.map_or(Admission::Admitted, Admission::Evicting)
    }

    /// Connection `id` completed its handshake. False if it no longer holds a slot
    /// (it was evicted meanwhile).
    pub fn promote(&mut self, id: u64) -> bool {
        if !self.remove_pending(id) {
            return false;
        }
        self.authenticated += 1;
        self.check();
        true
    }

    /// Connection `id` closed: its slot is free. `authenticated` says which kind of slot
    /// it held (an evicted connection holds none any more).
    pub fn release(&mut self, id: u64, authenticated: bool) {
        if authenticated {
            assert!(
                self.authenticated > 0,
                "released more authenticated slots than held"
            );
            self.authenticated -= 1;
        } else {
            self.remove_pending(id);
        }
        self.check();
    }

    fn remove_pending(&mut self, id: u64) -> bool {
        let Some(ip) = self.pending.remove(&id) else {
            return false;
        };
        let n = self
            .pending_per_ip
            .get_mut(&ip)
            .expect("every pending connection is counted under its address");
        *n -= 1;
        if *n == 0 {
            self.pending_per_ip.remove(&ip);
        }
        true
    }

    fn check(&self) {
        let l = &self.limits;
        assert!(self.pending.len() <= l.max_unauthenticated_connections);
        assert!(self.open() <= l.max_client_connections);
        debug_assert!(self
            .pending_per_ip
            .values()
            .all(|n| *n > 0 && *n <= l.max_unauthenticated_per_ip));
        debug_assert_eq!(
            self.pending_per_ip.values().sum::<usize>(),
            self.pending.len()
        );
    }
}

/// A warning logged at most once per [`LOG_THROTTLE_INTERVAL`].
#[derive(Debug, Default)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    fn warn(&self, line: impl FnOnce() -> String) {
        let mut last = self.last.lock();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_THROTTLE_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let n = self.suppressed.swap(0, Ordering::Relaxed);
        if n == 0 {
            log::warn!("{}", line());
        } else {
            log::warn!("{} ({n} more like it suppressed)", line());
        }
    }
}

/// One open connection, as the port tracks it.
struct Tracked {
    stream: Arc<TcpStream>,
    evicted: Arc<AtomicBool>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    handshake_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    handshake_failures: AtomicU64,
}

#[derive(Default)]
struct Throttles {
    refused: Throttle,
    evicted: Throttle,
    handshake_timeout: Throttle,
    handshake_failure: Throttle,
    accept_error: Throttle,
}

/// The state a port's threads share (and `raft-kv status` reads).
pub(crate) struct PortState {
    node: NodeId,
    limits: ClientPort,
    slots: Mutex<(Slots, HashMap<u64, Tracked>)>,
    counters: Counters,
    throttles: Throttles,
}

impl PortState {
    /// The counters now.
    pub(crate) fn view(&self) -> ClientPortView {
        let (open, unauthenticated) = {
            let s = self.slots.lock();
            (s.0.open(), s.0.unauthenticated())
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientPortView {
            open,
            unauthenticated,
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            evicted: get(&c.evicted),
            handshake_timeouts: get(&c.handshake_timeouts),
            idle_timeouts: get(&c.idle_timeouts),
            handshake_failures: get(&c.handshake_failures),
            max_client_connections: self.limits.max_client_connections,
            max_unauthenticated_connections: self.limits.max_unauthenticated_connections,
        }
    }

    fn promote(&self, id: u64) -> bool {
        self.slots.lock().0.promote(id)
    }

    fn release(&self, id: u64, authenticated: bool) {
        let mut s = self.slots.lock();
        s.0.release(id, authenticated);
        s.1.remove(&id);
    }

    /// Closes every connection (the port is going away).
    fn shutdown_all(&self) {
        for t in self.slots.lock().1.values() {
            let _ = t.stream.shutdown(Shutdown::Both);
        }
    }
}

/// A running client port. Stops (joins its listener and closes every connection) on
/// drop.
pub struct ClientServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    state: Arc<PortState>,
    listener: Option<JoinHandle<()>>,
}

impl ClientServer {
    /// Binds `addr` and serves requests for `host`, within the limits of its config's
    /// `[client_port]`. The host's status shows the port's counters from then on.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(addr: &str, host: Arc<NodeHost>) -> Result<Self> {
        let listener =
            bind_listener(addr).with_context(|| format!("cannot bind client port {addr}"))?;
        let addr = listener.local_addr()?;
        let limits = host.config().client_port.clone();
        let node = host.id();
        check_open_files_limit(node, &limits);
        let state = Arc::new(PortState {
            node,
            slots: Mutex::new((Slots::new(limits.clone()), HashMap::new())),
            limits,
            counters: Counters::default(),
            throttles: Throttles::default(),
        });
        host.attach_client_port(state.clone());
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop, st) = (stopping.clone(), state.clone());
        let handle = std::thread::Builder::new()
            .name(format!("kv-client-listener-n{node}"))
            .spawn(move || accept_loop(listener, host, st, stop))
            .context("cannot spawn the client listener thread")?;
        log::info!(
            "n{node} client port listening on {addr} (at most {} connections, {} in the handshake)",
            state.limits.max_client_connections,
            state.limits.max_unauthenticated_connections
        );
        Ok(Self {
            addr,
            stopping,
            state,
            listener: Some(handle),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port's counters now.
    pub fn view(&self) -> ClientPortView {
        self.state.view()
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
        self.state.shutdown_all();
    }
}

/// Binds a listener with a backlog of [`LISTEN_BACKLOG`] connections (std's is 128), on
/// the first address `addr` resolves to that can be bound.
fn bind_listener(addr: &str) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        let bound = (|| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(a),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            // As std does for listeners: rebinding after a restart must not wait out
            // TIME_WAIT.
            socket.set_reuse_address(true)?;
            socket.bind(&a.into())?;
            socket.listen(LISTEN_BACKLOG)?;
            Ok::<_, std::io::Error>(TcpListener::from(socket))
        })();
        match bound {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Warns at start if `ulimit -n` leaves too few file descriptors for
/// `max_client_connections` (Linux: read from /proc/self/limits; elsewhere skipped).
fn check_open_files_limit(node: NodeId, limits: &ClientPort) {
    let Some(soft) = open_files_soft_limit() else {
        return;
    };
    let needed = limits.max_client_connections as u64 + FDS_OTHER_MAX;
    if soft < needed {
        log::warn!(
            "n{node} client port: this process may open only {soft} files (ulimit -n) but \
             max_client_connections is {}: connections past about {} will fail to be \
             accepted; raise the limit to at least {needed} (ulimit -n, or LimitNOFILE= \
             in a systemd unit)",
            limits.max_client_connections,
            soft.saturating_sub(FDS_OTHER_MAX)
        );
    }
}

/// The soft limit on open files of this process, if the platform tells.
pub fn open_files_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    soft.parse().ok()
}

fn accept_loop(
    listener: TcpListener,
    host: Arc<NodeHost>,
    state: Arc<PortState>,
    stopping: Arc<AtomicBool>,
) {
    let node = state.node;
    let mut next_id: u64 = 0;
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                state
                    .throttles
                    .accept_error
                    .warn(|| format!("n{node} client port: accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let accepted_at = Instant::now();
        state.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(peer) = stream.peer_addr() else {
            continue; // Already gone.
        };
        next_id += 1;
        let id = next_id;
        let stream = Arc::new(stream);
        let evicted = Arc::new(AtomicBool::new(false));
        let admission = {
            let mut s = state.slots.lock();
            let admission = s.0.admit(id, peer.ip());
            if let Admission::Evicting(old) = admission {
                if let Some(t) = s.1.get(&old) {
                    t.evicted.store(true, Ordering::SeqCst);
                    // Wakes its thread's read with an end of stream; it explains and
                    // closes. Its slot is already this connection's.
                    let _ = t.stream.shutdown(Shutdown::Read);
                }
            }
            if admission != Admission::Refused {
                s.1.insert(
                    id,
                    Tracked {
                        stream: stream.clone(),
                        evicted: evicted.clone(),
                    },
                );
            }
            admission
        };
        match admission {
            Admission::Refused => {
                refuse(&state, &stream, peer);
                continue;
            }
            Admission::Evicting(_) => {
                state.counters.evicted.fetch_add(1, Ordering::Relaxed);
                state.throttles.evicted.warn(|| {
                    format!(
                        "n{node} client port: evicted an unauthenticated connection to admit \
                         one from {peer} (at most {} unauthenticated, {} per address)",
                        state.limits.max_unauthenticated_connections,
                        state.limits.max_unauthenticated_per_ip
                    )
                });
            }
            Admission::Admitted => {}
        }
        let (host2, state2, stream2) = (host.clone(), state.clone(), stream.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("kv-client-n{node}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let conn = Connection {
                    state: state2,
                    id,
                    peer,
                    authenticated: false,
                };
                conn.serve(stream2, evicted, accepted_at, &host2);
            });
        if let Err(e) = spawned {
            state.release(id, false);
            state.counters.refused.fetch_add(1, Ordering::Relaxed);
            state.throttles.refused.warn(|| {
                format!(
                    "n{node} client port: cannot spawn a connection thread ({e}); refused {peer}"
                )
            });
            send_refusal(
                &stream,
                "the node cannot start a thread for this connection (out of memory or \
                 threads); retry",
            );
        }
    }
}

/// Tells a connection every slot is taken by an authenticated client, and closes it.
fn refuse(state: &PortState, stream: &TcpStream, peer: SocketAddr) {
    let max = state.limits.max_client_connections;
    state.counters.refused.fetch_add(1, Ordering::Relaxed);
    state.throttles.refused.warn(|| {
        format!(
            "n{} client port: refused {peer}: all {max} connections are authenticated \
             clients (max_client_connections)",
            state.node
        )
    });
    send_refusal(
        stream,
        &format!("{max} client connections already (the node's max_client_connections); retry"),
    );
}

/// Sends [`Greeting::Refused`] with `message`. A fresh socket's send buffer takes it at
/// once; the timeout only guards the listener thread against the unexpected.
fn send_refusal(stream: &TcpStream, message: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let mut w = stream;
    let _ = write_frame(
        &mut w,
        &Greeting::Refused {
            message: message.to_string(),
        },
    );
}

/// A TCP stream whose reads and writes fail with `TimedOut` at an absolute deadline:
/// each read or write is given only the time left, however many it takes.
struct DeadlineStream {
    stream: Arc<TcpStream>,
    deadline: Instant,
}

impl DeadlineStream {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection's deadline passed",
            ));
        }
        Ok(left)
    }
}

/// `WouldBlock` is how a socket timeout shows on Unix; call it what it is.
fn timed_out(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the connection's deadline passed",
        )
    } else {
        e
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        (&*self.stream).read(buf).map_err(timed_out)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        (&*self.stream).write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.stream).flush()
    }
}

/// One connection's thread: holds its slot until dropped.
struct Connection {
    state: Arc<PortState>,
    id: u64,
    peer: SocketAddr,
    authenticated: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.state.release(self.id, self.authenticated);
    }
}

/// How a handshake ended, for the connection that did not make it.
enum Failed {
    /// The deadline passed.
    TimedOut,
    /// Evicted to make room, or closed by the client: nothing to count here.
    Closed,
    /// A wrong proof or bytes that are not the protocol: what to log, what to answer.
    Bad {
        /// For the log.
        why: String,
        /// For the client.
        answer: String,
    },
}

impl Connection {
    fn serve(
        mut self,
        stream: Arc<TcpStream>,
        evicted: Arc<AtomicBool>,
        accepted_at: Instant,
        host: &NodeHost,
    ) {
        let _ = stream.set_nodelay(true);
        let limits = self.state.limits.clone();
        let mut conn = Framed::new(DeadlineStream {
            stream,
            deadline: accepted_at + limits.handshake_timeout(),
        });
        let first = match self.handshake(&mut conn, host) {
            Ok(first) => first,
            Err(failed) => {
                self.handshake_failed(&mut conn, failed, &evicted, &limits);
                return;
            }
        };
        let node = self.state.node;
        let peer = self.peer;
        let mut next = first;
        loop {
            let request = match next.take() {
                Some(r) => r,
                None => {
                    conn.get_mut().deadline = Instant::now() + limits.idle_timeout();
                    match conn.read::<Request>() {
                        Ok(Some(r)) => r,
                        Ok(None) => return,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            self.state
                                .counters
                                .idle_timeouts
                                .fetch_add(1, Ordering::Relaxed);
                            log::debug!(
                                "n{node} client {peer}: no request for {} ms; closing \
                                 (client_idle_timeout_ms)",
                                limits.client_idle_timeout_ms
                            );
                            return;
                        }
                        Err(e) => {
                            if conn.is_secure() && e.kind() == std::io::ErrorKind::InvalidData {
                                log::warn!("n{node} client {peer}: closing: {e}");
                            } else {
                                log::debug!("n{node} client {peer}: closing: {e}");
                            }
                            return;
                        }
                    }
                }
            };
            log::debug!("n{node} client {peer}: {request:?}");
            let response = handle(host, request);
            conn.get_mut().deadline = Instant::now() + limits.idle_timeout();
            let written = match conn.write(&response) {
                // Too large for one frame (a status with many big entries): say so instead.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => conn.write(&error(
                    ErrorKind::BadRequest,
                    &format!("the answer is too large: {e}; ask for fewer entries"),
                )),
                other => other,
            };
            if let Err(e) = written {
                log::debug!("n{node} client {peer}: cannot answer: {e}");
                return;
            }
        }
    }

    /// Sends the greeting and, on an encrypted cluster, checks the client's proof of the
    /// password and switches the connection to the session keys; on an unencrypted one,
    /// waits for the first request. Both within the handshake deadline. Then the
    /// connection is authenticated; returns the first request, if it came with the
    /// handshake.
    fn handshake(
        &mut self,
        conn: &mut Framed<DeadlineStream>,
        host: &NodeHost,
    ) -> Result<Option<Request>, Failed> {
        let key = host.client_key();
        let challenge = key.map(|_| crate::auth::nonce());
        let welcome = Greeting::Welcome {
            protocol: CLIENT_PROTOCOL_VERSION,
            challenge,
        };
        conn.write(&welcome).map_err(failed_io)?;
        // On an encrypted cluster the first frame is the password proof: a small one.
        // (An unencrypted cluster authenticates no one; its first request may be large.)
        if key.is_some() {
            conn.set_read_bytes_max(AUTH_FRAME_BYTES_MAX);
        }
        let first = conn.read::<Request>().map_err(failed_io);
        conn.set_read_bytes_max(FRAME_BYTES_MAX);
        let first = first?;
        let (Some(key), Some(nonce)) = (key, challenge) else {
            // Unencrypted: the first request completes the handshake.
            let Some(first) = first else {
                return Err(Failed::Closed);
            };
            if !self.promote() {
                return Err(Failed::Closed);
            }
            return Ok(Some(first));
        };
        match first {
            None => Err(Failed::Closed),
            Some(Request::Auth {
                proof,
                client_nonce,
            }) if key.verify(&nonce, &client_nonce, &proof) => {
                if !self.promote() {
                    return Err(Failed::Closed);
                }
                conn.write(&Response::Done).map_err(failed_io)?;
                let (to_node, to_client) = key.session(&nonce, &client_nonce);
                conn.secure(to_client, to_node);
                Ok(None)
            }
            Some(Request::Auth { .. }) => Err(Failed::Bad {
                why: "failed to prove the cluster password".to_string(),
                answer: WRONG_PASSWORD.to_string(),
            }),
            Some(_) => Err(Failed::Bad {
                why: "sent a request before proving the cluster password".to_string(),
                answer: "the cluster is encrypted: prove the cluster password first".to_string(),
            }),
        }
    }

    fn promote(&mut self) -> bool {
        self.authenticated = self.state.promote(self.id);
        self.authenticated
    }

    /// Counts, logs and explains (if the socket still takes it) a failed handshake.
    fn handshake_failed(
        &self,
        conn: &mut Framed<DeadlineStream>,
        failed: Failed,
        evicted: &AtomicBool,
        limits: &ClientPort,
    ) {
        let (node, peer, state) = (self.state.node, self.peer, &self.state);
        // The explanation gets a short deadline of its own: the handshake's has passed,
        // or the client is gone.
        conn.get_mut().deadline = Instant::now() + Duration::from_millis(100);
        if evicted.load(Ordering::SeqCst) {
            log::debug!("n{node} client {peer}: evicted before completing the handshake");
            let _ = conn.write(&error(
                ErrorKind::Busy,
                "evicted: the handshake was not completed before newer connections needed \
                 the slot (max_unauthenticated_connections); retry",
            ));
            return;
        }
        match failed {
            Failed::Closed => log::debug!("n{node} client {peer}: closed during the handshake"),
            Failed::TimedOut => {
                state
                    .counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                state.throttles.handshake_timeout.warn(|| {
                    format!(
                        "n{node} client {peer}: no handshake within {} ms; closed \
                         (client_handshake_timeout_ms)",
                        limits.client_handshake_timeout_ms
                    )
                });
                let _ = conn.write(&error(
                    ErrorKind::Timeout,
                    &format!(
                        "the handshake took longer than the node's client_handshake_timeout_ms ({} ms)",
                        limits.client_handshake_timeout_ms
                    ),
                ));
            }
            Failed::Bad { why, answer } => {
                state
                    .counters
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                state
                    .throttles
                    .handshake_failure
                    .warn(|| format!("n{node} client {peer}: {why}; closing"));
                let _ = conn.write(&error(ErrorKind::Unauthorized, &answer));
            }
        }
    }
}

/// What a node answers a wrong password proof.
const WRONG_PASSWORD: &str =
    "authentication failed: the client's cluster password differs from the node's";

fn failed_io(e: std::io::Error) -> Failed {
    match e.kind() {
        std::io::ErrorKind::TimedOut => Failed::TimedOut,
        std::io::ErrorKind::InvalidData => Failed::Bad {
            why: format!("sent bytes that are not the client protocol ({e})"),
            answer: format!("not the raft-kv client protocol v{CLIENT_PROTOCOL_VERSION}: {e}"),
        },
        _ => Failed::Closed,
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
        Request::AddLearner { id, raft_addr } => add_learner(host, id, &raft_addr, timeout),
        Request::Promote {
            id,
            max_lag_entries,
            catch_up_timeout_ms,
        } => {
            let Some(node) = host.node() else {
                return stopped(host);
            };
            log::info!(
                "a client asks to promote {} once within {max_lag_entries} entries",
                host.config().name_of(id)
            );
            let m = node.membership();
            if node.status().is_leader() && m.voters.contains(&id) && !m.pending {
                // A retried add-node whose promotion already committed.
                return Response::MembershipChanged { index: m.index };
            }
            let wait = Duration::from_millis(catch_up_timeout_ms);
            changed(
                host,
                node.promote_caught_up(id, max_lag_entries, wait + timeout),
            )
        }
        Request::RemoveNode { id } => {
            let Some(node) = host.node() else {
                return stopped(host);
            };
            log::info!("a client asks to remove {}", host.config().name_of(id));
            changed(host, node.remove(id, timeout))
        }
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

/// Adds `id` as a learner at `raft_addr`, after checking the address resolves (a bad
/// one would leave the new member unreachable). Already a learner or a voter at that
/// address (a retried `add-node`): done.
fn add_learner(host: &NodeHost, id: NodeId, raft_addr: &str, timeout: Duration) -> Response {
    let Some(node) = host.node() else {
        return stopped(host);
    };
    let name = host.config().name_of(id);
    if let Err(e) = std::net::ToSocketAddrs::to_socket_addrs(raft_addr)
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
    {
        log::warn!("refused to add {name}: its address {raft_addr:?} does not resolve ({e})");
        return error(
            ErrorKind::BadRequest,
            &format!("{raft_addr:?} is not a reachable host:port ({e})"),
        );
    }
    log::info!("a client asks to add {name} (n{id}) at {raft_addr} as a learner");
    let m = node.membership();
    if node.status().is_leader() && (m.learners.contains(&id) || m.voters.contains(&id)) {
        // A retried add-node: already a learner, or already promoted by an earlier run.
        // Done, unless the earlier run gave another address.
        return match m.addresses.get(&id) {
            Some(known) if known != raft_addr => {
                log::warn!("refused to add {name} at {raft_addr}: it is a member at {known}");
                error(
                    ErrorKind::BadRequest,
                    &format!("{name} is already a member, at {known} (not {raft_addr})"),
                )
            }
            _ => Response::MembershipChanged { index: m.index },
        };
    }
    changed(host, node.add_learner(id, raft_addr, timeout))
}

/// The answer to a membership change.
fn changed(host: &NodeHost, result: Result<u64, NodeError>) -> Response {
    match result {
        Ok(index) => Response::MembershipChanged { index },
        Err(NodeError::NotLeader { hint }) => error(
            ErrorKind::NotLeader,
            &format!(
                "{} is not the leader (leader: {})",
                host.entry().name,
                hint.map_or_else(|| "none known".to_string(), |l| host.config().name_of(l))
            ),
        ),
        Err(e @ NodeError::Rejected(ProposeError::Membership(_))) => {
            log::warn!("membership change refused: {e}");
            error(ErrorKind::BadRequest, &e.to_string())
        }
        Err(e) => {
            log::warn!("membership change failed: {e}");
            node_error(&e)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, unauth: usize, per_ip: usize) -> ClientPort {
        ClientPort {
            max_client_connections: max,
            max_unauthenticated_connections: unauth,
            max_unauthenticated_per_ip: per_ip,
            ..ClientPort::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn unauthenticated_connections_evict_the_oldest_beyond_their_share() {
        let mut s = Slots::new(limits(4, 2, 2));
        assert_eq!(s.admit(1, ip(1)), Admission::Admitted);
        assert_eq!(s.admit(2, ip(2)), Admission::Admitted);
        // The share is full: the newest takes the oldest's slot.
        assert_eq!(s.admit(3, ip(3)), Admission::Evicting(1));
        assert_eq!(s.unauthenticated(), 2);
        assert!(!s.promote(1), "an evicted connection cannot authenticate");
        assert!(s.promote(3));
        assert!(s.promote(2));
        assert_eq!((s.open(), s.unauthenticated()), (2, 0));
        // Authenticated clients may take every slot; then a new connection is refused.
        assert_eq!(s.admit(4, ip(4)), Admission::Admitted);
        assert!(s.promote(4));
        assert_eq!(s.admit(5, ip(5)), Admission::Admitted);
        assert_eq!(s.open(), 4);
        // Full with one unauthenticated: a newcomer evicts it rather than be refused.
        assert_eq!(s.admit(6, ip(6)), Admission::Evicting(5));
        assert!(s.promote(6));
        assert_eq!(s.admit(7, ip(7)), Admission::Refused);
        assert_eq!((s.open(), s.unauthenticated()), (4, 0));
        s.release(6, true);
        assert_eq!(s.admit(8, ip(8)), Admission::Admitted);
        s.release(8, false);
        // A released evicted connection frees nothing twice.
        s.release(5, false);
        assert_eq!((s.open(), s.unauthenticated()), (3, 0));
    }

    #[test]
    fn one_address_cannot_evict_the_others() {
        let mut s = Slots::new(limits(10, 6, 2));
        assert_eq!(s.admit(1, ip(1)), Admission::Admitted);
        assert_eq!(s.admit(2, ip(9)), Admission::Admitted);
        assert_eq!(s.admit(3, ip(9)), Admission::Admitted);
        // ip 9 is at its bound: its newest evicts its own oldest, not ip 1's older one.
        assert_eq!(s.admit(4, ip(9)), Admission::Evicting(2));
        assert_eq!(s.admit(5, ip(9)), Admission::Evicting(3));
        assert_eq!(s.unauthenticated(), 3);
        assert!(
            s.promote(1),
            "the other address's connection survived the flood"
        );
        assert!(s.promote(5));
        // The address's count follows promotions and releases.
        assert_eq!(s.admit(6, ip(9)), Admission::Admitted);
        s.release(4, false);
        assert_eq!(s.admit(7, ip(9)), Admission::Admitted);
        assert_eq!(s.admit(8, ip(9)), Admission::Evicting(6));
    }

    #[test]
    fn a_deadline_stream_times_out_at_its_deadline_however_the_bytes_trickle() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let started = Instant::now();
        let mut s = DeadlineStream {
            stream: Arc::new(server),
            deadline: started + Duration::from_millis(300),
        };
        // Each byte arrives well within a per-read timeout; the total must not. (A
        // per-read timeout would read all 60 bytes, 3 s.)
        let writer = std::thread::spawn(move || {
            for _ in 0..60 {
                if client.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut buf = [0u8; 64];
        let err = s.read_exact(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(s); // The writer's next writes fail: it stops.
        writer.join().unwrap();
    }
}
