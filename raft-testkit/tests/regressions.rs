//! Seeds that once failed, kept so the bug they found stays fixed. Each names the bug;
//! `tests/protocol_bugs.rs` pins each protocol bug down with a scripted scenario too,
//! because a seed replays the same run only while the simulator makes the same random
//! choices: a change to the simulator can move a bug away from its seed.

use raft_testkit::run_seed;

fn assert_passes(seed: u64, nodes: Option<usize>) {
    let report = run_seed(seed, nodes);
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
        assert_passes(seed, Some(5));
    }
}

/// A leader that had started a leadership transfer kept serving lease reads; the
/// transferee's election (which followers honour even inside a lease) elected a new
/// leader that committed a write the old one's reads did not see: not linearizable.
#[test]
fn no_lease_reads_after_a_transfer_started() {
    assert_passes(2088, None);
}

/// Snapshot transfers under reordering: late answers of 0 (the first chunk had not
/// arrived yet) made the leader resend whole windows from 0, one per answer: 45
/// million chunk messages and two minutes for this one run. Now 37 thousand.
#[test]
fn late_snapshot_answers_do_not_storm() {
    let report = run_seed(1_000_099, Some(5));
    if let Some(f) = &report.failure {
        panic!("{f}");
    }
    let chunks = report
        .faults
        .get("snapshot_chunk_sent")
        .copied()
        .unwrap_or(0);
    assert!(chunks < 500_000, "{chunks} snapshot chunks sent");
}

/// Without pre-vote, candidates with logs too short to win kept restarting everyone's
/// election timer with their refused vote requests: no leader for 900 ticks.
#[test]
fn refused_vote_requests_do_not_hold_off_elections() {
    assert_passes(103_648, None);
}

/// Lease reads: a follower that held up the leader's lease was forced to campaign
/// (`Raft::campaign`) and elected at once; the cut-off old leader then served a lease
/// read that missed a write the new one had committed. (Scripted:
/// protocol_bugs.rs::a_follower_forced_to_campaign_waits_out_the_lease_it_granted.)
#[test]
fn a_forced_campaign_waits_out_the_lease_it_granted() {
    assert_passes(106_384, None);
}
