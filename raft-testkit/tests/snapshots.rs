//! Snapshots and log compaction in the simulator (issue 8): scripted scenarios where a
//! follower must catch up by InstallSnapshot, with crashes in the middle of an install
//! and a network that loses, duplicates and reorders the chunks; and proof that a
//! broken state machine snapshot is caught.
//!
//! Every run also passes every check of the simulator: election safety, log matching,
//! leader completeness and state machine safety on compacted logs, restored state
//! machines equal to the committed prefix they claim, linearizability, and the
//! liveness phase (every node applies a new write after the faults heal).

use raft_core::NodeId;
use raft_testkit::network::LinkProfile;
use raft_testkit::sim::{
    BrokenSnapshot, RunReport, Scripted, SimConfig, Simulator, SnapshotPolicy, UNITS_PER_TICK,
};

const FOLLOWER: NodeId = 3;

/// A calm 5-node run that snapshots every 10 applied entries keeping 2, in chunks of 64
/// bytes (a snapshot takes tens of them), where n3 is cut off from tick 50 to 250 while
/// the others keep writing and compacting, plus `more` scripted faults.
fn isolated_follower(seed: u64, more: &[(u64, Scripted)]) -> SimConfig {
    let mut cfg = SimConfig::calm(seed, 5);
    cfg.safety_ticks = 400;
    cfg.clients = 4;
    cfg.snapshots = Some(SnapshotPolicy {
        every_applied_entries: 10,
        trailing_entries: 2,
    });
    cfg.raft.snapshot_chunk_bytes = 64;
    cfg.script = vec![(50, Scripted::Isolate(FOLLOWER)), (250, Scripted::Heal)];
    cfg.script.extend_from_slice(more);
    cfg
}

fn run(cfg: SimConfig) -> RunReport {
    let report = Simulator::new(cfg).run();
    if let Some(f) = &report.failure {
        panic!("{f}");
    }
    report
}

fn count(report: &RunReport, kind: &str) -> u64 {
    report.faults.get(kind).copied().unwrap_or(0)
}

/// (a) A follower partitioned away while the others compact past its log end rejoins
/// by InstallSnapshot and converges: the liveness phase has every node apply a new
/// write, and the final check compares every state machine with the committed prefix.
#[test]
fn a_follower_cut_off_past_the_compaction_point_rejoins_by_snapshot() {
    for seed in 1..=3 {
        let report = run(isolated_follower(seed, &[]));
        assert!(
            report.snapshots_installed[&FOLLOWER] >= 1,
            "seed {seed}: n{FOLLOWER} installed no snapshot: {:?}",
            report.faults
        );
        assert!(count(&report, "log_compacted") > 0);
        assert!(report.liveness_ticks.is_some());
    }
}

/// (b) The follower crashes between two chunks of the transfer, restarts, and the
/// leader starts the transfer again (the follower asks from offset 0).
#[test]
fn a_crash_between_snapshot_chunks_restarts_the_transfer() {
    for seed in 1..=3 {
        let crash = Scripted::CrashWhileReceivingSnapshot {
            node: FOLLOWER,
            down_ticks: 5,
        };
        let report = run(isolated_follower(seed, &[(250, crash)]));
        assert_eq!(count(&report, "scripted_crash"), 1, "seed {seed}");
        assert!(count(&report, "crash_while_receiving_snapshot") >= 1);
        assert!(report.snapshots_installed[&FOLLOWER] >= 1, "seed {seed}");
    }
}

/// (b) The follower has written an installed snapshot (saved it, compacted its log to
/// it, stored the hard state) and crashes before the sync, keeping none, one (the
/// snapshot without the compaction: the case a protocol fix is about), two or all of
/// those writes. It restarts from whatever survived and catches up.
#[test]
fn a_crash_after_saving_an_installed_snapshot_before_its_sync() {
    for kept_writes in [0, 1, 2, usize::MAX] {
        for seed in 1..=2 {
            let crash = Scripted::CrashBeforeSnapshotSync {
                node: FOLLOWER,
                kept_writes,
                down_ticks: 3,
            };
            let report = run(isolated_follower(seed, &[(250, crash)]));
            let context = format!("kept {kept_writes}, seed {seed}: {:?}", report.faults);
            assert_eq!(count(&report, "scripted_crash"), 1, "{context}");
            assert!(
                count(&report, "crash_before_snapshot_sync") >= 1,
                "{context}"
            );
            match kept_writes {
                0 => assert!(
                    count(&report, "crash_lost_unsynced_snapshot") >= 1,
                    "{context}"
                ),
                1 => assert!(
                    count(&report, "crash_kept_snapshot_not_compaction") >= 1,
                    "{context}"
                ),
                _ => {}
            }
            assert!(
                count(&report, "snapshot_restored_at_restart") >= 1,
                "{context}"
            );
        }
    }
}

/// (c) The transfer happens over links that lose, duplicate and delay (so reorder)
/// chunks and their answers.
#[test]
fn a_snapshot_transfer_survives_lost_duplicated_and_reordered_chunks() {
    for seed in 1..=3 {
        let mut cfg = isolated_follower(seed, &[]);
        cfg.faults.link = LinkProfile {
            loss: 0.15,
            duplicate: 0.15,
            long_tail: 0.05,
            long_tail_max_units: 5 * UNITS_PER_TICK,
        };
        let report = run(cfg);
        for kind in [
            "snapshot_chunk_lost",
            "snapshot_chunk_duplicated",
            "snapshot_chunk_reordered",
        ] {
            assert!(count(&report, kind) > 0, "seed {seed}: no {kind}");
        }
        assert!(report.snapshots_installed[&FOLLOWER] >= 1, "seed {seed}");
    }
}

/// The restore check bites: snapshots that leave out the client-session table (so a
/// restored node would apply a retried write twice) are caught within a few seeds.
#[test]
fn a_snapshot_without_the_session_table_is_caught() {
    for seed in 0..20 {
        let mut cfg = SimConfig::random(seed, Some(5));
        cfg.broken_snapshot = Some(BrokenSnapshot::WithoutSessions);
        if let Some(f) = Simulator::new(cfg).run().failure {
            let text = f.violation.to_string();
            assert!(text.contains("bad snapshot"), "seed {seed}: {text}");
            return;
        }
    }
    panic!("20 seeds of broken snapshots went unnoticed");
}

/// Snapshot ordering is checked: a node that compacts its log before the snapshot
/// covering it is stored (as a runtime adopting a snapshot before its file is durable
/// would, so that a crash could keep the compaction and lose the snapshot) is caught by
/// the simulated log's invariant at the first compaction.
#[test]
fn compacting_before_the_snapshot_is_stored_is_caught() {
    for seed in 0..200 {
        let mut cfg = SimConfig::random(seed, Some(3));
        cfg.faults.crash = true;
        cfg.broken_snapshot = Some(BrokenSnapshot::CompactBeforeSave);
        if let Some(f) = Simulator::new(cfg).run().failure {
            let text = f.violation.to_string();
            assert!(
                text.contains("beyond the stored snapshot"),
                "seed {seed}: {text}"
            );
            return;
        }
    }
    panic!("200 seeds of compaction before the snapshot went unnoticed");
}
