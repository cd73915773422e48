//! The client protocol: what `raft-kv put/get/del/status` send to a node's client port.
//!
//! TCP, each message a frame: a 4-byte big-endian length then that many bytes of
//! postcard. Frames are at most [`FRAME_BYTES_MAX`]; anything longer or undecodable
//! closes the connection. On connect the node sends a [`Greeting`]; on an encrypted
//! cluster it carries a challenge the client must answer with [`Request::Auth`] (see
//! [`crate::auth`]) before anything else. Then one request and one response at a time.
//! Writes sent to a follower are forwarded to the leader by the node runtime; reads are
//! linearizable (ReadIndex) unless the request asks for a stale local read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::ClientKey;
use crate::cluster::HostView;
use crate::store::CommittedEntry;

/// The largest frame either side accepts, in bytes.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

/// The version of this protocol, in every [`Greeting`].
pub const CLIENT_PROTOCOL_VERSION: u32 = 1;

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
    /// The node will not serve this connection (too many connections); retry.
    Refused {
        /// Why.
        message: String,
    },
}

/// A request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The answer to the greeting's challenge: proof of the cluster password.
    Auth {
        /// `HMAC-SHA256(client key, context || nonce)`.
        proof: [u8; 32],
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
}

/// Writes one frame.
///
/// # Errors
/// I/O, or a message larger than [`FRAME_BYTES_MAX`].
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let body = postcard::to_allocvec(msg)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if body.len() > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {FRAME_BYTES_MAX}", body.len()),
        ));
    }
    let len = u32::try_from(body.len()).expect("bounded by FRAME_BYTES_MAX");
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame. `Ok(None)` on a clean end of stream before a frame starts.
///
/// # Errors
/// I/O, a length over [`FRAME_BYTES_MAX`], or bytes that do not decode.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {FRAME_BYTES_MAX}"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A connection to one node's client port.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
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
                    let mut client = Self { stream, addr: a };
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
        let greeting: Greeting = read_frame(&mut self.stream)?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the node closed the connection without a greeting",
            )
        })?;
        let challenge = match greeting {
            Greeting::Refused { message } => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    message,
                ))
            }
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
        match self.call(&Request::Auth {
            proof: key.prove(&nonce),
        })? {
            Response::Done => Ok(()),
            Response::Error { message, .. } => Err(denied(message)),
            other => Err(denied(format!("unexpected answer to auth: {other:?}"))),
        }
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `request` and waits for the response.
    ///
    /// # Errors
    /// I/O (including a timeout), or the node closed the connection.
    pub fn call(&mut self, request: &Request) -> std::io::Result<Response> {
        write_frame(&mut self.stream, request)?;
        read_frame(&mut self.stream)?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the node closed the connection without answering",
            )
        })
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
    }
}
