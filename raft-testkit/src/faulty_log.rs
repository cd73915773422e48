//! A [`Log`] wrapper whose syncs can be made to stall or fail on command, for tests of
//! the runtime with real threads: a slow disk, a long fsync, a snapshot stored on the
//! WaitLoop, or a paused process all look the same to the WaitLoop, a sync that does not
//! return for a while.
//!
//! ```
//! use std::time::Duration;
//! use raft_core::{Log, MemLog};
//! use raft_testkit::faulty_log::FaultyLog;
//!
//! let (mut log, control) = FaultyLog::new(MemLog::new());
//! control.stall_next_sync(Duration::from_millis(5));
//! log.sync().unwrap(); // takes 5 ms
//! assert_eq!(control.stalls_finished(), 1);
//! control.fail_next_sync();
//! assert!(log.sync().is_err());
//! assert!(log.sync().is_ok()); // one failure only
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_core::{
    Entry, HardState, Log, LogIndex, Snapshot, SnapshotMeta, SnapshotWriter, StorageError, Term,
    WrittenSnapshot,
};

/// Commands and observations shared between a [`FaultyLog`] and the test.
#[derive(Debug, Default)]
struct Faults {
    /// How long the next sync stalls, in milliseconds (0: it does not).
    stall_next_ms: AtomicU64,
    /// Whether the next sync fails.
    fail_next: AtomicBool,
    /// Whether a sync is stalling right now.
    stalling: AtomicBool,
    /// Stalls started and finished.
    stalls_started: AtomicU64,
    stalls_finished: AtomicU64,
    /// How long storing a snapshot takes, in milliseconds: `save_snapshot`, or the
    /// writer's `write` when the log has one.
    snapshot_store_ms: AtomicU64,
    /// Snapshots written by the writer and not yet adopted, by id.
    written: Mutex<BTreeMap<u64, Snapshot>>,
    next_written_id: AtomicU64,
    /// Snapshots stored (saved or adopted).
    snapshots_stored: AtomicU64,
}

/// The test's handle on a [`FaultyLog`]: arm faults, watch them happen. Clone freely.
#[derive(Clone, Debug, Default)]
pub struct FaultyLogControl(Arc<Faults>);

impl FaultyLogControl {
    /// The next [`Log::sync`] sleeps `stall` before it syncs (once).
    pub fn stall_next_sync(&self, stall: Duration) {
        let ms = u64::try_from(stall.as_millis()).unwrap_or(u64::MAX).max(1);
        self.0.stall_next_ms.store(ms, Ordering::SeqCst);
    }

    /// The next [`Log::sync`] fails with [`StorageError::Io`] (once), writing nothing.
    pub fn fail_next_sync(&self) {
        self.0.fail_next.store(true, Ordering::SeqCst);
    }

    /// Whether a sync is stalling right now.
    pub fn is_stalling(&self) -> bool {
        self.0.stalling.load(Ordering::SeqCst)
    }

    /// How many stalls started.
    pub fn stalls_started(&self) -> u64 {
        self.0.stalls_started.load(Ordering::SeqCst)
    }

    /// How many stalls finished.
    pub fn stalls_finished(&self) -> u64 {
        self.0.stalls_finished.load(Ordering::SeqCst)
    }

    /// Every snapshot store from now on takes `duration` (as writing a big file does):
    /// `save_snapshot` on the caller's thread, or the writer's `write` on its own.
    pub fn set_snapshot_store_time(&self, duration: Duration) {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.0.snapshot_store_ms.store(ms, Ordering::SeqCst);
    }

    /// How many snapshots were stored (saved, or written and adopted).
    pub fn snapshots_stored(&self) -> u64 {
        self.0.snapshots_stored.load(Ordering::SeqCst)
    }

    fn snapshot_store_delay(&self) {
        let ms = self.0.snapshot_store_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

/// The [`SnapshotWriter`] of a [`FaultyLog`] built with
/// [`FaultyLog::with_snapshot_writer`]: takes the configured store time, then keeps the
/// snapshot for `adopt_snapshot`.
struct FaultyWriter(FaultyLogControl);

impl SnapshotWriter for FaultyWriter {
    fn write(
        &mut self,
        meta: SnapshotMeta,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<WrittenSnapshot, StorageError> {
        self.0.snapshot_store_delay();
        let mut data = Vec::new();
        fill(&mut data).map_err(|e| StorageError::Io(format!("snapshot data: {e}")))?;
        let snapshot = Snapshot {
            meta,
            data: data.into(),
        };
        let f = &self.0 .0;
        let id = f.next_written_id.fetch_add(1, Ordering::SeqCst);
        f.written
            .lock()
            .map_err(|_| StorageError::Io("poisoned".into()))?
            .insert(id, snapshot.clone());
        Ok(WrittenSnapshot {
            meta: snapshot.meta,
            id,
            size_bytes: snapshot.data.len() as u64,
        })
    }
}

/// A [`Log`] that delegates to `L` except when a fault is armed through its
/// [`FaultyLogControl`].
#[derive(Debug)]
pub struct FaultyLog<L> {
    inner: L,
    faults: FaultyLogControl,
    /// Whether [`Log::snapshot_writer`] offers a writer.
    has_writer: bool,
}

impl<L: Log> FaultyLog<L> {
    /// Wraps `inner`; returns the log and the handle that arms its faults.
    pub fn new(inner: L) -> (Self, FaultyLogControl) {
        let faults = FaultyLogControl::default();
        (
            Self {
                inner,
                faults: faults.clone(),
                has_writer: false,
            },
            faults,
        )
    }

    /// As [`FaultyLog::new`], with a [`SnapshotWriter`]: the runtime then stores
    /// snapshots off its WaitLoop, through the writer and [`Log::adopt_snapshot`].
    pub fn with_snapshot_writer(inner: L) -> (Self, FaultyLogControl) {
        let (mut log, control) = Self::new(inner);
        log.has_writer = true;
        (log, control)
    }
}

impl<L: Log> Log for FaultyLog<L> {
    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.inner.set_hard_state(hard_state)
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.inner.snapshot_meta()
    }
    fn first_index(&self) -> LogIndex {
        self.inner.first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.inner.last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.inner.term(index)
    }
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(low, high, max_bytes)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.inner.append(entries)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        let f = &self.faults.0;
        let stall_ms = f.stall_next_ms.swap(0, Ordering::SeqCst);
        if stall_ms > 0 {
            f.stalling.store(true, Ordering::SeqCst);
            f.stalls_started.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(stall_ms));
            f.stalling.store(false, Ordering::SeqCst);
            f.stalls_finished.fetch_add(1, Ordering::SeqCst);
        }
        if f.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StorageError::Io(
                "injected sync failure (FaultyLog)".to_string(),
            ));
        }
        self.inner.sync()
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.inner.snapshot()
    }
    fn snapshot_info(&self) -> Result<Option<raft_core::SnapshotInfo>, StorageError> {
        self.inner.snapshot_info()
    }
    fn open_snapshot(
        &self,
    ) -> Result<Option<std::sync::Arc<dyn raft_core::SnapshotChunks>>, StorageError> {
        self.inner.open_snapshot()
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.faults.snapshot_store_delay();
        self.inner.save_snapshot(snapshot)?;
        self.faults
            .0
            .snapshots_stored
            .fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn snapshot_writer(&self) -> Option<Box<dyn SnapshotWriter>> {
        self.has_writer
            .then(|| Box::new(FaultyWriter(self.faults.clone())) as Box<dyn SnapshotWriter>)
    }
    fn adopt_snapshot(&mut self, written: &WrittenSnapshot) -> Result<(), StorageError> {
        let snapshot = self
            .faults
            .0
            .written
            .lock()
            .map_err(|_| StorageError::Io("poisoned".into()))?
            .remove(&written.id)
            .ok_or_else(|| {
                StorageError::Io(format!("no written snapshot with id {}", written.id))
            })?;
        self.inner.save_snapshot(&snapshot)?;
        self.faults
            .0
            .snapshots_stored
            .fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.inner.compact(meta)
    }
}
