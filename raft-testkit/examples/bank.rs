//! A bank whose transfers move money between accounts, tested under the deterministic
//! simulator: five nodes, every fault, the total checked after every command, and the
//! answers clients got checked against a sequential model (linearizability).
//!
//! ```text
//! cargo run --release -p raft-testkit --example bank
//! ```

use std::collections::BTreeMap;

use raft_core::node::{RestoreError, StateMachine};
use raft_testkit::{Faults, Model, Simulation, SimulationReport};
use rand::Rng;

/// Accounts start with this much each.
pub const OPENING_BALANCE: u64 = 100;
/// How many accounts the bank has.
pub const ACCOUNTS: u8 = 4;

/// The replicated bank: balances by account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bank {
    balances: BTreeMap<u8, u64>,
}

impl Default for Bank {
    fn default() -> Self {
        Bank {
            balances: (0..ACCOUNTS).map(|a| (a, OPENING_BALANCE)).collect(),
        }
    }
}

impl Bank {
    /// Moves `amount` from `from` to `to` if `from` has it; answers whether it did.
    /// A command is three bytes: from, to, amount.
    fn transfer(&mut self, command: &[u8]) -> bool {
        let [from, to, amount] = *command else {
            return false;
        };
        let amount = u64::from(amount);
        let has = self.balances.get(&from).copied().unwrap_or(0);
        if from == to || has < amount || !self.balances.contains_key(&to) {
            return false;
        }
        *self.balances.entry(from).or_default() -= amount;
        *self.balances.entry(to).or_default() += amount;
        true
    }

    /// The money in the bank.
    pub fn total(&self) -> u64 {
        self.balances.values().sum()
    }
}

impl StateMachine for Bank {
    type Response = bool;

    fn apply(&mut self, _index: u64, command: &[u8]) -> bool {
        self.transfer(command)
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(
            self.balances
                .iter()
                .flat_map(|(a, b)| [vec![*a], b.to_le_bytes().to_vec()].concat())
                .collect(),
        )
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let bad = || RestoreError(format!("{} bytes are not whole accounts", data.len()));
        let mut balances = BTreeMap::new();
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

/// The sequential specification: the same bank, one transfer at a time.
impl Model<bool> for Bank {
    fn step(&mut self, command: &[u8]) -> bool {
        self.transfer(command)
    }
}

/// Runs the bank under the simulator for `seeds` seeds.
pub fn simulate(seeds: std::ops::Range<u64>) -> SimulationReport {
    Simulation::new(Bank::default)
        .nodes(5)
        .workload(|rng| {
            vec![
                rng.gen_range(0..ACCOUNTS),
                rng.gen_range(0..ACCOUNTS),
                rng.gen_range(1..60),
            ]
        })
        .model(Bank::default())
        .invariant(|bank: &Bank| match bank.total() {
            t if t == OPENING_BALANCE * u64::from(ACCOUNTS) => Ok(()),
            t => Err(format!("the bank holds {t}")),
        })
        .faults(Faults::all())
        .seeds(seeds)
        .run()
}

fn main() {
    let report = simulate(0..50);
    report.assert_ok();
    println!(
        "{} seeds passed, {} transfers committed",
        report.runs, report.ops.ok
    );
}
