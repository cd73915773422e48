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
//! membership changes, snapshots; [`Faults`] picks the kinds) followed by a fault-free
//! liveness phase.
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
//! to whom, elections, commits, client calls and returns, faults), its trace hash and
//! the environment that replays it. Before reporting, a failing seed is shrunk: its
//! safety phase is halved while the run still fails; the run is tried without faults,
//! else without each [`Fault`] kind in turn (a kind stays dropped if the run still
//! fails); then the client operation budget is halved while it still fails; and again
//! while a pass finds a smaller run. The smallest failing run is the one shown, with
//! the run it was shrunk from:
//!
//! ```text
//! seed 0 (3 nodes) failed at tick 23.622 of a 21-tick safety phase, faults elections,
//!   7 client operations: not linearizable on key 0: 7 commands; at most 6 could be
//!   linearized; stuck before Call { client: 0, input: [2], output: Some(28), ... }
//! (shrunk from a 700-tick safety phase with 68 client operations, which failed with: ...)
//! last events:
//!   ...
//! trace hash: 8063984b0bf7fc29
//! replay with its whole trace: RAFT_SIM_SEED=0 RAFT_SIM_SAFETY_TICKS=21
//!   RAFT_SIM_FAULTS=elections RAFT_SIM_OPS=25 cargo test <this test> -- --nocapture
//! ```
//!
//! (A state machine that ignores the command after a gap in the log indexes: it takes
//! new leaders' no-ops, so forced elections, and nothing else, to show.)
//!
//! A run that fails "without faults" points at the state machine itself (a
//! nondeterministic `apply`); one that keeps a few fault kinds says what it takes.
//!
//! ## Replaying a seed
//!
//! Every random choice comes from the seed, so a seed replays the same run (the
//! report's trace hashes are equal). Set the environment the report prints and run the
//! same test: [`Simulation::run`] then runs only that run, prints every event and its
//! trace hash. The variables: `RAFT_SIM_SEED` (the seed), `RAFT_SIM_SAFETY_TICKS` (the
//! safety phase's length), `RAFT_SIM_FAULTS` (`all`, `none`, or fault kinds such as
//! `crashes,snapshots`) and `RAFT_SIM_OPS` (the client operation budget). In code,
//! [`Simulation::replay`] runs a [`Replay`] (what the variables describe; it parses
//! the printed text) and returns its [`RunReport`].
//!
//! ## The built-in key/value campaigns
//!
//! The crate's own campaigns are the same builder on the built-in key/value store,
//! [`Simulation::kv`], whose clients also read (through the read index or a lease):
//!
//! ```no_run
//! use raft_testkit::Simulation;
//!
//! // sim --seeds 10000 --nodes 5 --membership
//! Simulation::kv()
//!     .nodes(5)
//!     .membership()
//!     .seeds(0..10_000)
//!     .jobs(2)
//!     .run()
//!     .assert_ok();
//! ```
//!
//! [`Simulation::lease_reads`], [`Simulation::membership`] and
//! [`Simulation::random_nodes`] are the `sim` binary's `--lease`, `--membership` and
//! absent `--nodes`; they work on your state machine too.
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
pub use simulation::{
    Fault, Faults, KeyValue, Machine, Model, NoModel, Replay, SeedFailure, Shrunk, Simulation,
    SimulationReport, Target,
};
