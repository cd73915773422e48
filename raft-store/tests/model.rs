//! Model tests: random operation sequences run against SledLog and against raft-core's
//! MemLog as the oracle; every result and the whole visible state must agree. A restart
//! without sync must bring SledLog back to the oracle's state at the last sync.
//!
//! `PROPTEST_CASES=1000 cargo test -p raft-store --release --test model` runs more cases.

mod common;

use common::*;
use proptest::prelude::*;
use raft_core::{Entry, HardState, Log, LogIndex, SnapshotMeta, StorageError};
use raft_store::{MemLog, SledLog, SledLogOptions, SyncMode};

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` places before the end (0: right after it),
    /// or with a gap; terms start `term_bump` above the highest term so far.
    Append {
        back: u64,
        count: u64,
        term_bump: u64,
        len: usize,
        gap: bool,
    },
    SetHardState {
        term_bump: u64,
        vote: Option<u64>,
        commit_back: u64,
    },
    /// Compact at `first_index - 1 + at`, with the log's own term or a different one.
    Compact {
        at: u64,
        matching: bool,
    },
    Read {
        low_back: u64,
        len: u64,
        max_bytes: u64,
    },
    Sync,
    /// A restart without a sync.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..12, 0u64..20, 0u64..2, 0usize..200, proptest::bool::weighted(0.05)).prop_map(
            |(back, count, term_bump, len, gap)| Op::Append { back, count, term_bump, len, gap }
        ),
        2 => (0u64..2, proptest::option::of(1u64..4), 0u64..10)
            .prop_map(|(term_bump, vote, commit_back)| Op::SetHardState { term_bump, vote, commit_back }),
        1 => (0u64..30, proptest::bool::weighted(0.8)).prop_map(|(at, matching)| Op::Compact { at, matching }),
        4 => (0u64..40, 0u64..30, prop_oneof![Just(0u64), 0u64..2000, Just(u64::MAX)])
            .prop_map(|(low_back, len, max_bytes)| Op::Read { low_back, len, max_bytes }),
        3 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    sled: Result<T, StorageError>,
    model: Result<T, StorageError>,
) -> Result<(), TestCaseError> {
    match (sled, model) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", what),
        (Err(a), Err(b)) => prop_assert_eq!(kind(&a), kind(&b), "{}: {} vs {}", what, a, b),
        (a, b) => prop_assert!(false, "{}: sled {:?}, model {:?}", what, a, b),
    }
    Ok(())
}

struct Run {
    dir: tempfile::TempDir,
    options: SledLogOptions,
    sled: Option<SledLog>,
    model: MemLog,
    synced: MemLog,
    term_max: u64,
}

impl Run {
    fn sled(&mut self) -> &mut SledLog {
        self.sled.as_mut().expect("open")
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Append {
                back,
                count,
                term_bump,
                len,
                gap,
            } => {
                let end = self.model.last_index() + 1;
                let first = if gap {
                    end + 1
                } else {
                    end.saturating_sub(back).max(1)
                };
                self.term_max += term_bump;
                let entries: Vec<Entry> = (first..first + count)
                    .map(|i| sized(i, self.term_max, (len + i as usize * 13) % 200))
                    .collect();
                let a = self.sled().append(&entries);
                let b = self.model.append(&entries);
                same(&format!("{op:?}"), a, b)?;
            }
            Op::SetHardState {
                term_bump,
                vote,
                commit_back,
            } => {
                self.term_max += term_bump;
                let hs = HardState {
                    term: self.term_max,
                    vote,
                    commit: self.model.last_index().saturating_sub(commit_back),
                };
                let a = self.sled().set_hard_state(hs);
                let b = self.model.set_hard_state(hs);
                same(&format!("{op:?}"), a, b)?;
            }
            Op::Compact { at, matching } => {
                let index = self.model.first_index() - 1 + at;
                let last_term = match (matching, self.model.term(index)) {
                    (true, Ok(term)) => term,
                    _ => self.term_max + 1,
                };
                let meta = SnapshotMeta::at(index, last_term);
                let a = self.sled().compact(meta.clone());
                let b = self.model.compact(meta);
                same(&format!("{op:?}"), a, b)?;
            }
            Op::Read {
                low_back,
                len,
                max_bytes,
            } => {
                let low = (self.model.last_index() + 1).saturating_sub(low_back);
                let high = low + len;
                let a = self.sled().entries(low, high, max_bytes);
                let b = self.model.entries(low, high, max_bytes);
                same(&format!("{op:?}"), a, b)?;
                let a = self.sled().term(low);
                let b = self.model.term(low);
                same(&format!("term({low})"), a, b)?;
            }
            Op::Sync => {
                self.sled()
                    .sync()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.model
                    .sync()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.synced = self.model.clone();
            }
            Op::Reopen => {
                self.sled = None;
                self.sled = Some(
                    SledLog::open_with(self.dir.path(), self.options.clone())
                        .map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?,
                );
                self.model = self.synced.clone();
            }
        }
        let (first, last) = (self.model.first_index(), self.model.last_index());
        prop_assert_eq!(view(self.sled()), view(&self.model), "after {:?}", op);
        for i in first.saturating_sub(1)..=last + 1 {
            let a = self.sled().term(i);
            let b = self.model.term(i);
            same(&format!("term({i})"), a, b)?;
        }
        Ok(())
    }
}

fn options() -> impl Strategy<Value = SledLogOptions> {
    (
        prop_oneof![Just(200usize), Just(1500), Just(256 << 10)],
        prop_oneof![Just(0usize), Just(3), Just(8192)],
        // Small enough that the byte bound evicts, and that some entries are not cached.
        prop_oneof![Just(300u64), Just(16 << 20)],
    )
        .prop_map(
            |(record_bytes_max, tail_cache_entries_max, tail_cache_bytes_max)| {
                let mut o = SledLogOptions::new(CLUSTER, NODE);
                o.record_bytes_max = record_bytes_max;
                o.tail_cache_entries_max = tail_cache_entries_max;
                o.tail_cache_bytes_max = tail_cache_bytes_max;
                o.sync_mode = SyncMode::FlushOnly;
                o
            },
        )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn sled_log_behaves_like_mem_log(options in options(), ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledLog::open_with(dir.path(), options.clone()).unwrap();
        let mut run = Run {
            dir,
            options,
            sled: Some(sled),
            model: MemLog::new(),
            synced: MemLog::new(),
            term_max: 1,
        };
        for op in &ops {
            run.step(op)?;
        }
    }
}

/// A regression guard for the model itself: a restart keeps exactly the synced state.
#[test]
fn restart_without_sync_returns_to_the_last_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SledLogOptions::new(CLUSTER, NODE);
    options.sync_mode = SyncMode::FlushOnly;
    let mut log = SledLog::open_with(dir.path(), options.clone()).unwrap();
    log.append(&run(1, 5, 1)).unwrap();
    log.sync().unwrap();
    log.append(&run(3, 7, 2)).unwrap();
    drop(log);
    let log = SledLog::open_with(dir.path(), options).unwrap();
    let expected: Vec<LogIndex> = (1..=5).collect();
    let got: Vec<LogIndex> = view(&log).entries.iter().map(|e| e.index).collect();
    assert_eq!(got, expected);
    assert_eq!(log.term(3).unwrap(), 1);
}
