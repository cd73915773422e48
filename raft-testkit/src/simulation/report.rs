//! What a [`Simulation`](super::Simulation) reports: its failing seeds, each shrunk.

use super::*;

fn add_ops(total: &mut OpCounts, run: &OpCounts) {
    total.writes += run.writes;
    total.reads += run.reads;
    total.ok += run.ok;
    total.never_returned += run.never_returned;
    total.checked += run.checked;
}

/// A failing seed of a [`Simulation`], with the smallest failing run shrinking found.
#[derive(Clone, Debug)]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// Its safety phase's length, in ticks.
    pub safety_ticks: u64,
    /// The failing run.
    pub run: Replay,
    /// Its trace hash.
    pub trace_hash: u64,
    /// Its client operations.
    pub ops: OpCounts,
    /// What broke, when, and the last events before it.
    pub failure: Failure,
    /// A smaller run of the same seed that fails too.
    pub shrunk: Option<Shrunk>,
    /// The command the report tells to run after the replay environment.
    pub replay_command: String,
}

/// A smaller failing run that shrinking found: a shorter safety phase, fewer fault
/// kinds (possibly none), fewer client operations.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The run, every setting shrinking changed included: what replays it.
    pub run: Replay,
    /// Its failure.
    pub failure: Failure,
    /// Its trace hash (a replay of `run` gives the same).
    pub trace_hash: u64,
    /// Its client operations.
    pub ops: OpCounts,
}

impl SeedFailure {
    /// The smallest failing run found: the shrunk one, else the original.
    pub fn replay(&self) -> &Replay {
        self.shrunk.as_ref().map_or(&self.run, |s| &s.run)
    }

    /// The environment that replays the smallest failing run
    /// ([`SeedFailure::replay`]'s `Display`).
    pub fn replay_env(&self) -> String {
        self.replay().to_string()
    }

    /// The trace hash of the smallest failing run.
    pub fn replay_trace_hash(&self) -> u64 {
        self.shrunk
            .as_ref()
            .map_or(self.trace_hash, |s| s.trace_hash)
    }
}

impl fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ticks, failure, ops) = match &self.shrunk {
            Some(s) => (
                s.run.safety_ticks.unwrap_or(self.safety_ticks),
                &s.failure,
                s.ops,
            ),
            None => (self.safety_ticks, &self.failure, self.ops),
        };
        let faults = match self.replay().faults {
            Some(f) if f.is_none() => ", without faults".to_string(),
            Some(f) if f != Faults::all() => format!(", faults {f}"),
            _ => String::new(),
        };
        writeln!(
            f,
            "seed {} ({} nodes) failed at tick {:.3} of a {ticks}-tick safety phase{faults}, \
             {} client operations: {}",
            self.seed,
            failure.nodes,
            failure.at_tick,
            ops.writes + ops.reads,
            failure.violation
        )?;
        if self.shrunk.is_some() {
            writeln!(
                f,
                "(shrunk from a {}-tick safety phase with {} client operations, which failed with: {})",
                self.safety_ticks,
                self.ops.writes + self.ops.reads,
                self.failure.violation
            )?;
        }
        writeln!(f, "last events:")?;
        for line in &failure.trace {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "trace hash: {:016x}", self.replay_trace_hash())?;
        write!(
            f,
            "replay with its whole trace: {} {}",
            self.replay_env(),
            self.replay_command
        )
    }
}

/// What a [`Simulation`] found.
#[derive(Clone, Debug)]
pub struct SimulationReport {
    /// Seeds run.
    pub runs: u64,
    /// Client operations over all runs.
    pub ops: OpCounts,
    /// The first failing seed, if any (the campaign stops after
    /// [`Simulation::max_failures`]).
    pub failure: Option<SeedFailure>,
    /// Every failing seed, in seed order.
    pub failures: Vec<SeedFailure>,
    /// Every seed run with its trace hash (equal for two runs of the same seed).
    pub hashes: Vec<(u64, u64)>,
    /// Every seed's run, in seed order: faults injected, events, ticks, liveness.
    pub reports: Vec<RunReport>,
}

impl SimulationReport {
    pub(super) fn new(reports: Vec<RunReport>, failures: Vec<SeedFailure>) -> Self {
        let mut ops = OpCounts::default();
        for r in &reports {
            add_ops(&mut ops, &r.ops);
        }
        SimulationReport {
            runs: reports.len() as u64,
            ops,
            failure: failures.first().cloned(),
            failures,
            hashes: reports.iter().map(|r| (r.seed, r.trace_hash)).collect(),
            reports,
        }
    }

    /// Panics with the failure, the replay command and the trace if a seed failed.
    ///
    /// # Panics
    /// If a seed failed.
    pub fn assert_ok(&self) {
        if let Some(f) = &self.failure {
            panic!("{f}");
        }
    }
}
