//! `raft-kv demo` without a terminal runs its scripted tour and exits 0 only if every
//! step happened: start, elect, write, kill the leader, re-elect, write, restart, catch
//! up, check every node holds the same entries.

mod common;

use common::*;

fn assert_tour_passed(args: &[&str]) {
    let o = raft_kv(args, &[]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for step in [
        "step 1/9: start the nodes ... ok",
        "step 2/9: elect a leader ... ok",
        "step 3/9: write Hello = World through a follower ... ok",
        "step 4/9: see it committed on every node ... ok",
        "step 5/9: kill the leader ... ok",
        "step 6/9: re-elect among the survivors ... ok",
        "step 7/9: write after = failover ... ok",
        "step 8/9: restart the old leader and let it catch up ... ok",
        "step 9/9: check every node holds the same entries ... ok",
        "2 entries each: Hello = World, after = failover",
        "demo passed in",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn scripted_tour_passes_over_loopback_udp() {
    assert_tour_passed(&["demo", "--script"]);
}

#[test]
fn scripted_tour_passes_encrypted_with_persistent_logs() {
    let dir = tempfile::tempdir().unwrap();
    assert_tour_passed(&[
        "demo",
        "--script",
        "--password",
        "demo password 123",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    // Each node kept its log in its own directory.
    for n in ["node1", "node2", "node3"] {
        assert!(dir.path().join(n).is_dir(), "{n} has no log directory");
    }
}
