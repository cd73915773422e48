//! # raft-core
//!
//! A synchronous Raft consensus library: the protocol as a pure state machine
//! ([`protocol`]) and the traits the rest of the workspace implements: [`Log`]
//! (storage) and [`Transport`] (network).
//!
//! ```
//! use raft_core::{Config, MemLog, Raft, Role};
//!
//! // A one-node cluster elects itself and commits a proposal.
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
//! # use raft_core::Log;
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
pub use protocol::{ProposeError, Raft, ReadState, Ready, Role, SoftState, Status};
pub use storage::{
    InMemoryChunks, Log, MemLog, SnapshotChunks, SnapshotWriter, StorageError, WrittenSnapshot,
};
pub use transport::{Transport, TransportCounters, TransportError};
pub use types::{
    Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot, SnapshotInfo, SnapshotMeta, Term,
};
