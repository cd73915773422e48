//! Disk bound under sustained writes: a SledLog driven the way the node runtime drives it
//! (append a batch, set the hard state, sync; every `snapshot_every` entries save a
//! snapshot, sync, compact behind it keeping `trailing` entries, sync), with the
//! directory's size sampled after every sync and checked against the budget of
//! `docs/operations.md`:
//!
//! ```text
//! bytes on disk <= 2 x (live log + latest snapshot) + 64 MiB
//! ```
//!
//! where the live log is the bytes of the entries the log holds (payload plus the 17
//! bytes each costs in a record) and the latest snapshot is the newest saved one.
//!
//! The short version runs in CI. `RAFT_STORE_SOAK=long` runs the long one (1,000,000
//! entries of 100 B, 200,000 of 1 KB, 2,000 of 1 MiB, with real fdatasync), and prints
//! the samples; see `docs/testing.md`.

mod common;

use std::time::Instant;

use common::*;
use raft_core::{Entry, EntryKind, HardState, Log, Snapshot, SnapshotMeta};
use raft_store::{SledLog, SledLogOptions, SyncMode};

const LONG_ENV: &str = "RAFT_STORE_SOAK";
const SLACK_BYTES: u64 = 64 << 20;

fn long() -> bool {
    std::env::var(LONG_ENV).is_ok_and(|v| v == "long")
}

/// Print a sample every this many syncs: `RAFT_STORE_SOAK_TRACE=N`, or 2,000 in the long
/// run.
fn trace_every() -> Option<u64> {
    std::env::var("RAFT_STORE_SOAK_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .or(long().then_some(2_000))
        .filter(|&n| n > 0)
}

/// One soak workload.
struct Workload {
    name: &'static str,
    entries: u64,
    entry_bytes: usize,
    /// Entries per append + sync (the runtime's group commit under load), taken in turn.
    batches: &'static [u64],
    snapshot_every: u64,
    trailing: u64,
    /// The state machine's size: grows by `entry_bytes` per entry up to this (a KV store
    /// whose keys are overwritten once it holds `state_max_bytes`).
    state_max_bytes: usize,
    sync_mode: SyncMode,
}

/// What a run saw.
#[derive(Debug)]
struct Outcome {
    max_bytes: u64,
    max_ratio_of_budget: f64,
    final_bytes: u64,
    syncs: u64,
    first_tenth_per_second: f64,
    last_tenth_per_second: f64,
}

fn entry(index: u64, len: usize) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Command,
        data: vec![(index % 251) as u8; len].into(),
    }
}

fn run(w: &Workload) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SledLogOptions::new(CLUSTER, NODE);
    options.sync_mode = w.sync_mode;
    let mut log = SledLog::open_with(dir.path(), options).unwrap();
    let entry_cost = w.entry_bytes as u64 + 17;
    let (mut max_bytes, mut max_ratio, mut syncs) = (0u64, 0f64, 0u64);
    let mut snapshot_bytes = 0u64;
    let tenth = w.entries / 10;
    let started = Instant::now();
    let (mut first_tenth, mut last_tenth_start) = (None, None);
    let mut check = |log: &SledLog, snapshot_bytes: u64, syncs: &mut u64| {
        *syncs += 1;
        let bytes = log.dir_bytes().unwrap();
        let live = (log.last_index() + 1 - log.first_index()) * entry_cost;
        let budget = 2 * (live + snapshot_bytes) + SLACK_BYTES;
        assert!(
            bytes <= budget,
            "{}: {bytes} bytes on disk at entry {} exceed the budget {budget} \
             (live log {live}, snapshot {snapshot_bytes}; sled {}, snapshot files {})",
            w.name,
            log.last_index(),
            log.size_on_disk_bytes().unwrap(),
            log.snapshot_bytes_on_disk().unwrap(),
        );
        max_bytes = max_bytes.max(bytes);
        max_ratio = max_ratio.max(bytes as f64 / budget as f64);
        if trace_every().is_some_and(|n| (*syncs).is_multiple_of(n)) {
            println!(
                "{}: entry {:>9}  disk {:>6.1} MiB  budget {:>6.1} MiB  (sled {:.1} MiB)",
                w.name,
                log.last_index(),
                bytes as f64 / (1 << 20) as f64,
                budget as f64 / (1 << 20) as f64,
                log.size_on_disk_bytes().unwrap() as f64 / (1 << 20) as f64,
            );
        }
    };
    let mut next = 1u64;
    let mut turn = 0;
    while next <= w.entries {
        let batch_len = w.batches[turn % w.batches.len()];
        turn += 1;
        let to = (next + batch_len - 1).min(w.entries);
        let batch: Vec<Entry> = (next..=to).map(|i| entry(i, w.entry_bytes)).collect();
        log.append(&batch).unwrap();
        log.set_hard_state(HardState {
            term: 1,
            vote: Some(1),
            commit: to,
        })
        .unwrap();
        log.sync().unwrap();
        check(&log, snapshot_bytes, &mut syncs);
        if next <= tenth && to >= tenth {
            first_tenth = Some(started.elapsed());
        }
        if next <= w.entries - tenth && to >= w.entries - tenth {
            last_tenth_start = Some(started.elapsed());
        }
        if to / w.snapshot_every > (next - 1) / w.snapshot_every {
            let state = (to as usize * w.entry_bytes).min(w.state_max_bytes);
            let snapshot = Snapshot {
                meta: SnapshotMeta::at(to, 1),
                data: vec![(to % 253) as u8; state].into(),
            };
            log.save_snapshot(&snapshot).unwrap();
            log.sync().unwrap();
            // The budget counts the newest snapshot from the moment it is saved.
            snapshot_bytes = state as u64;
            check(&log, snapshot_bytes, &mut syncs);
            if to > w.trailing {
                let at = to - w.trailing;
                log.compact(SnapshotMeta::at(at, 1)).unwrap();
                log.sync().unwrap();
                check(&log, snapshot_bytes, &mut syncs);
            }
        }
        next = to + 1;
    }
    let total = started.elapsed();
    // The log still reads back, and reopens with its snapshot.
    let last = log.last_index();
    let sample = log.entries(last, last + 1, u64::MAX).unwrap();
    assert_eq!(sample[0].data.len(), w.entry_bytes);
    let final_bytes = log.dir_bytes().unwrap();
    drop(log);
    let log = SledLog::open(dir.path(), CLUSTER, NODE).unwrap();
    assert_eq!(log.last_index(), w.entries);
    let snap = log.snapshot().unwrap().expect("a snapshot");
    assert_eq!(snap.data.len() as u64, snapshot_bytes);
    let per_second = |entries: u64, secs: f64| entries as f64 / secs.max(1e-9);
    let first = first_tenth.unwrap_or(total).as_secs_f64();
    let last_start = last_tenth_start.unwrap_or_default().as_secs_f64();
    Outcome {
        max_bytes,
        max_ratio_of_budget: max_ratio,
        final_bytes,
        syncs,
        first_tenth_per_second: per_second(tenth, first),
        last_tenth_per_second: per_second(tenth, total.as_secs_f64() - last_start),
    }
}

fn report(w: &Workload, o: &Outcome) {
    println!(
        "{}: {} entries of {} B, {} syncs: max {:.1} MiB on disk ({:.0}% of the budget), \
         final {:.1} MiB; {:.0} entries/s in the first tenth, {:.0} in the last",
        w.name,
        w.entries,
        w.entry_bytes,
        o.syncs,
        o.max_bytes as f64 / (1 << 20) as f64,
        o.max_ratio_of_budget * 100.0,
        o.final_bytes as f64 / (1 << 20) as f64,
        o.first_tenth_per_second,
        o.last_tenth_per_second,
    );
}

fn mode() -> SyncMode {
    // The short runs skip fdatasync: what sled writes, and so the disk it takes, is the
    // same; only the time differs.
    if long() {
        SyncMode::Fdatasync
    } else {
        SyncMode::FlushOnly
    }
}

#[test]
fn small_entries_stay_within_the_disk_budget() {
    let w = Workload {
        name: "100 B",
        entries: if long() { 1_000_000 } else { 60_000 },
        entry_bytes: 100,
        batches: &[25, 1, 64, 10],
        snapshot_every: 10_000,
        trailing: 5_000,
        state_max_bytes: if long() { 64 << 20 } else { 6 << 20 },
        sync_mode: mode(),
    };
    report(&w, &run(&w));
}

#[test]
fn kilobyte_entries_stay_within_the_disk_budget() {
    let w = Workload {
        name: "1 KB",
        entries: if long() { 200_000 } else { 30_000 },
        entry_bytes: 1_000,
        batches: &[10, 1, 64, 25],
        snapshot_every: 10_000,
        trailing: 5_000,
        state_max_bytes: if long() { 128 << 20 } else { 20 << 20 },
        sync_mode: mode(),
    };
    report(&w, &run(&w));
}

#[test]
fn mebibyte_entries_stay_within_the_disk_budget() {
    let w = Workload {
        name: "1 MiB",
        entries: if long() { 2_000 } else { 240 },
        entry_bytes: 1 << 20,
        batches: &[1],
        snapshot_every: 40,
        trailing: 20,
        state_max_bytes: 16 << 20,
        sync_mode: mode(),
    };
    report(&w, &run(&w));
}
