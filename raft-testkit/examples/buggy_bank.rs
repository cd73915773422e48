//! A state machine with a classic replication bug, and the simulator catching it: its
//! `apply` pays a bonus to "the first" account with money, found by iterating a std
//! `HashMap`, whose order differs from process to process (a random hash seed). Each
//! node then picks a different account and the replicas drift apart; the simulator
//! compares every node's state with the state the committed log produces and reports
//! the seed, the replay command and the last events.
//!
//! ```text
//! cargo run --release -p raft-testkit --example buggy_bank
//! ```

use std::collections::{BTreeMap, HashMap};

use raft_core::node::{RestoreError, StateMachine};
use raft_testkit::{Faults, Simulation, SimulationReport};
use rand::Rng;

/// Balances by account, in a `HashMap`: iterating it is the bug.
#[derive(Debug)]
pub struct BuggyBank {
    balances: HashMap<u8, u64>,
}

impl Default for BuggyBank {
    fn default() -> Self {
        BuggyBank {
            balances: (0..4).map(|a| (a, 10)).collect(),
        }
    }
}

impl StateMachine for BuggyBank {
    type Response = u64;

    /// Deposits the command's first byte into "the first" account: nondeterministic.
    fn apply(&mut self, _index: u64, command: &[u8]) -> u64 {
        let amount = u64::from(command.first().copied().unwrap_or(0));
        let (_, balance) = self.balances.iter_mut().next().expect("accounts exist");
        *balance += amount;
        *balance
    }

    /// Sorted, so equal states give equal bytes (the snapshot is not the bug).
    fn snapshot(&self) -> Option<Vec<u8>> {
        let sorted: BTreeMap<_, _> = self.balances.iter().collect();
        Some(
            sorted
                .into_iter()
                .flat_map(|(a, b)| [vec![*a], b.to_le_bytes().to_vec()].concat())
                .collect(),
        )
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let bad = || RestoreError(format!("{} bytes are not whole accounts", data.len()));
        let mut balances = HashMap::new();
        for account in data.chunks(9) {
            let (id, balance) = account.split_first().ok_or_else(bad)?;
            balances.insert(
                *id,
                u64::from_le_bytes(balance.try_into().map_err(|_| bad())?),
            );
        }
        self.balances = balances;
        Ok(())
    }
}

/// Runs the buggy bank under the simulator for `seeds` seeds.
pub fn simulate(seeds: std::ops::Range<u64>) -> SimulationReport {
    Simulation::new(BuggyBank::default)
        .nodes(3)
        .workload(|rng| vec![rng.gen_range(1..10)])
        .faults(Faults::all())
        .seeds(seeds)
        .run()
}

fn main() {
    let report = simulate(0..20);
    match &report.failure {
        Some(failure) => println!("caught, as expected:\n{failure}"),
        None => {
            eprintln!(
                "the nondeterministic apply went unnoticed in {} seeds",
                report.runs
            );
            std::process::exit(1);
        }
    }
}
