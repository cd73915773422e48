//! Snapshots and log compaction in the runtime (in-process transport, real threads).

mod support;

use std::time::Duration;
use support::{contents, start_kv, wait_until, Kv};

use raft_core::node::{ChannelNetwork, Node, NodeConfig};
use raft_core::{Log, MemLog, NodeId};

const T: Duration = Duration::from_secs(30);

fn config(id: NodeId) -> NodeConfig {
    let mut c = NodeConfig::new(id, [1, 2, 3]);
    c.snapshot_after_entries = 100;
    c.snapshot_trailing_entries = 20;
    c
}

fn start(net: &ChannelNetwork, id: NodeId, log: Box<dyn Log>) -> Node<Kv> {
    start_kv(net, config(id), log).unwrap()
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_by_snapshot_and_the_log_stays_bounded() {
    let net = ChannelNetwork::new();
    let mut nodes: Vec<Node<Kv>> = (1..=3)
        .map(|id| start(&net, id, Box::new(MemLog::new())))
        .collect();
    nodes[0]
        .put_with_retry("first".into(), "1".into(), T)
        .unwrap();
    wait_until(T, "n3 has the first write", || {
        nodes[2].read_stale(|kv| kv.len()) == 1
    });
    // n3 goes away with its log; the cluster writes far past the compaction point.
    nodes[2].stop();
    let n3_log = nodes[2].take_log().unwrap();
    let n3_last = n3_log.last_index();
    for i in 0..1000 {
        nodes[i % 2]
            .put_with_retry(format!("k{i}"), format!("v{i}"), T)
            .unwrap();
    }
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let l = &nodes[(leader - 1) as usize];
    // Compaction keeps the log bounded: at most snapshot_after_entries (stretched by up
    // to SNAPSHOT_STRETCH_PERCENT_MAX) + trailing
    // entries (+ what arrived since the last snapshot).
    wait_until(T, "the leader's log is compacted", || {
        let s = l.status();
        s.last_index > 1000 && s.last_index + 1 - s.first_index <= 150 + 20 + 1
    });
    // n3 comes back with its old log: its next entry was compacted away.
    nodes[2] = start(&net, 3, n3_log);
    wait_until(T, "n3 caught up by snapshot", || {
        nodes[2].read_stale(|kv| kv.len()) == 1001
    });
    assert_eq!(contents(&nodes[2]), contents(&nodes[0]));
    let n3_first = {
        nodes[2].stop();
        let log = nodes[2].take_log().unwrap();
        let first = log.first_index();
        // Restart from the installed snapshot plus the log after it.
        nodes[2] = start(&net, 3, log);
        first
    };
    assert!(
        n3_first > n3_last + 1,
        "n3's log was compacted by the snapshot ({n3_first})"
    );
    wait_until(T, "n3 restored from its snapshot", || {
        nodes[2].read_stale(|kv| kv.len()) == 1001
    });
    nodes[2]
        .put_with_retry("after".into(), "restart".into(), T)
        .unwrap();
    wait_until(T, "all applied the last write", || {
        nodes.iter().all(|n| n.read_stale(|kv| kv.len()) == 1002)
    });
    for n in &nodes {
        n.stop();
    }
}

#[test]
fn manual_snapshot_compacts_and_a_restart_resumes_from_it() {
    let net = ChannelNetwork::new();
    let mut c = NodeConfig::new(1, [1]);
    c.snapshot_after_entries = 0;
    c.snapshot_after_log_bytes = 0;
    c.snapshot_trailing_entries = 0;
    let node: Node<Kv> = Node::builder(c.clone())
        .log(MemLog::new())
        .transport(net.transport(1))
        .state_machine(Kv::new())
        .start()
        .unwrap();
    for i in 0..50 {
        node.put_with_retry(format!("k{i}"), "v".into(), T).unwrap();
    }
    node.snapshot_now().unwrap();
    wait_until(T, "the snapshot is stored", || {
        node.status().snapshot_index >= 51
    });
    node.stop();
    let log = node.take_log().unwrap();
    let snap = log.snapshot().unwrap().expect("a snapshot was stored");
    assert!(snap.meta.last_index >= 51);
    assert_eq!(
        log.first_index(),
        snap.meta.last_index + 1,
        "compacted behind the snapshot"
    );
    let node: Node<Kv> = Node::builder(c)
        .boxed_log(log)
        .transport(net.transport(1))
        .state_machine(Kv::new())
        .start()
        .unwrap();
    assert_eq!(
        node.read_stale(|kv| kv.len()),
        50,
        "state restored from the snapshot at start"
    );
    node.put_with_retry("after".into(), "restart".into(), T)
        .unwrap();
    assert_eq!(
        node.get(&"k7".to_string(), T).unwrap(),
        Some("v".to_string())
    );
    node.stop();
}
