//! A linearizability checker for key/value histories.
//!
//! The algorithm is Wing and Gong's search with Lowe's memoization, in the shape
//! Porcupine uses: the history is a linked list of call and return events sorted by time;
//! the search repeatedly tries to linearize a pending call whose model step is legal,
//! lifting it (and its return) out of the list; it backtracks when it meets a return whose
//! call is not yet linearized; a cache of (set of linearized operations, model state)
//! prunes states already explored.
//!
//! The history is partitioned by key (a single key's register is independent of the
//! others), so each search is small.
//!
//! Operations that never returned (a client timed out) may or may not have taken effect.
//! They are treated as returning at the end of time, so the search may place them
//! anywhere after their call, including after everything else, which is the same as "did
//! not happen". A read that never returned tells nothing and is dropped; so is a write
//! that never returned whose value no read saw, since it can always go last.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvInput {
    /// Set `key` to `value`. Values must be unique per key within a history, so a read
    /// tells which write it saw.
    Put {
        /// The key.
        key: u64,
        /// The value written.
        value: u64,
    },
    /// Read `key`.
    Get {
        /// The key.
        key: u64,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            KvInput::Put { key, .. } | KvInput::Get { key } => key,
        }
    }
}

/// One operation of a history, with its invocation and (if any) return time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (for messages only).
    pub client: u64,
    /// What it asked.
    pub input: KvInput,
    /// A get's result (`Some(None)`: the key was absent). `None` for puts and for
    /// operations that never returned.
    pub output: Option<Option<u64>>,
    /// When it was invoked. Times must be unique across the history's events.
    pub call: u64,
    /// When it returned; `None` if it never did.
    pub ret: Option<u64>,
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinResult {
    /// Every key's history is linearizable.
    Ok,
    /// Some key's history is not.
    Illegal {
        /// The first key (in key order) found not linearizable.
        key: u64,
        /// Why, in words: the operations that could not be placed.
        detail: String,
    },
    /// The search for some key exceeded its step budget without a verdict.
    Unknown {
        /// The key whose search gave up.
        key: u64,
    },
}

impl LinResult {
    /// Whether the verdict is [`LinResult::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, LinResult::Ok)
    }
}

/// Checks a key/value history. `budget_steps` bounds each key's search.
///
/// ```
/// use raft_testkit::linearizability::{check_kv, KvInput, LinResult, Operation};
/// let put = Operation { client: 1, input: KvInput::Put { key: 0, value: 7 }, output: None, call: 1, ret: Some(2) };
/// // A read that starts after the put returned must see it.
/// let stale = Operation { client: 2, input: KvInput::Get { key: 0 }, output: Some(None), call: 3, ret: Some(4) };
/// assert!(matches!(check_kv(&[put, stale], 10_000), LinResult::Illegal { .. }));
/// ```
pub fn check_kv(history: &[Operation], budget_steps: u64) -> LinResult {
    let mut by_key: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.input.key()).or_default().push(*op);
    }
    for (key, ops) in by_key {
        let ops = prune(ops);
        match check_register(&ops, budget_steps) {
            RegisterResult::Ok => {}
            RegisterResult::Illegal(detail) => return LinResult::Illegal { key, detail },
            RegisterResult::Unknown => return LinResult::Unknown { key },
        }
    }
    LinResult::Ok
}

/// Drops what cannot matter: reads that never returned, and writes that never returned
/// whose value nobody read.
fn prune(ops: Vec<Operation>) -> Vec<Operation> {
    let seen: HashSet<u64> = ops
        .iter()
        .filter_map(|op| match (op.input, op.ret, op.output) {
            (KvInput::Get { .. }, Some(_), Some(Some(v))) => Some(v),
            _ => None,
        })
        .collect();
    ops.into_iter()
        .filter(|op| match (op.input, op.ret) {
            (_, Some(_)) => true,
            (KvInput::Get { .. }, None) => false,
            (KvInput::Put { value, .. }, None) => seen.contains(&value),
        })
        .collect()
}

enum RegisterResult {
    Ok,
    Illegal(String),
    Unknown,
}

const NIL: usize = usize::MAX;

/// One call or return in the linked list.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call: the list index of its return.
    matching: usize,
    prev: usize,
    next: usize,
}

/// A single-register model: the state is the current value.
fn step(state: Option<u64>, op: &Operation) -> Option<Option<u64>> {
    match op.input {
        KvInput::Put { value, .. } => Some(Some(value)),
        KvInput::Get { .. } => match op.output {
            Some(out) if out == state => Some(state),
            Some(_) => None,
            // An unreturned get was pruned; treat a missing output as "any".
            None => Some(state),
        },
    }
}

/// Where a search ended.
pub(crate) enum Search {
    /// Every operation was linearized.
    Ok,
    /// No order works: at most `depth` operations could be placed, and the search got
    /// stuck before operation `stuck` (an index into the operations), if known.
    Illegal { depth: usize, stuck: Option<usize> },
    /// The step budget ran out.
    Unknown,
}

/// The Wing-Gong-Lowe search over `ops` for any sequential model: `times` gives an
/// operation's call and return times (`None`: never returned), `step` the model state
/// after an operation, or `None` if its recorded output is impossible in `state`.
pub(crate) fn search<T, St: Clone + Eq + Hash>(
    ops: &[T],
    times: impl Fn(&T) -> (u64, Option<u64>),
    init: St,
    step: impl Fn(&St, &T) -> Option<St>,
    budget_steps: u64,
) -> Search {
    if ops.is_empty() {
        return Search::Ok;
    }
    // Events sorted by time; unreturned operations return at the end of time, after
    // every real event, in operation order.
    let mut order: Vec<(u64, u64, usize, bool)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        let (call, ret) = times(op);
        order.push((call, 0, i, true));
        match ret {
            Some(t) => order.push((t, 0, i, false)),
            None => order.push((u64::MAX, i as u64, i, false)),
        }
    }
    order.sort_unstable();
    // List index 0 is the head sentinel; event k of `order` is list index k + 1.
    let mut events = vec![Event {
        op: NIL,
        is_call: false,
        matching: NIL,
        prev: NIL,
        next: 1,
    }];
    let mut return_pos = vec![0usize; ops.len()];
    for (k, &(_, _, op, is_call)) in order.iter().enumerate() {
        let idx = k + 1;
        if !is_call {
            return_pos[op] = idx;
        }
        events.push(Event {
            op,
            is_call,
            matching: NIL,
            prev: k,
            next: if k + 1 < order.len() { idx + 1 } else { NIL },
        });
    }
    for idx in 1..events.len() {
        if events[idx].is_call {
            events[idx].matching = return_pos[events[idx].op];
        }
    }

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, St)> = HashSet::new();
    let mut calls: Vec<(usize, St)> = Vec::new();
    let mut state = init;
    let mut entry = events[0].next;
    let mut steps = 0u64;
    // For the report: the deepest point the search reached.
    let mut deepest = (0usize, entry);

    while events[0].next != NIL {
        steps += 1;
        if steps > budget_steps {
            return Search::Unknown;
        }
        let ev = events[entry];
        if ev.is_call {
            if let Some(new_state) = step(&state, &ops[ev.op]) {
                let mut candidate = linearized.clone();
                candidate[ev.op / 64] |= 1 << (ev.op % 64);
                if cache.insert((candidate.clone(), new_state.clone())) {
                    calls.push((entry, std::mem::replace(&mut state, new_state)));
                    linearized = candidate;
                    lift(&mut events, entry);
                    entry = events[0].next;
                    if calls.len() > deepest.0 {
                        deepest = (calls.len(), entry);
                    }
                    continue;
                }
            }
            entry = ev.next;
        } else {
            // A return whose call is not linearized: this branch is dead.
            let Some((call_entry, old_state)) = calls.pop() else {
                let (depth, at) = deepest;
                let stuck = (at != NIL && events[at].op != NIL).then(|| events[at].op);
                return Search::Illegal { depth, stuck };
            };
            state = old_state;
            let op = events[call_entry].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut events, call_entry);
            entry = events[call_entry].next;
        }
    }
    Search::Ok
}

fn check_register(ops: &[Operation], budget_steps: u64) -> RegisterResult {
    match search(
        ops,
        |op| (op.call, op.ret),
        None,
        |s, op| step(*s, op),
        budget_steps,
    ) {
        Search::Ok => RegisterResult::Ok,
        Search::Unknown => RegisterResult::Unknown,
        Search::Illegal { depth, stuck } => RegisterResult::Illegal(describe(ops, depth, stuck)),
    }
}

fn lift(events: &mut [Event], call: usize) {
    let Event { prev, next, .. } = events[call];
    events[prev].next = next;
    if next != NIL {
        events[next].prev = prev;
    }
    let ret = events[call].matching;
    let Event { prev, next, .. } = events[ret];
    events[prev].next = next;
    if next != NIL {
        events[next].prev = prev;
    }
}

fn unlift(events: &mut [Event], call: usize) {
    let ret = events[call].matching;
    let Event { prev, next, .. } = events[ret];
    events[prev].next = ret;
    if next != NIL {
        events[next].prev = ret;
    }
    let Event { prev, next, .. } = events[call];
    events[prev].next = call;
    if next != NIL {
        events[next].prev = call;
    }
}

fn describe(ops: &[Operation], depth: usize, stuck: Option<usize>) -> String {
    let stuck = stuck.map_or_else(|| "?".to_string(), |i| format_op(&ops[i]));
    format!(
        "{} operations on this key; at most {depth} could be linearized; stuck before {stuck}",
        ops.len()
    )
}

/// A one-line description of an operation, for failure reports.
pub fn format_op(op: &Operation) -> String {
    let when = match op.ret {
        Some(r) => format!("[{}, {}]", op.call, r),
        None => format!("[{}, never returned]", op.call),
    };
    match (op.input, op.output) {
        (KvInput::Put { key, value }, _) => format!("c{} put(k{key}, {value}) {when}", op.client),
        (KvInput::Get { key }, Some(Some(v))) => {
            format!("c{} get(k{key}) -> {v} {when}", op.client)
        }
        (KvInput::Get { key }, Some(None)) => format!("c{} get(k{key}) -> none {when}", op.client),
        (KvInput::Get { key }, None) => format!("c{} get(k{key}) -> ? {when}", op.client),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1_000_000;

    fn put(client: u64, key: u64, value: u64, call: u64, ret: Option<u64>) -> Operation {
        Operation {
            client,
            input: KvInput::Put { key, value },
            output: None,
            call,
            ret,
        }
    }

    fn get(client: u64, key: u64, out: Option<u64>, call: u64, ret: u64) -> Operation {
        Operation {
            client,
            input: KvInput::Get { key },
            output: Some(out),
            call,
            ret: Some(ret),
        }
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert!(check_kv(&[], BUDGET).is_ok());
        let h = [
            get(1, 0, None, 1, 2),
            put(1, 0, 10, 3, Some(4)),
            get(2, 0, Some(10), 5, 6),
            put(2, 0, 11, 7, Some(8)),
            get(1, 0, Some(11), 9, 10),
        ];
        assert!(check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        // The put spans [1, 10]; one read sees the old value, a later one the new: fine.
        let h = [
            put(1, 0, 10, 1, Some(10)),
            get(2, 0, None, 2, 3),
            get(3, 0, Some(10), 4, 5),
            get(2, 0, Some(10), 6, 7),
        ];
        assert!(check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn a_read_cannot_go_back_to_the_old_value() {
        // Once a read saw 10, a later read (not concurrent with it) cannot see none.
        let h = [
            put(1, 0, 10, 1, Some(10)),
            get(2, 0, Some(10), 2, 3),
            get(3, 0, None, 4, 5),
        ];
        assert!(!check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = [
            put(1, 0, 10, 1, Some(2)),
            put(1, 0, 11, 3, Some(4)),
            get(2, 0, Some(10), 5, 6),
        ];
        match check_kv(&h, BUDGET) {
            LinResult::Illegal { key: 0, detail } => assert!(detail.contains("3 operations")),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_lost_write_is_caught() {
        // The put of 11 was acknowledged, then reads keep seeing 10.
        let h = [
            put(1, 0, 10, 1, Some(2)),
            put(2, 0, 11, 3, Some(4)),
            get(3, 0, Some(10), 5, 6),
            get(3, 0, Some(10), 7, 8),
        ];
        assert!(!check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        let h = [put(1, 0, 10, 1, Some(2)), get(2, 0, Some(99), 3, 4)];
        assert!(!check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn a_timed_out_write_may_have_happened() {
        // The put of 11 never returned; a later read sees it: fine.
        let h = [
            put(1, 0, 10, 1, Some(2)),
            put(2, 0, 11, 3, None),
            get(3, 0, Some(11), 20, 21),
        ];
        assert!(check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn a_timed_out_write_may_not_have_happened() {
        let h = [
            put(1, 0, 10, 1, Some(2)),
            put(2, 0, 11, 3, None),
            get(3, 0, Some(10), 20, 21),
        ];
        assert!(check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn a_timed_out_write_cannot_take_effect_before_it_was_invoked() {
        let h = [get(3, 0, Some(11), 1, 2), put(2, 0, 11, 3, None)];
        assert!(!check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn a_timed_out_write_that_was_seen_cannot_be_unseen() {
        // Once a read saw 11, the timed-out put took effect; a later read of 10 is stale.
        let h = [
            put(1, 0, 10, 1, Some(2)),
            put(2, 0, 11, 3, None),
            get(3, 0, Some(11), 5, 6),
            get(3, 0, Some(10), 7, 8),
        ];
        assert!(!check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn keys_are_independent() {
        // Each key alone is fine, although the pair shows no single global order would
        // be needed for a register per key.
        let h = [
            put(1, 0, 10, 1, Some(2)),
            put(1, 1, 20, 3, Some(4)),
            get(2, 1, Some(20), 5, 6),
            get(2, 0, Some(10), 7, 8),
        ];
        assert!(check_kv(&h, BUDGET).is_ok());
        let mut bad = h.to_vec();
        bad.push(get(3, 1, None, 9, 10));
        assert_eq!(
            std::mem::discriminant(&check_kv(&bad, BUDGET)),
            std::mem::discriminant(&LinResult::Illegal {
                key: 1,
                detail: String::new()
            })
        );
    }

    #[test]
    fn many_concurrent_writes_stay_tractable() {
        // 40 overlapping puts and reads interleaved: memoization keeps the search small.
        let mut h = Vec::new();
        for i in 0..40u64 {
            h.push(put(i, 0, 100 + i, 1 + i, Some(1000 + i)));
        }
        h.push(get(99, 0, Some(139), 2000, 2001));
        assert!(check_kv(&h, BUDGET).is_ok());
    }

    #[test]
    fn the_budget_yields_unknown_not_a_false_verdict() {
        let mut h = Vec::new();
        for i in 0..30u64 {
            h.push(put(i, 0, 100 + i, 1 + i, Some(1000 + i)));
        }
        h.push(get(99, 0, Some(5), 2000, 2001));
        assert_eq!(check_kv(&h, 10), LinResult::Unknown { key: 0 });
    }
}
