//! The node's metrics (raft_core::node::metrics) move with a real 3-node cluster: term,
//! role, indexes, leader changes, proposals, messages by kind, the log write and sync
//! histograms, apply batches and snapshots, each under the right `node` label.
//!
//! A small recorder keeps the latest value of every metric (the facade's
//! `DebuggingRecorder` resets values on each read, which does not suit polling). It is
//! set for the test's thread only, around each node's start: the nodes register their
//! handles there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use raft_core::node::metrics as m;
use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig};
use raft_core::MemLog;

/// Keeps every metric's latest value; reads never reset them.
#[derive(Clone)]
struct TestRecorder {
    registry: Arc<Registry<Key, AtomicStorage>>,
}

impl TestRecorder {
    fn new() -> Self {
        Self {
            registry: Arc::new(Registry::atomic()),
        }
    }

    fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
        key.name() == name
            && labels
                .iter()
                .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
    }

    /// The sum of the counters named `name` with these labels (among others).
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.registry
            .get_counter_handles()
            .iter()
            .filter(|(k, _)| Self::matches(k, name, labels))
            .map(|(_, c)| c.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// The gauge named `name` with these labels; `None` if not registered.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.registry
            .get_gauge_handles()
            .iter()
            .find(|(k, _)| Self::matches(k, name, labels))
            .map(|(_, g)| f64::from_bits(g.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// The samples recorded in the histogram named `name` with these labels.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.registry
            .get_histogram_handles()
            .iter()
            .filter(|(k, _)| Self::matches(k, name, labels))
            .flat_map(|(_, h)| h.data())
            .collect()
    }

    /// Every distinct `node` label seen.
    fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .registry
            .get_gauge_handles()
            .keys()
            .filter_map(|k| {
                k.labels()
                    .find(|l| l.key() == m::LABEL_NODE)
                    .map(|l| l.value().to_string())
            })
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

type Kv = KvStore<String, u64>;

fn config(id: u64) -> NodeConfig {
    let mut c = NodeConfig::new(id, [1, 2, 3]);
    // Snapshots early and no trailing entries: a node started late catches up by one.
    c.snapshot_after_entries = 10;
    c.snapshot_trailing_entries = 0;
    c
}

fn start(recorder: &TestRecorder, net: &ChannelNetwork, id: u64) -> Node<Kv> {
    metrics::with_local_recorder(recorder, || {
        Node::builder(config(id))
            .log(MemLog::new())
            .transport(net.transport(id))
            .state_machine(Kv::new())
            .start()
    })
    .expect("node starts")
}

/// Polls `check` until it holds or `timeout` passes; the metrics are published at each
/// tick, so they follow the cluster within a few ticks.
fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn metrics_follow_a_three_node_cluster() {
    let recorder = TestRecorder::new();
    let net = ChannelNetwork::new();
    // Two of three first: a majority, so they elect and commit without node 3.
    let mut nodes = vec![start(&recorder, &net, 1), start(&recorder, &net, 2)];
    nodes[0].wait_for_leader(WAIT).expect("a leader");

    const WRITES: u64 = 40;
    for i in 0..WRITES {
        nodes[(i % 2) as usize]
            .put_with_retry(format!("k{i}"), i, WAIT)
            .expect("write");
    }
    // Node 3 joins late: the log behind the snapshots is gone, so it installs one.
    nodes.push(start(&recorder, &net, 3));
    // Once it has caught up, one more write: a snapshot can cover every entry so far, and
    // then n3 would have appended none (its append histogram would be empty).
    let caught_up = nodes[..2]
        .iter()
        .map(|n| n.status().applied_index)
        .max()
        .unwrap_or(0);
    eventually(WAIT, "n3 catches up by snapshot", || {
        nodes[2].status().applied_index >= caught_up
    });
    nodes[0]
        .put_with_retry("after-join".to_string(), WRITES + 1, WAIT)
        .expect("write after n3 joined");
    // Each write was applied on the node it went through before it returned.
    let last = nodes
        .iter()
        .map(|n| n.status().applied_index)
        .max()
        .unwrap_or(0);
    assert!(last > WRITES, "applied {last}");
    for node in &nodes {
        let id = node.id();
        eventually(WAIT, "every node applies every write", || {
            node.status().applied_index >= last
        });
        let n = id.to_string();
        let node_label = [(m::LABEL_NODE, n.as_str())];
        eventually(WAIT, "the gauges catch up", || {
            recorder.gauge(m::APPLIED_INDEX, &node_label) >= Some(last as f64)
                && recorder.gauge(m::COMMIT_INDEX, &node_label) >= Some(last as f64)
                && recorder.gauge(m::LAST_INDEX, &node_label) >= Some(last as f64)
        });
        assert!(
            recorder.gauge(m::TERM, &node_label) >= Some(1.0),
            "n{id} term"
        );
        assert_eq!(
            recorder.gauge(m::CLUSTER_FOUND, &node_label),
            Some(1.0),
            "n{id}"
        );
        assert!(
            recorder.counter(m::LEADER_CHANGES_TOTAL, &node_label) >= 1,
            "n{id} saw a leader"
        );
        // Every node wrote and synced entries, and applied batches.
        assert!(
            !recorder
                .histogram(m::LOG_APPEND_SECONDS, &node_label)
                .is_empty(),
            "n{id} append histogram"
        );
        let syncs = recorder.histogram(
            m::LOG_SYNC_SECONDS,
            &[(m::LABEL_NODE, n.as_str()), (m::LABEL_CAUSE, "ready")],
        );
        assert!(!syncs.is_empty(), "n{id} sync histogram");
        assert!(syncs.iter().all(|s| *s >= 0.0 && *s < 60.0), "{syncs:?}");
        let batches = recorder.histogram(m::APPLY_BATCH_ENTRIES, &node_label);
        assert!(
            batches.iter().sum::<f64>() >= 1.0,
            "n{id} apply batches {batches:?}"
        );
        assert!(
            recorder.counter(m::MESSAGES_RECEIVED_TOTAL, &node_label) > 0,
            "n{id}"
        );
    }

    // Exactly one leader by the gauges, and it is the one the nodes follow.
    eventually(WAIT, "one node reports is_leader 1", || {
        let leaders: Vec<u64> = (1..=3)
            .filter(|id| {
                recorder.gauge(m::IS_LEADER, &[(m::LABEL_NODE, &id.to_string())]) == Some(1.0)
            })
            .collect();
        leaders.len() == 1
    });
    let leader_now = nodes[0].wait_for_leader(WAIT).expect("a leader");
    let l = leader_now.to_string();
    let leader_label = [(m::LABEL_NODE, l.as_str())];
    assert_eq!(
        recorder.gauge(
            m::ROLE,
            &[(m::LABEL_NODE, l.as_str()), (m::LABEL_ROLE, "leader")]
        ),
        Some(1.0)
    );
    assert_eq!(
        recorder.gauge(
            m::ROLE,
            &[(m::LABEL_NODE, l.as_str()), (m::LABEL_ROLE, "follower")]
        ),
        Some(0.0)
    );
    assert!(recorder.counter(m::ELECTIONS_STARTED_TOTAL, &leader_label) >= 1);
    assert!(recorder.counter(m::BECAME_LEADER_TOTAL, &leader_label) >= 1);
    assert!(
        recorder.counter(
            m::MESSAGES_SENT_TOTAL,
            &[(m::LABEL_NODE, l.as_str()), (m::LABEL_KIND, "append")]
        ) > 0
    );
    // Every node follows the same leader.
    for id in 1..=3u64 {
        eventually(WAIT, "every node knows the leader", || {
            recorder.gauge(m::LEADER_ID, &[(m::LABEL_NODE, &id.to_string())])
                == Some(leader_now as f64)
        });
    }

    // Proposals: every write was counted on the node it went through.
    let proposals: u64 = (1..=2)
        .map(|id| recorder.counter(m::PROPOSALS_TOTAL, &[(m::LABEL_NODE, &id.to_string())]))
        .sum();
    assert!(proposals >= WRITES, "proposals {proposals}");
    // (A write may have failed with no_leader and been retried if the leader changed
    // under load; none was too large.)
    assert_eq!(
        recorder.counter(m::PROPOSALS_FAILED_TOTAL, &[(m::LABEL_REASON, "too_large")]),
        0
    );

    // Snapshots: taken on the first two, sent by the leader of the time, installed on
    // node 3.
    for id in [1u64, 2] {
        let n = id.to_string();
        assert!(
            recorder.counter(m::SNAPSHOTS_TAKEN_TOTAL, &[(m::LABEL_NODE, &n)]) >= 1,
            "n{id} took a snapshot"
        );
        assert!(recorder.counter(m::SNAPSHOT_TAKEN_BYTES_TOTAL, &[(m::LABEL_NODE, &n)]) > 0);
    }
    assert!(recorder.counter(m::SNAPSHOTS_INSTALLED_TOTAL, &[(m::LABEL_NODE, "3")]) >= 1);
    assert!(recorder.counter(m::SNAPSHOT_INSTALLED_BYTES_TOTAL, &[(m::LABEL_NODE, "3")]) > 0);
    assert!(recorder.counter(m::SNAPSHOT_CHUNKS_SENT_TOTAL, &[(m::LABEL_NODE, "3")]) == 0);
    assert!(recorder.counter(m::SNAPSHOT_CHUNKS_SENT_TOTAL, &[]) >= 1);
    assert!(
        recorder.counter(
            m::MESSAGES_RECEIVED_TOTAL,
            &[(m::LABEL_NODE, "3"), (m::LABEL_KIND, "install_snapshot")]
        ) >= 1
    );
    assert!(recorder.counter(m::SNAPSHOT_SENT_BYTES_TOTAL, &[]) > 0);

    // A proposal the protocol refuses is counted by reason, on the leader.
    let leader_node = &nodes[(leader_now - 1) as usize];
    let too_large = vec![0u8; leader_node.config().protocol.entry_bytes_max as usize + 1];
    assert!(leader_node.propose_wait(too_large, WAIT).is_err());
    eventually(WAIT, "the refusal is counted", || {
        recorder.counter(
            m::PROPOSALS_FAILED_TOTAL,
            &[(m::LABEL_NODE, l.as_str()), (m::LABEL_REASON, "too_large")],
        ) == 1
    });

    assert_eq!(recorder.nodes(), ["1", "2", "3"]);
    for node in &nodes {
        node.stop();
    }
}
