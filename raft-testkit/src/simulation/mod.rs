//! Testing your own [`StateMachine`] under the simulator: the [`Simulation`] builder.
//!
//! See the crate docs for a tutorial.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use raft_core::node::StateMachine;
use raft_core::LogIndex;
use rand_chacha::ChaCha8Rng;

mod faults;
mod replay;
mod report;
mod run;
mod user;

pub use faults::{Fault, Faults};
use replay::DEFAULT_REPLAY_COMMAND;
pub use replay::{Replay, REPLAY_FAULTS_VAR, REPLAY_OPS_VAR, REPLAY_SEED_VAR, REPLAY_TICKS_VAR};
pub use report::{SeedFailure, Shrunk, SimulationReport};
use user::{Commands, Invariant, UserWorkload};

use crate::linearizability::{search, LinResult, Search};
use crate::sim::{
    Broken, BrokenSnapshot, Call, Failure, OpCounts, Request, RunReport, SimConfig, Simulator,
    Workload,
};

/// A sequential specification of a state machine: what each command answers when
/// commands run one at a time. The simulator checks that the responses clients got can
/// be explained by some order of their commands that respects real time
/// (linearizability), with this model.
///
/// `Eq + Hash` let the checker remember model states it already explored.
///
/// ```
/// use raft_testkit::Model;
///
/// /// A counter: every command adds its first byte and answers the new total.
/// #[derive(Clone, Default, PartialEq, Eq, Hash)]
/// struct Counter(u64);
///
/// impl Model<u64> for Counter {
///     fn step(&mut self, command: &[u8]) -> u64 {
///         self.0 += u64::from(command.first().copied().unwrap_or(0));
///         self.0
///     }
/// }
/// ```
pub trait Model<R>: Clone + Eq + Hash {
    /// Applies `command` to the model and answers what the state machine should.
    fn step(&mut self, command: &[u8]) -> R;
}

mod sealed {
    use crate::sim::{RunReport, SimConfig};

    /// Runs one configured seed of a [`super::Target`].
    pub trait Run: Sync {
        fn run_config(&self, cfg: SimConfig, verbose: bool) -> RunReport;
    }
}

/// What a [`Simulation`] replicates and how its clients use it: a user's state machine
/// ([`Machine`], from [`Simulation::new`]) or the built-in key/value store
/// ([`KeyValue`], from [`Simulation::kv`]).
pub trait Target: sealed::Run {}

/// A user's state machine under test, with what its clients propose, its invariant and
/// its model: the [`Target`] of [`Simulation::new`].
pub struct Machine<S, M = NoModel> {
    make: Box<dyn Fn() -> S + Send + Sync>,
    commands: Option<Box<Commands>>,
    invariant: Option<Box<Invariant<S>>>,
    model: Option<M>,
}

impl<S, M> sealed::Run for Machine<S, M>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
    M: Model<S::Response> + Send + Sync,
{
    fn run_config(&self, cfg: SimConfig, verbose: bool) -> RunReport {
        let commands = self
            .commands
            .as_ref()
            .expect("Simulation::workload sets what clients propose");
        let workload = UserWorkload {
            make: &*self.make,
            commands: &**commands,
            invariant: self.invariant.as_deref(),
            model: self.model.clone(),
        };
        let mut sim = Simulator::with_workload(cfg, workload);
        sim.set_verbose(verbose);
        sim.run()
    }
}

impl<S, M> Target for Machine<S, M>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
    M: Model<S::Response> + Send + Sync,
{
}

/// The built-in key/value store, whose clients put unique values and get them back
/// (reads go through the protocol's read index or lease), checked key by key for
/// linearizability: the [`Target`] of [`Simulation::kv`], what the `sim` campaigns run.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyValue;

impl sealed::Run for KeyValue {
    fn run_config(&self, cfg: SimConfig, verbose: bool) -> RunReport {
        let mut sim = Simulator::new(cfg);
        sim.set_verbose(verbose);
        sim.run()
    }
}

impl Target for KeyValue {}

/// A simulation campaign: many seeds, each a whole simulated cluster run with faults,
/// checked, and on failure shrunk and reported with the command that replays it.
///
/// [`Simulation::new`] tests your state machine; [`Simulation::kv`] runs the built-in
/// key/value campaigns (what the `sim` binary and the crate's CI campaigns run).
///
/// ```
/// use raft_core::node::{RestoreError, StateMachine};
/// use raft_testkit::{Faults, Simulation};
///
/// /// Sums the numbers it is sent.
/// #[derive(Default)]
/// struct Sum(u64);
///
/// impl StateMachine for Sum {
///     type Response = u64;
///     fn apply(&mut self, _index: u64, command: &[u8]) -> u64 {
///         self.0 += u64::from(command[0]);
///         self.0
///     }
///     fn snapshot(&self) -> Option<Vec<u8>> {
///         Some(self.0.to_le_bytes().to_vec())
///     }
///     fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
///         let bytes = data.try_into().map_err(|_| RestoreError("not 8 bytes".into()))?;
///         self.0 = u64::from_le_bytes(bytes);
///         Ok(())
///     }
/// }
///
/// Simulation::new(Sum::default)
///     .nodes(3)
///     .workload(|rng| vec![rand::Rng::gen_range(rng, 1..10)])
///     .faults(Faults::all())
///     .seeds(0..3)
///     .run()
///     .assert_ok();
/// ```
///
/// The key/value campaign of the membership changes, on two threads:
///
/// ```no_run
/// use raft_testkit::Simulation;
///
/// let report = Simulation::kv().nodes(5).membership().seeds(0..10_000).jobs(2).run();
/// report.assert_ok();
/// ```
pub struct Simulation<T: Target> {
    target: T,
    nodes: Option<usize>,
    faults: Faults,
    seeds: Range<u64>,
    safety_ticks: Option<u64>,
    ops: Option<u64>,
    lease_reads: bool,
    membership: bool,
    broken: Option<Broken>,
    shrink: bool,
    jobs: usize,
    max_failures: usize,
    trace: bool,
    progress: bool,
    replay_command: String,
}

/// The model of a [`Simulation`] without one: responses are not checked against a
/// specification (nodes are still checked to agree). It has no values, so it is never
/// stepped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NoModel {}

impl<R> Model<R> for NoModel {
    fn step(&mut self, _command: &[u8]) -> R {
        match *self {}
    }
}

impl<S> Simulation<Machine<S, NoModel>>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
{
    /// A simulation whose nodes each run a state machine `make` returns: 5 nodes, every
    /// fault, seeds 0 to 99. Set the workload with [`Simulation::workload`].
    pub fn new(make: impl Fn() -> S + Send + Sync + 'static) -> Self {
        Simulation::with_target(Machine {
            make: Box::new(make),
            commands: None,
            invariant: None,
            model: None,
        })
    }
}

impl Simulation<KeyValue> {
    /// The built-in key/value store ([`KeyValue`]): 5 nodes, every fault, seeds 0 to 99.
    /// What the `sim` binary runs: `sim --seeds 10000 --nodes 5 --membership` is
    /// `Simulation::kv().nodes(5).membership().seeds(0..10_000)`.
    pub fn kv() -> Self {
        Simulation::with_target(KeyValue)
    }
}

impl<S, M> Simulation<Machine<S, M>>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
    M: Model<S::Response> + Send + Sync,
{
    /// What clients propose: each call draws one command from the seed's RNG (use it
    /// for every random choice, so that a seed replays).
    pub fn workload(
        mut self,
        commands: impl Fn(&mut ChaCha8Rng) -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        self.target.commands = Some(Box::new(commands));
        self
    }

    /// A sequential specification to check the clients' responses against
    /// (linearizability).
    pub fn model<M2: Model<S::Response> + Send + Sync>(
        self,
        model: M2,
    ) -> Simulation<Machine<S, M2>> {
        let Machine {
            make,
            commands,
            invariant,
            ..
        } = self.target;
        Simulation {
            target: Machine {
                make,
                commands,
                invariant,
                model: Some(model),
            },
            nodes: self.nodes,
            faults: self.faults,
            seeds: self.seeds,
            safety_ticks: self.safety_ticks,
            ops: self.ops,
            lease_reads: self.lease_reads,
            membership: self.membership,
            broken: self.broken,
            shrink: self.shrink,
            jobs: self.jobs,
            max_failures: self.max_failures,
            trace: self.trace,
            progress: self.progress,
            replay_command: self.replay_command,
        }
    }

    /// A check of the state machine's own state (an invariant such as "the total is
    /// constant"), run on every node after every command it applies. An `Err` fails
    /// the run with its message.
    pub fn invariant(
        mut self,
        invariant: impl Fn(&S) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.target.invariant = Some(Box::new(invariant));
        self
    }
}

impl<T: Target> Simulation<T> {
    fn with_target(target: T) -> Self {
        Simulation {
            target,
            nodes: Some(5),
            faults: Faults::all(),
            seeds: 0..100,
            safety_ticks: None,
            ops: None,
            lease_reads: false,
            membership: false,
            broken: None,
            shrink: true,
            jobs: 1,
            max_failures: 1,
            trace: false,
            progress: false,
            replay_command: DEFAULT_REPLAY_COMMAND.to_string(),
        }
    }

    /// The cluster size (1 to 7).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// A cluster size drawn from each seed, 3 to 7 (`sim` without `--nodes`).
    pub fn random_nodes(mut self) -> Self {
        self.nodes = None;
        self
    }

    /// The faults to inject (every kind by default).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The seeds to run.
    pub fn seeds(mut self, seeds: Range<u64>) -> Self {
        self.seeds = seeds;
        self
    }

    /// The length of each run's safety phase, in ticks (the default is drawn from the
    /// seed: 600 to 1,500). Shorter runs apply fewer commands.
    pub fn safety_ticks(mut self, ticks: u64) -> Self {
        self.safety_ticks = Some(ticks);
        self
    }

    /// The most client operations each run starts (the default: as many as the safety
    /// phase has time for).
    pub fn ops(mut self, ops: u64) -> Self {
        self.ops = Some(ops);
        self
    }

    /// Lease reads on every seed, with the check-quorum they need, clock rates within
    /// the drift the lease allows, and pauses and stalled syncs on (`sim --lease`).
    /// Without it, about a third of the seeds draw lease reads.
    pub fn lease_reads(mut self) -> Self {
        self.lease_reads = true;
        self
    }

    /// Membership changes on every seed, with one or two spare nodes to add
    /// (`sim --membership`). Without it, about 40% of the seeds draw them.
    pub fn membership(mut self) -> Self {
        self.membership = true;
        self
    }

    /// A deliberately broken protocol variant, to prove that the checks bite.
    ///
    /// # Panics
    /// [`Simulation::run`] panics without the `broken-variants` feature.
    pub fn broken(mut self, broken: Broken) -> Self {
        self.broken = Some(broken);
        self
    }

    /// Whether a failing seed is shrunk (on by default).
    pub fn shrink(mut self, shrink: bool) -> Self {
        self.shrink = shrink;
        self
    }

    /// Worker threads (1 by default). Each seed runs on one thread, so the results do
    /// not depend on this.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Stop after this many failing seeds (1 by default: the first).
    pub fn max_failures(mut self, failures: usize) -> Self {
        self.max_failures = failures.max(1);
        self
    }

    /// Print every event of every run as it happens (for one seed).
    pub fn trace(mut self, trace: bool) -> Self {
        self.trace = trace;
        self
    }

    /// Print the number of seeds run, every 1,000 seeds, on stderr.
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The command a failure report tells to run after the replay environment
    /// (by default `cargo test <this test> -- --nocapture`).
    pub fn replay_command(mut self, command: impl Into<String>) -> Self {
        self.replay_command = command.into();
        self
    }
}
