//! `SledLog`: a durable [`Log`] on sled 0.34.
//!
//! - `mod.rs`: the log itself: its state in memory, the tail cache, the write path
//!   (`append`, `sync`: the value log, then one sled batch, then the durability point)
//!   and the `Log` implementation;
//! - `open.rs`: opening a directory: sled's lock, the owner record, and recovering the
//!   state record, the entries, the value log and the snapshot files;
//! - `options.rs`: `SledLogOptions`, `SyncMode`, `SyncStats`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::storage::check_contiguous;
use raft_core::{Entry, HardState, Log, LogIndex, NodeId, SnapshotMeta, StorageError, Term};

use crate::durable::SledFiles;
use crate::marker::{Mark, SyncMarker};
use crate::reaper::Reaper;
use crate::record::{
    chunk_count, decode_meta, encode_meta, encode_record, parse_record_key, record_bytes,
    record_key, ByteBudget, Owner, Record, State, StateV2, CHUNK_BYTES_MAX, FORMAT_VERSION,
    FORMAT_VERSION_NO_CONFIG, OWNER_KEY, RECORD_PREFIX, STATE_KEY,
};
use crate::snapfile::{SnapshotDir, SnapshotRef};
use crate::vlog::{ValueLog, ValueRef};

#[cfg(test)]
mod format_tests;
mod open;
mod options;
#[cfg(test)]
mod tests;

pub use options::{SledLogOptions, SyncMode, SyncStats};

/// sled's segment size, fixed for a directory's lifetime (sled refuses to reopen with
/// another). 16 times sled's default: sled stores a page larger than a quarter of a segment
/// in a separate blob file, which costs an extra `fdatasync` and a directory `fsync` at the
/// next sync, and is removed only when the segment pointing at it is cleaned; with 8 MiB
/// segments a leaf of 17 record chunks of 64 KiB stays inline.
pub(crate) const SLED_SEGMENT_BYTES: usize = 8 << 20;

/// The largest entry payload a record can hold (its length is stored in 32 bits).
const ENTRY_DATA_BYTES_MAX: usize = u32::MAX as usize;
/// The most entries one record holds (the count is stored in 32 bits).
const RECORD_ENTRIES_MAX: usize = u32::MAX as usize;

/// A durable [`Log`] on [sled](https://docs.rs/sled/0.34).
///
/// Writes are buffered in memory and reach sled in [`Log::sync`] as one atomic sled batch
/// (every appended record, every removal, the hard state and snapshot metadata), followed
/// by the durability point of [`SyncMode`]. So after a crash the directory holds exactly
/// the state of some completed or interrupted sync: everything synced, never a part of a
/// batch. Each `append` is stored under one key; every entry and every metadata record
/// carries a crc32 checked on every read.
///
/// Opening checks every record: damage inside the synced log is refused with
/// [`StorageError::Corrupt`] naming the index, rather than silently dropping an entry that
/// may be committed; a record past the last synced index (which an atomic batch should
/// never leave) is discarded with a warning.
///
/// ```
/// use raft_core::{Entry, EntryKind, HardState, Log};
/// use raft_store::SledLog;
///
/// let dir = tempfile::tempdir()?;
/// let e = |index, term| Entry { index, term, kind: EntryKind::Command, data: "x".into() };
/// {
///     let mut log = SledLog::open(dir.path(), "demo", 1)?;
///     log.append(&[e(1, 1), e(2, 1)])?;
///     log.set_hard_state(HardState { term: 1, vote: Some(1), commit: 2 })?;
///     log.sync()?; // the durability point: now it survives a crash
/// }
/// let log = SledLog::open(dir.path(), "demo", 1)?;
/// assert_eq!((log.last_index(), log.hard_state().vote), (2, Some(1)));
/// // Another node's directory is refused.
/// drop(log);
/// assert!(SledLog::open(dir.path(), "demo", 2).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SledLog {
    dir: PathBuf,
    db: sled::Db,
    files: SledFiles,
    marker: SyncMarker,
    /// The latest intact mark found in the marker file when opening.
    mark_on_open: Option<Mark>,
    /// The sequence number of the last sync that wrote a state record.
    seq: u64,
    stats: SyncStats,
    options: SledLogOptions,
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// The in-memory state differs from the stored state record.
    state_dirty: bool,
    /// `terms[i]` is the term of entry `first_index() + i`; its length is the entry count.
    terms: VecDeque<Term>,
    /// Every record, stored or pending: first index -> last index. Contiguous, the last
    /// one ends at `last_index()`, the first one holds `first_index()` (it may start
    /// below it after a compaction, whose entries are then ignored).
    records: BTreeMap<LogIndex, LogIndex>,
    /// Record writes not yet handed to sled, applied at the next sync: first index ->
    /// new bytes, or `None` for a removal.
    pending: BTreeMap<LogIndex, Option<sled::IVec>>,
    /// The newest entries, decoded: a contiguous run ending at `last_index()`, or empty.
    /// At most `tail_cache_entries_max` entries and `tail_cache_bytes_max` bytes.
    tail: VecDeque<Entry>,
    /// `Entry::size_bytes` summed over `tail`.
    tail_bytes: u64,
    /// How each record of the last sync is stored: first index -> its chunks in sled, or
    /// a reference into the value log. Rewriting or removing a record removes all of it.
    stored: BTreeMap<LogIndex, Stored>,
    /// Large records, out of sled; `Some` once the directory is open.
    values: Option<ValueLog>,
    /// The snapshot files; `Some` once the directory is open.
    snapshots: Option<SnapshotDir>,
    /// The current snapshot file as the stored state record names it.
    snapshot_file: Option<SnapshotRef>,
    /// A saved snapshot, its file written and durable, that the next sync makes current.
    pending_snapshot: Option<SnapshotRef>,
    /// Snapshots that were pending when a sync failed: sled may have made one of them
    /// current anyway (a failed `fdatasync` says nothing about what reached the disk), so
    /// their files stay until a sync completes. Empty but after storage failures.
    uncertain_snapshots: Vec<SnapshotRef>,
    /// Deletes dropped snapshot files and value log segments off the syncing thread
    /// (after the open, whose clean-up runs in place).
    reaper: Reaper,
}

impl fmt::Debug for SledLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledLog")
            .field("dir", &self.dir)
            .field("cluster_id", &self.options.cluster_id)
            .field("node_id", &self.options.node_id)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("hard_state", &self.hard_state)
            .field("snapshot", &self.snapshot)
            .field("records", &self.records.len())
            .field("pending_records", &self.pending.len())
            .finish()
    }
}

fn sled_err(e: sled::Error) -> StorageError {
    match e {
        sled::Error::Corruption { at, .. } => StorageError::Corrupt {
            index: 0,
            detail: format!("sled finds its own file damaged (at {at:?})"),
        },
        sled::Error::Unsupported(msg) => StorageError::Corrupt {
            index: 0,
            detail: format!(
                "not a SledLog directory, or written by an incompatible version: {msg}"
            ),
        },
        other => StorageError::Io(format!("sled: {other}")),
    }
}

fn io_err(what: &str, dir: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", dir.display()))
}

fn corrupt(index: LogIndex, detail: String) -> StorageError {
    StorageError::Corrupt { index, detail }
}

impl SledLog {
    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &SledLogOptions {
        &self.options
    }

    /// Where the time of the syncs so far went.
    pub fn sync_stats(&self) -> SyncStats {
        self.stats
    }

    /// Bytes sled uses on disk (its files, blobs included; not the snapshot files).
    ///
    /// # Errors
    /// Storage failure.
    pub fn size_on_disk_bytes(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(sled_err)
    }

    /// Waits until every file this log dropped so far (snapshot files it replaced,
    /// value log segments compaction emptied) is deleted. They are deleted on a thread of
    /// the log's own, `raft-reaper-n<id>`, so that unlinking hundreds of MB never holds
    /// up a sync; call this before measuring the disk.
    pub fn wait_removals(&self) {
        self.reaper.flush();
    }

    /// Bytes of the snapshot files on disk (the current one, the one before it, and a
    /// file being written).
    ///
    /// # Errors
    /// Storage failure.
    pub fn snapshot_bytes_on_disk(&self) -> Result<u64, StorageError> {
        self.snapshot_dir()?.size_on_disk_bytes()
    }

    /// Bytes of every file under the log's directory: what the disk budget in
    /// `docs/operations.md` bounds.
    ///
    /// # Errors
    /// Storage failure.
    pub fn dir_bytes(&self) -> Result<u64, StorageError> {
        crate::dir_bytes(&self.dir).map_err(|e| io_err("cannot measure", &self.dir, e))
    }

    fn value_log(&self) -> Result<&ValueLog, StorageError> {
        self.values
            .as_ref()
            .ok_or_else(|| StorageError::Io("the value log is not open".into()))
    }

    /// The snapshot files a clean-up must keep (the current one, and those a failed
    /// sync may have adopted), and the directory to clean up.
    fn snapshot_dir_and_keep(
        &mut self,
    ) -> Result<(Vec<SnapshotRef>, &mut SnapshotDir), StorageError> {
        let mut keep: Vec<SnapshotRef> = self.snapshot_file.clone().into_iter().collect();
        keep.extend_from_slice(&self.uncertain_snapshots);
        let dir = self
            .snapshots
            .as_mut()
            .ok_or_else(|| StorageError::Io("the snapshot directory is not open".into()))?;
        Ok((keep, dir))
    }

    fn snapshot_dir(&self) -> Result<&SnapshotDir, StorageError> {
        self.snapshots
            .as_ref()
            .ok_or_else(|| StorageError::Io("the snapshot directory is not open".into()))
    }

    /// Applies `batch` and a new state record atomically, and makes them durable per the
    /// sync mode; then records the completed sync in the marker.
    fn write(&mut self, mut batch: sled::Batch) -> Result<(), StorageError> {
        let mut state = self.state();
        state.seq = self.seq + 1;
        batch.insert(STATE_KEY, encode_meta(STATE_KEY, &state)?);
        let start = Instant::now();
        self.db.apply_batch(batch).map_err(sled_err)?;
        let applied = Instant::now();
        self.db.flush().map_err(sled_err)?;
        let flushed = Instant::now();
        if self.options.sync_mode == SyncMode::Fdatasync {
            self.files
                .sync()
                .map_err(|e| io_err("cannot sync", &self.dir, e))?;
        }
        let synced = Instant::now();
        self.seq = state.seq;
        self.write_mark();
        self.stats.syncs += 1;
        self.stats.apply += applied - start;
        self.stats.flush += flushed - applied;
        self.stats.fsync += synced - flushed;
        Ok(())
    }

    /// Records the last completed sync in the marker. Failing to is not an error of the
    /// sync, which is durable: only the detection of a later rollback is weakened.
    fn write_mark(&mut self) {
        let state = self.state();
        let mark = Mark {
            seq: self.seq,
            last_index: state.last_index,
            last_term: state.last_term,
        };
        if let Err(e) = self.marker.write(mark) {
            log::warn!(
                "n{} cannot write the sync marker in {}: {e}",
                self.options.node_id,
                self.dir.display()
            );
        }
    }

    /// Caches `e`, the new last entry, evicting the oldest cached ones to stay within
    /// both bounds. One that alone exceeds the byte bound empties the cache (it must stay
    /// a run ending at the last index).
    fn push_tail(&mut self, e: Entry) {
        if self.options.tail_cache_entries_max == 0 {
            return;
        }
        let size = e.size_bytes();
        if size > self.options.tail_cache_bytes_max {
            self.clear_tail();
            return;
        }
        while self.tail.len() >= self.options.tail_cache_entries_max
            || self.tail_bytes + size > self.options.tail_cache_bytes_max
        {
            self.pop_tail_front();
        }
        self.tail_bytes += size;
        self.tail.push_back(e);
        debug_assert!(self.tail_bytes <= self.options.tail_cache_bytes_max);
    }

    fn pop_tail_front(&mut self) {
        if let Some(e) = self.tail.pop_front() {
            self.tail_bytes -= e.size_bytes();
        }
    }

    fn pop_tail_back(&mut self) {
        if let Some(e) = self.tail.pop_back() {
            self.tail_bytes -= e.size_bytes();
        }
    }

    fn clear_tail(&mut self) {
        self.tail.clear();
        self.tail_bytes = 0;
    }

    /// The record that starts at `first`, from the pending writes or from sled.
    fn load(&self, first: LogIndex) -> Result<Record, StorageError> {
        let bytes = match self.pending.get(&first) {
            Some(Some(bytes)) => Bytes::from_owner(bytes.clone()),
            Some(None) => return Err(corrupt(first, format!("record at {first} was removed"))),
            None => match self.stored.get(&first) {
                Some(Stored::Value(r)) => self.value_log()?.read(first, r)?,
                _ => {
                    let chunks = self.stored.get(&first).map_or(1, |s| s.keys());
                    let chunk = |c: u32| {
                        self.db
                            .get(record_key(first, c))
                            .map_err(sled_err)?
                            .ok_or_else(|| {
                                corrupt(
                                    first,
                                    format!("chunk {c} of the record at {first} is missing"),
                                )
                            })
                    };
                    if chunks == 1 {
                        Bytes::from_owner(chunk(0)?)
                    } else {
                        let mut all = Vec::with_capacity(chunks as usize * CHUNK_BYTES_MAX);
                        for c in 0..chunks {
                            all.extend_from_slice(&chunk(c)?);
                        }
                        Bytes::from(all)
                    }
                }
            },
        };
        Record::parse(first, bytes)
    }

    /// The record holding `index`, as (first, last).
    fn record_of(&self, index: LogIndex) -> Result<(LogIndex, LogIndex), StorageError> {
        match self.records.range(..=index).next_back() {
            Some((&first, &last)) if last >= index => Ok((first, last)),
            _ => Err(corrupt(index, format!("no record holds entry {index}"))),
        }
    }

    /// Removes entries `from..` (with `first_index() <= from <= last_index()`).
    fn truncate_from(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let first_index = self.first_index();
        // The record holding `from` keeps its entries before it: read them before
        // changing anything, so a failed read leaves the log as it was.
        let (holder, _) = self.record_of(from)?;
        let kept = if holder < from {
            let keep_from = holder.max(first_index);
            let mut kept = Vec::new();
            self.load(holder)?
                .read(keep_from, from, &mut ByteBudget::unlimited(), &mut kept)?;
            kept
        } else {
            Vec::new()
        };
        let doomed: Vec<LogIndex> = self.records.range(holder..).map(|(&f, _)| f).collect();
        for first in doomed {
            self.records.remove(&first);
            self.pending.insert(first, None);
        }
        if let Some(head) = kept.first() {
            self.records.insert(head.index, from - 1);
            self.pending
                .insert(head.index, Some(encode_record(&kept).into()));
        }
        self.terms.truncate((from - first_index) as usize);
        while self.tail.back().is_some_and(|e| e.index >= from) {
            self.pop_tail_back();
        }
        self.state_dirty = true;
        Ok(())
    }

    /// Stores `entries` (contiguous, following the log) as records of bounded size.
    fn add_records(&mut self, entries: &[Entry]) {
        let mut start = 0;
        while start < entries.len() {
            let mut end = start + 1;
            let mut bytes = record_bytes(&entries[start..end]);
            while end < entries.len() && end - start < RECORD_ENTRIES_MAX {
                let more = record_bytes(&entries[end..end + 1]) - record_bytes(&[]);
                if bytes + more > self.options.record_bytes_max {
                    break;
                }
                bytes += more;
                end += 1;
            }
            let chunk = &entries[start..end];
            let (first, last) = (chunk[0].index, chunk[chunk.len() - 1].index);
            self.records.insert(first, last);
            self.pending
                .insert(first, Some(encode_record(chunk).into()));
            start = end;
        }
    }

    /// The snapshot file the next sync names (a saved or adopted one), else the durable one.
    fn current_snapshot(&self) -> Option<&SnapshotRef> {
        self.pending_snapshot
            .as_ref()
            .or(self.snapshot_file.as_ref())
    }

    fn state(&self) -> State {
        let last_index = self.last_index();
        State {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            snapshot_file: self.current_snapshot().cloned(),
            last_index,
            last_term: self
                .terms
                .back()
                .copied()
                .unwrap_or(self.snapshot.last_term),
            seq: self.seq,
        }
    }
}

impl Log for SledLog {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        if hard_state != self.hard_state {
            self.hard_state = hard_state;
            self.state_dirty = true;
        }
        Ok(())
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.last_index + 1
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.last_index + self.terms.len() as u64
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.snapshot.last_index {
            return Ok(self.snapshot.last_term);
        }
        if index < self.snapshot.last_index {
            return Err(StorageError::Compacted {
                index,
                first_index: self.first_index(),
            });
        }
        match self.terms.get((index - self.first_index()) as usize) {
            Some(&term) => Ok(term),
            None => Err(StorageError::Unavailable {
                index,
                last_index: self.last_index(),
            }),
        }
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let first_index = self.first_index();
        let last_index = self.last_index();
        if low < first_index {
            return Err(StorageError::Compacted {
                index: low,
                first_index,
            });
        }
        if high > last_index + 1 {
            return Err(StorageError::Unavailable {
                index: high - 1,
                last_index,
            });
        }
        let mut out = Vec::new();
        let mut budget = ByteBudget::new(max_bytes);
        let tail_first = self.tail.front().map_or(last_index + 1, |e| e.index);
        let mut index = low;
        // Older entries come from their records, the newest from the tail cache.
        while index < high.min(tail_first) {
            let (first, last) = self.record_of(index)?;
            let to = high.min(tail_first).min(last + 1);
            self.load(first)?.read(index, to, &mut budget, &mut out)?;
            if budget.spent() {
                return Ok(out);
            }
            index = to;
        }
        if index < high {
            let skip = (index - tail_first) as usize;
            let take = (high - index) as usize;
            for e in self.tail.range(skip..skip + take) {
                if !budget.admit(e) {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        check_contiguous(entries)?;
        if let Some(big) = entries.iter().find(|e| e.data.len() > ENTRY_DATA_BYTES_MAX) {
            return Err(StorageError::InvalidAppend(format!(
                "entry {} carries {} bytes, more than the {ENTRY_DATA_BYTES_MAX} a record holds",
                big.index,
                big.data.len()
            )));
        }
        if first.index < self.first_index() {
            return Err(StorageError::InvalidAppend(format!(
                "entry {} is at or below the snapshot at {}",
                first.index, self.snapshot.last_index
            )));
        }
        if first.index > self.last_index() + 1 {
            return Err(StorageError::InvalidAppend(format!(
                "entry {} leaves a gap after last index {}",
                first.index,
                self.last_index()
            )));
        }
        if first.index <= self.last_index() {
            self.truncate_from(first.index)?;
        }
        self.add_records(entries);
        for e in entries {
            self.terms.push_back(e.term);
            self.push_tail(e.clone());
        }
        self.state_dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() && !self.state_dirty && self.pending_snapshot.is_none() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut now_stored = Vec::with_capacity(self.pending.len());
        let threshold = self.options.value_log_threshold_bytes;
        let values = self
            .values
            .as_mut()
            .ok_or_else(|| StorageError::Io("the value log is not open".into()))?;
        for (&first, bytes) in &self.pending {
            // The stored record at `first` goes whole; a later insert of the same key in
            // the batch wins over its removal.
            for chunk in 0..self.stored.get(&first).map_or(0, |s| s.keys()) {
                batch.remove(&record_key(first, chunk)[..]);
            }
            let stored = match bytes {
                Some(bytes) if bytes.len() > threshold => {
                    let r = values.append(bytes)?;
                    batch.insert(&record_key(first, 0)[..], &r.encode(first)[..]);
                    Some(Stored::Value(r))
                }
                Some(bytes) => {
                    for (chunk, part) in (0u32..).zip(bytes.chunks(CHUNK_BYTES_MAX)) {
                        batch.insert(&record_key(first, chunk)[..], part);
                    }
                    Some(Stored::Chunks(chunk_count(bytes.len())))
                }
                None => None,
            };
            now_stored.push((first, stored));
        }
        // The value log's bytes are durable before the batch that names them.
        values.sync()?;
        // On failure the pending writes stay, so a retried sync writes them again.
        if let Err(e) = self.write(batch) {
            if let Some(p) = self.pending_snapshot.clone() {
                if !self.uncertain_snapshots.contains(&p) {
                    self.uncertain_snapshots.push(p);
                }
            }
            return Err(e);
        }
        // The sync is durable: from here on nothing fails it.
        self.pending.clear();
        if let Some(adopted) = self.pending_snapshot.take() {
            self.snapshot_file = Some(adopted);
        }
        self.uncertain_snapshots.clear();
        self.state_dirty = false;
        let Some(values) = self.values.as_mut() else {
            return Ok(()); // checked above
        };
        for (first, stored) in now_stored {
            if let Some(Stored::Value(r)) = stored {
                values.add_ref(r.seq);
            }
            let old = match stored {
                Some(stored) => self.stored.insert(first, stored),
                None => self.stored.remove(&first),
            };
            if let Some(Stored::Value(r)) = old {
                values.drop_ref(r.seq);
            }
        }
        // A segment filled by a sync that failed is named by no record.
        values.remove_unreferenced();
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<raft_core::Snapshot>, StorageError> {
        match self.current_snapshot() {
            Some(r) => self.snapshot_dir()?.read(r).map(Some),
            None => Ok(None),
        }
    }

    /// From the current snapshot's reference in the state record: no file is read.
    fn snapshot_info(&self) -> Result<Option<raft_core::SnapshotInfo>, StorageError> {
        Ok(self.current_snapshot().map(|r| raft_core::SnapshotInfo {
            meta: r.meta.clone(),
            len_bytes: r.len,
            crc32: r.crc,
        }))
    }

    /// Opens the current snapshot's file; chunks are read from it as they are sent.
    fn open_snapshot(
        &self,
    ) -> Result<Option<std::sync::Arc<dyn raft_core::SnapshotChunks>>, StorageError> {
        match self.current_snapshot() {
            Some(r) => Ok(Some(std::sync::Arc::new(
                self.snapshot_dir()?.open_chunks(r)?,
            ))),
            None => Ok(None),
        }
    }

    /// Writes the snapshot to a new file at once (durably: temporary file, fsync,
    /// rename, directory fsync); the next [`Log::sync`] makes it the current one in the
    /// same atomic sled batch as everything else. Until then a crash leaves the previous
    /// snapshot current. Removes every file but the current one first, so the directory
    /// holds at most the current snapshot and the new one (after a failed sync, also the
    /// snapshots that sync may have adopted, until a sync completes).
    fn save_snapshot(&mut self, snapshot: &raft_core::Snapshot) -> Result<(), StorageError> {
        let (keep, dir) = self.snapshot_dir_and_keep()?;
        let written = dir.write(snapshot, &keep)?;
        self.pending_snapshot = Some(written);
        self.state_dirty = true;
        Ok(())
    }

    /// A writer that writes snapshot files from the runtime's storer thread, so a big
    /// snapshot never blocks the WaitLoop; [`Log::adopt_snapshot`] then makes one current.
    fn snapshot_writer(&self) -> Option<Box<dyn raft_core::SnapshotWriter>> {
        let writer = self.snapshots.as_ref()?.file_writer();
        Some(Box::new(SledSnapshotWriter(writer)))
    }

    /// Makes a file the writer wrote the pending snapshot, as `save_snapshot` would have
    /// (the next [`Log::sync`] names it in the state record), after removing every other
    /// file but the current one: the directory again holds at most two snapshots.
    fn adopt_snapshot(&mut self, written: &raft_core::WrittenSnapshot) -> Result<(), StorageError> {
        let (mut keep, dir) = self.snapshot_dir_and_keep()?;
        let r = dir.take_written(written.id).ok_or_else(|| {
            StorageError::Io(format!(
                "snapshot file {} (up to {}) is not a file this log's writer wrote, or it was \
                 removed since",
                written.id, written.meta.last_index
            ))
        })?;
        if r.meta != written.meta {
            return Err(StorageError::Io(format!(
                "snapshot file {} covers {:?}, not {:?}",
                r.id, r.meta, written.meta
            )));
        }
        keep.push(r.clone());
        dir.remove_all_but(&keep)?;
        self.pending_snapshot = Some(r);
        self.state_dirty = true;
        Ok(())
    }

    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        if meta.last_index <= self.snapshot.last_index {
            return Ok(());
        }
        let keep_suffix = self.term(meta.last_index).ok() == Some(meta.last_term);
        let doomed: Vec<LogIndex> = if keep_suffix {
            self.records
                .iter()
                .take_while(|(_, &last)| last <= meta.last_index)
                .map(|(&first, _)| first)
                .collect()
        } else {
            self.records.keys().copied().collect()
        };
        for first in doomed {
            self.records.remove(&first);
            self.pending.insert(first, None);
        }
        if keep_suffix {
            let drop = (meta.last_index + 1 - self.first_index()) as usize;
            self.terms.drain(..drop);
            while self
                .tail
                .front()
                .is_some_and(|e| e.index <= meta.last_index)
            {
                self.pop_tail_front();
            }
        } else {
            self.terms.clear();
            self.clear_tail();
        }
        self.snapshot = meta;
        self.state_dirty = true;
        Ok(())
    }
}

/// How a record of the last sync is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// In sled, cut into this many chunks.
    Chunks(u32),
    /// In the value log; sled holds the reference under chunk 0's key.
    Value(ValueRef),
}

impl Stored {
    /// How many sled keys it takes.
    fn keys(&self) -> u32 {
        match self {
            Self::Chunks(n) => *n,
            Self::Value(_) => 1,
        }
    }
}

/// [`SledLog`]'s [`raft_core::SnapshotWriter`]: writes snapshot files on the caller's
/// thread (the runtime's storer), never touching sled.
struct SledSnapshotWriter(crate::snapfile::FileWriter);

impl raft_core::SnapshotWriter for SledSnapshotWriter {
    fn write(
        &mut self,
        meta: raft_core::SnapshotMeta,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<raft_core::WrittenSnapshot, StorageError> {
        let r = self.0.write_stream(meta, fill)?;
        Ok(raft_core::WrittenSnapshot {
            meta: r.meta,
            id: r.id,
            size_bytes: r.len,
        })
    }
}
