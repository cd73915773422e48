//! The runtime over real loopback UDP with sled storage (and with encryption): the same
//! claims as raft-core's channel-transport runtime tests, for real.

use std::time::Duration;

use raft_core::node::{ClusterState, NodeError};
use raft_testkit::cluster::{ClusterOptions, LocalCluster};

const T: Duration = Duration::from_secs(30);

fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

#[test]
fn three_and_five_nodes_elect_one_leader_over_udp() {
    init_log();
    for nodes in [3, 5] {
        let c = LocalCluster::start(ClusterOptions {
            nodes,
            ..Default::default()
        })
        .unwrap();
        c.wait_for_leader(T).unwrap();
        for n in c.running() {
            n.wait_for_cluster(T).unwrap();
        }
    }
}

#[test]
fn writes_commit_everywhere_leader_failover_loses_nothing_encrypted() {
    init_log();
    let mut c = LocalCluster::start(ClusterOptions {
        password: Some("correct horse battery staple".into()),
        ..Default::default()
    })
    .unwrap();
    for i in 0..20 {
        let node = c.node(i % 3 + 1).unwrap();
        node.put_with_retry(format!("k{i}"), format!("v{i}"), T)
            .unwrap();
    }
    c.wait_all("all applied 20 keys", T, |n| {
        n.read_stale(|kv| kv.len()) == 20
    })
    .unwrap();
    let leader = c.wait_for_leader(T).unwrap();
    c.stop_node(leader);
    let new_leader = c.wait_for_leader(T).unwrap();
    assert_ne!(leader, new_leader);
    let survivor = c.node(new_leader).unwrap().clone();
    survivor
        .put_with_retry("after".into(), "failover".into(), T)
        .unwrap();
    for i in 0..20 {
        assert_eq!(
            survivor.get(&format!("k{i}"), T).unwrap(),
            Some(format!("v{i}"))
        );
    }
    // The old leader restarts from its sled log and catches up.
    c.start_node(leader).unwrap();
    c.wait_all("all applied 21 keys", T, |n| {
        n.read_stale(|kv| kv.len()) == 21
    })
    .unwrap();
}

#[test]
fn a_node_kept_down_rebuilds_its_log_and_every_node_restarts_from_sled() {
    init_log();
    let mut c = LocalCluster::start(ClusterOptions::default()).unwrap();
    c.stop_node(3);
    for i in 0..300 {
        c.node(1)
            .unwrap()
            .put_with_retry(format!("k{i}"), "v".into(), T)
            .unwrap();
    }
    c.start_node(3).unwrap();
    c.wait_all("node 3 rebuilt its log", T, |n| {
        n.read_stale(|kv| kv.len()) == 300
    })
    .unwrap();
    // Beta test 15: stop every node and start them again from persistent storage.
    c.stop_all();
    for id in 1..=3 {
        let node = c.start_node(id).unwrap();
        // The committed entries come back from the node's own log, before any leader.
        let deadline = std::time::Instant::now() + T;
        while node.read_stale(|kv| kv.len()) < 300 {
            assert!(
                std::time::Instant::now() < deadline,
                "n{id} did not replay its log"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    c.wait_for_leader(T).unwrap();
    c.node(2)
        .unwrap()
        .put_with_retry("again".into(), "yes".into(), T)
        .unwrap();
}

#[test]
fn many_proposer_threads_every_acknowledged_write_applied_exactly_once() {
    init_log();
    let c = LocalCluster::start(ClusterOptions::default()).unwrap();
    c.wait_for_leader(T).unwrap();
    let nodes: Vec<_> = c.running().into_iter().cloned().collect();
    let acked: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let node = nodes[t % 3].clone();
                s.spawn(move || {
                    (0..40)
                        .map(|i| {
                            let key = format!("t{t}-{i}");
                            let prev = node.put_with_retry(key.clone(), "v".into(), T).unwrap();
                            assert_eq!(prev, None, "{key} applied twice");
                            key
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(acked.len(), 320);
    c.wait_all("every node applied every write", T, |n| {
        n.read_stale(|kv| kv.len()) == 320
    })
    .unwrap();
}

#[test]
fn a_node_alone_reports_cluster_not_found() {
    init_log();
    let mut c = LocalCluster::start(ClusterOptions {
        join_attempts: 2,
        join_attempt_interval_ms: 100,
        ..Default::default()
    })
    .unwrap();
    c.stop_node(2);
    c.stop_node(3);
    c.stop_node(1);
    let node = c.start_node(1).unwrap();
    assert!(matches!(
        node.wait_for_cluster(T),
        Err(NodeError::ClusterNotFound { attempts: 2, .. })
    ));
    assert_eq!(node.status().cluster, ClusterState::NotFound);
}
