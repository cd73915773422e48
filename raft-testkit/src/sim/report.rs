//! What a run reports: operation counts, the failure (with how to replay it) and the run
//! summary.

use std::collections::BTreeMap;
use std::fmt;

use raft_core::NodeId;

use crate::checker::Violation;

/// Operation counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Writes invoked.
    pub writes: u64,
    /// Reads invoked.
    pub reads: u64,
    /// Operations that returned.
    pub ok: u64,
    /// Operations that never returned (timed out or still open at the end).
    pub never_returned: u64,
    /// Operations the linearizability checker examined (after pruning).
    pub checked: u64,
}

/// A failed run: what broke, when, and the last events before it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed, to replay.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Whether the size was drawn from the seed (replay without `--nodes`).
    pub nodes_drawn: bool,
    /// Whether lease reads were forced on (replay with `--lease`).
    pub lease_forced: bool,
    /// Whether membership changes were forced on (replay with `--membership`).
    pub membership_forced: bool,
    /// What broke.
    pub violation: Violation,
    /// When, in ticks.
    pub at_tick: f64,
    /// The last events, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({} nodes) failed at tick {:.3}: {}",
            self.seed, self.nodes, self.at_tick, self.violation
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        let nodes = if self.nodes_drawn {
            String::new()
        } else {
            format!(" --nodes {}", self.nodes)
        };
        let lease = if self.lease_forced { " --lease" } else { "" };
        let membership = if self.membership_forced {
            " --membership"
        } else {
            ""
        };
        write!(
            f,
            "replay: cargo run --release -p raft-testkit --bin sim -- --seed {}{nodes}{lease}{membership} --trace",
            self.seed
        )
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Faults injected, by kind (including message-level faults).
    pub faults: BTreeMap<&'static str, u64>,
    /// Client operations.
    pub ops: OpCounts,
    /// Events processed.
    pub events: u64,
    /// Simulated ticks elapsed.
    pub ticks: u64,
    /// Ticks from healing to the first new commit in the liveness phase.
    pub liveness_ticks: Option<u64>,
    /// Whether the linearizability search gave up on some key (budget exceeded).
    pub lin_unknown: bool,
    /// A hash of every event: equal for two runs of the same seed.
    pub trace_hash: u64,
    /// Snapshots each node installed from a leader.
    pub snapshots_installed: BTreeMap<NodeId, u64>,
    /// The failure, if any.
    pub failure: Option<Failure>,
}
