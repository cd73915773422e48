//! Testing your own [`StateMachine`] under the simulator: the [`Simulation`] builder.
//!
//! See the crate docs for a tutorial.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::ops::Range;

use bytes::Bytes;
use raft_core::node::StateMachine;
use raft_core::LogIndex;
use rand_chacha::ChaCha8Rng;

use crate::linearizability::{search, LinResult, Search};
use crate::sim::{
    BrokenSnapshot, Call, Failure, OpCounts, Request, SimConfig, Simulator, Workload,
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

/// The faults a [`Simulation`] injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// None: a calm cluster (a first smoke test of the state machine).
    None,
    /// Every kind the simulator knows, each seed drawing its own mix: message loss,
    /// duplication and reordering, partitions, crashes with torn unsynced writes,
    /// restarts, pauses, stalled syncs, clock skew, forced elections, leadership
    /// transfers, membership changes, snapshots installed over a lossy network.
    All,
}

impl Faults {
    /// [`Faults::All`].
    pub fn all() -> Self {
        Faults::All
    }

    /// [`Faults::None`].
    pub fn none() -> Self {
        Faults::None
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
type Commands = dyn Fn(&mut ChaCha8Rng) -> Vec<u8>;

/// A check of a state machine's own state, run after every command it applies.
type Invariant<S> = dyn Fn(&S) -> Result<(), String>;

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

/// A simulation campaign of a user's state machine: many seeds, each a whole simulated
/// cluster run with faults, checked, and on failure shrunk and reported with the
/// command that replays it.
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
pub struct Simulation<S: StateMachine, M = NoModel> {
    make: Box<dyn Fn() -> S>,
    commands: Option<Box<Commands>>,
    invariant: Option<Box<Invariant<S>>>,
    model: Option<M>,
    nodes: usize,
    faults: Faults,
    seeds: Range<u64>,
    safety_ticks: Option<u64>,
    shrink: bool,
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
/// The environment variable that turns a replay's faults off (`none`: a shrunk run that
/// fails without faults).
pub const REPLAY_FAULTS_VAR: &str = "RAFT_SIM_FAULTS";

impl<S> Simulation<S, NoModel>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
{
    /// A simulation whose nodes each run a state machine `make` returns: 5 nodes, every
    /// fault, seeds 0 to 99. Set the workload with [`Simulation::workload`].
    pub fn new(make: impl Fn() -> S + 'static) -> Self {
        Simulation {
            make: Box::new(make),
            commands: None,
            invariant: None,
            model: None,
            nodes: 5,
            faults: Faults::All,
            seeds: 0..100,
            safety_ticks: None,
            shrink: true,
        }
    }
}

impl<S, M> Simulation<S, M>
where
    S: StateMachine,
    S::Response: Clone + fmt::Debug + PartialEq,
    M: Model<S::Response> + 'static,
{
    /// The cluster size (1 to 7).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// What clients propose: each call draws one command from the seed's RNG (use it
    /// for every random choice, so that a seed replays).
    pub fn workload(mut self, commands: impl Fn(&mut ChaCha8Rng) -> Vec<u8> + 'static) -> Self {
        self.commands = Some(Box::new(commands));
        self
    }

    /// A sequential specification to check the clients' responses against
    /// (linearizability).
    pub fn model<M2: Model<S::Response> + 'static>(self, model: M2) -> Simulation<S, M2> {
        Simulation {
            make: self.make,
            commands: self.commands,
            invariant: self.invariant,
            model: Some(model),
            nodes: self.nodes,
            faults: self.faults,
            seeds: self.seeds,
            safety_ticks: self.safety_ticks,
            shrink: self.shrink,
        }
    }

    /// A check of the state machine's own state (an invariant such as "the total is
    /// constant"), run on every node after every command it applies. An `Err` fails
    /// the run with its message.
    pub fn invariant(mut self, invariant: impl Fn(&S) -> Result<(), String> + 'static) -> Self {
        self.invariant = Some(Box::new(invariant));
        self
    }

    /// The faults to inject.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The seeds to run.
    pub fn seeds(mut self, seeds: Range<u64>) -> Self {
        self.seeds = seeds;
        self
    }

    /// The length of each run's safety phase, in ticks (the default depends on the
    /// seed: about 500). Shorter runs apply fewer commands.
    pub fn safety_ticks(mut self, ticks: u64) -> Self {
        self.safety_ticks = Some(ticks);
        self
    }

    /// Whether a failing seed is shrunk (on by default).
    pub fn shrink(mut self, shrink: bool) -> Self {
        self.shrink = shrink;
        self
    }

    fn config(&self, seed: u64, safety_ticks: Option<u64>, faults: Faults) -> SimConfig {
        let mut cfg = match faults {
            Faults::None => SimConfig::calm(seed, self.nodes),
            Faults::All => SimConfig::random(seed, Some(self.nodes)),
        };
        if let Some(ticks) = safety_ticks.or(self.safety_ticks) {
            cfg.safety_ticks = ticks;
        }
        cfg
    }

    fn run_one(
        &self,
        seed: u64,
        safety_ticks: Option<u64>,
        faults: Faults,
        verbose: bool,
    ) -> SeedRun {
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
        let cfg = self.config(seed, safety_ticks, faults);
        let ticks = cfg.safety_ticks;
        let mut sim = Simulator::with_workload(cfg, workload);
        sim.set_verbose(verbose);
        let report = sim.run();
        SeedRun {
            seed,
            safety_ticks: ticks,
            ops: report.ops,
            trace_hash: report.trace_hash,
            failure: report.failure,
        }
    }

    /// Runs every seed (or only the one [`REPLAY_SEED_VAR`] names, printing its trace)
    /// and reports. A failing seed is shrunk: rerun with its safety phase halved while
    /// it still fails.
    ///
    /// # Panics
    /// If no workload was set.
    pub fn run(self) -> SimulationReport {
        if let Some(seed) = env_u64(REPLAY_SEED_VAR) {
            let faults = match std::env::var(REPLAY_FAULTS_VAR).as_deref() {
                Ok("none") => Faults::None,
                _ => self.faults,
            };
            let run = self.run_one(seed, env_u64(REPLAY_TICKS_VAR), faults, true);
            return SimulationReport {
                runs: 1,
                ops: run.ops,
                failure: run
                    .failure
                    .map(|f| self.failed(run.seed, run.safety_ticks, f, None)),
                hashes: vec![(seed, run.trace_hash)],
            };
        }
        let mut ops = OpCounts::default();
        let mut hashes = Vec::new();
        for seed in self.seeds.clone() {
            let run = self.run_one(seed, None, self.faults, false);
            add_ops(&mut ops, &run.ops);
            hashes.push((seed, run.trace_hash));
            if let Some(failure) = run.failure {
                let shrunk = if self.shrink {
                    self.shrink_run(seed, run.safety_ticks)
                } else {
                    None
                };
                return SimulationReport {
                    runs: hashes.len() as u64,
                    ops,
                    failure: Some(self.failed(seed, run.safety_ticks, failure, shrunk)),
                    hashes,
                };
            }
        }
        SimulationReport {
            runs: hashes.len() as u64,
            ops,
            failure: None,
            hashes,
        }
    }

    /// Halves the safety phase of failing `seed` while the run still fails, then tries
    /// it without faults; the smallest failing run found, if smaller than the original.
    fn shrink_run(&self, seed: u64, safety_ticks: u64) -> Option<Shrunk> {
        let mut best: Option<Shrunk> = None;
        let mut ticks = safety_ticks / 2;
        while ticks >= 5 {
            match self.run_one(seed, Some(ticks), self.faults, false).failure {
                Some(failure) => {
                    best = Some(Shrunk {
                        safety_ticks: ticks,
                        faults: self.faults,
                        failure,
                    })
                }
                None => break,
            }
            ticks /= 2;
        }
        if self.faults != Faults::None {
            let ticks = best.as_ref().map_or(safety_ticks, |b| b.safety_ticks);
            if let Some(failure) = self.run_one(seed, Some(ticks), Faults::None, false).failure {
                best = Some(Shrunk {
                    safety_ticks: ticks,
                    faults: Faults::None,
                    failure,
                });
            }
        }
        best
    }

    fn failed(
        &self,
        seed: u64,
        safety_ticks: u64,
        failure: Failure,
        shrunk: Option<Shrunk>,
    ) -> SeedFailure {
        SeedFailure {
            seed,
            safety_ticks,
            failure,
            shrunk,
        }
    }
}

struct SeedRun {
    seed: u64,
    safety_ticks: u64,
    ops: OpCounts,
    trace_hash: u64,
    failure: Option<Failure>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
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
    /// What broke, when, and the last events before it.
    pub failure: Failure,
    /// A smaller run of the same seed that fails too.
    pub shrunk: Option<Shrunk>,
}

/// A smaller failing run that shrinking found: a shorter safety phase (fewer commands,
/// fewer faults), possibly without any fault.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// Its safety phase's length, in ticks.
    pub safety_ticks: u64,
    /// The faults it injects ([`Faults::None`]: the state machine fails on a calm
    /// cluster).
    pub faults: Faults,
    /// Its failure.
    pub failure: Failure,
}

impl SeedFailure {
    /// The environment that replays the smallest failing run.
    pub fn replay_env(&self) -> String {
        match &self.shrunk {
            Some(s) if s.faults == Faults::None => format!(
                "{REPLAY_SEED_VAR}={} {REPLAY_TICKS_VAR}={} {REPLAY_FAULTS_VAR}=none",
                self.seed, s.safety_ticks
            ),
            Some(s) => format!(
                "{REPLAY_SEED_VAR}={} {REPLAY_TICKS_VAR}={}",
                self.seed, s.safety_ticks
            ),
            None => format!("{REPLAY_SEED_VAR}={}", self.seed),
        }
    }
}

impl fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ticks, failure) = match &self.shrunk {
            Some(s) => (s.safety_ticks, &s.failure),
            None => (self.safety_ticks, &self.failure),
        };
        let calm = match &self.shrunk {
            Some(s) if s.faults == Faults::None => ", without faults",
            _ => "",
        };
        writeln!(
            f,
            "seed {} failed at tick {:.3} of a {ticks}-tick safety phase{calm}: {}",
            self.seed, failure.at_tick, failure.violation
        )?;
        if self.shrunk.is_some() {
            writeln!(
                f,
                "(shrunk from a {}-tick safety phase, which failed with: {})",
                self.safety_ticks, self.failure.violation
            )?;
        }
        writeln!(f, "last events:")?;
        for line in &failure.trace {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay with its whole trace: {} cargo test <this test> -- --nocapture",
            self.replay_env()
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
    /// The first failing seed, if any (the campaign stops there).
    pub failure: Option<SeedFailure>,
    /// Every seed run with its trace hash (equal for two runs of the same seed).
    pub hashes: Vec<(u64, u64)>,
}

impl SimulationReport {
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
