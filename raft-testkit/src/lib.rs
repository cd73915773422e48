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
//! - [`simulation`]: the simulator pointed at your own state machine (the tutorial below);
//! - [`linearizability`]: a Wing-Gong-Lowe linearizability checker for key/value histories
//!   (and, through [`Simulation::model`], for your own model);
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
//! ## Testing your own state machine
//!
//! The simulator runs whatever implements [`raft_core::node::StateMachine`]: give
//! [`Simulation`] a constructor, a workload (one command drawn from the seed's RNG per
//! call), optionally a sequential [`Model`] and an invariant, and the seeds to run.
//! Each seed is a whole cluster run with faults (loss, duplication, reordering,
//! partitions, crashes with torn writes, restarts, pauses, clock skew, elections,
//! membership changes, snapshots) followed by a fault-free liveness phase.
//!
//! ```
//! use raft_core::node::{RestoreError, StateMachine};
//! use raft_testkit::{Faults, Model, Simulation};
//! use rand::Rng;
//!
//! /// A register of the last value written; every command answers the previous one.
//! #[derive(Clone, Default, PartialEq, Eq, Hash)]
//! struct Register(u8);
//!
//! impl StateMachine for Register {
//!     type Response = u8;
//!     fn apply(&mut self, _index: u64, command: &[u8]) -> u8 {
//!         std::mem::replace(&mut self.0, command[0])
//!     }
//!     fn snapshot(&self) -> Option<Vec<u8>> {
//!         Some(vec![self.0])
//!     }
//!     fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
//!         self.0 = *data.first().ok_or_else(|| RestoreError("empty".into()))?;
//!         Ok(())
//!     }
//! }
//!
//! impl Model<u8> for Register {
//!     fn step(&mut self, command: &[u8]) -> u8 {
//!         std::mem::replace(&mut self.0, command[0])
//!     }
//! }
//!
//! Simulation::new(Register::default)
//!     .nodes(3)
//!     .workload(|rng| vec![rng.gen()])
//!     .model(Register::default())
//!     .faults(Faults::all())
//!     .seeds(0..5)
//!     .run()
//!     .assert_ok();
//! ```
//!
//! What is checked, on every seed: the protocol's safety properties after every event
//! ([`checker`]); every node's state machine, compared through its
//! [`StateMachine::snapshot`](raft_core::node::StateMachine::snapshot) bytes, equals the
//! state the committed log produces at the index it applied (so a nondeterministic
//! `apply` is caught), and so does every state restored from a snapshot; acknowledged
//! commands are never lost; the invariant holds after every command; with a model, the
//! clients' answers are linearizable; after healing, a new command commits and every
//! node applies it. A retried command takes effect once: the simulator wraps each
//! command with its operation id and skips ids already applied, outside your machine.
//!
//! `raft-testkit/examples/bank.rs` is a complete example (transfers between accounts,
//! total kept constant); `examples/buggy_bank.rs` shows the simulator catching a
//! machine that iterates a `HashMap` in `apply`.
//!
//! ## Reading a failure
//!
//! [`SimulationReport::assert_ok`] panics with the failing seed, the violation (which
//! node, at which log index, what differed), the last events of the run (who sent what
//! to whom, elections, commits, client calls and returns, faults) and the command that
//! replays it. Before reporting, a failing seed is shrunk: rerun with its safety phase
//! halved while it still fails, then without faults; the smallest failing run is shown
//! (a run that fails "without faults" points at the state machine itself).
//!
//! ## Replaying a seed
//!
//! Every random choice comes from the seed, so a seed replays the same run (the
//! report's trace hashes are equal). Set the environment the report prints, for
//! example `RAFT_SIM_SEED=17 RAFT_SIM_SAFETY_TICKS=43 cargo test my_test -- --nocapture`:
//! [`Simulation::run`] then runs only that seed and prints every event.
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
pub mod simulation;
pub mod trace;

pub use checker::{SafetyChecker, Violation};
pub use sim::{run_seed, RunReport, SimConfig, Simulator};
pub use sim_log::SimLog;
pub use simulation::{Faults, Model, NoModel, SeedFailure, Shrunk, Simulation, SimulationReport};
