//! The `Log` trait: durable storage of entries, hard state and snapshot metadata.
//!
//! # The I/O contract
//!
//! The protocol reads a `Log`; the runtime writes it. For each [`crate::Ready`] the runtime
//! (1) appends the ready's entries and stores its hard state, (2) calls [`Log::sync`],
//! and only then (3) sends the ready's messages. A vote or an append acknowledgement is
//! therefore never on the wire before the state it promises is durable. Two exceptions
//! promise nothing about this node's storage: a leader's appends, heartbeats and snapshot
//! chunks may be sent before its own write (`Ready::take_messages_before_sync`, thesis
//! §10.2.1; the leader counts itself towards a commit only once persisted), and the sync
//! may be skipped when a ready changes nothing but the commit index
//! (`Ready::must_sync_after`), which then becomes durable with the next sync.

mod mem;

pub use mem::{check_contiguous, MemLog};

use std::sync::Arc;

use bytes::Bytes;

use crate::types::{Entry, HardState, LogIndex, Snapshot, SnapshotInfo, SnapshotMeta, Term};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The entry at `index` was compacted into a snapshot.
    #[error("entry {index} is compacted (first available is {first_index})")]
    Compacted {
        /// The requested index.
        index: LogIndex,
        /// The first index still in the log.
        first_index: LogIndex,
    },
    /// The entry at `index` is beyond the end of the log.
    #[error("entry {index} is beyond the last index {last_index}")]
    Unavailable {
        /// The requested index.
        index: LogIndex,
        /// The log's last index.
        last_index: LogIndex,
    },
    /// A stored record failed its checksum or could not be decoded.
    #[error("corrupt record at index {index}: {detail}")]
    Corrupt {
        /// The index of the bad record (0 for metadata).
        index: LogIndex,
        /// What was wrong.
        detail: String,
    },
    /// The directory belongs to another cluster or node.
    #[error("storage belongs to {found}, not {expected}")]
    WrongOwner {
        /// Who this node is.
        expected: String,
        /// Who wrote the directory.
        found: String,
    },
    /// An append that would leave a gap or rewrite committed history.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The underlying I/O failed.
    #[error("storage i/o: {0}")]
    Io(String),
}

/// Durable storage for one node's Raft log.
///
/// Model: entries `first_index()..=last_index()` are present; everything at or below
/// `snapshot_meta().last_index` is covered by a snapshot, so
/// `first_index() == snapshot_meta().last_index + 1` always holds. An empty log has
/// `first_index() == 1` and `last_index() == 0`.
///
/// Writes (`append`, `set_hard_state`, `compact`) may be buffered; only [`Log::sync`]
/// is a durability point. After a crash, a log holds everything synced and possibly a
/// prefix of what was written after the last sync, never a torn or reordered record.
pub trait Log: Send + 'static {
    /// The stored hard state (default when none was ever stored).
    fn hard_state(&self) -> HardState;

    /// Stores the hard state (durable at the next [`Log::sync`]).
    ///
    /// # Errors
    /// Storage failure.
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;

    /// Where the log was compacted to: it starts right after `last_index`, whose term is
    /// `last_term`. A stored snapshot (see [`Log::snapshot`]) covers at least this far.
    fn snapshot_meta(&self) -> SnapshotMeta;

    /// The first index present in the log: `snapshot_meta().last_index + 1`.
    fn first_index(&self) -> LogIndex;

    /// The last index present, or `snapshot_meta().last_index` if no entry follows it.
    fn last_index(&self) -> LogIndex;

    /// The term at `index`: 0 for index 0, the snapshot's term at its last index.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] below the snapshot, [`StorageError::Unavailable`]
    /// past the end.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;

    /// Entries in `[low, high)`, stopping once their [`Entry::size_bytes`] would pass
    /// `max_bytes`, but always at least one entry when `low < high`.
    ///
    /// # Errors
    /// Compacted or unavailable indexes; corruption.
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Appends contiguous `entries`. If the first one's index is at or below
    /// `last_index()`, the existing suffix from there on is replaced.
    ///
    /// # Errors
    /// [`StorageError::InvalidAppend`] for a gap, non-contiguous entries or an index at or
    /// below the snapshot; storage failure.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Makes every earlier write durable. The group-commit point: one call per batch.
    ///
    /// # Errors
    /// Storage failure; the caller must not send anything that depends on the writes.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// The latest stored snapshot, if any.
    ///
    /// # Errors
    /// Storage failure or corruption.
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError>;

    /// The latest stored snapshot's metadata, length and checksum, without its data.
    /// The default reads [`Log::snapshot`] (and checksums it); a log that keeps
    /// snapshots in files answers from its metadata.
    ///
    /// # Errors
    /// Storage failure or corruption.
    fn snapshot_info(&self) -> Result<Option<SnapshotInfo>, StorageError> {
        Ok(self.snapshot()?.map(|s| SnapshotInfo {
            meta: s.meta,
            len_bytes: s.data.len() as u64,
            crc32: crc32fast::hash(&s.data),
        }))
    }

    /// The latest stored snapshot, opened for reading in chunks: a leader sends it to a
    /// follower chunk by chunk (`SnapshotChunks::read_chunk`) without holding it whole,
    /// and the reader stays valid while the transfer lasts, even if the log stores a newer
    /// snapshot meanwhile (a transfer restarted at every new snapshot might never end).
    /// The default shares [`Log::snapshot`]'s bytes; [`MemLog`] keeps them in memory
    /// anyway. A log that keeps snapshots in files opens the file.
    ///
    /// # Errors
    /// Storage failure or corruption.
    fn open_snapshot(&self) -> Result<Option<Arc<dyn SnapshotChunks>>, StorageError> {
        Ok(self
            .snapshot()?
            .map(|s| Arc::new(InMemoryChunks::new(s)) as Arc<dyn SnapshotChunks>))
    }

    /// Stores `snapshot`, replacing the previous one atomically: after a crash at any
    /// point, either the old or the new snapshot is there, whole. Durable at the next
    /// [`Log::sync`]. Does not compact the log; [`Log::compact`] does.
    ///
    /// # Errors
    /// Storage failure.
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError>;

    /// Discards entries at and below `meta.last_index`, which a snapshot now covers.
    /// Entries after it are kept when the log agrees with `meta.last_term` at
    /// `meta.last_index`; otherwise the whole log is discarded.
    ///
    /// # Errors
    /// Storage failure.
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError>;

    /// A writer that stores this log's snapshots from another thread, for logs where
    /// writing a snapshot is slow (a file of hundreds of MB and its fsync). The runtime
    /// then writes each snapshot its state machine takes on a thread of its own and
    /// hands the result to [`Log::adopt_snapshot`] on the WaitLoop, which keeps ticking,
    /// replicating and voting meanwhile. `None` (the default): snapshots are stored with
    /// [`Log::save_snapshot`] on the WaitLoop, which suits logs where that is fast
    /// ([`MemLog`]).
    fn snapshot_writer(&self) -> Option<Box<dyn SnapshotWriter>> {
        None
    }

    /// Makes a snapshot that this log's [`Log::snapshot_writer`] wrote the stored one,
    /// exactly as [`Log::save_snapshot`] would have (atomic replacement, durable at the
    /// next [`Log::sync`]), without writing its data again.
    ///
    /// # Errors
    /// The log does not know `written` (no writer, or another log's); storage failure.
    fn adopt_snapshot(&mut self, written: &WrittenSnapshot) -> Result<(), StorageError> {
        Err(StorageError::Io(format!(
            "this log has no snapshot writer: cannot adopt the snapshot at {}",
            written.meta.last_index
        )))
    }
}

/// A stored snapshot opened for reading in chunks ([`Log::open_snapshot`]).
pub trait SnapshotChunks: Send + Sync + 'static {
    /// What it covers, its length and its checksum.
    fn info(&self) -> SnapshotInfo;

    /// At most `max_bytes` of its data from byte `offset` (fewer only at its end; empty
    /// at or past it).
    ///
    /// # Errors
    /// Storage failure.
    fn read_chunk(&self, offset: u64, max_bytes: u64) -> Result<Bytes, StorageError>;
}

/// [`SnapshotChunks`] over a snapshot in memory (the default of [`Log::open_snapshot`]).
#[derive(Debug)]
pub struct InMemoryChunks {
    info: SnapshotInfo,
    data: Bytes,
}

impl InMemoryChunks {
    /// Wraps `snapshot` (checksumming it once).
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            info: SnapshotInfo {
                meta: snapshot.meta,
                len_bytes: snapshot.data.len() as u64,
                crc32: crc32fast::hash(&snapshot.data),
            },
            data: snapshot.data,
        }
    }
}

impl SnapshotChunks for InMemoryChunks {
    fn info(&self) -> SnapshotInfo {
        self.info.clone()
    }

    fn read_chunk(&self, offset: u64, max_bytes: u64) -> Result<Bytes, StorageError> {
        let len = self.data.len() as u64;
        let start = offset.min(len);
        let end = offset.saturating_add(max_bytes).min(len);
        Ok(self.data.slice(start as usize..end as usize))
    }
}

/// Reads a [`SnapshotChunks`] as a stream, a chunk of at most `chunk_bytes_max` at a
/// time: what a state machine restores from ([`crate::node::StateMachine::restore_from`]) without
/// the snapshot being loaded whole.
pub struct ChunksReader {
    chunks: Arc<dyn SnapshotChunks>,
    offset: u64,
    buf: Bytes,
    chunk_bytes_max: u64,
}

impl ChunksReader {
    /// Default read size: 1 MiB.
    pub const CHUNK_BYTES_DEFAULT: u64 = 1 << 20;

    /// A reader from the start of `chunks`.
    pub fn new(chunks: Arc<dyn SnapshotChunks>) -> Self {
        Self {
            chunks,
            offset: 0,
            buf: Bytes::new(),
            chunk_bytes_max: Self::CHUNK_BYTES_DEFAULT,
        }
    }
}

impl std::io::Read for ChunksReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            let len = self.chunks.info().len_bytes;
            if self.offset >= len {
                return Ok(0);
            }
            let want = self.chunk_bytes_max.min(len - self.offset);
            self.buf = self
                .chunks
                .read_chunk(self.offset, want)
                .map_err(std::io::Error::other)?;
            if self.buf.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the snapshot ends at {} of {len} bytes", self.offset),
                ));
            }
            self.offset += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// Collects a snapshot this follower receives ([`crate::Ready::snapshot_chunks`]) in
/// memory: for logs that keep snapshots in memory anyway ([`MemLog`]) and for tests.
/// A log that keeps snapshots in files streams the chunks into a [`SnapshotWriter`]
/// instead.
///
/// ```
/// use raft_core::{ReceivedInMemory, SnapshotChunk, SnapshotInfo, SnapshotMeta};
/// let meta = SnapshotMeta::at(7, 2);
/// let mut r = ReceivedInMemory::default();
/// r.write(&SnapshotChunk { meta: meta.clone(), offset: 0, data: "abc".into() }).unwrap();
/// r.write(&SnapshotChunk { meta: meta.clone(), offset: 3, data: "de".into() }).unwrap();
/// let info = SnapshotInfo { meta, len_bytes: 5, crc32: crc32fast::hash(b"abcde") };
/// assert_eq!(&r.finish(&info).unwrap().data[..], b"abcde");
/// ```
#[derive(Debug, Default)]
pub struct ReceivedInMemory {
    meta: Option<SnapshotMeta>,
    data: Vec<u8>,
}

impl ReceivedInMemory {
    /// Takes the next piece; a piece at offset 0 starts over.
    ///
    /// # Errors
    /// A piece of another snapshot, or not right after the last one.
    pub fn write(&mut self, chunk: &crate::SnapshotChunk) -> Result<(), StorageError> {
        if chunk.offset == 0 {
            self.meta = Some(chunk.meta.clone());
            self.data.clear();
        }
        if self.meta.as_ref() != Some(&chunk.meta) || chunk.offset != self.data.len() as u64 {
            return Err(StorageError::Io(format!(
                "snapshot data for {:?} at offset {}, but {} bytes of {:?} are written",
                chunk.meta,
                chunk.offset,
                self.data.len(),
                self.meta
            )));
        }
        self.data.extend_from_slice(&chunk.data);
        Ok(())
    }

    /// The snapshot `info` describes, taken out of the collector.
    ///
    /// # Errors
    /// What was collected is not that snapshot (another one, a length or checksum that
    /// differs); the collector is emptied anyway.
    pub fn finish(&mut self, info: &SnapshotInfo) -> Result<Snapshot, StorageError> {
        let meta = self.meta.take();
        let data = std::mem::take(&mut self.data);
        if meta.as_ref() != Some(&info.meta)
            || data.len() as u64 != info.len_bytes
            || crc32fast::hash(&data) != info.crc32
        {
            return Err(StorageError::Corrupt {
                index: info.meta.last_index,
                detail: format!(
                    "received {} bytes of {meta:?}, expected {} bytes of {:?} with checksum {:#x}",
                    data.len(),
                    info.len_bytes,
                    info.meta,
                    info.crc32
                ),
            });
        }
        Ok(Snapshot {
            meta: info.meta.clone(),
            data: data.into(),
        })
    }
}

/// Receives and installs snapshots synchronously, in memory, for drivers that need
/// nothing faster (tests, benches, tools): call [`InMemoryInstaller::persist`] in step 1
/// of every ready and [`InMemoryInstaller::after_advance`] after [`crate::Raft::advance`].
/// The runtime's WaitLoop writes received snapshots off its thread instead.
#[derive(Debug, Default)]
pub struct InMemoryInstaller {
    receiving: ReceivedInMemory,
    /// A snapshot the last ready completed, to report once it is advanced.
    finished: Option<(SnapshotMeta, Result<Snapshot, StorageError>)>,
    /// A snapshot the protocol accepted, to store with the ready that installs it.
    accepted: Option<Snapshot>,
}

impl InMemoryInstaller {
    /// Step 1 of `ready`, for snapshots: collects its [`crate::Ready::snapshot_chunks`],
    /// finishes a [`crate::Ready::received_snapshot`], and stores (save, compact) the
    /// snapshot [`crate::Ready::snapshot`] installs. Returns the installed snapshot, for
    /// the state machine to restore from.
    ///
    /// # Errors
    /// Storage failure, or a ready that installs a snapshot this installer did not
    /// receive.
    pub fn persist<L: Log + ?Sized>(
        &mut self,
        log: &mut L,
        ready: &crate::Ready,
    ) -> Result<Option<Snapshot>, StorageError> {
        let mut failed = None;
        for chunk in &ready.snapshot_chunks {
            if let Err(e) = self.receiving.write(chunk) {
                failed = Some((chunk.meta.clone(), Err(e)));
                break;
            }
        }
        if let Some(info) = &ready.received_snapshot {
            self.finished = Some((info.meta.clone(), self.receiving.finish(info)));
        } else if failed.is_some() {
            self.finished = failed;
        }
        let Some(meta) = &ready.snapshot else {
            return Ok(None);
        };
        let snapshot = match self.accepted.take() {
            Some(s) if s.meta == *meta => s,
            other => {
                return Err(StorageError::Io(format!(
                    "asked to install the snapshot up to {} but received {:?}",
                    meta.last_index,
                    other.map(|s| s.meta)
                )))
            }
        };
        log.save_snapshot(&snapshot)?;
        log.compact(meta.clone())?;
        Ok(Some(snapshot))
    }

    /// After [`crate::Raft::advance`]: tells the protocol about a snapshot the ready
    /// completed (stored, or not).
    pub fn after_advance<L: Log>(&mut self, raft: &mut crate::Raft<L>) {
        if let Some((meta, result)) = self.finished.take() {
            let stored = result.is_ok();
            if raft.snapshot_received(meta, stored) {
                self.accepted = result.ok();
            }
        }
    }
}

/// Writes snapshots durably away from the WaitLoop: see [`Log::snapshot_writer`].
///
/// A writer only writes: until [`Log::adopt_snapshot`] is called with its result, the
/// log's stored snapshot is unchanged, and a crash leaves at most an unreferenced file
/// that the log may clean up when it is opened again.
pub trait SnapshotWriter: Send + 'static {
    /// Writes the snapshot that covers `meta`, whose data `fill` writes into the sink it
    /// is handed (a stream: no whole-snapshot buffer is needed), so that it survives a
    /// crash once this returns. The writer counts and checksums the bytes as they pass.
    ///
    /// # Errors
    /// Storage failure, or `fill` failed; nothing was adopted, the log keeps its previous
    /// snapshot, and whatever was partly written is not a snapshot the log will use.
    fn write(
        &mut self,
        meta: SnapshotMeta,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<WrittenSnapshot, StorageError>;

    /// [`SnapshotWriter::write`] for a snapshot already in memory.
    ///
    /// # Errors
    /// As [`SnapshotWriter::write`].
    fn write_whole(&mut self, snapshot: &Snapshot) -> Result<WrittenSnapshot, StorageError> {
        let mut fill = |out: &mut dyn std::io::Write| out.write_all(&snapshot.data);
        self.write(snapshot.meta.clone(), &mut fill)
    }
}

/// A snapshot a [`SnapshotWriter`] wrote durably, for [`Log::adopt_snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenSnapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Where the writer put it, meaningful to its log only (a file number, say).
    pub id: u64,
    /// The size of the snapshot's data, in bytes.
    pub size_bytes: u64,
}

/// A [`Log`] shared with a test harness through a box.
impl<L: Log + ?Sized> Log for Box<L> {
    fn hard_state(&self) -> HardState {
        (**self).hard_state()
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        (**self).set_hard_state(hard_state)
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        (**self).snapshot_meta()
    }
    fn first_index(&self) -> LogIndex {
        (**self).first_index()
    }
    fn last_index(&self) -> LogIndex {
        (**self).last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        (**self).term(index)
    }
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        (**self).entries(low, high, max_bytes)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        (**self).append(entries)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        (**self).sync()
    }
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        (**self).compact(meta)
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        (**self).snapshot()
    }
    fn snapshot_info(&self) -> Result<Option<SnapshotInfo>, StorageError> {
        (**self).snapshot_info()
    }
    fn open_snapshot(&self) -> Result<Option<Arc<dyn SnapshotChunks>>, StorageError> {
        (**self).open_snapshot()
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        (**self).save_snapshot(snapshot)
    }
    fn snapshot_writer(&self) -> Option<Box<dyn SnapshotWriter>> {
        (**self).snapshot_writer()
    }
    fn adopt_snapshot(&mut self, written: &WrittenSnapshot) -> Result<(), StorageError> {
        (**self).adopt_snapshot(written)
    }
}
