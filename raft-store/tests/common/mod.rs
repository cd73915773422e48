//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod crash;

use bytes::Bytes;
use raft_core::{Entry, EntryKind, HardState, Log, LogIndex, SnapshotMeta, StorageError, Term};
use raft_store::{MemLog, SledLog, SledLogOptions, SyncMode};
use tempfile::TempDir;

pub const CLUSTER: &str = "test-cluster";
pub const NODE: u64 = 1;

/// The payload every test entry carries: derived from index and term, so any stored entry
/// can be checked for integrity on its own.
pub fn payload(index: LogIndex, term: Term, len: usize) -> Bytes {
    let seed = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (0..len)
        .map(|i| (seed.rotate_left((i % 64) as u32) as u8) ^ (i as u8))
        .collect::<Vec<u8>>()
        .into()
}

/// An entry whose payload length depends on its index (a no-op every 17th index).
pub fn entry(index: LogIndex, term: Term) -> Entry {
    sized(index, term, (index as usize * 7) % 150)
}

/// An entry with a payload of `len` bytes (a no-op when `len` is 0).
pub fn sized(index: LogIndex, term: Term, len: usize) -> Entry {
    Entry {
        term,
        index,
        kind: if len == 0 {
            EntryKind::Noop
        } else {
            EntryKind::Command
        },
        data: payload(index, term, len),
    }
}

/// Entries `from..=to`, all in `term`.
pub fn run(from: LogIndex, to: LogIndex, term: Term) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

/// Whether `e` carries exactly the payload [`sized`] gives its index and term.
pub fn intact(e: &Entry) -> bool {
    let expected_kind = if e.data.is_empty() {
        EntryKind::Noop
    } else {
        EntryKind::Command
    };
    e.kind == expected_kind && e.data == payload(e.index, e.term, e.data.len())
}

/// Everything a log shows, for comparing two logs.
#[derive(Debug, PartialEq, Eq)]
pub struct View {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub entries: Vec<Entry>,
}

pub fn view(log: &impl Log) -> View {
    View {
        hard_state: log.hard_state(),
        snapshot: log.snapshot_meta(),
        first_index: log.first_index(),
        last_index: log.last_index(),
        entries: log
            .entries(log.first_index(), log.last_index() + 1, u64::MAX)
            .expect("reading the whole log"),
    }
}

/// The variant of an error, for comparing two implementations.
pub fn kind(e: &StorageError) -> &'static str {
    match e {
        StorageError::Compacted { .. } => "Compacted",
        StorageError::Unavailable { .. } => "Unavailable",
        StorageError::Corrupt { .. } => "Corrupt",
        StorageError::WrongOwner { .. } => "WrongOwner",
        StorageError::InvalidAppend(_) => "InvalidAppend",
        StorageError::Io(_) => "Io",
        _ => "other",
    }
}

/// A log under test, and how to restart it.
pub trait Fixture {
    type L: Log;
    fn create() -> Self;
    fn log(&mut self) -> &mut Self::L;
    /// Drops the log and opens its storage again, as a restart does; `None` when the log
    /// keeps nothing across a restart.
    fn reopen(&mut self) -> Option<&mut Self::L>;
}

pub struct MemFixture(MemLog);

impl Fixture for MemFixture {
    type L = MemLog;
    fn create() -> Self {
        Self(MemLog::new())
    }
    fn log(&mut self) -> &mut MemLog {
        &mut self.0
    }
    fn reopen(&mut self) -> Option<&mut MemLog> {
        None
    }
}

pub struct SledFixture {
    pub dir: TempDir,
    pub options: SledLogOptions,
    pub log: Option<SledLog>,
}

impl SledFixture {
    pub fn with_options(options: SledLogOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = SledLog::open_with(dir.path(), options.clone()).expect("open a new SledLog");
        Self {
            dir,
            options,
            log: Some(log),
        }
    }
}

impl Fixture for SledFixture {
    type L = SledLog;
    fn create() -> Self {
        Self::with_options(SledLogOptions::new(CLUSTER, NODE))
    }
    fn log(&mut self) -> &mut SledLog {
        self.log.as_mut().expect("log is open")
    }
    fn reopen(&mut self) -> Option<&mut SledLog> {
        self.log = None;
        self.log = Some(SledLog::open_with(self.dir.path(), self.options.clone()).expect("reopen"));
        self.log.as_mut()
    }
}

/// A SledLog that splits appends into tiny records and caches almost nothing, so that
/// reads, overwrites and compactions cross record boundaries.
pub struct TinySledFixture(pub SledFixture);

impl Fixture for TinySledFixture {
    type L = SledLog;
    fn create() -> Self {
        let mut options = SledLogOptions::new(CLUSTER, NODE);
        options.record_bytes_max = 300;
        options.tail_cache_entries_max = 2;
        options.sync_mode = SyncMode::FlushOnly;
        Self(SledFixture::with_options(options))
    }
    fn log(&mut self) -> &mut SledLog {
        self.0.log()
    }
    fn reopen(&mut self) -> Option<&mut SledLog> {
        self.0.reopen()
    }
}

/// Waits for `cond` up to `timeout`, polling; panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

/// The first difference between two views, readable (entries are not dumped).
pub fn difference(a: &View, b: &View) -> Option<String> {
    if a == b {
        return None;
    }
    let head = |v: &View| {
        format!(
            "{:?} {:?} entries {}..={}",
            v.hard_state, v.snapshot, v.first_index, v.last_index
        )
    };
    let first_diff = a
        .entries
        .iter()
        .zip(&b.entries)
        .find(|(x, y)| x != y)
        .map(|(x, y)| {
            format!(
                "; first differing entry: index {} term {} vs index {} term {}",
                x.index, x.term, y.index, y.term
            )
        })
        .unwrap_or_default();
    Some(format!("{} vs {}{}", head(a), head(b), first_diff))
}
