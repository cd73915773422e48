//! The Raft protocol as a pure, deterministic state machine.
//!
//! Architecture invariant: nothing in this module uses threads, sockets, files, clocks
//! or unseeded randomness. Time is [`Raft::tick`]; randomness comes from the seed given
//! to [`Raft::new`]. All safety logic lives here, so the simulator can test it.

pub mod membership;
pub mod progress;
pub mod quorum;
mod raft;
mod raft_log;
mod ready;

#[cfg(feature = "fault-injection")]
pub use raft::BrokenVariant;
pub use raft::{PeerStatus, ProposeError, ProtocolCounters, Raft, Status};
pub use ready::{ForwardedProposal, ReadState, Ready, Role, SnapshotChunk, SoftState};
