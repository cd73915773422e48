//! # raft-net
//!
//! raft-core's [`Transport`](raft_core::Transport) over UDP: one socket and three named
//! threads per node (listener, processor, sender), a postcard codec with lz4 compression,
//! optional AES-256-CBC + HMAC-SHA256 encryption from a cluster password, protocol
//! versioning, replay protection, a run-time peer directory and counters of everything
//! dropped. docs/protocol.md describes the wire format byte by byte.
//!
//! The path of a datagram, top to bottom: [`transport`] (socket and threads) →
//! [`processor`] (who may talk to us) → [`codec`] (bytes to message) → [`wire`]
//! (header layout) and [`replay`].
//!
//! ```
//! use std::time::Duration;
//! use raft_core::{Message, MessageBody, Transport};
//! use raft_net::{NetConfig, UdpTransport};
//!
//! // Two nodes on loopback, with ephemeral ports.
//! let mut a = UdpTransport::bind(NetConfig::new(1, "tutorial", "127.0.0.1:0")).unwrap();
//! let mut b = UdpTransport::bind(NetConfig::new(2, "tutorial", "127.0.0.1:0")).unwrap();
//! // Each learns the other's address (a real config lists peers up front).
//! a.directory().insert(2, "b", b.local_addr());
//! b.directory().insert(1, "a", a.local_addr());
//!
//! let (inbox_a, _from_a) = crossbeam_channel::bounded(16);
//! let (inbox_b, from_b) = crossbeam_channel::bounded(16);
//! a.start(inbox_a).unwrap();
//! b.start(inbox_b).unwrap();
//!
//! let hello = Message { from: 1, to: 2, term: 1, body: MessageBody::Heartbeat { commit: 0, read_round: 0 } };
//! a.send(vec![hello.clone()]);
//! assert_eq!(from_b.recv_timeout(Duration::from_secs(5)).unwrap(), hello);
//!
//! a.stop();
//! b.stop();
//! assert_eq!(b.stats().delivered_messages, 1);
//! ```
//!
//! Its counters ([`NetStats`]: bytes in and out, drops by reason, fragments) are also
//! published through the `metrics` facade, labelled with the node id, at each status
//! publication of the node; [`metrics`] names them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod crypto;
pub mod fragment;
pub mod metrics;
pub mod peers;
pub mod processor;
pub mod replay;
pub mod stats;
pub mod transport;
pub mod wire;

pub use codec::{Codec, Opened, Opener, Rejected, SealError, Sealer};
pub use config::{NetConfig, PeerConfig};
pub use crypto::ClusterKeys;
pub use peers::{Peer, PeerDirectory};
pub use processor::Processor;
pub use stats::{DropKind, NetStats, NetStatsSnapshot};
pub use transport::UdpTransport;
