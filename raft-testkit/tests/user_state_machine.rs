//! The public simulation API on users' state machines: the bank example passes, the
//! buggy bank (a nondeterministic apply) is caught and shrunk to a calm run, a machine
//! whose bug needs faults is caught, shrunk to fewer fault kinds, and its printed replay
//! reproduces the shrunk run, a machine whose answers break its model is caught by the
//! linearizability check, and a seed replays exactly.

#[allow(dead_code)]
#[path = "../examples/bank.rs"]
mod bank;
#[allow(dead_code)]
#[path = "../examples/buggy_bank.rs"]
mod buggy_bank;

use raft_core::node::{RestoreError, StateMachine};
use raft_testkit::{Fault, Faults, Model, Replay, SeedFailure, Simulation, SimulationReport};
use rand::Rng;

#[test]
fn the_bank_example_passes_under_every_fault() {
    let report = bank::simulate(0..12);
    report.assert_ok();
    assert_eq!(report.runs, 12);
    assert!(
        report.ops.ok > 100,
        "few transfers returned: {:?}",
        report.ops
    );
}

#[test]
fn a_nondeterministic_apply_is_caught_and_shrunk() {
    let report = buggy_bank::simulate(0..20);
    let failure = report
        .failure
        .expect("iterating a HashMap in apply must make the replicas diverge");
    assert!(failure.seed < 20);
    let text = failure.to_string();
    assert!(text.contains("differs from the committed prefix"), "{text}");
    assert!(text.contains("RAFT_SIM_SEED="), "{text}");
    let shrunk = failure.shrunk.as_ref().expect("a shorter run fails too");
    let ticks = shrunk
        .run
        .safety_ticks
        .expect("shrinking sets the safety phase");
    assert!(ticks < failure.safety_ticks, "{failure}");
    // The bug is in apply: a calm cluster shows it, with fewer commands.
    assert_eq!(shrunk.run.faults, Some(Faults::none()), "{failure}");
    let ops = shrunk
        .run
        .ops
        .expect("shrinking lowers the operation budget");
    assert!(
        ops < failure.ops.writes && shrunk.ops.writes <= ops,
        "{} commands, shrunk to a budget of {ops}: {failure}",
        failure.ops.writes
    );
    assert!(text.contains(&format!("RAFT_SIM_OPS={ops}")), "{text}");
    assert!(text.contains("RAFT_SIM_FAULTS=none"), "{text}");
}

/// A tally that takes a gap of two or more log indexes between the commands it is given
/// for a sign of trouble and ignores the command after one, answering the old total:
/// deterministic (every replica agrees), wrong only once a command follows two entries
/// that are not commands for it (new leaders' no-ops, configuration changes, a retried
/// command applied once already), which takes faults. Only the model can tell.
#[derive(Default)]
struct GapBlindTally {
    total: u64,
    next: u64,
}

impl StateMachine for GapBlindTally {
    type Response = u64;
    fn apply(&mut self, index: u64, command: &[u8]) -> u64 {
        if self.next == 0 || index <= self.next + 1 {
            self.total += u64::from(command[0]);
        }
        self.next = index + 1;
        self.total
    }
    fn snapshot(&self) -> Option<Vec<u8>> {
        Some([self.total.to_le_bytes(), self.next.to_le_bytes()].concat())
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let word = |i: usize| {
            data.get(i * 8..i * 8 + 8)
                .and_then(|w| w.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| RestoreError("not two words".into()))
        };
        self.total = word(0)?;
        self.next = word(1)?;
        Ok(())
    }
}

/// The model of a tally: the total of every command.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
struct Tally(u64);

impl Model<u64> for Tally {
    fn step(&mut self, command: &[u8]) -> u64 {
        self.0 += u64::from(command[0]);
        self.0
    }
}

fn gap_blind_tally() -> Simulation<raft_testkit::Machine<GapBlindTally, Tally>> {
    Simulation::new(GapBlindTally::default)
        .nodes(3)
        .workload(|rng| vec![rng.gen_range(1..10)])
        .model(Tally::default())
        .seeds(0..30)
}

/// The replay environment a failure report prints, as a [`Replay`].
fn printed_replay(failure: &SeedFailure) -> Replay {
    let text = failure.to_string();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("replay with its whole trace: "))
        .unwrap_or_else(|| panic!("no replay line in {text}"));
    let env = line
        .strip_suffix(failure.replay_command.as_str())
        .unwrap_or_else(|| panic!("the replay line ends with the command: {line}"));
    env.parse()
        .unwrap_or_else(|e| panic!("{e}: the printed replay {env:?} does not parse"))
}

fn caught(report: &SimulationReport) -> &SeedFailure {
    report
        .failure
        .as_ref()
        .expect("ignoring commands after a gap gives answers the model does not")
}

#[test]
fn a_bug_that_needs_faults_is_caught_shrunk_and_replayed() {
    let report = gap_blind_tally().run();
    let failure = caught(&report);
    let text = failure.to_string();
    println!("{text}");
    assert!(text.contains("not linearizable"), "{text}");
    let shrunk = failure.shrunk.as_ref().expect("a smaller run fails too");
    // Shrinking dropped fault kinds, but kept some: a calm cluster keeps its leader.
    let faults = shrunk.run.faults.expect("shrinking sets the faults");
    assert_ne!(faults, Faults::all(), "no fault kind was dropped: {text}");
    assert!(!faults.is_none(), "{text}");
    assert!(
        faults.kinds().count() <= Fault::ALL.len() / 2,
        "few fault kinds dropped: {text}"
    );
    assert!(
        shrunk.ops.writes < failure.ops.writes,
        "no fewer commands: {text}"
    );
    // The printed replay runs the shrunk run again: the same trace, the same failure.
    let replay = printed_replay(failure);
    assert_eq!(&replay, failure.replay());
    let again = gap_blind_tally().replay(&replay);
    assert_eq!(again.trace_hash, shrunk.trace_hash, "{text}");
    assert_eq!(
        again.failure.map(|f| f.violation.to_string()),
        Some(shrunk.failure.violation.to_string())
    );
}

/// The printed replay reproduces the shrunk run from the environment, as a user would
/// run it: this test's binary runs `a_gap_blind_tally_is_caught_in_a_replay` again with
/// the printed variables, and that run prints the shrunk run's trace hash.
#[test]
fn the_printed_environment_replays_the_shrunk_run() {
    if Replay::from_env().is_some() {
        return; // the child run of another test
    }
    let report = gap_blind_tally().run();
    let failure = caught(&report);
    let env = failure.replay_env();
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"));
    child.args([
        "a_gap_blind_tally_is_caught_in_a_replay",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    for pair in env.split_whitespace() {
        let (name, value) = pair.split_once('=').expect("NAME=value");
        child.env(name, value);
    }
    let out = child.output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{env}: {stdout}");
    let expected = format!("trace hash: {:016x}", failure.replay_trace_hash());
    assert!(
        stdout.lines().any(|l| l == expected),
        "{env} did not print {expected:?}:\n{}",
        stdout.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// Catches the gap-blind tally; with the replay variables set (as the test above sets
/// them), runs only the run they describe, printing its trace and trace hash.
#[test]
fn a_gap_blind_tally_is_caught_in_a_replay() {
    let report = gap_blind_tally().run();
    caught(&report);
}

/// A counter whose answer is off by one from its fifth command on: the replicas agree
/// (the bug is deterministic), only the model can tell.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
struct Counter {
    total: u64,
    commands: u64,
}

impl Counter {
    fn add(&mut self, command: &[u8]) -> u64 {
        self.total += u64::from(command[0]);
        self.commands += 1;
        self.total
    }
}

#[derive(Default)]
struct OffByOne(Counter);

impl StateMachine for OffByOne {
    type Response = u64;
    fn apply(&mut self, _index: u64, command: &[u8]) -> u64 {
        let total = self.0.add(command);
        if self.0.commands >= 5 {
            total + 1
        } else {
            total
        }
    }
    fn snapshot(&self) -> Option<Vec<u8>> {
        Some([self.0.total.to_le_bytes(), self.0.commands.to_le_bytes()].concat())
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let word = |i: usize| {
            data.get(i * 8..i * 8 + 8)
                .and_then(|w| w.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| RestoreError("not two words".into()))
        };
        self.0 = Counter {
            total: word(0)?,
            commands: word(1)?,
        };
        Ok(())
    }
}

impl Model<u64> for Counter {
    fn step(&mut self, command: &[u8]) -> u64 {
        self.add(command)
    }
}

#[test]
fn answers_that_break_the_model_are_not_linearizable() {
    let report = Simulation::new(OffByOne::default)
        .nodes(3)
        .workload(|rng| vec![rng.gen_range(1..5)])
        .model(Counter::default())
        .faults(Faults::none())
        .seeds(0..3)
        .run();
    let failure = report
        .failure
        .expect("the model check catches the wrong answers");
    assert!(
        failure.to_string().contains("not linearizable"),
        "{failure}"
    );
}

#[test]
fn a_seed_replays_the_same_run() {
    let a = bank::simulate(7..9);
    let b = bank::simulate(7..9);
    a.assert_ok();
    assert_eq!(a.hashes, b.hashes);
    assert_ne!(a.hashes[0].1, a.hashes[1].1, "two seeds, two runs");
}
