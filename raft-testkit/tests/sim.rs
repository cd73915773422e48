//! The simulator in CI: a bounded campaign of random seeds, determinism, and calm runs.
//!
//! `RAFT_SIM_SEEDS=N` changes the number of seeds of `ci_campaign` (for a long campaign
//! prefer the `sim` binary, which runs seeds on several threads and summarizes).

use raft_testkit::run_seed;
use raft_testkit::sim::{RunReport, SimConfig, Simulator};

fn seeds_from_env(default_release: u64) -> u64 {
    let default = if cfg!(debug_assertions) {
        default_release / 20
    } else {
        default_release
    };
    std::env::var("RAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn check(report: &RunReport) {
    if let Some(f) = &report.failure {
        panic!("{f}");
    }
}

/// Random seeds, random cluster sizes 3 to 7, every fault kind: no violation.
#[test]
fn ci_campaign_random_sizes() {
    let seeds = seeds_from_env(1000);
    let (mut ops, mut faults) = (0, 0);
    for seed in 0..seeds {
        let r = run_seed(seed, None);
        check(&r);
        ops += r.ops.checked;
        faults += r.faults.values().sum::<u64>();
    }
    println!("{seeds} seeds: {ops} operations checked, {faults} faults injected");
}

/// The reference size, on seeds the other campaign does not use.
#[test]
fn ci_campaign_five_nodes() {
    let seeds = seeds_from_env(400);
    for seed in 1_000_000..1_000_000 + seeds {
        check(&run_seed(seed, Some(5)));
    }
}

/// The same seed replays the same run: every event, hence the trace hash, is equal.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77, 2088] {
        let a = run_seed(seed, None);
        let b = run_seed(seed, None);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} diverged");
        assert_eq!((a.events, a.ops, &a.faults), (b.events, b.ops, &b.faults));
    }
    assert_ne!(run_seed(1, None).trace_hash, run_seed(2, None).trace_hash);
}

/// Without faults, a cluster of each size serves writes and reads and recovers fast.
#[test]
fn calm_clusters_make_progress() {
    for nodes in 3..=7 {
        let report = Simulator::new(SimConfig::calm(nodes as u64, nodes)).run();
        check(&report);
        assert!(
            report.ops.ok > 100,
            "{nodes} nodes: only {} ops returned",
            report.ops.ok
        );
        // Only the operations still open when the run ends never return.
        assert!(
            report.ops.never_returned <= 3,
            "{nodes} nodes: {} operations never returned without faults",
            report.ops.never_returned
        );
        assert!(report.liveness_ticks.is_some());
    }
}

/// Every fault kind of the campaign shows up within the CI seeds.
#[test]
fn the_campaign_injects_every_fault_kind() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        for (kind, n) in run_seed(seed, Some(5)).faults {
            if n > 0 {
                seen.insert(kind);
            }
        }
    }
    for kind in [
        "partition_symmetric",
        "partition_one_way",
        "partition_isolate_leader",
        "partition_bridge",
        "heal",
        "crash",
        "crash_lost_unsynced_writes",
        "crash_new_leader",
        "quick_restart",
        "restart",
        "pause",
        "transfer_leadership",
        "forced_campaign",
        "msg_lost",
        "msg_duplicated",
        "msg_long_tail",
        "msg_reordered",
        "msg_cut_by_partition",
        "clock_skewed_nodes",
        "snapshot_taken",
        "log_compacted",
        "snapshot_transfer_started",
        "snapshot_installed",
        "snapshot_restored_at_restart",
        "snapshot_chunk_lost",
        "snapshot_chunk_duplicated",
        "snapshot_chunk_reordered",
        "crash_while_receiving_snapshot",
        "crash_before_snapshot_sync",
        "crash_lost_unsynced_snapshot",
        "crash_kept_snapshot_not_compaction",
    ] {
        assert!(seen.contains(kind), "no {kind} in 40 seeds: {seen:?}");
    }
}
