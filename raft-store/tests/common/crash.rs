//! The harness of the SIGKILL crash tests (crash.rs, crash_receive.rs): a child process
//! (the test binary run again, for one test, with an environment variable naming the
//! log's directory) runs a deterministic workload on a [`SledLog`] and reports its
//! progress on stdout, one line at a time; the parent kills it, reopens the log and
//! compares it with the same workload replayed on a [`MemLog`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raft_core::{Log, Snapshot};
use raft_store::{MemLog, SledLog};

use super::{difference, payload, view, View, CLUSTER, NODE};

/// Environment variable: how many kills a crash test runs.
pub const ROUNDS_ENV: &str = "RAFT_STORE_CRASH_ROUNDS";
/// Environment variable: the seed of a crash test run, to replay it.
pub const SEED_ENV: &str = "RAFT_STORE_CRASH_SEED";

/// The number of kills: `RAFT_STORE_CRASH_ROUNDS`, or `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's seed: `RAFT_STORE_CRASH_SEED`, or a random one; printed with the way to
/// replay it.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::Rng::gen(&mut rand::thread_rng()));
    println!("{test} seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// In the child: the log directory and the workload's seed, or `None` when this test
/// binary was not started as a child (the child test then does nothing).
pub fn child_args(dir_env: &str, seed_env: &str) -> Option<(String, u64)> {
    let dir = std::env::var(dir_env).ok()?;
    let seed = std::env::var(seed_env)
        .expect("a child is given its seed")
        .parse()
        .expect("a numeric seed");
    Some((dir, seed))
}

/// A running child and the lines it printed.
pub struct Child {
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    stderr_path: PathBuf,
    ctx: String,
}

impl Child {
    /// Runs test `child_test` of this binary as a child, with `dir_env` set to `db_dir`
    /// and `seed_env` to `seed`; its stderr goes to `stderr_path`. `ctx` names the round
    /// in failure messages.
    pub fn spawn(
        child_test: &str,
        (dir_env, db_dir): (&str, &Path),
        (seed_env, seed): (&str, u64),
        stderr_path: &Path,
        ctx: &str,
    ) -> Self {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env(dir_env, db_dir)
            .env(seed_env, seed.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Child {
            process,
            lines,
            reader,
            stderr_path: stderr_path.to_path_buf(),
            ctx: ctx.to_string(),
        }
    }

    /// The child's next line, waiting until `deadline`; panics with the child's stderr if
    /// it stops reporting.
    pub fn next_line(&mut self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.process.kill();
                panic!(
                    "{}: child stopped reporting ({e}); its stderr:\n{}",
                    self.ctx,
                    self.stderr()
                );
            }
        }
    }

    /// Waits `delay`, then kills the child with SIGKILL (it must still run), and returns
    /// the lines it printed that were not read yet.
    pub fn kill_after(mut self, delay: Duration) -> Vec<String> {
        std::thread::sleep(delay);
        if let Some(status) = self.process.try_wait().unwrap() {
            panic!(
                "{}: child exited by itself ({status}); its stderr:\n{}",
                self.ctx,
                self.stderr()
            );
        }
        self.process.kill().unwrap(); // SIGKILL
        self.process.wait().unwrap();
        self.reader.join().unwrap();
        self.lines.try_iter().collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// A MemLog holding exactly what `v` shows, and `snapshot`.
pub fn mem_log_from(v: &View, snapshot: &Option<Snapshot>) -> MemLog {
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

/// The log in `db_dir` reopened after a kill, and its stored snapshot, whose data must be
/// whole.
pub fn reopen(db_dir: &Path, ctx: &str) -> (View, Option<Snapshot>) {
    let log = SledLog::open(db_dir, CLUSTER, NODE)
        .unwrap_or_else(|e| panic!("{ctx}: reopen after SIGKILL failed: {e}"));
    let after = view(&log);
    // Dropped files are deleted on the log's reaper thread, so a kill can leave some
    // behind (and a temporary being written); the reopen must have removed them, or
    // the disk budget would leak a file per crash.
    let files: Vec<String> = match std::fs::read_dir(db_dir.join("snapshots")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        files.len() <= 2 && !files.iter().any(|f| f.ends_with(".tmp")),
        "{ctx}: after the reopen the snapshot directory holds more than the current \
         snapshot and the one before it: {files:?}"
    );
    let snapshot = log
        .snapshot()
        .unwrap_or_else(|e| panic!("{ctx}: reading the snapshot after SIGKILL failed: {e}"));
    if let Some(s) = &snapshot {
        assert_eq!(
            s.data,
            payload(s.meta.last_index, s.meta.last_term, s.data.len()),
            "{ctx}: the snapshot at {} is damaged (a mix of two?)",
            s.meta.last_index
        );
    }
    (after, snapshot)
}

/// Where a reopened log stood against the workload's syncs.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Synced {
    /// Exactly the state of the last sync the child reported.
    Reported,
    /// The state of the sync after it (completed, not reported before the kill).
    OneMore,
}

/// Checks that the reopened log (`after`, `after_snapshot`) is the state of sync
/// `reported` of the workload, or of the next one, by replaying `step` (one step of the
/// workload between two syncs) from the state before the child started; panics saying
/// how it differs otherwise.
pub fn check_synced(
    ctx: &str,
    (before, before_snapshot): (&View, &Option<Snapshot>),
    (after, after_snapshot): (&View, &Option<Snapshot>),
    reported: u64,
    mut step: impl FnMut(&mut MemLog),
) -> Synced {
    let mut model = mem_log_from(before, before_snapshot);
    for _ in 0..reported {
        step(&mut model);
    }
    if *after == view(&model) && *after_snapshot == model.snapshot().unwrap() {
        return Synced::Reported;
    }
    step(&mut model);
    if let Some(diff) = difference(after, &view(&model)) {
        panic!(
            "{ctx}: after SIGKILL the log is neither the state of reported sync {reported} \
             nor of the next one: {diff}"
        );
    }
    let expected = model.snapshot().unwrap();
    assert!(
        *after_snapshot == expected,
        "{ctx}: after SIGKILL the snapshot is {:?} ({:?} bytes), the state of the next sync \
         has {:?}",
        after_snapshot.as_ref().map(|s| s.meta.clone()),
        after_snapshot.as_ref().map(|s| s.data.len()),
        expected.as_ref().map(|s| s.meta.clone()),
    );
    Synced::OneMore
}
