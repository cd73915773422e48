//! # raft-testkit
//!
//! Tools to break the Raft protocol of `raft-core` before users do:
//!
//! - [`sim`]: a deterministic simulator that drives 3 to 7 protocol instances in one
//!   thread with a simulated clock, network, disks and clients, from one seed, injecting
//!   network partitions, message loss, duplication, delay and reordering, crashes with
//!   torn unsynced writes, restarts, pauses, clock skew, forced elections and leadership
//!   transfers;
//! - [`checker`]: the safety checks the simulator runs after every event (election
//!   safety, log matching, leader completeness, state machine safety, monotonic commit,
//!   durable term and vote);
//! - [`linearizability`]: a Wing-Gong-Lowe linearizability checker for key/value histories;
//! - [`SimLog`]: an in-memory `Log` with crash semantics;
//! - [`cluster`]: real clusters of runtime nodes over loopback UDP;
//! - [`proxy`]: a UDP proxy between real nodes that drops, delays, duplicates or
//!   partitions their traffic on command.
//!
//! ```
//! use raft_testkit::sim::{SimConfig, Simulator};
//! // A calm 3-node run: no faults, every check passes.
//! let mut cfg = SimConfig::calm(1, 3);
//! cfg.safety_ticks = 100;
//! let report = Simulator::new(cfg).run();
//! assert!(report.failure.is_none(), "{}", report.failure.unwrap());
//! assert!(report.ops.ok > 0);
//! ```
//!
//! See `docs/testing.md` for how to run campaigns and replay a failing seed.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod checker;
pub mod cluster;
pub mod faulty_log;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod proxy;
pub mod sim;
pub mod sim_log;
pub mod trace;

pub use checker::{SafetyChecker, Violation};
pub use sim::{run_seed, RunReport, SimConfig, Simulator};
pub use sim_log::SimLog;
