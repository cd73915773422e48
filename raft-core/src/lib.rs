//! # raft-core
//!
//! A synchronous Raft consensus library for ordinary, non-async Rust programs: run
//! several copies of your program, and they apply the same commands in the same order,
//! keep serving while a majority is up, and never lose a write they acknowledged.
//!
//! It has two layers:
//! - [`node`]: the runtime you embed. A [`node::Node`] runs the protocol on its own
//!   threads over a [`Log`] (storage) and a [`Transport`] (network) and applies committed
//!   commands to your [`node::StateMachine`];
//! - [`protocol`]: the Raft protocol itself as a pure, deterministic state machine
//!   ([`Raft`]: no threads, sockets, files or clocks), for driving it yourself and for
//!   the simulator in `raft-testkit`.
//!
//! ## Tutorial: a replicated counter
//!
//! 1. Write the state machine: `apply` gets each committed command, in order, on every
//!    node. It must be deterministic and must not panic on bytes it does not understand.
//! 2. Start one [`node::Node`] per member with a log and a transport. Here the log is
//!    [`MemLog`] and the transport an in-process [`node::ChannelNetwork`]; a real
//!    deployment uses `raft_store::SledLog` (survives restarts) and
//!    `raft_net::UdpTransport` (across machines), and nothing else changes.
//! 3. Propose commands through any node (followers forward them to the leader) and read
//!    linearizably with [`node::Node::read`]. [`node::Node::events`] tells you when this
//!    node becomes or stops being the leader, and what it applied.
//!
//! ```
//! use std::time::Duration;
//!
//! use raft_core::node::{ChannelNetwork, Node, NodeConfig, StateMachine};
//! use raft_core::{LogIndex, MemLog};
//!
//! /// Adds up the numbers it is sent (one byte each).
//! #[derive(Default)]
//! struct Counter {
//!     total: u64,
//! }
//!
//! impl StateMachine for Counter {
//!     type Response = u64;
//!     fn apply(&mut self, _index: LogIndex, command: &[u8]) -> u64 {
//!         self.total += command.iter().map(|&b| u64::from(b)).sum::<u64>();
//!         self.total
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = ChannelNetwork::new();
//! let nodes = (1..=3)
//!     .map(|id| {
//!         Node::builder(NodeConfig::new(id, [1, 2, 3]))
//!             .log(MemLog::new())
//!             .transport(net.transport(id))
//!             .state_machine(Counter::default())
//!             .start()
//!     })
//!     .collect::<Result<Vec<_>, _>>()?;
//!
//! let timeout = Duration::from_secs(10);
//! let leader = nodes[0].wait_for_leader(timeout)?;
//! // Through a follower or the leader alike; retried (at most once in effect) across
//! // leader changes.
//! assert_eq!(nodes[2].propose_with_retry(vec![2], timeout)?, 2);
//! assert_eq!(nodes[1].propose_with_retry(vec![40], timeout)?, 42);
//!
//! // Every node now reads 42: a linearizable read sees every acknowledged write.
//! for node in &nodes {
//!     assert_eq!(node.read(timeout, |c| c.total)?, 42);
//! }
//!
//! // Stop the leader: the other two elect a new one and keep going.
//! nodes[(leader - 1) as usize].stop();
//! let survivor = nodes.iter().find(|n| n.id() != leader).unwrap();
//! assert_eq!(survivor.propose_with_retry(vec![1], timeout)?, 43);
//! for node in &nodes {
//!     node.stop();
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Metrics: a node records counters, gauges and histograms (term, role, indexes,
//! elections, proposals, messages, log write and sync latency, snapshots) through the
//! [`metrics`](https://docs.rs/metrics) facade, each labelled with its node id. Like
//! `log`, the application picks the recorder (for example a Prometheus exporter) and
//! installs it before starting nodes; with none installed, recording costs a branch.
//! [`node::metrics`] names them all and shows a test recorder in a doctest.
//!
//! [`node::KvStore`] is a ready-made key/value state machine; `docs/architecture.md` in
//! the repository describes the threads, the storage and transport contracts, and
//! `docs/operations.md` what survives a crash.
//!
//! ## The protocol alone
//!
//! [`Raft`] is what the node's threads drive: feed it messages and ticks, and each
//! [`Ready`] says what to persist (then [`Log::sync`]), what to send and what was
//! committed. A one-node cluster elects itself and commits a proposal:
//!
//! ```
//! use raft_core::{Config, Log, MemLog, Raft, Role};
//!
//! let mut raft = Raft::new(Config::new(1, [1]), MemLog::new(), 42).unwrap();
//! raft.campaign();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..10 {
//!     if raft.role() == Role::Leader && !proposed {
//!         raft.propose(b"hello".to_vec().into()).unwrap();
//!         proposed = true;
//!     }
//!     let ready = raft.ready();
//!     raft.log_mut().append(&ready.entries).unwrap();
//!     if let Some(hs) = ready.hard_state {
//!         raft.log_mut().set_hard_state(hs).unwrap();
//!     }
//!     raft.log_mut().sync().unwrap();
//!     applied.extend(ready.committed.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.clone()));
//!     raft.advance(ready);
//! }
//! assert_eq!(applied, vec![bytes::Bytes::from_static(b"hello")]);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod message;
pub mod node;
pub mod protocol;
pub mod storage;
pub mod transport;
pub mod types;

pub use config::{Config, ConfigError, ReadMode};
pub use message::{Message, MessageBody, RejectHint};
pub use protocol::{ProposeError, Raft, ReadState, Ready, Role, SnapshotChunk, SoftState, Status};
pub use storage::{
    ChunksReader, InMemoryChunks, InMemoryInstaller, Log, MemLog, ReceivedInMemory, SnapshotChunks,
    SnapshotWriter, StorageError, WrittenSnapshot,
};
pub use transport::{Transport, TransportCounters, TransportError};
pub use types::{
    Entry, EntryKind, HardState, LogIndex, Membership, NodeId, Snapshot, SnapshotInfo,
    SnapshotMeta, Term,
};
