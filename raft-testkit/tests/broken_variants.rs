//! Proof that the simulator's checkers bite: deliberately broken protocol variants (and
//! one broken driver) must each be caught within a bounded number of seeds.
//!
//! Run with `cargo test -p raft-testkit --release --features broken-variants` (CI does).

#![cfg(feature = "broken-variants")]

use raft_testkit::sim::{Broken, SimConfig, Simulator};

/// Runs seeds from 0 until one fails; returns (seed, violation text).
fn first_failure(
    broken: Broken,
    seeds_max: u64,
    config: impl Fn(u64) -> SimConfig,
) -> (u64, String) {
    for seed in 0..seeds_max {
        let mut cfg = config(seed);
        cfg.broken = Some(broken);
        if let Some(f) = Simulator::new(cfg).run().failure {
            println!("{broken:?} caught by seed {seed}:\n{f}");
            return (seed, f.violation.to_string());
        }
    }
    panic!("{broken:?} survived {seeds_max} seeds: the checkers do not bite");
}

/// Votes granted without the up-to-date check elect leaders that lack committed
/// entries: leader completeness (or the follower's own refusal to truncate a
/// committed entry) fires.
#[test]
fn voting_without_the_log_check_is_caught() {
    let (seed, v) = first_failure(Broken::VoteWithoutLogCheck, 50, |s| {
        SimConfig::random(s, None)
    });
    assert!(seed < 50, "{v}");
}

/// Committing an older term's entry by counting replicas (the Figure 8 bug) lets a
/// later leader overwrite it. Reaching Figure 8 takes a leader elected with an
/// older entry, a crash right after it replicated that entry, and a rival with a
/// conflicting newer entry: the campaign profile with frequent leader crashes.
#[test]
fn committing_older_terms_by_counting_is_caught() {
    let (seed, v) = first_failure(Broken::CommitOlderTerms, FIGURE8_SEEDS_MAX, figure8_profile);
    assert!(seed < FIGURE8_SEEDS_MAX, "{v}");
}

const FIGURE8_SEEDS_MAX: u64 = 500;

fn figure8_profile(seed: u64) -> SimConfig {
    let mut c = SimConfig::random(seed, Some(3));
    c.faults.crash = true;
    c.faults.new_leader_crash = 0.5;
    // One entry per append and one append in flight: a new leader's old entry and its
    // no-op travel separately, so a crash can fall between them (Figure 8 (c)-(d)).
    let entry = 25 + raft_core::Entry::OVERHEAD_BYTES;
    c.raft.append_bytes_max = entry;
    c.raft.inflight_messages_max = 1;
    c.raft.inflight_small_appends_max = 1;
    c.raft.inflight_bytes_max = entry;
    c.snapshots = None;
    c
}

/// Issue 19: a node that handles what queued up during a pause or a stalled sync before
/// it catches up on the ticks it missed (the WaitLoop's old order) answers lease reads
/// on a lease that ran out meanwhile: the linearizability checker catches the stale read.
#[test]
fn handling_the_queue_before_the_missed_ticks_is_caught() {
    let (seed, v) = first_failure(Broken::TicksAfterQueue, STALL_SEEDS_MAX, stall_profile);
    assert!(v.contains("not linearizable"), "seed {seed}: {v}");
}

const STALL_SEEDS_MAX: u64 = 1_000;

/// Lease reads with pauses and stalled syncs in every run.
fn stall_profile(seed: u64) -> SimConfig {
    let mut c = SimConfig::random(seed, Some(3));
    c.force_lease_reads();
    c
}

/// Thesis §4.1: one membership change at a time. A leader that accepts a change while
/// the previous one is uncommitted appends a configuration entry the membership
/// checker refuses.
#[test]
fn two_membership_changes_in_flight_are_caught() {
    let (seed, v) = first_failure(Broken::TwoChangesInFlight, 50, |s| {
        let mut c = SimConfig::random(s, Some(5));
        c.force_membership();
        c
    });
    assert!(v.contains("two changes in flight"), "seed {seed}: {v}");
}

/// Issue 18: a follower that takes a snapshot transfer for complete when its last chunk
/// arrives (chunks before it lost or reordered, no checksum check) stores and restores a
/// partial snapshot. The simulator's followers write received chunks to a file that is
/// not checked on the way (the protocol decides when it is complete), and restore from
/// the stored snapshot: the restore check catches it.
#[test]
fn installing_a_partial_snapshot_is_caught() {
    let (seed, v) = first_failure(Broken::InstallPartialSnapshot, 200, |s| {
        SimConfig::random(s, Some(5))
    });
    assert!(v.contains("snapshot"), "seed {seed}: {v}");
}

/// Issue 14 step B: a follower that installs a snapshot without adopting the
/// configuration in its metadata keeps the configuration it had at that index. A node
/// that missed configuration entries (a learner added later, a voter that was down)
/// then counts votes and commits with a stale configuration: the configuration checker
/// sees two nodes disagree about the configuration at the same committed index.
#[test]
fn installing_a_snapshot_without_its_configuration_is_caught() {
    let (seed, v) = first_failure(Broken::SnapshotWithoutConfig, 300, |s| {
        let mut c = SimConfig::random(s, Some(5));
        c.force_membership();
        c
    });
    assert!(v.contains("membership"), "seed {seed}: {v}");
}

/// Figure 2: a vote request of a stale term is refused with the current term. Ignoring
/// it instead (etcd-io/raft ignores a stale `MsgVote`) lets a candidate campaign below
/// the term of a voter it needs forever when that voter's term is raised by a node
/// outside the configuration: seed 891 of the membership campaign loses liveness.
#[test]
fn ignoring_stale_vote_requests_is_caught() {
    let mut cfg = SimConfig::random(891, Some(5));
    cfg.force_membership();
    cfg.broken = Some(Broken::IgnoreStaleVotes);
    let f = Simulator::new(cfg)
        .run()
        .failure
        .expect("seed 891 fails when stale vote requests are ignored");
    assert!(f.violation.to_string().contains("liveness"), "{f}");
}

/// Thesis §4.2.3: while a leader is heard from, a vote request from a node outside the
/// configuration is ignored, also without check-quorum. Taken instead, a removed node
/// that never learned of its removal deposes leader after leader: seed 2568 (plain
/// campaign, membership drawn) never catches a lagging voter up and loses liveness.
#[test]
fn hearing_disruptive_outsiders_is_caught() {
    let mut cfg = SimConfig::random(2568, Some(5));
    cfg.broken = Some(Broken::DisruptiveOutsiders);
    let f = Simulator::new(cfg)
        .run()
        .failure
        .expect("seed 2568 fails when removed nodes may depose the leader");
    assert!(f.violation.to_string().contains("liveness"), "{f}");
}
