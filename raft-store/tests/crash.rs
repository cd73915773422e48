//! Crash tests: a child process appends and syncs in a loop and reports each completed
//! sync on stdout; the parent kills it with SIGKILL at a random point, reopens the log and
//! checks that it holds exactly the state of the last reported sync, or of the one after it
//! (which may have completed without being reported): every reported entry present and
//! intact, nothing of a later sync half-present. The workload also saves snapshots of up
//! to 3 MB (written as files: temporary, fsync, rename, directory fsync, made current by
//! the next sync) and entries up to 200 KB (records over 64 KiB go to the value log), so
//! kills land while those files are written, renamed and adopted; the reopened log's
//! snapshot must be the one of the same sync, whole. Snapshots are written by the log's
//! writer and adopted, and half the time the log is compacted behind one before the sync
//! that makes both durable (as the runtime does, issue 18): a kill never leaves the
//! compaction without its snapshot.
//!
//! The child is this test binary run again with `RAFT_STORE_CRASH_CHILD` set. Its
//! workload is a deterministic function of a seed and the log it starts from, so the
//! parent replays it on a MemLog to know the state after each sync.
//!
//! `RAFT_STORE_CRASH_ROUNDS=1000` runs more kills (default 100);
//! `RAFT_STORE_CRASH_SEED=N` replays a run (the seed is printed on failure).

mod common;

use std::time::{Duration, Instant};

use common::crash::{self, Child, Synced};
use common::*;
use raft_core::{Entry, HardState, Log, Snapshot, SnapshotMeta};
use raft_store::SledLog;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "RAFT_STORE_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "RAFT_STORE_CRASH_CHILD_SEED";

/// One step of the workload between two syncs, decided by `rng` and the log's state
/// alone: mostly appends, sometimes an overwrite of the uncommitted suffix with a new
/// term, hard state changes and compactions up to the commit index.
fn step<L: Log>(log: &mut L, rng: &mut StdRng) {
    let hs = log.hard_state();
    let last = log.last_index();
    let last_term = log.term(last).expect("term of the last index");
    let term = hs.term.max(last_term).max(1);
    let count = rng.gen_range(1..=32u64);
    let len = rng.gen_range(0..300usize);
    // Now and then one large entry, stored in the value log.
    let big = rng
        .gen_bool(0.05)
        .then(|| rng.gen_range(70_000..200_000usize));
    let entries = |from: u64, term: u64| -> Vec<Entry> {
        match big {
            Some(big) => vec![sized(from, term, big)],
            None => (from..from + count)
                .map(|i| sized(i, term, (len + i as usize * 31) % 300))
                .collect(),
        }
    };
    match rng.gen_range(0..100) {
        0..=74 => log.append(&entries(last + 1, term)).expect("append"),
        75..=84 => {
            // A new leader overwrites the uncommitted suffix.
            let low = (hs.commit + 1).max(log.first_index());
            let from = if low <= last {
                rng.gen_range(low..=last)
            } else {
                last + 1
            };
            log.append(&entries(from, term + 1)).expect("overwrite");
            log.set_hard_state(HardState {
                term: term + 1,
                vote: Some(rng.gen_range(1..=3)),
                commit: hs.commit,
            })
            .expect("hard state");
        }
        85..=94 => {
            let commit = (hs.commit + rng.gen_range(0..=40)).min(last);
            log.set_hard_state(HardState { commit, ..hs })
                .expect("hard state");
            log.append(&entries(last + 1, term)).expect("append");
        }
        95..=96 => {
            // The runtime saves a snapshot at an applied (committed) index.
            let at = hs.commit;
            if at >= log.first_index() - 1 && at > 0 {
                let term = log.term(at).expect("term at commit");
                let len = rng.gen_range(0..3_000_000usize);
                let snapshot = Snapshot {
                    meta: SnapshotMeta::at(at, term),
                    data: payload(at, term, len),
                };
                // As the runtime stores them: written by the log's writer (SledLog), then
                // adopted; saved whole by a log without one (the MemLog replay).
                match log.snapshot_writer() {
                    Some(mut writer) => {
                        let written = writer.write_whole(&snapshot).expect("write snapshot");
                        log.adopt_snapshot(&written).expect("adopt snapshot");
                    }
                    None => log.save_snapshot(&snapshot).expect("save snapshot"),
                }
                // Half the time the log is compacted behind it before the sync, as the
                // runtime's WaitLoop does (no sync in between): a kill must never leave
                // the compaction durable without the snapshot.
                if rng.gen_bool(0.5) {
                    log.compact(snapshot.meta)
                        .expect("compact behind the snapshot");
                }
            }
        }
        _ => {
            let at = hs.commit;
            if at >= log.first_index() {
                let last_term = log.term(at).expect("term at commit");
                log.compact(SnapshotMeta::at(at, last_term))
                    .expect("compact");
            }
        }
    }
}

/// The child: runs the workload until killed, printing `synced N` after the N-th sync.
#[test]
fn crash_child() {
    let Some((dir, seed)) = crash::child_args(CHILD_ENV, CHILD_SEED_ENV) else {
        return; // Only meaningful when the parent runs us.
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = SledLog::open(&dir, CLUSTER, NODE).expect("child opens the log");
    println!("ready");
    for n in 1u64.. {
        step(&mut log, &mut rng);
        log.sync().expect("sync");
        println!("synced {n}");
    }
}

/// The sync number in a `synced N` line.
fn synced(line: &str) -> Option<u64> {
    line.strip_prefix("synced ").map(|n| n.parse().unwrap())
}

#[test]
fn synced_entries_survive_sigkill() {
    let rounds = crash::rounds(100);
    let seed = crash::seed("crash test");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("child.stderr");
    let db_dir = dir.path().join("db");
    let mut before = view(&SledLog::open(&db_dir, CLUSTER, NODE).unwrap());
    let mut before_snapshot: Option<Snapshot> = None;
    let mut snapshots_seen = 0;
    let (mut exact, mut one_more, mut kills_before_ready) = (0, 0, 0);
    let started = Instant::now();

    for round in 0..rounds {
        let child_seed: u64 = rng.gen();
        let ctx = format!("seed {seed} round {round} child seed {child_seed}");
        let mut child = Child::spawn(
            "crash_child",
            (CHILD_ENV, &db_dir),
            (CHILD_SEED_ENV, child_seed),
            &stderr_path,
            &ctx,
        );

        // Kill after a random number of reported syncs (sometimes before the child has
        // even opened the log), plus a random delay so the kill lands anywhere in a step.
        let target: u64 = match rng.gen_range(0..10) {
            0 => 0,
            _ => rng.gen_range(1..=30),
        };
        let wait_ready = target > 0 || rng.gen_bool(0.5);
        let mut reported = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        if wait_ready {
            loop {
                if let Some(n) = synced(&child.next_line(deadline)) {
                    reported = n;
                }
                if reported >= target {
                    break;
                }
            }
        }
        let delay = Duration::from_micros(rng.gen_range(0..2000));
        for line in child.kill_after(delay) {
            reported = synced(&line).unwrap_or(reported);
        }
        if reported == 0 && !wait_ready {
            kills_before_ready += 1;
        }

        // Reopen and check: the state of sync `reported` or `reported + 1`, all intact.
        let (after, after_snapshot) = crash::reopen(&db_dir, &ctx);
        for e in &after.entries {
            assert!(intact(e), "{ctx}: entry {} is damaged: {e:?}", e.index);
        }
        let mut replay = StdRng::seed_from_u64(child_seed);
        match crash::check_synced(
            &ctx,
            (&before, &before_snapshot),
            (&after, &after_snapshot),
            reported,
            |model| step(model, &mut replay),
        ) {
            Synced::Reported => exact += 1,
            Synced::OneMore => one_more += 1,
        }
        if after_snapshot.is_some() && after_snapshot != before_snapshot {
            snapshots_seen += 1;
        }
        before = after;
        before_snapshot = after_snapshot;
    }
    println!(
        "{rounds} kills in {:?}: {exact} at the last reported sync, {one_more} one sync \
         later, {kills_before_ready} possibly before the child opened the log; \
         {snapshots_seen} new snapshots adopted; final log {}..={}",
        started.elapsed(),
        before.first_index,
        before.last_index
    );
}
