//! The simulator in CI: a bounded campaign of random seeds, determinism, and calm runs.
//! The campaigns run through the public [`Simulation`] builder, as a user's would.
//!
//! `RAFT_SIM_SEEDS=N` changes the number of seeds of `ci_campaign` (for a long campaign
//! prefer the `sim` binary, which runs seeds on several threads and summarizes).

use raft_testkit::run_seed;
use raft_testkit::sim::{RunReport, SimConfig, Simulator};
use raft_testkit::{Replay, Simulation};

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
    let report = Simulation::kv().random_nodes().seeds(0..seeds).run();
    report.assert_ok();
    assert_eq!(report.runs, seeds);
    let faults: u64 = report
        .reports
        .iter()
        .map(|r| r.faults.values().sum::<u64>())
        .sum();
    println!(
        "{seeds} seeds: {} operations checked, {faults} faults injected",
        report.ops.checked
    );
}

/// The reference size, on seeds the other campaign does not use.
#[test]
fn ci_campaign_five_nodes() {
    let seeds = seeds_from_env(400);
    let report = Simulation::kv()
        .nodes(5)
        .seeds(1_000_000..1_000_000 + seeds)
        .run();
    report.assert_ok();
    assert_eq!(report.runs, seeds);
}

/// The builder runs what the campaign configuration draws, mode by mode: the same
/// trace as the simulator given that configuration directly (so the `sim` campaigns,
/// which go through the builder, still run the seeds they always ran).
#[test]
fn the_builder_runs_the_campaign_configurations() {
    for seed in [5, 891, 2568] {
        let direct = |lease: bool, membership: bool, nodes: Option<usize>| {
            let mut cfg = SimConfig::random(seed, nodes);
            if lease {
                cfg.force_lease_reads();
            }
            if membership {
                cfg.force_membership();
            }
            Simulator::new(cfg).run().trace_hash
        };
        let run = Replay::seed(seed);
        let five = || Simulation::kv().nodes(5);
        assert_eq!(
            five().replay(&run).trace_hash,
            direct(false, false, Some(5))
        );
        assert_eq!(
            five().lease_reads().replay(&run).trace_hash,
            direct(true, false, Some(5))
        );
        assert_eq!(
            five().membership().replay(&run).trace_hash,
            direct(false, true, Some(5))
        );
        assert_eq!(
            Simulation::kv().random_nodes().replay(&run).trace_hash,
            direct(false, false, None)
        );
    }
}

/// The same seed replays the same run: every event, hence the trace hash, is equal.
#[test]
fn a_seed_replays_exactly() {
    let sim = Simulation::kv().random_nodes();
    for seed in [3, 77, 2088] {
        let a = sim.replay(&Replay::seed(seed));
        let b = sim.replay(&Replay::seed(seed));
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

/// Every fault kind of the campaign shows up in the campaign's seeds. The seeds run in
/// blocks of 40 until every kind was seen (the first block has always sufficed so far),
/// so a change that shifts the random draws needs a few more seeds, not a new test; 400
/// seeds without one kind means the campaign lost it.
#[test]
fn the_campaign_injects_every_fault_kind() {
    const KINDS: &[&str] = &[
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
    ];
    const BLOCK: u64 = 40;
    const SEEDS_MAX: u64 = 400;
    let mut seen = std::collections::BTreeSet::new();
    let mut start = 0;
    while start < SEEDS_MAX && !KINDS.iter().all(|k| seen.contains(*k)) {
        let report = Simulation::kv().nodes(5).seeds(start..start + BLOCK).run();
        report.assert_ok();
        for r in report.reports {
            for (kind, n) in r.faults {
                if n > 0 {
                    seen.insert(kind);
                }
            }
        }
        start += BLOCK;
    }
    for kind in KINDS {
        assert!(
            seen.contains(*kind),
            "no {kind} in {SEEDS_MAX} seeds: {seen:?}"
        );
    }
}
