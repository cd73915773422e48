//! Helpers shared by the real-cluster test files (proxy_udp.rs, linearizable_udp.rs):
//! waiting on conditions, and recording a multi-client history for the
//! linearizability checker.

// Each test file uses only some of these.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_core::node::Node;
use raft_core::{NodeId, Role};
use raft_testkit::cluster::{Kv, LocalCluster};
use raft_testkit::linearizability::{check_kv, KvInput, LinResult, Operation};
use rand::{Rng, SeedableRng};

/// The generous deadline of every wait.
pub const T: Duration = Duration::from_secs(30);

pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Polls `cond` every few milliseconds until it holds; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the nodes other than `excluded` agree on a leader among them.
pub fn wait_for_leader_without(c: &LocalCluster, excluded: NodeId) -> NodeId {
    let mut found = None;
    wait_until(
        &format!("the nodes other than n{excluded} agree on a leader"),
        T,
        || {
            let statuses: Vec<_> = c
                .running()
                .into_iter()
                .filter(|n| n.id() != excluded)
                .map(|n| n.status())
                .collect();
            let l = statuses[0].leader;
            let agreed = l.is_some()
                && l != Some(excluded)
                && statuses.iter().all(|s| s.leader == l)
                && statuses
                    .iter()
                    .any(|s| Some(s.id) == l && s.role == Role::Leader);
            found = l;
            agreed
        },
    );
    found.unwrap()
}

/// Sets the flag when dropped.
pub struct SetOnDrop(pub Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A clock for the history: strictly increasing nanoseconds since `start`, so every
/// event has a unique time and real-time order is kept.
pub struct HistClock {
    start: Instant,
    last: AtomicU64,
}

impl HistClock {
    pub fn new() -> HistClock {
        HistClock {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn now(&self) -> u64 {
        let t = self.start.elapsed().as_nanos() as u64;
        let prev = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some((l + 1).max(t)))
            .unwrap();
        (prev + 1).max(t)
    }
}

/// A multi-client key/value history being recorded: puts of unique values and
/// linearizable gets of keys `0..keys` (named `k0`, `k1`, ...).
pub struct Recorder {
    pub clock: HistClock,
    pub ops: Mutex<Vec<Operation>>,
    next_value: AtomicU64,
    pub keys: u64,
    pub op_timeout: Duration,
}

impl Recorder {
    pub fn new(keys: u64, op_timeout: Duration) -> Recorder {
        Recorder {
            clock: HistClock::new(),
            ops: Mutex::new(Vec::new()),
            next_value: AtomicU64::new(1),
            keys,
            op_timeout,
        }
    }

    /// Operations recorded so far.
    pub fn len(&self) -> usize {
        self.ops.lock().unwrap().len()
    }

    /// One random operation of `client` against `node`, recorded as the existing
    /// tests do: a write that errored or timed out never returned (it may still take
    /// effect); a read that failed is dropped (it tells nothing). Returns whether the
    /// operation failed.
    pub fn one_op(&self, client: u64, node: &Node<Kv>, rng: &mut impl Rng) -> bool {
        let key = rng.gen_range(0..self.keys);
        let name = format!("k{key}");
        let (input, call, result) = if rng.gen_bool(0.5) {
            let value = self.next_value.fetch_add(1, Ordering::SeqCst);
            let call = self.clock.now();
            let r = node.put_with_retry(name, value.to_string(), self.op_timeout);
            (KvInput::Put { key, value }, call, r.map(|_| None))
        } else {
            let call = self.clock.now();
            let r = node.get(&name, self.op_timeout);
            let r = r.map(|v| Some(v.map(|v| v.parse::<u64>().unwrap())));
            (KvInput::Get { key }, call, r)
        };
        self.record(client, input, call, result)
    }

    /// A linearizable read of key `key` by `client` on `node`, recorded if it succeeds.
    /// Returns whether it failed.
    pub fn get(&self, client: u64, node: &Node<Kv>, key: u64, timeout: Duration) -> bool {
        let call = self.clock.now();
        let r = node.get(&format!("k{key}"), timeout);
        let r = r.map(|v| Some(v.map(|v| v.parse::<u64>().unwrap())));
        self.record(client, KvInput::Get { key }, call, r)
    }

    /// Records an operation that returned now; returns whether it failed.
    fn record<E>(
        &self,
        client: u64,
        input: KvInput,
        call: u64,
        result: Result<Option<Option<u64>>, E>,
    ) -> bool {
        let ret = self.clock.now();
        let failed = result.is_err();
        let op = match (input, result) {
            (_, Ok(output)) => Some(Operation {
                client,
                input,
                output,
                call,
                ret: Some(ret),
            }),
            (KvInput::Put { .. }, Err(_)) => Some(Operation {
                client,
                input,
                output: None,
                call,
                ret: None,
            }),
            (KvInput::Get { .. }, Err(_)) => None,
        };
        if let Some(op) = op {
            self.ops.lock().unwrap().push(op);
        }
        failed
    }

    /// A client: random operations until `done`, starting at node `client % nodes`,
    /// moving to the next node after a failure (the node may be cut off or down).
    /// `node(i)` is the current handle of the `i`th node, `None` while it is down.
    pub fn client(
        &self,
        client: u64,
        seed: u64,
        nodes: usize,
        node: impl Fn(usize) -> Option<Node<Kv>>,
        done: &AtomicBool,
    ) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ client);
        let mut at = client as usize % nodes;
        while !done.load(Ordering::SeqCst) {
            let failed = match node(at) {
                Some(n) => self.one_op(client, &n, &mut rng),
                None => {
                    std::thread::sleep(Duration::from_millis(1));
                    true
                }
            };
            if failed {
                at = (at + 1) % nodes;
            }
        }
    }

    /// Waits until `n` more operations were recorded and at least `at_least` passed.
    pub fn phase(&self, what: &str, n: usize, at_least: Duration) {
        let (start, before) = (Instant::now(), self.len());
        wait_until(what, T, || {
            self.len() >= before + n && start.elapsed() >= at_least
        });
    }
}

/// Asserts the history is linearizable, and that the checker bites on it: the same
/// history with one read changed to a value never written is rejected.
pub fn assert_linearizable_and_checker_bites(history: &[Operation], seed: u64) {
    let reads_seen = history
        .iter()
        .filter(|o| matches!(o.output, Some(Some(_))))
        .count();
    assert!(reads_seen > 0, "no read saw a value");
    match check_kv(history, 5_000_000) {
        LinResult::Ok => {}
        other => panic!("not linearizable (RAFT_PROXY_SEED={seed}): {other:?}"),
    }
    let mut broken = history.to_vec();
    let read = broken
        .iter_mut()
        .find(|o| matches!(o.output, Some(Some(_))))
        .unwrap();
    read.output = Some(Some(u64::MAX));
    assert!(matches!(
        check_kv(&broken, 5_000_000),
        LinResult::Illegal { .. }
    ));
}
