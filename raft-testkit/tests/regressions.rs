//! Seeds that once failed, kept so the bug they found stays fixed. Each names the bug and
//! the commit that fixed it; the seed replays the same run exactly, so it fails again if
//! the fix is reverted.

use raft_testkit::run_seed;

fn assert_passes(seed: u64, nodes: usize) {
    let report = run_seed(seed, Some(nodes));
    if let Some(f) = report.failure {
        panic!("{f}");
    }
}

/// A leader in replicate state whose whole in-flight window of appends was lost never
/// sent again: heartbeat answers did not reopen the window, so the follower stalled
/// forever and, with enough followers stalled, nothing committed ("liveness: no leader
/// accepted a write" once the uncommitted tail filled up).
#[test]
fn lost_appends_in_a_full_replicate_window_are_resent() {
    for seed in [6, 20, 22, 24] {
        assert_passes(seed, 5);
    }
}
