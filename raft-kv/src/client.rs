//! The client protocol: what `raft-kv put/get/del/status` send to a node's client port.
//!
//! TCP, each message a frame: a 4-byte big-endian length then that many bytes of
//! postcard. Frames are at most [`FRAME_BYTES_MAX`]; anything longer or undecodable
//! closes the connection. On connect the node sends a [`Greeting`]; on an encrypted
//! cluster it carries a challenge the client must answer with [`Request::Auth`] before
//! anything else, after which every frame in both directions is encrypted and
//! authenticated with per-connection keys (see [`crate::auth`]; a frame that fails closes
//! the connection). Then one request and one response at a time.
//! Writes sent to a follower are forwarded to the leader by the node runtime; reads are
//! linearizable (ReadIndex) unless the request asks for a stale local read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use raft_net::ClusterKeys;

use crate::auth::ClientKey;
use crate::cluster::HostView;
use crate::store::CommittedEntry;

/// The largest frame either side accepts, in bytes.
pub const FRAME_BYTES_MAX: usize = (1 << 20) + (64 << 10);

/// The largest frame a node reads from a client that has not yet proven the cluster
/// password (an encrypted cluster's first frame, [`Request::Auth`], takes about 70
/// bytes). With [`FRAME_BYTES_MAX`] there, every unauthenticated connection could make a
/// node hold a megabyte for a client that has not authenticated.
pub const AUTH_FRAME_BYTES_MAX: usize = 1024;

/// What a reader allocates ahead of the bytes actually received: a frame's buffer grows
/// with what arrives, so a length header alone never costs the reader its full length.
const FRAME_READ_AHEAD_BYTES: usize = 64 << 10;

/// The version of this protocol, in every [`Greeting`].
pub const CLIENT_PROTOCOL_VERSION: u32 = 2;

/// What a node sends first on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Greeting {
    /// Go ahead (after answering the challenge, if there is one).
    Welcome {
        /// [`CLIENT_PROTOCOL_VERSION`] of the node.
        protocol: u32,
        /// On an encrypted cluster: the nonce to answer with [`Request::Auth`].
        challenge: Option<[u8; 32]>,
    },
    /// The node will not serve this connection (every slot is held by an authenticated
    /// client: `max_client_connections`); retry.
    Refused {
        /// Why.
        message: String,
    },
}

/// A request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The answer to the greeting's challenge: proof of the cluster password, and the
    /// client's half of the session keys.
    Auth {
        /// `HMAC-SHA256(client key, context ‖ node's nonce ‖ client_nonce)`.
        proof: [u8; 32],
        /// The client's random nonce.
        client_nonce: [u8; 32],
    },
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read `key`: linearizable, or this node's copy if `stale`.
    Get {
        /// The key.
        key: String,
        /// Read this node's copy without asking the leader (may be old).
        stale: bool,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// The node's status and its last `entries_max` committed entries.
    Status {
        /// How many committed entries to include.
        entries_max: u32,
    },
    /// Stop the node in place (its process and client port stay up).
    Stop,
    /// Start a stopped node again.
    Start,
    /// Change the process's log level (`error` .. `trace`).
    SetLogLevel {
        /// The level's name.
        level: String,
    },
    /// Leader only: add node `id` as a learner reachable at `raft_addr` (UDP
    /// `host:port`). Already a learner: done, nothing changes.
    AddLearner {
        /// The new node's Raft id.
        id: raft_core::NodeId,
        /// Its Raft (UDP) address.
        raft_addr: String,
    },
    /// Leader only: wait (up to `catch_up_timeout_ms`) until learner `id` is within
    /// `max_lag_entries` of the leader's log, then make it a voter.
    Promote {
        /// The learner.
        id: raft_core::NodeId,
        /// How far behind it may be when promoted.
        max_lag_entries: u64,
        /// How long to wait for it to catch up.
        catch_up_timeout_ms: u64,
    },
    /// Leader only: remove voter or learner `id`.
    RemoveNode {
        /// The node.
        id: raft_core::NodeId,
    },
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A write took effect; the key's previous value.
    Written {
        /// The value before.
        previous: Option<String>,
    },
    /// A read's result (`None`: no such key).
    Value(Option<String>),
    /// The node's status.
    Status(Box<HostView>),
    /// Done (stop, start, log level).
    Done,
    /// A membership change committed: its configuration entry's index.
    MembershipChanged {
        /// Index of the configuration entry.
        index: u64,
    },
    /// The request failed.
    Error {
        /// What kind of failure, for exit codes and retries.
        kind: ErrorKind,
        /// A message for humans.
        message: String,
    },
}

/// Kinds of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The node is stopped (its process still answers).
    Stopped,
    /// No leader is known, or it could not be reached in time.
    Unavailable,
    /// The request timed out; a write may still take effect.
    Timeout,
    /// Too many connections; retry.
    Busy,
    /// The request was invalid.
    BadRequest,
    /// The client did not prove it knows the cluster password.
    Unauthorized,
    /// Anything else.
    Internal,
    /// This node is not the leader; ask another (membership changes).
    NotLeader,
}

/// Writes one frame.
///
/// # Errors
/// I/O, or a message larger than [`FRAME_BYTES_MAX`].
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let body = postcard::to_allocvec(msg)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    write_bytes(w, &body)
}

/// Writes `body` as one frame (length prefix, then the bytes).
fn write_bytes(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    if body.len() > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {FRAME_BYTES_MAX}", body.len()),
        ));
    }
    let len = u32::try_from(body.len()).expect("bounded by FRAME_BYTES_MAX");
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame. `Ok(None)` on a clean end of stream before a frame starts.
///
/// # Errors
/// I/O, a length over [`FRAME_BYTES_MAX`], or bytes that do not decode.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> std::io::Result<Option<T>> {
    read_frame_limited(r, FRAME_BYTES_MAX)
}

/// Reads one frame of at most `bytes_max` bytes (at most [`FRAME_BYTES_MAX`]).
fn read_frame_limited<T: DeserializeOwned>(
    r: &mut impl Read,
    bytes_max: usize,
) -> std::io::Result<Option<T>> {
    let Some(body) = read_bytes(r, bytes_max)? else {
        return Ok(None);
    };
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads one frame's bytes, refusing a length over `bytes_max`; `Ok(None)` on a clean
/// end of stream before it starts. The buffer grows as bytes arrive (at most
/// [`FRAME_READ_AHEAD_BYTES`] ahead of them).
fn read_bytes(r: &mut impl Read, bytes_max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    let bytes_max = bytes_max.min(FRAME_BYTES_MAX);
    if len > bytes_max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {bytes_max}"),
        ));
    }
    let mut body = Vec::with_capacity(len.min(FRAME_READ_AHEAD_BYTES));
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ended {} bytes into a frame of {len}",
                body.len()
            ),
        ));
    }
    Ok(Some(body))
}

/// One end of a client connection: frames in the clear until [`Framed::secure`], then
/// sealed with the session keys, each authenticated with its sequence number in its
/// direction (so a frame replayed, dropped, reordered or reflected fails).
pub struct Framed<S> {
    stream: S,
    secure: Option<Secure>,
    /// The largest frame [`Framed::read`] accepts (at most [`FRAME_BYTES_MAX`]).
    read_bytes_max: usize,
}

struct Secure {
    send: ClusterKeys,
    recv: ClusterKeys,
    sent: u64,
    received: u64,
}

impl<S> std::fmt::Debug for Framed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed")
            .field("encrypted", &self.secure.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Read + Write> Framed<S> {
    /// A connection whose frames travel in the clear.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            secure: None,
            read_bytes_max: FRAME_BYTES_MAX,
        }
    }

    /// Reads refuse frames longer than `bytes_max` (capped at [`FRAME_BYTES_MAX`], the
    /// default) with `InvalidData`: a node reads an unauthenticated client's frames with
    /// [`AUTH_FRAME_BYTES_MAX`].
    pub fn set_read_bytes_max(&mut self, bytes_max: usize) {
        self.read_bytes_max = bytes_max.min(FRAME_BYTES_MAX);
    }

    /// From now on, seal what is written with `send` and open what is read with `recv`.
    pub fn secure(&mut self, send: ClusterKeys, recv: ClusterKeys) {
        self.secure = Some(Secure {
            send,
            recv,
            sent: 0,
            received: 0,
        });
    }

    /// Whether frames are sealed.
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream underneath, to change its settings (not to read or write around the
    /// framing).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Writes one message.
    ///
    /// # Errors
    /// I/O, or a message larger than [`FRAME_BYTES_MAX`] (`InvalidInput`).
    pub fn write<T: Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        let Some(sec) = self.secure.as_mut() else {
            return write_frame(&mut self.stream, msg);
        };
        let body = postcard::to_allocvec(msg)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let sealed = sec.send.seal(&sec.sent.to_be_bytes(), &body);
        write_bytes(&mut self.stream, &sealed)?;
        sec.sent += 1;
        Ok(())
    }

    /// Reads one message; `Ok(None)` on a clean end of stream before a frame starts.
    ///
    /// # Errors
    /// I/O, an oversize or undecodable frame, or (once secure) a frame that fails
    /// authentication (`InvalidData`: another password, tampering, replay, reordering).
    pub fn read<T: DeserializeOwned>(&mut self) -> std::io::Result<Option<T>> {
        let Some(sec) = self.secure.as_mut() else {
            return read_frame_limited(&mut self.stream, self.read_bytes_max);
        };
        let Some(sealed) = read_bytes(&mut self.stream, self.read_bytes_max)? else {
            return Ok(None);
        };
        let body = sec
            .recv
            .open(&sec.received.to_be_bytes(), &sealed)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a frame failed authentication (another cluster password, tampering, \
                     or a replayed or reordered frame)",
                )
            })?;
        sec.received += 1;
        postcard::from_bytes(&body)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// A connection to one node's client port.
#[derive(Debug)]
pub struct Client {
    conn: Framed<TcpStream>,
    addr: SocketAddr,
}

impl Client {
    /// Connects to `addr` (`host:port`) within `timeout` and, if the node asks, proves
    /// knowledge of the cluster password with `key`. Each later request may take up to
    /// `timeout` too.
    ///
    /// # Errors
    /// The address does not resolve, nothing listens there, the node refuses the
    /// connection, or it asks for a password proof that `key` cannot give
    /// (`PermissionDenied`).
    pub fn connect(
        addr: &str,
        timeout: Duration,
        key: Option<&ClientKey>,
    ) -> std::io::Result<Self> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    let _ = stream.set_nodelay(true);
                    let mut client = Self {
                        conn: Framed::new(stream),
                        addr: a,
                    };
                    client.handshake(key)?;
                    return Ok(client);
                }
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

    fn handshake(&mut self, key: Option<&ClientKey>) -> std::io::Result<()> {
        let denied = |m: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, m);
        let greeting: Greeting = self.conn.read()?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the node closed the connection without a greeting",
            )
        })?;
        let challenge = match greeting {
            Greeting::Refused { message } => return Err(NodeBusy::error(message)),
            Greeting::Welcome { protocol, .. } if protocol != CLIENT_PROTOCOL_VERSION => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!(
                        "the node speaks client protocol {protocol}, this client {CLIENT_PROTOCOL_VERSION}"
                    ),
                ))
            }
            Greeting::Welcome { challenge, .. } => challenge,
        };
        let Some(nonce) = challenge else {
            return Ok(());
        };
        let Some(key) = key else {
            return Err(denied(
                "the cluster is encrypted: the client needs its password (give --config with \
                 the password's source, e.g. RAFT_KV_PASSWORD set)"
                    .to_string(),
            ));
        };
        let client_nonce = crate::auth::nonce();
        match self.call(&Request::Auth {
            proof: key.prove(&nonce, &client_nonce),
            client_nonce,
        })? {
            Response::Done => {
                let (to_node, to_client) = key.session(&nonce, &client_nonce);
                self.conn.secure(to_node, to_client);
                Ok(())
            }
            Response::Error {
                kind: ErrorKind::Unauthorized,
                message,
            } => Err(denied(message)),
            // Evicted to make room, or too slow: not the password's fault; retry.
            Response::Error {
                kind: ErrorKind::Busy,
                message,
            } => Err(NodeBusy::error(message)),
            Response::Error { message, .. } => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                message,
            )),
            other => Err(denied(format!("unexpected answer to auth: {other:?}"))),
        }
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether requests and answers on this connection are encrypted (the node's
    /// cluster is).
    pub fn is_encrypted(&self) -> bool {
        self.conn.is_secure()
    }

    /// Sends `request` and waits for the response.
    ///
    /// # Errors
    /// I/O (including a timeout), or the node closed the connection.
    pub fn call(&mut self, request: &Request) -> std::io::Result<Response> {
        self.conn.write(request)?;
        self.conn.read()?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the node closed the connection without answering",
            )
        })
    }
}

/// The node refused or evicted the connection before the request was sent (every slot
/// taken, or newer connections needed this one's slot during its handshake): nothing
/// took effect, retrying is safe. Carried inside a `ConnectionRefused` I/O error; see
/// [`NodeBusy::is`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NodeBusy(pub String);

impl NodeBusy {
    fn error(message: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, Self(message))
    }

    /// Whether `e` says the node refused or evicted the connection in its handshake.
    pub fn is(e: &std::io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<NodeBusy>())
    }
}

/// Committed entries as plain text lines: `index<TAB>operation`.
pub fn entries_text(entries: &[CommittedEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}\t{}\n", e.index, e.op))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_oversize() {
        let mut buf = Vec::new();
        let req = Request::Put {
            key: "Hello".into(),
            value: "World".into(),
        };
        write_frame(&mut buf, &req).unwrap();
        let back: Request = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(back, req);
        // Clean end of stream.
        assert!(read_frame::<Request>(&mut &[][..]).unwrap().is_none());
        // A hostile length is refused before allocating.
        let huge = (u32::MAX).to_be_bytes();
        assert!(read_frame::<Request>(&mut &huge[..]).is_err());
        // Garbage does not decode.
        let junk = [0, 0, 0, 2, 0xff, 0xff];
        assert!(read_frame::<Request>(&mut &junk[..]).is_err());
        // A frame cut short is an error, not a shorter frame.
        let cut = [0, 0, 0, 9, 1, 2, 3];
        let e = read_frame::<Request>(&mut &cut[..]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }

    /// Regression (session 4): an unauthenticated client's frame was read with the full
    /// frame limit, so each of hundreds of handshaking connections could make the node
    /// allocate a megabyte. A limited reader refuses a long frame by its length alone,
    /// and a length header with few bytes behind it costs only what arrived.
    #[test]
    fn a_limited_reader_refuses_long_frames_and_allocates_only_what_arrives() {
        let auth = Request::Auth {
            proof: [7; 32],
            client_nonce: [9; 32],
        };
        let mut wire = Wire::default();
        write_frame(&mut wire, &auth).unwrap();
        let mut node = Framed::new(Wire(wire.0.clone(), 0));
        node.set_read_bytes_max(AUTH_FRAME_BYTES_MAX);
        assert_eq!(node.read::<Request>().unwrap(), Some(auth));

        let mut big = Wire::default();
        write_frame(
            &mut big,
            &Request::Put {
                key: "k".into(),
                value: "v".repeat(AUTH_FRAME_BYTES_MAX),
            },
        )
        .unwrap();
        let mut node = Framed::new(Wire(big.0.clone(), 0));
        node.set_read_bytes_max(AUTH_FRAME_BYTES_MAX);
        let e = node.read::<Request>().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("exceeds 1024"), "{e}");
        // The default limit takes it.
        let mut node = Framed::new(Wire(big.0, 0));
        assert!(node.read::<Request>().unwrap().is_some());

        // A header announcing the largest frame, then 10 bytes: an error at the end of
        // the stream (the buffer grew only with what arrived).
        let mut header = (FRAME_BYTES_MAX as u32).to_be_bytes().to_vec();
        header.extend_from_slice(&[0; 10]);
        let body = read_bytes(&mut &header[..], FRAME_BYTES_MAX);
        assert_eq!(body.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }
    /// A pipe-like stream over a shared buffer, for both ends of a `Framed` in one test.
    #[derive(Default)]
    struct Wire(Vec<u8>, usize);

    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn secure_frames_hide_the_data_and_refuse_replay_reorder_and_reflection() {
        let key = ClientKey::derive("pw", "c", 10);
        let (ns, nc) = (crate::auth::nonce(), crate::auth::nonce());
        let (c2n, n2c) = key.session(&ns, &nc);
        let mut client = Framed::new(Wire::default());
        client.secure(c2n.clone(), n2c.clone());
        let put = Request::Put {
            key: "secret-key".into(),
            value: "secret-value".into(),
        };
        client.write(&put).unwrap();
        client.write(&Request::Stop).unwrap();
        let wire = client.get_ref().0.clone();
        assert!(
            !wire.windows(12).any(|w| w == b"secret-value")
                && !wire.windows(10).any(|w| w == b"secret-key"),
            "the request is on the wire in the clear"
        );
        // The node reads both, in order.
        let mut node = Framed::new(Wire(wire.clone(), 0));
        node.secure(n2c.clone(), c2n.clone());
        assert_eq!(node.read::<Request>().unwrap(), Some(put.clone()));
        assert_eq!(node.read::<Request>().unwrap(), Some(Request::Stop));
        // Replayed: the first frame again after both.
        let first_len = 4 + u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
        let mut replayed = wire.clone();
        replayed.extend_from_slice(&wire[..first_len]);
        let mut node = Framed::new(Wire(replayed, 0));
        node.secure(n2c.clone(), c2n.clone());
        node.read::<Request>().unwrap();
        node.read::<Request>().unwrap();
        let err = node.read::<Request>().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        // Reordered: the second frame first.
        let mut reordered = wire[first_len..].to_vec();
        reordered.extend_from_slice(&wire[..first_len]);
        let mut node = Framed::new(Wire(reordered, 0));
        node.secure(n2c.clone(), c2n.clone());
        assert!(node.read::<Request>().is_err());
        // Reflected: the client's own frame sent back to it.
        let mut back = Framed::new(Wire(wire.clone(), 0));
        back.secure(c2n.clone(), n2c.clone());
        assert!(back.read::<Request>().is_err());
        // Another password.
        let (wrong_c2n, wrong_n2c) = ClientKey::derive("other", "c", 10).session(&ns, &nc);
        let mut node = Framed::new(Wire(wire, 0));
        node.secure(wrong_n2c, wrong_c2n);
        assert!(node.read::<Request>().is_err());
    }
}
