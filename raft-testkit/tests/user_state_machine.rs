//! The public simulation API on users' state machines: the bank example passes, the
//! buggy bank (a nondeterministic apply) is caught and shrunk, a machine whose answers
//! break its model is caught by the linearizability check, and a seed replays exactly.

#[allow(dead_code)]
#[path = "../examples/bank.rs"]
mod bank;
#[allow(dead_code)]
#[path = "../examples/buggy_bank.rs"]
mod buggy_bank;

use raft_core::node::{RestoreError, StateMachine};
use raft_testkit::{Faults, Model, Simulation};
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
    let shrunk = failure.shrunk.expect("a shorter run fails too");
    assert!(shrunk.safety_ticks < failure.safety_ticks);
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
