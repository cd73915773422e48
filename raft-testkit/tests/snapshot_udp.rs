//! Snapshots over real UDP with encryption and sled: a node is down while 100,000 entries
//! commit and the log compacts; it then rejoins by snapshot.

use std::time::{Duration, Instant};

use raft_testkit::cluster::{ClusterOptions, LocalCluster};

const T: Duration = Duration::from_secs(120);

#[test]
fn a_node_down_while_100k_entries_commit_rejoins_by_snapshot_encrypted() {
    // Millisecond timestamps: with RUST_LOG=info the "sending"/"installing" lines give
    // the snapshot transfer time.
    let _ = env_logger::builder()
        .is_test(true)
        .format_timestamp_millis()
        .try_init();
    let entries: usize = std::env::var("RAFT_SNAPSHOT_TEST_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // MemLog by default keeps this under CI's budget; RAFT_SNAPSHOT_TEST_SLED=1 runs it
    // on sled (slower: every batch waits for a real fdatasync).
    let sled = std::env::var("RAFT_SNAPSHOT_TEST_SLED").is_ok_and(|v| v == "1");
    let mut c = LocalCluster::start(ClusterOptions {
        sled,
        password: Some("snapshot test password".into()),
        snapshot_after_entries: 10_000,
        snapshot_trailing_entries: 1_000,
        ..Default::default()
    })
    .unwrap();
    c.wait_for_leader(T).unwrap();
    c.stop_node(3);
    let leader = c.wait_for_leader(T).unwrap();
    let node = c.node(leader).unwrap().clone();
    let started = Instant::now();
    let threads = 32;
    std::thread::scope(|s| {
        for t in 0..threads {
            let node = node.clone();
            s.spawn(move || {
                for i in (t..entries).step_by(threads) {
                    node.put_with_retry(format!("k{i:06}"), format!("v{i}"), T)
                        .unwrap();
                }
            });
        }
    });
    let write_time = started.elapsed();
    let status = node.status();
    eprintln!(
        "{entries} entries committed in {write_time:?}; leader log {}..={} (snapshot at {})",
        status.first_index, status.last_index, status.snapshot_index
    );
    assert!(
        status.snapshot_index > 0,
        "the leader took snapshots: {status:?}"
    );
    // The log stays bounded: at most a snapshot interval (stretched by up to
    // SNAPSHOT_STRETCH_PERCENT_MAX) plus the trailing window.
    let interval_max = 10_000 * (100 + raft_core::node::SNAPSHOT_STRETCH_PERCENT_MAX) / 100;
    c.wait_all("logs compacted", T, |n| {
        let s = n.status();
        s.last_index + 1 - s.first_index <= interval_max + 1_000 + 1_000
    })
    .unwrap();

    let rejoin = Instant::now();
    let n3 = c.start_node(3).unwrap();
    let deadline = Instant::now() + T;
    while n3.read_stale(|kv| kv.len()) < entries {
        assert!(
            Instant::now() < deadline,
            "n3 did not catch up: {:?}",
            n3.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let s3 = n3.status();
    eprintln!("n3 caught up in {:?}: {s3:?}", rejoin.elapsed());
    assert!(s3.snapshot_index > 0, "n3 caught up by snapshot: {s3:?}");
    assert!(
        s3.first_index > 1,
        "n3's log starts after the snapshot: {s3:?}"
    );
    let leader_state = node.read_stale(|kv| {
        kv.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    });
    let n3_state = n3.read_stale(|kv| {
        kv.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    });
    assert_eq!(leader_state.len(), n3_state.len());
    assert!(leader_state == n3_state, "n3's state equals the leader's");
    // And it keeps working.
    n3.put_with_retry("after".into(), "rejoin".into(), T)
        .unwrap();
}
