//! Proof that the simulator's checkers bite: deliberately broken protocol variants (and
//! one broken driver) must each be caught within a bounded number of seeds.
//!
//! Run with `cargo test -p raft-testkit --release --features broken-variants` (CI does).

#![cfg(feature = "broken-variants")]

use raft_testkit::sim::{Broken, SimConfig, Simulator};
use raft_testkit::{KeyValue, Replay, Simulation};

/// Runs the campaign `sim` sets up, with `broken`, from seed 0 until a seed fails;
/// returns (seed, violation text).
fn first_failing_seed(broken: Broken, seeds_max: u64, sim: Simulation<KeyValue>) -> (u64, String) {
    let report = sim.broken(broken).seeds(0..seeds_max).shrink(false).run();
    match report.failure {
        Some(f) => {
            println!("{broken:?} caught by seed {}:\n{f}", f.seed);
            (f.seed, f.failure.violation.to_string())
        }
        None => panic!("{broken:?} survived {seeds_max} seeds: the checkers do not bite"),
    }
}

/// Runs seeds of a hand-made profile from 0 until one fails; returns (seed, violation
/// text).
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
    let (seed, v) = first_failing_seed(
        Broken::VoteWithoutLogCheck,
        50,
        Simulation::kv().random_nodes(),
    );
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
    // Lease reads with pauses and stalled syncs in every run.
    let (seed, v) = first_failing_seed(
        Broken::TicksAfterQueue,
        STALL_SEEDS_MAX,
        Simulation::kv().nodes(3).lease_reads(),
    );
    assert!(v.contains("not linearizable"), "seed {seed}: {v}");
}

const STALL_SEEDS_MAX: u64 = 1_000;

/// Thesis §4.1: one membership change at a time. A leader that accepts a change while
/// the previous one is uncommitted appends a configuration entry the membership
/// checker refuses.
#[test]
fn two_membership_changes_in_flight_are_caught() {
    let (seed, v) = first_failing_seed(
        Broken::TwoChangesInFlight,
        50,
        Simulation::kv().nodes(5).membership(),
    );
    assert!(v.contains("two changes in flight"), "seed {seed}: {v}");
}

/// Issue 18: a follower that takes a snapshot transfer for complete when its last chunk
/// arrives (chunks before it lost or reordered, no checksum check) stores and restores a
/// partial snapshot. The simulator's followers write received chunks to a file that is
/// not checked on the way (the protocol decides when it is complete), and restore from
/// the stored snapshot: the restore check catches it.
#[test]
fn installing_a_partial_snapshot_is_caught() {
    let (seed, v) = first_failing_seed(
        Broken::InstallPartialSnapshot,
        200,
        Simulation::kv().nodes(5),
    );
    assert!(v.contains("snapshot"), "seed {seed}: {v}");
}

/// Issue 14 step B: a follower that installs a snapshot without adopting the
/// configuration in its metadata keeps the configuration it had at that index. A node
/// that missed configuration entries (a learner added later, a voter that was down)
/// then counts votes and commits with a stale configuration: the configuration checker
/// sees two nodes disagree about the configuration at the same committed index.
#[test]
fn installing_a_snapshot_without_its_configuration_is_caught() {
    let (seed, v) = first_failing_seed(
        Broken::SnapshotWithoutConfig,
        300,
        Simulation::kv().nodes(5).membership(),
    );
    assert!(v.contains("membership"), "seed {seed}: {v}");
}

/// Figure 2: a vote request of a stale term is refused with the current term. Ignoring
/// it instead (etcd-io/raft ignores a stale `MsgVote`) lets a candidate campaign below
/// the term of a voter it needs forever when that voter's term is raised by a node
/// outside the configuration: seed 891 of the membership campaign loses liveness.
#[test]
fn ignoring_stale_vote_requests_is_caught() {
    let f = Simulation::kv()
        .nodes(5)
        .membership()
        .broken(Broken::IgnoreStaleVotes)
        .replay(&Replay::seed(891))
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
    let f = Simulation::kv()
        .nodes(5)
        .broken(Broken::DisruptiveOutsiders)
        .replay(&Replay::seed(2568))
        .failure
        .expect("seed 2568 fails when removed nodes may depose the leader");
    assert!(f.violation.to_string().contains("liveness"), "{f}");
}

/// Shrinking on the key/value campaign: the failing seed of two changes in flight
/// shrinks to a run with fewer fault kinds that still has membership changes (the bug
/// needs them), and
/// replaying the shrunk run, as its report prints it, gives its trace again.
#[test]
fn two_changes_in_flight_shrink_to_a_run_with_membership_changes() {
    let sim = || {
        Simulation::kv()
            .nodes(5)
            .membership()
            .broken(Broken::TwoChangesInFlight)
            .seeds(0..50)
    };
    let report = sim().run();
    let failure = report.failure.expect("two changes in flight are caught");
    println!("{failure}");
    let shrunk = failure.shrunk.as_ref().expect("a smaller run fails too");
    let faults = shrunk.run.faults.expect("shrinking sets the faults");
    assert!(
        faults.contains(raft_testkit::Fault::Membership),
        "{failure}"
    );
    // The other fault kinds are not needed: shrinking dropped some.
    assert_ne!(faults, raft_testkit::Faults::all(), "{failure}");
    let replay: Replay = failure
        .replay_env()
        .parse()
        .expect("the printed replay parses");
    let again = sim().replay(&replay);
    assert_eq!(again.trace_hash, shrunk.trace_hash, "{failure}");
    assert!(again.failure.is_some());
}
