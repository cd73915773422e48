//! `SledLog`: a durable [`Log`] on sled 0.34.

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

/// What [`Log::sync`] of a [`SledLog`] guarantees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// sled's flush, then `fdatasync` of sled's files and `fsync` of its directories when
    /// their listing changed: a synced write survives a process crash and a power loss.
    #[default]
    Fdatasync,
    /// sled's flush only (`pwrite` and `sync_file_range`): a synced write survives a
    /// process crash but NOT a power loss or kernel crash. For tests, benchmarks and
    /// clusters that accept losing the newest writes of every node at once.
    FlushOnly,
}

/// Where the time of [`SledLog`]'s syncs went, cumulative since it was opened: for
/// metrics, and to see what the durability point costs on a given disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Syncs that wrote something (a sync with nothing to write costs nothing).
    pub syncs: u64,
    /// Time in sled applying the batches (CPU: sled's per-key cost).
    pub apply: Duration,
    /// Time in sled's flush: `pwrite` and `sync_file_range` to the device.
    pub flush: Duration,
    /// Time making it durable: `fdatasync` of sled's files, directory `fsync`s.
    pub fsync: Duration,
}

/// How to open a [`SledLog`].
#[derive(Clone, Debug)]
pub struct SledLogOptions {
    /// The cluster the directory belongs to; a directory of another cluster is refused.
    pub cluster_id: String,
    /// This node's id (never 0); a directory of another node is refused.
    pub node_id: NodeId,
    /// The durability of [`Log::sync`].
    pub sync_mode: SyncMode,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// An append larger than this is split into several records of at most this size
    /// (a single larger entry gets a record of its own).
    ///
    /// Large enough that sled's per-key CPU cost (tens of µs) is paid once per batch of a
    /// few hundred small entries rather than per entry. Small enough that a sled leaf (up
    /// to 17 keys before sled splits it) stays under sled's blob threshold (2 MiB with the
    /// 8 MiB segments SledLog uses): a larger leaf goes to a new file under `blobs/`,
    /// which costs an extra `fdatasync` and a directory `fsync` in the next sync.
    pub record_bytes_max: usize,
    /// How many of the newest entries stay decoded in memory, so that the leader's
    /// replication of what it just appended does not read sled.
    pub tail_cache_entries_max: usize,
    /// The most bytes (`Entry::size_bytes`) those cached entries may hold: with large
    /// entries the count alone let the cache hold hundreds of MB (8192 x 50 KB), which
    /// broke the memory bound of issue 18. An entry larger than this is not cached.
    pub tail_cache_bytes_max: u64,
    /// How long `open` waits for the directory's lock. sled releases it only when its
    /// background threads let go of the database, a moment after the previous `SledLog`
    /// on the directory was dropped (a restart inside one process) or its process died.
    pub lock_wait_ms: u64,
    /// A record larger than this (a batch of many commands, or one large entry) is
    /// written to the value log, append-only segment files beside sled, and sled keeps a
    /// 33-byte reference. sled rewrites the values of a leaf page several times over and
    /// reclaims the space late (measured: 1 KB commands in 64 KiB records passed the disk
    /// budget by 10%); the value log writes a record once and deletes a segment whole
    /// once the log was compacted past it. Costs one more `fdatasync` in a sync that
    /// writes such a record.
    pub value_log_threshold_bytes: usize,
    /// The size at which the value log starts a new segment file. The value log takes
    /// at most its live records plus two segments.
    pub value_log_segment_bytes: u64,
}

impl SledLogOptions {
    /// Defaults for `cluster_id` and `node_id`: real durability, 64 MiB page cache,
    /// records up to 64 KiB, the newest 8192 entries (at most 16 MiB) cached, 5 s wait
    /// for the lock,
    /// records over 16 KiB in the value log's 16 MiB segments.
    pub fn new(cluster_id: impl Into<String>, node_id: NodeId) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
            sync_mode: SyncMode::default(),
            cache_capacity_bytes: 64 << 20,
            record_bytes_max: 64 << 10,
            tail_cache_entries_max: 8192,
            tail_cache_bytes_max: 16 << 20,
            lock_wait_ms: 5_000,
            value_log_threshold_bytes: 16 << 10,
            value_log_segment_bytes: 16 << 20,
        }
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`StorageError::Io`] describing the first invalid field.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid =
            |what: &str| Err(StorageError::Io(format!("invalid SledLog options: {what}")));
        if self.node_id == 0 {
            return invalid("node_id must not be 0");
        }
        if self.cluster_id.is_empty() {
            return invalid("cluster_id must not be empty");
        }
        if self.record_bytes_max == 0 {
            return invalid("record_bytes_max must be at least 1");
        }
        if self.value_log_segment_bytes == 0 {
            return invalid("value_log_segment_bytes must be at least 1");
        }
        Ok(())
    }
}

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

/// Opens sled, waiting up to `lock_wait_ms` for the directory's lock.
fn open_db(config: &sled::Config, dir: &Path, lock_wait_ms: u64) -> Result<sled::Db, StorageError> {
    let deadline = Instant::now() + Duration::from_millis(lock_wait_ms);
    let mut backoff = Duration::from_millis(1);
    loop {
        // sled 0.34 may panic on some damaged files; a damaged directory must be an
        // error, never a crash of the node.
        let error = match catch_unwind(AssertUnwindSafe(|| config.open())) {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(corrupt(
                    0,
                    format!("sled panicked while recovering {}", dir.display()),
                ))
            }
        };
        let locked = matches!(&error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"));
        if locked && Instant::now() < deadline {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
            continue;
        }
        return Err(match sled_err(error) {
            StorageError::Io(msg) if locked => StorageError::Io(format!(
                "cannot open {}: {msg} (is another process using it?)",
                dir.display()
            )),
            StorageError::Io(msg) => {
                StorageError::Io(format!("cannot open {}: {msg}", dir.display()))
            }
            other => other,
        });
    }
}

impl SledLog {
    /// Opens (or creates) the log in `dir` for node `node_id` of cluster `cluster_id`,
    /// with default [`SledLogOptions`].
    ///
    /// # Errors
    /// See [`SledLog::open_with`].
    pub fn open(
        dir: impl AsRef<Path>,
        cluster_id: &str,
        node_id: NodeId,
    ) -> Result<Self, StorageError> {
        Self::open_with(dir, SledLogOptions::new(cluster_id, node_id))
    }

    /// Opens (or creates) the log in `dir`, restoring hard state, entries and snapshot
    /// metadata, and checking every stored record.
    ///
    /// # Errors
    /// - [`StorageError::WrongOwner`] when another cluster or node wrote `dir`;
    /// - [`StorageError::Corrupt`] naming the first damaged index (0 for metadata) when
    ///   a synced record fails its checksum or the log has a hole;
    /// - [`StorageError::Io`] when the directory cannot be used (for example another
    ///   process still holds it open after [`SledLogOptions::lock_wait_ms`]) or the
    ///   options are invalid.
    pub fn open_with(dir: impl AsRef<Path>, options: SledLogOptions) -> Result<Self, StorageError> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let config = sled::Config::new()
            .path(&dir)
            .cache_capacity(options.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            // No background flusher: only `sync` writes to the files, so what a crash
            // leaves is always the state of some sync.
            .flush_every_ms(None)
            .segment_size(SLED_SEGMENT_BYTES);
        let db = open_db(&config, &dir, options.lock_wait_ms)?;
        let files = SledFiles::open(&dir).map_err(|e| io_err("cannot sync", &dir, e))?;
        let (marker, mark_on_open) = SyncMarker::open(&dir)
            .map_err(|e| io_err("cannot open the sync marker in", &dir, e))?;
        let reaper = Reaper::start(options.node_id);
        let mut log = Self {
            dir,
            db,
            files,
            marker,
            mark_on_open,
            seq: 0,
            stats: SyncStats::default(),
            options,
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            state_dirty: false,
            terms: VecDeque::new(),
            records: BTreeMap::new(),
            pending: BTreeMap::new(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            stored: BTreeMap::new(),
            values: None,
            snapshots: None,
            snapshot_file: None,
            pending_snapshot: None,
            uncertain_snapshots: Vec::new(),
            reaper,
        };
        let format_version = log.check_owner()?;
        log.restore(format_version)?;
        if format_version == FORMAT_VERSION_NO_CONFIG {
            // Upgrade in place, in one sled batch: the owner record names the current
            // format and the state record is rewritten in it (the snapshot metadata
            // with no configuration: `SnapshotMeta::membership` is `None`).
            let mut batch = sled::Batch::default();
            batch.insert(OWNER_KEY, encode_meta(OWNER_KEY, &log.me())?);
            log.write(batch)?;
            log::info!(
                "n{} upgraded sled log {} from format {FORMAT_VERSION_NO_CONFIG} to \
                 {FORMAT_VERSION} (its snapshot carries no configuration: the initial \
                 voters hold at it)",
                log.options.node_id,
                log.dir.display()
            );
        }
        log::info!(
            "n{} opened sled log {}: entries {}..={}, term {}, snapshot at {}",
            log.options.node_id,
            log.dir.display(),
            log.first_index(),
            log.last_index(),
            log.hard_state.term,
            log.snapshot.last_index
        );
        Ok(log)
    }

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
        self.reaper.remover().flush();
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

    fn me(&self) -> Owner {
        Owner {
            format_version: FORMAT_VERSION,
            cluster_id: self.options.cluster_id.clone(),
            node_id: self.options.node_id,
        }
    }

    /// Claims a new directory, or checks that an existing one is ours. Returns the
    /// directory's format version: [`FORMAT_VERSION`], or [`FORMAT_VERSION_NO_CONFIG`]
    /// (read, then upgraded by [`SledLog::open`]).
    fn check_owner(&mut self) -> Result<u32, StorageError> {
        let me = self.me();
        match self.db.get(OWNER_KEY).map_err(sled_err)? {
            Some(bytes) => {
                let mut found: Owner = decode_meta(OWNER_KEY, &bytes)?;
                let version = found.format_version;
                if version == FORMAT_VERSION_NO_CONFIG {
                    found.format_version = FORMAT_VERSION;
                }
                if found.format_version != FORMAT_VERSION {
                    return Err(corrupt(
                        0,
                        format!(
                            "directory {} has format version {}, this build reads only {} \
                             and {FORMAT_VERSION_NO_CONFIG} (version 2 moved snapshots to \
                             files and large records to a value log); keep the directory for the older build, or move it \
                             away and let the node catch up from the cluster (a snapshot \
                             and the log)",
                            self.dir.display(),
                            found.format_version,
                            FORMAT_VERSION
                        ),
                    ));
                }
                if found != me {
                    return Err(StorageError::WrongOwner {
                        expected: me.describe(),
                        found: found.describe(),
                    });
                }
                Ok(version)
            }
            None => {
                let keys = self.db.len();
                if keys != 0 {
                    return Err(corrupt(
                        0,
                        format!("no owner record but {keys} other keys: not a SledLog directory, or damaged"),
                    ));
                }
                if let Some(mark) = self.mark_on_open {
                    return Err(corrupt(
                        0,
                        format!(
                            "sled holds nothing, but sync {} (entries up to {}) had completed: \
                             were sled's files removed or damaged?",
                            mark.seq, mark.last_index
                        ),
                    ));
                }
                let mut batch = sled::Batch::default();
                batch.insert(OWNER_KEY, encode_meta(OWNER_KEY, &me)?);
                self.write(batch)?;
                Ok(FORMAT_VERSION)
            }
        }
    }

    /// Rebuilds the in-memory state from the stored records, checking all of them;
    /// `format_version` says how the state record is laid out.
    fn restore(&mut self, format_version: u32) -> Result<(), StorageError> {
        let state: State = match self.db.get(STATE_KEY).map_err(sled_err)? {
            Some(bytes) if format_version == FORMAT_VERSION_NO_CONFIG => {
                decode_meta::<StateV2>(STATE_KEY, &bytes)?.upgrade()
            }
            Some(bytes) => decode_meta(STATE_KEY, &bytes)?,
            None => return Err(corrupt(0, "the state record is missing".into())),
        };
        if state.last_index < state.snapshot.last_index {
            return Err(corrupt(
                0,
                format!(
                    "state record says the log ends at {}, before its snapshot at {}",
                    state.last_index, state.snapshot.last_index
                ),
            ));
        }
        if let Some(mark) = self.mark_on_open.filter(|m| m.seq > state.seq) {
            // sled stops recovering at the first damaged message of its own log, so a
            // damaged byte in the middle of its file looks like an older, consistent state.
            return Err(corrupt(
                state.last_index + 1,
                format!(
                    "sled recovered up to sync {} (entries up to {}), but sync {} (entries up \
                     to {}) had completed: the file is damaged at or after the write of entry {}",
                    state.seq,
                    state.last_index,
                    mark.seq,
                    mark.last_index,
                    state.last_index + 1
                ),
            ));
        }
        let mut snapshots = SnapshotDir::open(
            &self.dir,
            self.options.node_id,
            self.options.sync_mode == SyncMode::Fdatasync,
            state.snapshot_file.as_ref(),
        )?;
        snapshots.set_remover(self.reaper.remover());
        self.snapshots = Some(snapshots);
        self.snapshot_file = state.snapshot_file;
        self.seq = state.seq;
        self.hard_state = state.hard_state;
        self.snapshot = state.snapshot;
        let mut values = ValueLog::open(
            &self.dir,
            self.options.node_id,
            self.options.sync_mode == SyncMode::Fdatasync,
            self.options.value_log_segment_bytes,
        )?;
        let first_index = self.first_index();
        let synced_last = state.last_index;
        let mut next: Option<LogIndex> = None;
        let mut discard = Vec::new();
        for item in RecordScan::new(self.db.scan_prefix([RECORD_PREFIX])) {
            let (first, chunks, mut value) = item?;
            if chunks == 1 && ValueRef::is_ref(&value) {
                let r = ValueRef::decode(first, &value)?;
                self.stored.insert(first, Stored::Value(r));
                if first <= synced_last {
                    value = values.read(first, &r)?;
                    values.add_ref(r.seq);
                }
            } else {
                self.stored.insert(first, Stored::Chunks(chunks));
            }
            if first > synced_last {
                // Only a sync writes records, together with the state record in one atomic
                // batch, so this cannot come from a sync that completed.
                log::warn!(
                    "n{} discarding record at {first} past the last synced index {synced_last}",
                    self.options.node_id
                );
                discard.push(first);
                continue;
            }
            let record = Record::parse(first, value)?;
            let last = record.last();
            if last < first_index {
                if let Some(Stored::Value(r)) = self.stored.get(&first) {
                    values.drop_ref(r.seq);
                }
                discard.push(first);
                continue;
            }
            if last > synced_last {
                return Err(corrupt(
                    synced_last + 1,
                    format!("record at {first} runs to {last}, past the last synced index {synced_last}"),
                ));
            }
            let expected = next.unwrap_or(first_index);
            if next.is_none() && first > first_index || next.is_some() && first > expected {
                return Err(corrupt(
                    expected,
                    format!("entries {expected}..{first} are missing"),
                ));
            }
            if next.is_some() && first < expected {
                return Err(corrupt(
                    first,
                    format!(
                        "record at {first} overlaps the one before, which ends at {}",
                        expected - 1
                    ),
                ));
            }
            let mut entries = Vec::new();
            record.read(
                first.max(first_index),
                last + 1,
                &mut ByteBudget::unlimited(),
                &mut entries,
            )?;
            // Terms are not checked for order here: `append` does not check them across
            // calls either, and the checksums already vouch for every entry.
            for e in entries {
                self.terms.push_back(e.term);
                self.push_tail(e);
            }
            self.records.insert(first, last);
            next = Some(last + 1);
        }
        let last = self.last_index();
        if last < synced_last {
            return Err(corrupt(
                last + 1,
                format!("the log ends at {last} but the last sync wrote up to {synced_last}"),
            ));
        }
        if last > self.snapshot.last_index && self.terms.back() != Some(&state.last_term) {
            return Err(corrupt(
                last,
                format!(
                    "last entry has term {:?}, the state record says {}",
                    self.terms.back(),
                    state.last_term
                ),
            ));
        }
        if !discard.is_empty() {
            let mut batch = sled::Batch::default();
            for first in discard {
                let chunks = self.stored.remove(&first).map_or(1, |s| s.keys());
                for chunk in 0..chunks {
                    batch.remove(&record_key(first, chunk)[..]);
                }
            }
            self.write(batch)?;
        } else if self.mark_on_open.map(|m| m.seq) != Some(self.seq) {
            // The marker lags (it is not synced, so a power loss can leave it behind).
            self.write_mark();
        }
        // Only now that no stored record names them may unreferenced segments go.
        values.remove_unreferenced();
        values.set_remover(self.reaper.remover());
        self.values = Some(values);
        Ok(())
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

/// Reassembles records from sled's scan of their chunks, in key order: yields
/// `(first index, chunk count, record bytes)`.
struct RecordScan<I: Iterator> {
    inner: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> RecordScan<I> {
    fn new(inner: I) -> Self {
        Self {
            inner: inner.peekable(),
        }
    }
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Iterator for RecordScan<I> {
    type Item = Result<(LogIndex, u32, Bytes), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = match self.inner.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(sled_err(e))),
        };
        let Some((first, chunk)) = parse_record_key(&key) else {
            return Some(Err(corrupt(0, format!("unexpected key {key:?}"))));
        };
        if chunk != 0 {
            return Some(Err(corrupt(
                first,
                format!("the record at {first} starts at chunk {chunk}, not 0"),
            )));
        }
        let mut chunks = 1u32;
        let mut joined: Option<Vec<u8>> = None;
        let same_record = |item: &sled::Result<(sled::IVec, sled::IVec)>| matches!(item, Ok((k, _)) if parse_record_key(k).map(|(f, _)| f) == Some(first));
        while let Some(Ok((next_key, part))) = self.inner.next_if(same_record) {
            if parse_record_key(&next_key) != Some((first, chunks)) {
                return Some(Err(corrupt(
                    first,
                    format!("the record at {first} lacks chunk {chunks}"),
                )));
            }
            joined
                .get_or_insert_with(|| value.to_vec())
                .extend_from_slice(&part);
            chunks += 1;
        }
        let bytes = match joined {
            Some(all) => Bytes::from(all),
            None => Bytes::from_owner(value),
        };
        Some(Ok((first, chunks, bytes)))
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

#[cfg(test)]
mod format_tests {
    //! Format 3 (the snapshot's configuration in its metadata) still opens a directory
    //! written in format 2 (no configuration), and refuses a damaged state record with a
    //! clear error.

    use super::*;
    use crate::record::{SnapshotMetaV2, SnapshotRefV2};
    use raft_core::{Config, Entry, EntryKind, Membership, Raft, Snapshot};

    const CLUSTER: &str = "format-test";

    fn entries(from: LogIndex, to: LogIndex, term: Term) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                term,
                index,
                kind: EntryKind::Command,
                data: format!("e{index}").into_bytes().into(),
            })
            .collect()
    }

    /// A directory with entries 1..=10 and a snapshot at 6 (carrying `membership`),
    /// compacted there, synced; the log is returned open.
    fn written(dir: &Path, membership: Option<Membership>) -> SledLog {
        let mut log = SledLog::open(dir, CLUSTER, 1).unwrap();
        log.append(&entries(1, 10, 2)).unwrap();
        log.set_hard_state(HardState {
            term: 2,
            vote: Some(1),
            commit: 10,
        })
        .unwrap();
        let meta = SnapshotMeta {
            last_index: 6,
            last_term: 2,
            membership,
        };
        log.save_snapshot(&Snapshot {
            meta: meta.clone(),
            data: "state at 6".into(),
        })
        .unwrap();
        log.compact(meta).unwrap();
        log.sync().unwrap();
        log
    }

    /// Rewrites the owner and state records of an open log as format 2 wrote them
    /// (field for field, no configuration), with the same sync sequence number, then
    /// closes it: the directory a build of format 2 would have left.
    fn downgrade_to_format_2(log: SledLog) {
        let state = log.state();
        let v2 = |m: &SnapshotMeta| SnapshotMetaV2 {
            last_index: m.last_index,
            last_term: m.last_term,
        };
        let old = StateV2 {
            hard_state: state.hard_state,
            snapshot: v2(&state.snapshot),
            snapshot_file: state.snapshot_file.as_ref().map(|r| SnapshotRefV2 {
                id: r.id,
                meta: v2(&r.meta),
                len: r.len,
                crc: r.crc,
            }),
            last_index: state.last_index,
            last_term: state.last_term,
            seq: state.seq,
        };
        let owner = Owner {
            format_version: FORMAT_VERSION_NO_CONFIG,
            ..log.me()
        };
        let mut batch = sled::Batch::default();
        batch.insert(OWNER_KEY, encode_meta(OWNER_KEY, &owner).unwrap());
        batch.insert(STATE_KEY, encode_meta(STATE_KEY, &old).unwrap());
        log.db.apply_batch(batch).unwrap();
        log.db.flush().unwrap();
    }

    fn stored_format(log: &SledLog) -> u32 {
        let bytes = log.db.get(OWNER_KEY).unwrap().expect("an owner record");
        decode_meta::<Owner>(OWNER_KEY, &bytes)
            .unwrap()
            .format_version
    }

    #[test]
    fn the_configuration_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = Membership::new([1, 2, 4], [5]);
        drop(written(dir.path(), Some(m.clone())));
        let log = SledLog::open(dir.path(), CLUSTER, 1).unwrap();
        let info = log.snapshot_info().unwrap().expect("a snapshot");
        assert_eq!(info.meta.membership, Some(m.clone()));
        assert_eq!(
            log.snapshot().unwrap().unwrap().meta.membership,
            Some(m.clone())
        );
        assert_eq!(stored_format(&log), FORMAT_VERSION);
        // The protocol resumes with it: node 3, a voter at start, no longer is.
        let raft = Raft::new(Config::new(1, [1, 2, 3]), log, 7).unwrap();
        assert_eq!(raft.membership(), &m);
    }

    #[test]
    fn a_format_2_directory_opens_with_the_initial_configuration_and_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let log = written(dir.path(), Some(Membership::new([1, 2, 4], [])));
        downgrade_to_format_2(log);
        let log = SledLog::open(dir.path(), CLUSTER, 1).unwrap();
        assert_eq!(stored_format(&log), FORMAT_VERSION, "upgraded in place");
        let info = log.snapshot_info().unwrap().expect("the snapshot is kept");
        assert_eq!(info.meta, SnapshotMeta::at(6, 2));
        assert_eq!(&log.snapshot().unwrap().unwrap().data[..], b"state at 6");
        assert_eq!((log.first_index(), log.last_index()), (7, 10));
        assert_eq!(log.hard_state().commit, 10);
        // No configuration stored: the node's initial voters hold at the snapshot.
        let raft = Raft::new(Config::new(1, [1, 2, 3]), log, 7).unwrap();
        assert_eq!(raft.membership(), &Membership::new([1, 2, 3], []));
        drop(raft);
        // Upgraded: it opens again as format 3.
        let log = SledLog::open(dir.path(), CLUSTER, 1).unwrap();
        assert_eq!(
            log.snapshot_info().unwrap().unwrap().meta,
            SnapshotMeta::at(6, 2)
        );
    }

    #[test]
    fn a_state_record_in_the_wrong_format_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = written(dir.path(), Some(Membership::new([1, 2, 3], [])));
        // A format-2 state record under a format-3 owner: postcard cannot tell, the
        // decoder runs out of bytes or reads garbage; either way it must be refused.
        let state = log.state();
        let old = StateV2 {
            hard_state: state.hard_state,
            snapshot: SnapshotMetaV2 {
                last_index: 6,
                last_term: 2,
            },
            snapshot_file: None,
            last_index: state.last_index,
            last_term: state.last_term,
            seq: state.seq,
        };
        let mut batch = sled::Batch::default();
        batch.insert(STATE_KEY, encode_meta(STATE_KEY, &old).unwrap());
        log.db.apply_batch(batch).unwrap();
        log.db.flush().unwrap();
        drop(log);
        let err = SledLog::open(dir.path(), CLUSTER, 1).unwrap_err();
        assert!(
            err.to_string().contains("m/state"),
            "the error names the record: {err}"
        );
    }

    #[test]
    fn a_stored_invalid_configuration_is_refused_by_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        // No voters: not a configuration a leader could have had.
        drop(written(dir.path(), Some(Membership::new([], [2]))));
        let log = SledLog::open(dir.path(), CLUSTER, 1).unwrap();
        let err = Raft::new(Config::new(1, [1, 2, 3]), log, 7).unwrap_err();
        assert!(
            err.to_string().contains("configuration is invalid"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::EntryKind;

    impl SledLog {
        /// Deletes dropped files through `reaper` from now on.
        fn use_reaper(&mut self, reaper: Reaper) {
            if let Some(values) = self.values.as_mut() {
                values.set_remover(reaper.remover());
            }
            if let Some(snapshots) = self.snapshots.as_mut() {
                snapshots.set_remover(reaper.remover());
            }
            self.reaper = reaper;
        }
    }

    /// Issue 18: a sync unlinked the files it dropped itself, on the node's WaitLoop:
    /// with 1 GB of state, value log segments that compaction emptied and the snapshot
    /// file an adoption replaced took ~180 ms to unlink, and writes stalled up to 328 ms
    /// (past raft-kv's election timeout). With the reaper thread held, the syncs return
    /// and every dropped file is still there; released, they go.
    #[test]
    fn dropped_files_are_deleted_off_the_syncing_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = SledLogOptions::new("c", 1);
        o.sync_mode = SyncMode::FlushOnly;
        o.value_log_segment_bytes = 1 << 20;
        let mut log = SledLog::open_with(dir.path(), o).unwrap();
        let (reaper, gate) = Reaper::start_gated(1);
        log.use_reaper(reaper);
        let count = |sub: &str| std::fs::read_dir(dir.path().join(sub)).unwrap().count();
        for i in 1..=20 {
            log.append(&[big(i, 300_000)]).unwrap();
            log.sync().unwrap();
        }
        let segments = count(crate::vlog::VALUE_DIR);
        assert!(segments >= 5, "{segments} segments of 1 MiB for 6 MB");
        let snap = |index: LogIndex| raft_core::Snapshot {
            meta: SnapshotMeta::at(index, 1),
            data: bytes::Bytes::from(vec![index as u8; 100_000]),
        };
        for index in [5, 10, 18] {
            log.save_snapshot(&snap(index)).unwrap();
            log.sync().unwrap();
        }
        log.compact(SnapshotMeta::at(18, 1)).unwrap();
        log.sync().unwrap();
        assert_eq!(
            count(crate::vlog::VALUE_DIR),
            segments,
            "a sync deleted a segment"
        );
        assert_eq!(count("snapshots"), 3, "a sync deleted a snapshot file");
        gate.send(()).unwrap();
        log.wait_removals();
        assert!(
            count(crate::vlog::VALUE_DIR) < segments,
            "no segment was dropped"
        );
        assert_eq!(
            count("snapshots"),
            2,
            "the current snapshot and the one before"
        );
        assert_eq!(log.snapshot().unwrap(), Some(snap(18)));
        assert_eq!(log.entries(19, 21, u64::MAX).unwrap().len(), 2);
    }

    fn big(index: LogIndex, len: usize) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Command,
            data: bytes::Bytes::from(vec![index as u8; len]),
        }
    }

    /// Issue 18: the tail cache was bounded in entries only, so 50 KB entries made it
    /// hold up to 8192 x 50 KB = 400 MB. It is bounded in bytes too, and reads past the
    /// cache still come back whole from sled.
    #[test]
    fn the_tail_cache_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = SledLogOptions::new("c", 1);
        o.sync_mode = SyncMode::FlushOnly;
        o.tail_cache_bytes_max = 1 << 20;
        let mut log = SledLog::open_with(dir.path(), o).unwrap();
        for i in 1..=100 {
            log.append(&[big(i, 50_000)]).unwrap();
            assert!(log.tail_bytes <= 1 << 20, "{} bytes cached", log.tail_bytes);
        }
        log.sync().unwrap();
        assert_eq!(log.tail.len(), 20, "as many 50 KB entries as fit 1 MiB");
        assert_eq!(log.tail.back().map(|e| e.index), Some(100));
        let all = log.entries(1, 101, u64::MAX).unwrap();
        assert_eq!(all.len(), 100);
        assert!(all
            .iter()
            .all(|e| e.data.len() == 50_000 && e.data[0] == e.index as u8));
        // An entry larger than the bound is not cached, and empties the cache (it must
        // stay a run ending at the last index).
        log.append(&[big(101, 2 << 20)]).unwrap();
        assert!(log.tail.is_empty() && log.tail_bytes == 0);
        log.append(&[big(102, 10)]).unwrap();
        assert_eq!(log.tail.len(), 1);
        assert_eq!(log.entries(101, 103, u64::MAX).unwrap().len(), 2);
        // Truncation and compaction keep the count exact.
        log.append(&[big(102, 20)]).unwrap();
        assert_eq!(log.tail_bytes, big(102, 20).size_bytes());
    }
}
