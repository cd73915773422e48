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

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use raft_core::{Entry, HardState, Log, Snapshot, SnapshotMeta};
use raft_store::{MemLog, SledLog};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "RAFT_STORE_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "RAFT_STORE_CRASH_CHILD_SEED";
const ROUNDS_ENV: &str = "RAFT_STORE_CRASH_ROUNDS";
const SEED_ENV: &str = "RAFT_STORE_CRASH_SEED";

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
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful when the parent runs us.
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = SledLog::open(&dir, CLUSTER, NODE).expect("child opens the log");
    println!("ready");
    for n in 1u64.. {
        step(&mut log, &mut rng);
        log.sync().expect("sync");
        println!("synced {n}");
    }
}

/// A MemLog holding exactly what `v` shows, and `snapshot`.
fn mem_log_from(v: &View, snapshot: &Option<Snapshot>) -> MemLog {
    let mut log = MemLog::new();
    if let Some(s) = snapshot {
        log.save_snapshot(s).unwrap();
    }
    if v.snapshot.last_index > 0 {
        log.compact(v.snapshot.clone()).unwrap();
    }
    log.append(&v.entries).unwrap();
    log.set_hard_state(v.hard_state).unwrap();
    log
}

#[test]
fn synced_entries_survive_sigkill() {
    let rounds: usize = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("crash test seed {seed} (replay with {SEED_ENV}={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
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
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db_dir)
            .env(CHILD_SEED_ENV, child_seed.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<Option<u64>>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = tx.send(None);
                } else if let Some(n) = line.strip_prefix("synced ") {
                    let _ = tx.send(Some(n.parse().unwrap()));
                }
            }
        });

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
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Some(n)) => reported = n,
                    Ok(None) => {}
                    Err(e) => {
                        let _ = child.kill();
                        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                        panic!("{ctx}: child stopped reporting ({e}); its stderr:\n{stderr}");
                    }
                }
                if reported >= target {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("{ctx}: child exited by itself ({status}); its stderr:\n{stderr}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(msg) = rx.try_recv() {
            if let Some(n) = msg {
                reported = n;
            }
        }
        if reported == 0 && !wait_ready {
            kills_before_ready += 1;
        }

        // Reopen and check: the state of sync `reported` or `reported + 1`, all intact.
        let log = SledLog::open(&db_dir, CLUSTER, NODE)
            .unwrap_or_else(|e| panic!("{ctx}: reopen after SIGKILL failed: {e}"));
        let after = view(&log);
        let after_snapshot = log
            .snapshot()
            .unwrap_or_else(|e| panic!("{ctx}: reading the snapshot after SIGKILL failed: {e}"));
        drop(log);
        if let Some(s) = &after_snapshot {
            assert_eq!(
                s.data,
                payload(s.meta.last_index, s.meta.last_term, s.data.len()),
                "{ctx}: the snapshot is damaged"
            );
        }
        for e in &after.entries {
            assert!(intact(e), "{ctx}: entry {} is damaged: {e:?}", e.index);
        }
        let mut model = mem_log_from(&before, &before_snapshot);
        let mut replay = StdRng::seed_from_u64(child_seed);
        for _ in 0..reported {
            step(&mut model, &mut replay);
        }
        if after == view(&model) && after_snapshot == model.snapshot().unwrap() {
            exact += 1;
        } else {
            step(&mut model, &mut replay);
            if let Some(diff) = difference(&after, &view(&model)) {
                panic!(
                    "{ctx}: after SIGKILL the log is neither the state of reported sync \
                     {reported} nor of the next one: {diff}"
                );
            }
            let expected = model.snapshot().unwrap();
            assert!(
                after_snapshot == expected,
                "{ctx}: after SIGKILL the snapshot is {:?} ({:?} bytes), the state of the \
                 next sync has {:?}",
                after_snapshot.as_ref().map(|s| s.meta.clone()),
                after_snapshot.as_ref().map(|s| s.data.len()),
                expected.as_ref().map(|s| s.meta.clone()),
            );
            one_more += 1;
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
