//! What the simulated cluster replicates and what its clients ask: the one seam between
//! the simulator and a state machine. The built-in key/value campaigns are one
//! [`Workload`] ([`KvWorkload`]); [`crate::Simulation`] wraps a user's
//! [`raft_core::node::StateMachine`] as another.

use std::fmt;

use bytes::Bytes;
use raft_core::LogIndex;
use rand_chacha::ChaCha8Rng;

use super::config::BrokenSnapshot;
use super::report::OpCounts;
use crate::kv::{KvCommand, KvState};
use crate::linearizability::{check_kv, format_op, KvInput, LinResult, Operation};

/// One client operation of a run's history.
#[derive(Clone, Debug, PartialEq)]
pub struct Call<I, O> {
    /// The client that issued it.
    pub client: u64,
    /// What it asked.
    pub input: I,
    /// What it got back; `None` if it never returned, or returned without an output
    /// (a key/value write, a retried command whose first answer was lost).
    pub output: Option<O>,
    /// When it was invoked (a logical clock; unique across the history's events).
    pub call: u64,
    /// When it returned; `None` if it never did.
    pub ret: Option<u64>,
}

/// How a client operation reaches the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A command proposed through the log; the bytes carry the operation id so that a
    /// retried command takes effect at most once.
    Write(Bytes),
    /// A linearizable read through the protocol's read index, answered by
    /// [`Workload::read`] once the node applied that far.
    Read,
}

/// What the simulator needs from the replicated state machine and its clients.
///
/// Implementations must be deterministic: every choice comes from the `rng` passed in,
/// and nothing iterates a `HashMap`.
pub trait Workload {
    /// One node's replicated state, as the simulator holds it.
    type Machine;
    /// What a client asks.
    type Input: Clone + fmt::Debug;
    /// What a client gets back.
    type Output: Clone + fmt::Debug + PartialEq;

    /// A state machine that applied nothing.
    fn fresh(&self) -> Self::Machine;
    /// Applies the committed entry at `index`; `data` is empty for an entry that is
    /// not a command (a no-op, a configuration change).
    fn apply(&self, m: &mut Self::Machine, index: LogIndex, data: &[u8]);
    /// The last index `m` applied.
    fn applied_index(&self, m: &Self::Machine) -> LogIndex;
    /// The index where operation `op` took effect in `m`, if it did.
    fn applied_at(&self, m: &Self::Machine, op: u64) -> Option<LogIndex>;
    /// The output of write `op`, which took effect in `m`, if `m` still knows it.
    fn write_output(&self, m: &Self::Machine, op: u64) -> Option<Self::Output>;
    /// The whole state as snapshot bytes (`broken`: a deliberately broken snapshot).
    fn snapshot(&self, m: &Self::Machine, broken: Option<BrokenSnapshot>) -> Bytes;
    /// The state a snapshot holds.
    ///
    /// # Errors
    /// Bytes that are not a snapshot.
    fn restore(&self, data: &[u8]) -> Result<Self::Machine, String>;
    /// A copy of `m`.
    fn duplicate(&self, m: &Self::Machine) -> Self::Machine;
    /// Whether two state machines hold the same state.
    fn same(&self, a: &Self::Machine, b: &Self::Machine) -> bool;
    /// A short description of `m` for failure reports.
    fn describe(&self, m: &Self::Machine) -> String;
    /// The next operation of a client; `op` is its id (unique in the run). Counts it in
    /// `ops` as a write or a read.
    fn draw(&mut self, rng: &mut ChaCha8Rng, op: u64, ops: &mut OpCounts) -> Self::Input;
    /// How operation `op` reaches the cluster.
    fn request(&self, op: u64, input: &Self::Input) -> Request;
    /// A read's answer from `m`.
    fn read(&self, m: &Self::Machine, input: &Self::Input) -> Self::Output;
    /// The command the liveness phase writes (operation `op`) to prove the healed
    /// cluster commits.
    fn marker(&self, op: u64) -> Bytes;
    /// Two words that stand for `input` in the trace hash.
    fn input_words(&self, input: &Self::Input) -> [u64; 2];
    /// A word that stands for a returned output (`None`: returned without one) in the
    /// trace hash.
    fn output_word(&self, output: Option<&Self::Output>) -> u64;
    /// Checks the history against the sequential specification.
    fn check(&self, history: &[Call<Self::Input, Self::Output>], budget_steps: u64) -> LinResult;
    /// The operations to show when [`Workload::check`] failed on `key`, newest first.
    fn explain(&self, history: &[Call<Self::Input, Self::Output>], key: u64) -> Vec<String>;
}

/// The built-in workload: a key/value map whose clients put unique values and get
/// them back, checked key by key for linearizability.
#[derive(Clone, Debug)]
pub struct KvWorkload {
    /// How many keys clients touch.
    pub keys: u64,
}

impl KvWorkload {
    fn operations(history: &[Call<KvInput, Option<u64>>]) -> Vec<Operation> {
        history
            .iter()
            .map(|c| Operation {
                client: c.client,
                input: c.input,
                output: c.output,
                call: c.call,
                ret: c.ret,
            })
            .collect()
    }
}

impl Workload for KvWorkload {
    type Machine = KvState;
    type Input = KvInput;
    type Output = Option<u64>;

    fn fresh(&self) -> KvState {
        KvState::new()
    }

    fn apply(&self, m: &mut KvState, index: LogIndex, data: &[u8]) {
        m.apply(index, data);
    }

    fn applied_index(&self, m: &KvState) -> LogIndex {
        m.applied_index()
    }

    fn applied_at(&self, m: &KvState, op: u64) -> Option<LogIndex> {
        m.applied_at(op)
    }

    fn write_output(&self, _m: &KvState, _op: u64) -> Option<Option<u64>> {
        None
    }

    fn snapshot(&self, m: &KvState, broken: Option<BrokenSnapshot>) -> Bytes {
        match broken {
            Some(BrokenSnapshot::WithoutSessions) => m.snapshot_without_sessions(),
            None | Some(BrokenSnapshot::CompactBeforeSave) => m.snapshot(),
        }
    }

    fn restore(&self, data: &[u8]) -> Result<KvState, String> {
        KvState::restore(data)
    }

    fn duplicate(&self, m: &KvState) -> KvState {
        m.clone()
    }

    fn same(&self, a: &KvState, b: &KvState) -> bool {
        a == b
    }

    fn describe(&self, m: &KvState) -> String {
        format!("{} keys, {} operations", m.key_count(), m.operation_count())
    }

    fn draw(&mut self, rng: &mut ChaCha8Rng, op: u64, ops: &mut OpCounts) -> KvInput {
        use rand::Rng;
        let key = rng.gen_range(0..self.keys);
        if rng.gen_bool(0.5) {
            ops.writes += 1;
            KvInput::Put { key, value: op }
        } else {
            ops.reads += 1;
            KvInput::Get { key }
        }
    }

    fn request(&self, op: u64, input: &KvInput) -> Request {
        match *input {
            KvInput::Put { key, value } => {
                Request::Write(KvCommand::Put { op, key, value }.encode())
            }
            KvInput::Get { .. } => Request::Read,
        }
    }

    fn read(&self, m: &KvState, input: &KvInput) -> Option<u64> {
        m.get(input.key())
    }

    fn marker(&self, op: u64) -> Bytes {
        KvCommand::Put {
            op,
            key: u64::MAX,
            value: 0,
        }
        .encode()
    }

    fn input_words(&self, input: &KvInput) -> [u64; 2] {
        match *input {
            KvInput::Put { key, value } => [key, value],
            KvInput::Get { key } => [key, u64::MAX],
        }
    }

    fn output_word(&self, output: Option<&Option<u64>>) -> u64 {
        output.map_or(1, |o| o.map_or(2, |v| v + 3))
    }

    fn check(&self, history: &[Call<KvInput, Option<u64>>], budget_steps: u64) -> LinResult {
        check_kv(&Self::operations(history), budget_steps)
    }

    fn explain(&self, history: &[Call<KvInput, Option<u64>>], key: u64) -> Vec<String> {
        let ops = Self::operations(history);
        if std::env::var("SIM_DUMP_HISTORY").is_ok() {
            for o in ops.iter().filter(|o| o.input.key() == key) {
                eprintln!("{}", format_op(o));
            }
        }
        ops.iter()
            .filter(|o| o.input.key() == key)
            .rev()
            .take(12)
            .map(format_op)
            .collect()
    }
}
