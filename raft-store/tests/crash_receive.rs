//! Crash tests of a follower adopting snapshots it receives (issue 18): a child process
//! plays a follower that mostly receives snapshots from a leader, as the runtime stores
//! them: the pieces streamed through the log's `SnapshotWriter` (temporary file, synced,
//! renamed, directory synced), then, in one ready, `adopt_snapshot`, `compact` to it (the
//! snapshot is usually ahead of the log, or conflicts with it, so the whole log goes),
//! the entries after it, the new hard state and one sync. The parent kills it with
//! SIGKILL right after it reports a chosen phase (writing the file, written and renamed,
//! adopted and compacted but not synced, synced), plus a random delay, reopens the log
//! and checks it is exactly the state of the last reported sync or of the next one: the
//! previous snapshot with the previous log, or the new snapshot with the log after it,
//! never a mix; the snapshot whole, and the log's compaction point, first index, entries
//! and commit index consistent with it.
//!
//! The child is this test binary run again with `RAFT_STORE_RECV_CRASH_CHILD` set; its
//! workload is a deterministic function of a seed and the log it starts from, so the
//! parent replays it on a MemLog to know the state after each sync.
//!
//! `RAFT_STORE_CRASH_ROUNDS=1000` runs more kills (default 80);
//! `RAFT_STORE_CRASH_SEED=N` replays a run (the seed is printed on failure).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::crash::{self, Child, Synced};
use common::*;
use raft_core::{HardState, Log, Snapshot, SnapshotMeta};
use raft_store::SledLog;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "RAFT_STORE_RECV_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "RAFT_STORE_RECV_CRASH_CHILD_SEED";
/// The runtime's snapshot chunk size: the pieces a received snapshot is written in.
const PIECE_BYTES: usize = 48 * 1024;
/// Where the child reports it is, before each phase of a received snapshot.
const PHASES: [&str; 3] = ["writing", "written", "adopted"];
/// How long the child holds the short phases open (see `receive_crash_child`); the
/// parent kills within this after the report.
const PHASE_HOLD: Duration = Duration::from_millis(3);

/// One ready of the workload, decided by `rng` and the log's state alone: a received
/// snapshot (ahead of the log, inside it with the same term, or conflicting with it) or
/// plain appends. `report` is told each phase of a received snapshot as it starts.
fn step<L: Log>(log: &mut L, rng: &mut StdRng, report: &mut dyn FnMut(&str)) {
    let hs = log.hard_state();
    let last = log.last_index();
    let last_term = log.term(last).expect("term of the last index");
    let term = hs.term.max(last_term).max(1);
    let appended = rng.gen_range(0..=16u64);
    if rng.gen_bool(0.3) {
        let entries = (last + 1..=last + appended.max(1))
            .map(|i| sized(i, term, (i as usize * 37) % 300))
            .collect::<Vec<_>>();
        log.append(&entries).expect("append");
        let commit = (hs.commit + rng.gen_range(0..=8)).min(log.last_index());
        log.set_hard_state(HardState { commit, ..hs })
            .expect("hard state");
        return;
    }
    // A snapshot from the leader past this node's commit index.
    let meta = match rng.gen_range(0..10) {
        // Inside the log, agreeing with it: the entries after it stay.
        0..=1 if last > hs.commit => {
            let at = rng.gen_range(hs.commit + 1..=last);
            SnapshotMeta::at(at, log.term(at).expect("term inside the log"))
        }
        // Inside the log, from a later term: the whole log goes.
        2..=3 if last > hs.commit => {
            SnapshotMeta::at(rng.gen_range(hs.commit + 1..=last), term + 1)
        }
        // Ahead of the log (the follower was away).
        _ => SnapshotMeta::at(last + rng.gen_range(1..=300), term + rng.gen_range(0..=1)),
    };
    let len = rng.gen_range(0..3_000_000usize);
    let data = payload(meta.last_index, meta.last_term, len);
    report(PHASES[0]);
    match log.snapshot_writer() {
        Some(mut writer) => {
            // Streamed in the runtime's pieces, as the storer thread writes them.
            let mut fill = |out: &mut dyn Write| {
                for piece in data.chunks(PIECE_BYTES) {
                    out.write_all(piece)?;
                }
                Ok(())
            };
            let written = writer
                .write(meta.clone(), &mut fill)
                .expect("write snapshot");
            report(PHASES[1]);
            log.adopt_snapshot(&written).expect("adopt snapshot");
        }
        None => {
            report(PHASES[1]);
            log.save_snapshot(&Snapshot {
                meta: meta.clone(),
                data: data.clone(),
            })
            .expect("save snapshot");
        }
    }
    // The ready that installs it: compact, append what came with it, new hard state.
    log.compact(meta.clone()).expect("compact to the snapshot");
    let from = log.last_index() + 1;
    let after_term = log.term(from - 1).expect("term of the last index");
    let entries = (from..from + appended)
        .map(|i| sized(i, after_term, (i as usize * 13) % 200))
        .collect::<Vec<_>>();
    log.append(&entries).expect("append after the snapshot");
    log.set_hard_state(HardState {
        term: term.max(meta.last_term),
        vote: hs.vote,
        commit: hs.commit.max(meta.last_index),
    })
    .expect("hard state");
    report(PHASES[2]);
}

/// The child: runs the workload until killed, printing each phase and `synced N` after
/// the N-th sync.
#[test]
fn receive_crash_child() {
    let Some((dir, seed)) = crash::child_args(CHILD_ENV, CHILD_SEED_ENV) else {
        return; // Only meaningful when the parent runs us.
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = SledLog::open(&dir, CLUSTER, NODE).expect("child opens the log");
    let stdout = std::io::stdout();
    println!("ready");
    for n in 1u64.. {
        let mut report = |phase: &str| {
            let mut out = stdout.lock();
            let _ = writeln!(out, "{phase} {n}");
            let _ = out.flush();
            drop(out);
            if phase != PHASES[0] {
                // The phases after the write (renamed, not adopted; adopted and
                // compacted, not synced) last microseconds: held open a little, so a
                // kill aimed at one lands in it. The write itself lasts long enough.
                std::thread::sleep(PHASE_HOLD);
            }
        };
        step(&mut log, &mut rng, &mut report);
        log.sync().expect("sync");
        println!("synced {n}");
    }
}

/// What a reopened log must show on its own, whatever sync it holds: its compaction point
/// is its stored snapshot's (every compaction here is to a snapshot, in the same sync),
/// the entries follow it without a gap in terms that do not go back, the commit index
/// covers the snapshot (`crash::reopen` checked the snapshot's data is whole).
fn check_consistent(ctx: &str, v: &View, snapshot: &Option<Snapshot>) {
    let meta = snapshot
        .as_ref()
        .map_or(SnapshotMeta::default(), |s| s.meta.clone());
    assert_eq!(
        v.snapshot, meta,
        "{ctx}: the log is compacted to {:?} but its stored snapshot is {meta:?}",
        v.snapshot
    );
    if let Some(s) = snapshot {
        assert!(
            v.hard_state.commit >= s.meta.last_index,
            "{ctx}: commit {} below the snapshot at {}",
            v.hard_state.commit,
            s.meta.last_index
        );
    }
    assert_eq!(v.first_index, meta.last_index + 1, "{ctx}: first index");
    let mut prev_term = meta.last_term;
    for (k, e) in v.entries.iter().enumerate() {
        assert_eq!(e.index, v.first_index + k as u64, "{ctx}: a gap in the log");
        assert!(
            e.term >= prev_term,
            "{ctx}: entry {} goes back in term",
            e.index
        );
        assert!(intact(e), "{ctx}: entry {} is damaged", e.index);
        prev_term = e.term;
    }
}

#[test]
fn a_received_snapshot_survives_sigkill_while_written_renamed_or_adopted() {
    let rounds = crash::rounds(80);
    let seed = crash::seed("receive crash test");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("child.stderr");
    let db_dir = dir.path().join("db");
    let mut before = view(&SledLog::open(&db_dir, CLUSTER, NODE).unwrap());
    let mut before_snapshot: Option<Snapshot> = None;
    // Kills by the last phase the child reported before it: each phase, then "synced".
    let mut killed_after = [0usize; PHASES.len() + 1];
    let (mut exact, mut one_more, mut new_snapshots) = (0, 0, 0);
    let started = Instant::now();

    for round in 0..rounds {
        let child_seed: u64 = rng.gen();
        let ctx = format!("seed {seed} round {round} child seed {child_seed}");
        let mut child = Child::spawn(
            "receive_crash_child",
            (CHILD_ENV, &db_dir),
            (CHILD_SEED_ENV, child_seed),
            &stderr_path,
            &ctx,
        );

        // Kill right after the child reports the chosen phase of its k-th step (or its
        // k-th sync), then a random delay so the kill lands anywhere in that phase.
        let target_step: u64 = rng.gen_range(1..=6);
        let target_phase = rng.gen_range(0..=PHASES.len());
        let target = match PHASES.get(target_phase) {
            Some(p) => format!("{p} {target_step}"),
            None => format!("synced {target_step}"),
        };
        let mut reported = 0u64;
        let mut last_phase = PHASES.len();
        // Follows the child's reports: the last sync, and the phase it is in.
        let mut follow = |line: &str| {
            if let Some(n) = line.strip_prefix("synced ") {
                reported = n.parse().unwrap();
                last_phase = PHASES.len();
            } else if let Some(at) = PHASES.iter().position(|p| line.starts_with(p)) {
                last_phase = at;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = child.next_line(deadline);
            follow(&line);
            // A step without a received snapshot reports no phase: its sync will do.
            if line == target || line == format!("synced {target_step}") {
                break;
            }
        }
        let delay = Duration::from_micros(rng.gen_range(0..2000));
        for line in child.kill_after(delay) {
            follow(&line);
        }
        killed_after[last_phase] += 1;

        // Reopen and check: consistent on its own, and the state of sync `reported` or
        // `reported + 1`.
        let (after, after_snapshot) = crash::reopen(&db_dir, &ctx);
        check_consistent(&ctx, &after, &after_snapshot);
        let mut replay = StdRng::seed_from_u64(child_seed);
        match crash::check_synced(
            &format!("{ctx} (last phase {last_phase})"),
            (&before, &before_snapshot),
            (&after, &after_snapshot),
            reported,
            |model| step(model, &mut replay, &mut |_| {}),
        ) {
            Synced::Reported => exact += 1,
            Synced::OneMore => one_more += 1,
        }
        if after_snapshot.is_some() && after_snapshot != before_snapshot {
            new_snapshots += 1;
        }
        before = after;
        before_snapshot = after_snapshot;
    }
    println!(
        "{rounds} kills in {:?}: {exact} at the last reported sync, {one_more} one sync \
         later; killed after writing/written/adopted/synced: {killed_after:?}; \
         {new_snapshots} rounds ended with a newer snapshot; final log {}..={}",
        started.elapsed(),
        before.first_index,
        before.last_index
    );
    // Every phase of adoption was interrupted at least once (each is targeted about a
    // quarter of the time), and received snapshots were adopted across kills.
    for (phase, kills) in PHASES.iter().zip(killed_after) {
        assert!(
            kills > 0,
            "no kill landed after '{phase}': {killed_after:?}"
        );
    }
    assert!(new_snapshots > 0, "no received snapshot survived a kill");
}
