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

/// One kind of fault a [`Simulation`] can inject. [`Faults`] is a set of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Messages lost.
    Loss,
    /// Messages delivered twice.
    Duplication,
    /// Messages delayed by a long tail (so overtaken by later ones: reordering).
    Delay,
    /// Network partitions: symmetric, one-way, an isolated leader, a bridge node.
    Partitions,
    /// Crashes that lose a random part of the unsynced writes (torn writes), with
    /// restarts after a while; new leaders crashed right after their election.
    Crashes,
    /// Process restarts: a crash followed by a restart within a tick.
    Restarts,
    /// Nodes paused (a stopped process, a long GC), then resumed.
    Pauses,
    /// Stalled syncs: a node blocked in a long fsync misses ticks and queues messages.
    Stalls,
    /// Node clocks running at different rates.
    ClockSkew,
    /// Elections forced on random nodes.
    Elections,
    /// Leadership transfers.
    Transfers,
    /// Membership changes: learners added and promoted, voters removed and replaced,
    /// joint configurations.
    Membership,
    /// Snapshots every so many entries and log compaction, so that lagging nodes catch
    /// up by snapshots sent over the faulty network, and restarted nodes restore from
    /// their stored snapshot.
    Snapshots,
}

impl Fault {
    /// Every kind, in the order shrinking tries to drop them.
    pub const ALL: [Fault; 13] = [
        Fault::Loss,
        Fault::Duplication,
        Fault::Delay,
        Fault::Partitions,
        Fault::Crashes,
        Fault::Restarts,
        Fault::Pauses,
        Fault::Stalls,
        Fault::ClockSkew,
        Fault::Elections,
        Fault::Transfers,
        Fault::Membership,
        Fault::Snapshots,
    ];

    /// The kind's name in [`REPLAY_FAULTS_VAR`] (`loss`, `clock-skew`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Loss => "loss",
            Fault::Duplication => "duplication",
            Fault::Delay => "delay",
            Fault::Partitions => "partitions",
            Fault::Crashes => "crashes",
            Fault::Restarts => "restarts",
            Fault::Pauses => "pauses",
            Fault::Stalls => "stalls",
            Fault::ClockSkew => "clock-skew",
            Fault::Elections => "elections",
            Fault::Transfers => "transfers",
            Fault::Membership => "membership",
            Fault::Snapshots => "snapshots",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The faults a [`Simulation`] injects: a set of [`Fault`] kinds. Each seed draws its
/// own mix and intensity of the kinds in the set ("swarm testing"), so some runs hammer
/// one kind and others combine many.
///
/// ```
/// use raft_testkit::{Fault, Faults};
///
/// let no_crashes = Faults::all().without(Fault::Crashes).without(Fault::Restarts);
/// assert!(!no_crashes.contains(Fault::Crashes));
/// assert_eq!(no_crashes.to_string().parse::<Faults>(), Ok(no_crashes));
/// assert_eq!(Faults::none().to_string(), "none");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Faults(u16);

impl Faults {
    /// Every kind the simulator knows.
    pub fn all() -> Self {
        Fault::ALL.iter().fold(Faults(0), |f, k| f.with(*k))
    }

    /// None: a calm cluster (a first smoke test of the state machine). The protocol
    /// options and the clients are still drawn from the seed.
    pub fn none() -> Self {
        Faults(0)
    }

    /// Only the given kinds.
    pub fn only(kinds: &[Fault]) -> Self {
        kinds.iter().fold(Faults(0), |f, k| f.with(*k))
    }

    /// This set and `kind`.
    #[must_use]
    pub fn with(self, kind: Fault) -> Self {
        Faults(self.0 | kind.bit())
    }

    /// This set without `kind`.
    #[must_use]
    pub fn without(self, kind: Fault) -> Self {
        Faults(self.0 & !kind.bit())
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: Fault) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set.
    pub fn kinds(self) -> impl Iterator<Item = Fault> {
        Fault::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// Turns off in `cfg` every fault this set leaves out. With every kind it changes
    /// nothing, so [`Faults::all`] runs exactly what [`SimConfig::random`] drew.
    fn restrict(self, cfg: &mut SimConfig) {
        let f = &mut cfg.faults;
        if !self.contains(Fault::Loss) {
            f.link.loss = 0.0;
        }
        if !self.contains(Fault::Duplication) {
            f.link.duplicate = 0.0;
        }
        if !self.contains(Fault::Delay) {
            f.link.long_tail = 0.0;
        }
        if !self.contains(Fault::Partitions) {
            f.partition_symmetric = false;
            f.partition_one_way = false;
            f.isolate_leader = false;
            f.bridge = false;
        }
        if !self.contains(Fault::Crashes) {
            f.crash = false;
            f.new_leader_crash = 0.0;
        }
        if !self.contains(Fault::Restarts) {
            f.quick_restart = false;
        }
        if !self.contains(Fault::Pauses) {
            f.pause = false;
        }
        if !self.contains(Fault::Stalls) {
            f.stall = false;
        }
        if !self.contains(Fault::ClockSkew) {
            f.clock_skew_max = 0.0;
        }
        if !self.contains(Fault::Elections) {
            f.campaign = false;
        }
        if !self.contains(Fault::Transfers) {
            f.transfer = false;
        }
        if !self.contains(Fault::Membership) {
            f.membership = false;
            cfg.spare_nodes = 0;
        }
        if !self.contains(Fault::Snapshots) {
            cfg.snapshots = None;
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults::all()
    }
}

impl fmt::Display for Faults {
    /// `all`, `none`, or the kinds' names separated by commas (what
    /// [`REPLAY_FAULTS_VAR`] takes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Faults::all() {
            return f.write_str("all");
        }
        if self.is_none() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.kinds().map(Fault::name).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faults({self})")
    }
}

impl FromStr for Faults {
    type Err = String;

    /// Parses what [`Faults`]' `Display` writes.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => return Ok(Faults::all()),
            "none" | "" => return Ok(Faults::none()),
            _ => {}
        }
        s.split(',').try_fold(Faults::none(), |set, name| {
            let name = name.trim();
            Fault::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .map(|k| set.with(k))
                .ok_or_else(|| {
                    let known: Vec<&str> = Fault::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown fault kind {name:?} (known: {})", known.join(", "))
                })
        })
    }
}

/// One node's state machine as the simulator holds it: the user's machine, the index it
/// applied, and the operations it applied (so that a retried command takes effect once).
pub(crate) struct Replica<S: StateMachine> {
    machine: S,
    applied: LogIndex,
    /// Operation id -> the index where it took effect and its response (unknown after a
    /// restore from a snapshot: responses are not in snapshots).
    sessions: BTreeMap<u64, (LogIndex, Option<S::Response>)>,
}

/// A user's state machine, workload and model as a [`Workload`] of the simulator.
pub(crate) struct UserWorkload<'a, S: StateMachine, M> {
    make: &'a dyn Fn() -> S,
    commands: &'a Commands,
    invariant: Option<&'a Invariant<S>>,
    model: Option<M>,
}

/// What clients propose: one command drawn from the seed's RNG per call.
type Commands = dyn Fn(&mut ChaCha8Rng) -> Vec<u8> + Send + Sync;

/// A check of a state machine's own state, run after every command it applies.
type Invariant<S> = dyn Fn(&S) -> Result<(), String> + Send + Sync;

/// The operation id of a harness-only command that the user's machine never sees (the
/// liveness phase's marker write).
const HARNESS_OP: u64 = u64::MAX;

impl<S: StateMachine, M> UserWorkload<'_, S, M> {
    fn user_bytes(&self, m: &S) -> Vec<u8> {
        m.snapshot().expect(
            "the simulator compares nodes through StateMachine::snapshot: \
             implement snapshot and restore",
        )
    }
}

impl<S, M> Workload for UserWorkload<'_, S, M>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
    M: Model<S::Response>,
{
    type Machine = Replica<S>;
    type Input = Vec<u8>;
    type Output = S::Response;

    fn fresh(&self) -> Replica<S> {
        Replica {
            machine: (self.make)(),
            applied: 0,
            sessions: BTreeMap::new(),
        }
    }

    fn apply(&self, m: &mut Replica<S>, index: LogIndex, data: &[u8]) {
        assert_eq!(
            index,
            m.applied + 1,
            "applying {index} after {}: entries must be applied in order",
            m.applied
        );
        m.applied = index;
        let Some((op, command)) = data.split_first_chunk::<8>() else {
            return; // not a command
        };
        let op = u64::from_le_bytes(*op);
        if op == HARNESS_OP || m.sessions.contains_key(&op) {
            return;
        }
        let response = m.machine.apply(index, command);
        m.sessions.insert(op, (index, Some(response)));
        if let Some(invariant) = self.invariant {
            if let Err(broken) = invariant(&m.machine) {
                // Caught by the simulator and reported as the run's failure.
                panic!("the state machine's invariant broke applying index {index}: {broken}");
            }
        }
    }

    fn applied_index(&self, m: &Replica<S>) -> LogIndex {
        m.applied
    }

    fn applied_at(&self, m: &Replica<S>, op: u64) -> Option<LogIndex> {
        m.sessions.get(&op).map(|s| s.0)
    }

    fn write_output(&self, m: &Replica<S>, op: u64) -> Option<S::Response> {
        m.sessions.get(&op).and_then(|s| s.1.clone())
    }

    fn snapshot(&self, m: &Replica<S>, broken: Option<BrokenSnapshot>) -> Bytes {
        let mut b = Vec::new();
        b.extend_from_slice(&m.applied.to_le_bytes());
        if broken == Some(BrokenSnapshot::WithoutSessions) {
            b.extend_from_slice(&0u64.to_le_bytes());
        } else {
            b.extend_from_slice(&(m.sessions.len() as u64).to_le_bytes());
            for (op, (index, _)) in &m.sessions {
                b.extend_from_slice(&op.to_le_bytes());
                b.extend_from_slice(&index.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.user_bytes(&m.machine));
        b.into()
    }

    fn restore(&self, data: &[u8]) -> Result<Replica<S>, String> {
        let mut rest = data;
        let mut word = || -> Result<u64, String> {
            let (w, tail) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| format!("snapshot of {} bytes is truncated", data.len()))?;
            rest = tail;
            Ok(u64::from_le_bytes(*w))
        };
        let applied = word()?;
        let count = word()?;
        let mut sessions = BTreeMap::new();
        for _ in 0..count {
            let op = word()?;
            let index = word()?;
            sessions.insert(op, (index, None));
        }
        let mut machine = (self.make)();
        machine.restore(rest).map_err(|e| e.to_string())?;
        Ok(Replica {
            machine,
            applied,
            sessions,
        })
    }

    fn duplicate(&self, m: &Replica<S>) -> Replica<S> {
        let mut machine = (self.make)();
        machine
            .restore(&self.user_bytes(&m.machine))
            .expect("a state machine restores its own snapshot");
        Replica {
            machine,
            applied: m.applied,
            sessions: m.sessions.clone(),
        }
    }

    fn same(&self, a: &Replica<S>, b: &Replica<S>) -> bool {
        a.applied == b.applied
            && a.sessions.len() == b.sessions.len()
            && a.sessions
                .iter()
                .zip(&b.sessions)
                .all(|(x, y)| x.0 == y.0 && x.1 .0 == y.1 .0)
            && self.user_bytes(&a.machine) == self.user_bytes(&b.machine)
    }

    fn describe(&self, m: &Replica<S>) -> String {
        let bytes = self.user_bytes(&m.machine);
        format!(
            "{} commands applied, a {}-byte snapshot with digest {:016x}",
            m.sessions.len(),
            bytes.len(),
            crate::checker::digest(&bytes)
        )
    }

    fn draw(&mut self, rng: &mut ChaCha8Rng, _op: u64, ops: &mut OpCounts) -> Vec<u8> {
        ops.writes += 1;
        (self.commands)(rng)
    }

    fn request(&self, op: u64, input: &Vec<u8>) -> Request {
        let mut b = Vec::with_capacity(8 + input.len());
        b.extend_from_slice(&op.to_le_bytes());
        b.extend_from_slice(input);
        Request::Write(b.into())
    }

    fn read(&self, _m: &Replica<S>, _input: &Vec<u8>) -> S::Response {
        unreachable!("a user workload only writes: request() never asks for a read")
    }

    fn marker(&self, _op: u64) -> Bytes {
        Bytes::copy_from_slice(&HARNESS_OP.to_le_bytes())
    }

    fn input_words(&self, input: &Vec<u8>) -> [u64; 2] {
        [input.len() as u64, crate::checker::digest(input)]
    }

    fn output_word(&self, output: Option<&S::Response>) -> u64 {
        output.map_or(1, |o| crate::checker::digest(format!("{o:?}").as_bytes()))
    }

    fn check(&self, history: &[Call<Vec<u8>, S::Response>], budget_steps: u64) -> LinResult {
        match &self.model {
            Some(model) => check_model(history, model.clone(), budget_steps),
            None => LinResult::Ok,
        }
    }

    fn explain(&self, history: &[Call<Vec<u8>, S::Response>], _key: u64) -> Vec<String> {
        history
            .iter()
            .rev()
            .take(12)
            .map(|c| {
                let when = match c.ret {
                    Some(r) => format!("[{}, {r}]", c.call),
                    None => format!("[{}, never returned]", c.call),
                };
                format!("c{} {:?} -> {:?} {when}", c.client, c.input, c.output)
            })
            .collect()
    }
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

/// The environment variable that makes [`Simulation::run`] replay one seed with its
/// whole trace printed.
pub const REPLAY_SEED_VAR: &str = "RAFT_SIM_SEED";
/// The environment variable that fixes the safety phase's length of a replay (a shrunk
/// run's).
pub const REPLAY_TICKS_VAR: &str = "RAFT_SIM_SAFETY_TICKS";
/// The environment variable that sets a replay's faults: `none`, `all`, or kinds
/// separated by commas (`crashes,snapshots`; see [`Fault::name`]).
pub const REPLAY_FAULTS_VAR: &str = "RAFT_SIM_FAULTS";
/// The environment variable that sets a replay's client operation budget (a shrunk
/// run's).
pub const REPLAY_OPS_VAR: &str = "RAFT_SIM_OPS";

/// The command a failure report tells to run, after the replay environment, unless
/// [`Simulation::replay_command`] gives another.
const DEFAULT_REPLAY_COMMAND: &str = "cargo test <this test> -- --nocapture";

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

    /// The configuration of one run of `seed`: drawn from the seed, then the builder's
    /// settings, then the replay's or shrunk run's.
    fn config(&self, run: &Replay) -> SimConfig {
        let mut cfg = SimConfig::random(run.seed, self.nodes);
        if self.lease_reads {
            cfg.force_lease_reads();
        }
        if self.membership {
            cfg.force_membership();
        }
        cfg.broken = self.broken;
        if let Some(ticks) = run.safety_ticks.or(self.safety_ticks) {
            cfg.safety_ticks = ticks;
        }
        cfg.ops_max = run.ops.or(self.ops);
        run.faults.unwrap_or(self.faults).restrict(&mut cfg);
        cfg
    }

    /// Runs one seed (or a shrunk run of it) as a [`Replay`] describes it, such as
    /// [`SeedFailure::replay`]: the same run, so the same trace hash.
    pub fn replay(&self, run: &Replay) -> RunReport {
        self.run_one(run, self.trace)
    }

    fn run_one(&self, run: &Replay, verbose: bool) -> RunReport {
        self.target.run_config(self.config(run), verbose)
    }

    /// Runs every seed (or only the run the replay environment variables describe,
    /// printing its trace) and reports. Each failing seed is shrunk; see
    /// [`SeedFailure`].
    ///
    /// # Panics
    /// If no workload was set.
    pub fn run(self) -> SimulationReport {
        if let Some(replay) = Replay::from_env() {
            let report = self.run_one(&replay, true);
            println!("trace hash: {:016x}", report.trace_hash);
            let failures = report
                .failure
                .clone()
                .map(|failure| self.failed(&replay, &report, failure, None))
                .into_iter()
                .collect();
            return SimulationReport::new(vec![report], failures);
        }
        let count = self.seeds.end.saturating_sub(self.seeds.start);
        let next = AtomicU64::new(0);
        let failed = AtomicU64::new(0);
        let reports = Mutex::new(Vec::new());
        let began = Instant::now();
        let work = || loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= count || failed.load(Ordering::Relaxed) >= self.max_failures as u64 {
                return;
            }
            let report = self.replay(&Replay::seed(self.seeds.start + k));
            if report.failure.is_some() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            let done = {
                let mut r = reports.lock().expect("not poisoned");
                r.push(report);
                r.len()
            };
            if self.progress && done % 1000 == 0 {
                eprintln!("{done} seeds in {:.0?}", began.elapsed());
            }
        };
        if self.jobs == 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..self.jobs {
                    s.spawn(work);
                }
            });
        }
        let mut reports = reports.into_inner().expect("not poisoned");
        reports.sort_by_key(|r| r.seed);
        let failures = reports
            .iter()
            .filter_map(|r| {
                let failure = r.failure.clone()?;
                let run = Replay::seed(r.seed);
                let shrunk = if self.shrink {
                    self.shrink_run(&run, r)
                } else {
                    None
                };
                Some(self.failed(&run, r, failure, shrunk))
            })
            .collect();
        SimulationReport::new(reports, failures)
    }

    /// Looks for a smaller failing run of the failing `run` (whose report is `report`):
    /// halves the safety phase while the run still fails; tries it without faults,
    /// else without each fault kind in turn (keeping each drop that still fails); then
    /// halves the client operation budget while it still fails; and again while a pass
    /// shrinks (three passes at most). The smallest failing run found, if smaller than
    /// the original.
    fn shrink_run(&self, run: &Replay, report: &RunReport) -> Option<Shrunk> {
        let mut best: Option<Shrunk> = None;
        let mut current = Replay {
            seed: run.seed,
            safety_ticks: Some(self.config(run).safety_ticks),
            faults: Some(run.faults.unwrap_or(self.faults)),
            ops: run.ops.or(self.ops),
        };
        let mut current_ops = report.ops.writes + report.ops.reads;
        let attempt = |candidate: Replay, best: &mut Option<Shrunk>| -> Option<u64> {
            let r = self.run_one(&candidate, false);
            let failure = r.failure?;
            *best = Some(Shrunk {
                run: candidate,
                failure,
                trace_hash: r.trace_hash,
                ops: r.ops,
            });
            Some(r.ops.writes + r.ops.reads)
        };
        // Each pass can make the next one find more (a run without some fault kind may
        // fail sooner): repeat while a pass shrinks, a few times at most.
        for _pass in 0..3 {
            let before = current.clone();
            // A shorter safety phase.
            while let Some(ticks) = current.safety_ticks.map(|t| t / 2).filter(|t| *t >= 5) {
                let candidate = Replay {
                    safety_ticks: Some(ticks),
                    ..current.clone()
                };
                let Some(ops) = attempt(candidate.clone(), &mut best) else {
                    break;
                };
                current = candidate;
                current_ops = ops;
            }
            // Fewer fault kinds: none at all, else one kind less at a time.
            let faults = current.faults.unwrap_or(self.faults);
            if !faults.is_none() {
                let calm = Replay {
                    faults: Some(Faults::none()),
                    ..current.clone()
                };
                if let Some(ops) = attempt(calm.clone(), &mut best) {
                    current = calm;
                    current_ops = ops;
                } else {
                    for kind in faults.kinds() {
                        let set = current.faults.unwrap_or(self.faults).without(kind);
                        let candidate = Replay {
                            faults: Some(set),
                            ..current.clone()
                        };
                        if let Some(ops) = attempt(candidate.clone(), &mut best) {
                            current = candidate;
                            current_ops = ops;
                        }
                    }
                }
            }
            // Fewer client operations.
            loop {
                let budget = current_ops / 2;
                if budget == 0 {
                    break;
                }
                let candidate = Replay {
                    ops: Some(budget),
                    ..current.clone()
                };
                let Some(ops) = attempt(candidate.clone(), &mut best) else {
                    break;
                };
                current = candidate;
                current_ops = ops;
            }
            if current == before {
                break;
            }
        }
        best
    }

    fn failed(
        &self,
        run: &Replay,
        report: &RunReport,
        failure: Failure,
        shrunk: Option<Shrunk>,
    ) -> SeedFailure {
        let cfg = self.config(run);
        SeedFailure {
            seed: run.seed,
            safety_ticks: cfg.safety_ticks,
            run: Replay {
                seed: run.seed,
                safety_ticks: run.safety_ticks,
                faults: run.faults,
                ops: run.ops,
            },
            trace_hash: report.trace_hash,
            ops: report.ops,
            failure,
            shrunk,
            replay_command: self.replay_command.clone(),
        }
    }
}

/// One run of a [`Simulation`]: a seed, and what a replay or a shrunk run changes in it
/// (`None`: the simulation's setting). Its `Display` is the replay environment
/// (`RAFT_SIM_SEED=17 RAFT_SIM_SAFETY_TICKS=43 ...`), which `FromStr` parses back.
///
/// ```
/// use raft_testkit::{Fault, Faults, Replay};
///
/// let run = Replay {
///     seed: 17,
///     safety_ticks: Some(43),
///     faults: Some(Faults::only(&[Fault::Crashes, Fault::Snapshots])),
///     ops: Some(12),
/// };
/// let env = run.to_string();
/// assert_eq!(
///     env,
///     "RAFT_SIM_SEED=17 RAFT_SIM_SAFETY_TICKS=43 RAFT_SIM_FAULTS=crashes,snapshots RAFT_SIM_OPS=12"
/// );
/// assert_eq!(env.parse::<Replay>(), Ok(run));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The seed ([`REPLAY_SEED_VAR`]).
    pub seed: u64,
    /// The safety phase's length in ticks ([`REPLAY_TICKS_VAR`]).
    pub safety_ticks: Option<u64>,
    /// The faults ([`REPLAY_FAULTS_VAR`]).
    pub faults: Option<Faults>,
    /// The client operation budget ([`REPLAY_OPS_VAR`]).
    pub ops: Option<u64>,
}

impl Replay {
    /// `seed` as the simulation sets it up.
    pub fn seed(seed: u64) -> Self {
        Replay {
            seed,
            safety_ticks: None,
            faults: None,
            ops: None,
        }
    }

    /// The run the replay environment variables describe, if [`REPLAY_SEED_VAR`] is
    /// set.
    ///
    /// # Panics
    /// If a variable is set to something that does not parse.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok();
        let seed = var(REPLAY_SEED_VAR)?;
        let mut text = format!("{REPLAY_SEED_VAR}={seed}");
        for name in [REPLAY_TICKS_VAR, REPLAY_FAULTS_VAR, REPLAY_OPS_VAR] {
            if let Some(v) = var(name) {
                text.push_str(&format!(" {name}={v}"));
            }
        }
        Some(text.parse().unwrap_or_else(|e| panic!("{e}")))
    }
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{REPLAY_SEED_VAR}={}", self.seed)?;
        if let Some(t) = self.safety_ticks {
            write!(f, " {REPLAY_TICKS_VAR}={t}")?;
        }
        if let Some(faults) = self.faults {
            write!(f, " {REPLAY_FAULTS_VAR}={faults}")?;
        }
        if let Some(ops) = self.ops {
            write!(f, " {REPLAY_OPS_VAR}={ops}")?;
        }
        Ok(())
    }
}

impl FromStr for Replay {
    type Err = String;

    /// Parses `NAME=value` words separated by spaces; [`REPLAY_SEED_VAR`] is required.
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |name: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("{name}={v:?}: {e}"))
        };
        let (mut seed, mut run) = (None, Replay::seed(0));
        for word in s.split_whitespace() {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not NAME=value"))?;
            match name {
                REPLAY_SEED_VAR => seed = Some(number(name, value)?),
                REPLAY_TICKS_VAR => run.safety_ticks = Some(number(name, value)?),
                REPLAY_OPS_VAR => run.ops = Some(number(name, value)?),
                REPLAY_FAULTS_VAR => {
                    run.faults = Some(value.parse().map_err(|e| format!("{name}: {e}"))?)
                }
                _ => return Err(format!("unknown replay variable {name}")),
            }
        }
        run.seed = seed.ok_or_else(|| format!("no {REPLAY_SEED_VAR} in {s:?}"))?;
        Ok(run)
    }
}

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
    fn new(reports: Vec<RunReport>, failures: Vec<SeedFailure>) -> Self {
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

/// Checks a history of commands against `model` (Wing-Gong-Lowe, as for the key/value
/// histories): some order of the commands that respects real time must give every
/// returned output. A command that never returned may have taken effect or not; one that
/// returned without an output (its first answer was lost) may have answered anything.
pub(crate) fn check_model<R: PartialEq + fmt::Debug, M: Model<R>>(
    history: &[Call<Vec<u8>, R>],
    model: M,
    budget_steps: u64,
) -> LinResult {
    let step = |state: &M, c: &Call<Vec<u8>, R>| {
        let mut next = state.clone();
        let answer = next.step(&c.input);
        match &c.output {
            Some(output) if *output != answer => None,
            _ => Some(next),
        }
    };
    match search(history, |c| (c.call, c.ret), model, step, budget_steps) {
        Search::Ok => LinResult::Ok,
        Search::Unknown => LinResult::Unknown { key: 0 },
        Search::Illegal { depth, stuck } => {
            let stuck = stuck.map_or_else(|| "?".to_string(), |i| format!("{:?}", history[i]));
            LinResult::Illegal {
                key: 0,
                detail: format!(
                    "{} commands; at most {depth} could be linearized; stuck before {stuck}",
                    history.len()
                ),
            }
        }
    }
}
