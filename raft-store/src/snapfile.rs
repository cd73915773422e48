//! Snapshots as files beside sled: `<dir>/snapshots/snapshot-<id>.snap`.
//!
//! Why not in sled: a snapshot of a few MB stored as one sled value shares a leaf page
//! with the hot state record and the newest entry records. Every time sled consolidates
//! that page (every few syncs) it rewrites the whole page, snapshot included, and a page
//! over a quarter of a segment goes to a new file under `blobs/`, removed only when the
//! segment that points at it is cleaned. Measured (issue 18): 1,397 blob files of ~5 MB,
//! 7-8 GB per node for 6 MB of data, and 10-20x less throughput once a snapshot existed.
//! A file written once per snapshot costs its size once.
//!
//! A file is `header | data`, the header (48 bytes, little-endian):
//!
//! ```text
//! magic "RSNP" | format u32 | id u64 | last_index u64 | last_term u64 | len u64 | data crc32 u32 | header crc32 u32
//! ```
//!
//! The header crc covers the 44 bytes before it. Writing: a temporary file
//! `snapshot-<id>.tmp`, fsynced, renamed to its final name, directory fsynced. Which file is
//! current is named by the log's state record in sled (a [`SnapshotRef`], switched by the
//! sync after [`crate::SledLog`]'s `save_snapshot`), so a crash at any point leaves the
//! previous or the new snapshot, never a mix. Ids only grow; a file whose id is above the
//! current one is a save that no sync adopted, and is removed on open.
//!
//! Retention: the current snapshot and the one before it. Before a new file is written,
//! every file but the durable current one is removed, so at most two complete files (and
//! one temporary) exist at any moment.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;
use raft_core::{NodeId, Snapshot, SnapshotMeta, StorageError};
use serde::{Deserialize, Serialize};

use crate::reaper::Remover;

/// The directory, under the log's, that holds the snapshot files.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";
const MAGIC: &[u8; 4] = b"RSNP";
const FILE_FORMAT: u32 = 1;
/// How much of a snapshot is written before it is synced: small enough that the log's own
/// fsyncs never wait behind more than this much of a snapshot's data.
const WRITE_SLICE_BYTES: usize = 4 << 20;
/// Bytes of a file's header.
pub(crate) const HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
const PREFIX: &str = "snapshot-";
const FINAL_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";

/// What the log's state record says about the current snapshot file. The state record
/// is the authority on its metadata (the configuration included); the file's header
/// repeats its position, length and checksum, to be checked against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRef {
    /// The file's id (its name); ids only grow.
    pub(crate) id: u64,
    /// Where the snapshot ends.
    pub(crate) meta: SnapshotMeta,
    /// Bytes of state machine data.
    pub(crate) len: u64,
    /// crc32 of the data.
    pub(crate) crc: u32,
}

impl SnapshotRef {
    fn header(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&FILE_FORMAT.to_le_bytes());
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..24].copy_from_slice(&self.meta.last_index.to_le_bytes());
        b[24..32].copy_from_slice(&self.meta.last_term.to_le_bytes());
        b[32..40].copy_from_slice(&self.len.to_le_bytes());
        b[40..44].copy_from_slice(&self.crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEADER_BYTES - 4]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn parse_header(b: &[u8; HEADER_BYTES]) -> Result<Self, String> {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[..HEADER_BYTES - 4]) != u32_at(HEADER_BYTES - 4) {
            return Err("its header fails its checksum".into());
        }
        if &b[0..4] != MAGIC {
            return Err("it is not a snapshot file (bad magic)".into());
        }
        if u32_at(4) != FILE_FORMAT {
            return Err(format!("it has unknown file format {}", u32_at(4)));
        }
        Ok(Self {
            id: u64_at(8),
            meta: SnapshotMeta::at(u64_at(16), u64_at(24)),
            len: u64_at(32),
            crc: u32_at(40),
        })
    }
}

/// The snapshot files of one log directory.
#[derive(Debug)]
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    node_id: NodeId,
    /// fsync files and the directory (false: a process crash is survived, a power loss
    /// may lose the newest file; the log's `SyncMode::FlushOnly`).
    durable: bool,
    /// The id the next file gets; shared with the [`FileWriter`]s of this directory.
    next_id: Arc<AtomicU64>,
    /// Files a [`FileWriter`] wrote that the log has not adopted yet, by id.
    written: Arc<Mutex<BTreeMap<u64, SnapshotRef>>>,
    /// Deletes dropped files: in place until the log hands over its reaper's
    /// ([`SnapshotDir::set_remover`]), then on the reaper's thread.
    remover: Remover,
}

/// Writes new snapshot files into a [`SnapshotDir`] from another thread (the runtime's
/// snapshot storer: `Log::snapshot_writer`). It only adds files, with fresh ids; it never
/// removes one, so it cannot race the log's own clean-up. A file it wrote becomes
/// current only when the log adopts it ([`SnapshotDir::take_written`]) and a sync names it.
#[derive(Debug)]
pub(crate) struct FileWriter {
    dir: PathBuf,
    node_id: NodeId,
    durable: bool,
    next_id: Arc<AtomicU64>,
    written: Arc<Mutex<BTreeMap<u64, SnapshotRef>>>,
}

impl FileWriter {
    /// Writes the snapshot covering `meta` durably as a new file, its data written into
    /// the file by `fill` as a stream; returns its reference.
    pub(crate) fn write_stream(
        &self,
        meta: SnapshotMeta,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<SnapshotRef, StorageError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let r = write_file(&self.dir, self.node_id, self.durable, id, meta, fill)?;
        self.written.lock().insert(r.id, r.clone());
        Ok(r)
    }
}

/// A snapshot file open for reading in chunks: what `SledLog::open_snapshot` hands a
/// leader's transfer. The follower checks the data against `r.crc` (sent with the last
/// chunk), so chunks are not checksummed here.
#[derive(Debug)]
pub(crate) struct FileChunks {
    r: SnapshotRef,
    file: Mutex<File>,
    path: PathBuf,
}

impl raft_core::SnapshotChunks for FileChunks {
    fn info(&self) -> raft_core::SnapshotInfo {
        raft_core::SnapshotInfo {
            meta: self.r.meta.clone(),
            len_bytes: self.r.len,
            crc32: self.r.crc,
        }
    }

    fn read_chunk(&self, offset: u64, max_bytes: u64) -> Result<Bytes, StorageError> {
        let start = offset.min(self.r.len);
        let n = usize::try_from(max_bytes.min(self.r.len - start))
            .map_err(|_| StorageError::Io(format!("a chunk of {max_bytes} bytes")))?;
        let mut data = vec![0u8; n];
        let mut file = self.file.lock();
        file.seek(SeekFrom::Start(HEADER_BYTES as u64 + start))
            .and_then(|_| file.read_exact(&mut data))
            .map_err(|e| io_err("cannot read", &self.path, e))?;
        Ok(Bytes::from(data))
    }
}

/// The data part of a snapshot file being written: buffers, counts and checksums what
/// passes, and makes each [`WRITE_SLICE_BYTES`] durable before writing more.
struct SliceWriter {
    file: File,
    /// Bytes not yet written to `file` (at most [`WRITE_SLICE_BYTES`]).
    buf: Vec<u8>,
    hasher: crc32fast::Hasher,
    len: u64,
    durable: bool,
}

impl SliceWriter {
    /// Writes the buffered slice to the file, and syncs it when durable.
    fn write_slice(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        // In slices, each made durable before the next: a file of hundreds of MB flushed
        // at once fills the disk queue (and, on ext4, the journal commit) that the log's
        // own small fsyncs wait behind (RocksDB syncs big files incrementally for the same
        // reason, `bytes_per_sync`); a leader whose sync waited half a second for a
        // 150 MB snapshot stopped heartbeating and lost its leadership (issue 18).
        if self.durable {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl Write for SliceWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(WRITE_SLICE_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.len += n as u64;
        if self.buf.len() == WRITE_SLICE_BYTES {
            self.write_slice()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // slices are written whole; `write_file` writes the last one
    }
}

/// Writes the snapshot covering `meta` as file `id` in `dir`, its data streamed in by
/// `fill`: temporary file (its header, with the length and checksum known only at the
/// end, written last), fsync, rename, directory fsync (the syncs only when `durable`).
/// On failure the temporary file is removed.
fn write_file(
    dir: &Path,
    node_id: NodeId,
    durable: bool,
    id: u64,
    meta: SnapshotMeta,
    fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<SnapshotRef, StorageError> {
    let temp = dir.join(temp_name(id));
    let (last_index, last_term) = (meta.last_index, meta.last_term);
    let result = (|| {
        let mut file = File::create(&temp)?;
        // A placeholder header: a crash before the real one is written leaves a file that
        // fails its header checksum (and is a temporary, removed on open anyway).
        file.write_all(&[0u8; HEADER_BYTES])?;
        let mut out = SliceWriter {
            file,
            buf: Vec::with_capacity(WRITE_SLICE_BYTES),
            hasher: crc32fast::Hasher::new(),
            len: 0,
            durable,
        };
        fill(&mut out)?;
        out.write_slice()?;
        let r = SnapshotRef {
            id,
            meta,
            len: out.len,
            crc: out.hasher.finalize(),
        };
        let mut file = out.file;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&r.header())?;
        if durable {
            file.sync_data()?;
        }
        drop(file);
        fs::rename(&temp, dir.join(final_name(r.id)))?;
        if durable {
            sync_dir(dir)?;
        }
        Ok::<SnapshotRef, io::Error>(r)
    })();
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            let _ = fs::remove_file(dir.join(final_name(id)));
            log::error!(
                "n{node_id} cannot write the snapshot up to {last_index}@{last_term} in {}: {e}",
                dir.display()
            );
            Err(io_err("cannot write a snapshot in", dir, e))
        }
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", path.display()))
}

fn corrupt(detail: String) -> StorageError {
    StorageError::Corrupt { index: 0, detail }
}

/// What a name in the snapshot directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    Final(u64),
    Temp(u64),
}

fn parse_name(name: &str) -> Option<Name> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(id) = rest.strip_suffix(FINAL_SUFFIX) {
        return id.parse().ok().map(Name::Final);
    }
    rest.strip_suffix(TEMP_SUFFIX)?.parse().ok().map(Name::Temp)
}

fn final_name(id: u64) -> String {
    format!("{PREFIX}{id:020}{FINAL_SUFFIX}")
}

fn temp_name(id: u64) -> String {
    format!("{PREFIX}{id:020}{TEMP_SUFFIX}")
}

/// Syncs a directory, which makes creations, renames and removals in it durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl SnapshotDir {
    /// Opens (creating it if needed) the snapshot directory under `log_dir`, checks the
    /// current snapshot `current` (named by the state record) and removes every other
    /// file but the newest one older than it.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] when the current snapshot is missing, damaged or not
    /// the one the state record names; [`StorageError::Io`] when the directory cannot
    /// be read. A file that cannot be removed is logged and left (it is not current).
    pub(crate) fn open(
        log_dir: &Path,
        node_id: NodeId,
        durable: bool,
        current: Option<&SnapshotRef>,
    ) -> Result<Self, StorageError> {
        let dir = log_dir.join(SNAPSHOT_DIR);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
            if durable {
                sync_dir(log_dir).map_err(|e| io_err("cannot sync", log_dir, e))?;
            }
        }
        let names = Self::list(&dir)?;
        let max_id = names
            .iter()
            .map(|n| match n {
                Name::Final(id) | Name::Temp(id) => *id,
            })
            .chain(current.map(|c| c.id))
            .max()
            .unwrap_or(0);
        let snapshots = Self {
            dir,
            node_id,
            durable,
            next_id: Arc::new(AtomicU64::new(max_id + 1)),
            written: Arc::default(),
            remover: Remover::inline(node_id),
        };
        if let Some(current) = current {
            snapshots.verify(current)?;
        }
        // Keep the current file and the newest older one; remove temporaries and files
        // no sync adopted.
        let previous = names
            .iter()
            .filter_map(|n| match n {
                Name::Final(id) if current.is_some_and(|c| *id < c.id) => Some(*id),
                _ => None,
            })
            .max();
        let mut removed = false;
        for name in names {
            let doomed = match name {
                Name::Temp(id) => Some(temp_name(id)),
                Name::Final(id) if Some(id) == current.map(|c| c.id) || Some(id) == previous => {
                    None
                }
                Name::Final(id) => Some(final_name(id)),
            };
            if let Some(doomed) = doomed {
                log::info!(
                    "n{node_id} removing {} (not the current snapshot or the one before it)",
                    snapshots.dir.join(&doomed).display()
                );
                snapshots.remove(&doomed);
                removed = true;
            }
        }
        if removed {
            snapshots.sync_dir()?;
        }
        Ok(snapshots)
    }

    /// The snapshot files and temporaries in `dir`; other names are left alone.
    fn list(dir: &Path) -> Result<Vec<Name>, StorageError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))? {
            let entry = entry.map_err(|e| io_err("cannot list", dir, e))?;
            match entry.file_name().to_str().and_then(parse_name) {
                Some(name) => names.push(name),
                None => log::warn!(
                    "ignoring unexpected file {} in the snapshot directory",
                    entry.path().display()
                ),
            }
        }
        Ok(names)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Deletes file `name` through the remover (see [`SnapshotDir::set_remover`]); a
    /// failure is logged, and the file is removed by the next open.
    fn remove(&self, name: &str) {
        self.remover.remove(self.path(name));
    }

    /// Deletes dropped files through `remover` from now on: off the syncing thread, since
    /// unlinking a snapshot of hundreds of MB takes tens of ms (see `reaper.rs`).
    pub(crate) fn set_remover(&mut self, remover: Remover) {
        self.remover = remover;
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        if self.durable {
            sync_dir(&self.dir).map_err(|e| io_err("cannot sync", &self.dir, e))?;
        }
        Ok(())
    }

    /// Bytes of the snapshot files (complete and temporary) on disk now.
    pub(crate) fn size_on_disk_bytes(&self) -> Result<u64, StorageError> {
        let mut total = 0;
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err("cannot list", &self.dir, e))? {
            let entry = entry.map_err(|e| io_err("cannot list", &self.dir, e))?;
            total += entry
                .metadata()
                .map_err(|e| io_err("cannot stat", &entry.path(), e))?
                .len();
        }
        Ok(total)
    }

    /// Opens the file of `r` and checks its header against `r`.
    fn open_checked(&self, r: &SnapshotRef) -> Result<File, StorageError> {
        let path = self.path(&final_name(r.id));
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(format!(
                    "the current snapshot (up to {}@{}) should be in {}, which is missing",
                    r.meta.last_index,
                    r.meta.last_term,
                    path.display()
                )))
            }
            Err(e) => return Err(io_err("cannot open", &path, e)),
        };
        let mut header = [0u8; HEADER_BYTES];
        let bad = |why: String| corrupt(format!("snapshot file {}: {why}", path.display()));
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(bad("it is shorter than its header".into()))
            }
            Err(e) => return Err(io_err("cannot read", &path, e)),
        }
        let found = SnapshotRef::parse_header(&header).map_err(bad)?;
        // The header has no configuration: the state record's reference is the authority.
        let same = found.id == r.id
            && found.meta.same_position(&r.meta)
            && found.len == r.len
            && found.crc == r.crc;
        if !same {
            return Err(bad(format!(
                "it holds {found:?}, but the log's state names {r:?}"
            )));
        }
        let size = file
            .metadata()
            .map_err(|e| io_err("cannot stat", &path, e))?
            .len();
        if size != HEADER_BYTES as u64 + r.len {
            return Err(bad(format!(
                "it is {size} bytes, its header says {}",
                HEADER_BYTES as u64 + r.len
            )));
        }
        Ok(file)
    }

    /// Reads the whole file of `r`, checking it.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] when the file is missing or does not match `r`.
    pub(crate) fn read(&self, r: &SnapshotRef) -> Result<Snapshot, StorageError> {
        let mut file = self.open_checked(r)?;
        let path = self.path(&final_name(r.id));
        let len = usize::try_from(r.len)
            .map_err(|_| corrupt(format!("snapshot of {} bytes is too large", r.len)))?;
        let mut data = vec![0u8; len];
        file.read_exact(&mut data)
            .map_err(|e| io_err("cannot read", &path, e))?;
        if crc32fast::hash(&data) != r.crc {
            return Err(corrupt(format!(
                "snapshot file {}: its data fails its checksum",
                path.display()
            )));
        }
        Ok(Snapshot {
            meta: r.meta.clone(),
            data: Bytes::from(data),
        })
    }

    /// The file of `r`, open for reading in chunks (its header checked). It stays
    /// readable after the file is removed (a newer snapshot replaced it) until dropped.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] when the file is missing or does not match `r`.
    pub(crate) fn open_chunks(&self, r: &SnapshotRef) -> Result<FileChunks, StorageError> {
        Ok(FileChunks {
            r: r.clone(),
            file: Mutex::new(self.open_checked(r)?),
            path: self.path(&final_name(r.id)),
        })
    }

    /// Checks the file of `r` without keeping its data in memory.
    fn verify(&self, r: &SnapshotRef) -> Result<(), StorageError> {
        let mut file = self.open_checked(r)?;
        let path = self.path(&final_name(r.id));
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = r.len;
        while left > 0 {
            let n = buf.len().min(left as usize);
            file.read_exact(&mut buf[..n])
                .map_err(|e| io_err("cannot read", &path, e))?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        if hasher.finalize() != r.crc {
            return Err(corrupt(format!(
                "snapshot file {}: its data fails its checksum",
                path.display()
            )));
        }
        Ok(())
    }

    /// Writes `snapshot` as a new file, durably (temporary file, fsync, rename, directory
    /// fsync), after removing every file but those in `keep` (the durable current
    /// snapshot, and one a failed sync may have adopted).
    /// The caller makes it current by naming the returned reference in a state record.
    ///
    /// # Errors
    /// [`StorageError::Io`] when a file cannot be written; the temporary file is then
    /// removed and the directory holds `keep` as before.
    pub(crate) fn write(
        &mut self,
        snapshot: &Snapshot,
        keep: &[SnapshotRef],
    ) -> Result<SnapshotRef, StorageError> {
        self.remove_all_but(keep)?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut fill = |out: &mut dyn Write| out.write_all(&snapshot.data);
        write_file(
            &self.dir,
            self.node_id,
            self.durable,
            id,
            snapshot.meta.clone(),
            &mut fill,
        )
    }

    /// Removes every file (temporaries included) but those in `keep`. A removed file
    /// that a [`FileWriter`] wrote is no longer adoptable ([`SnapshotDir::take_written`])
    /// from this moment, even while its deletion is still queued. The removals are not
    /// synced: a file a crash brings back is not current, and the next open removes it.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the directory cannot be listed.
    pub(crate) fn remove_all_but(&mut self, keep: &[SnapshotRef]) -> Result<(), StorageError> {
        for name in Self::list(&self.dir)? {
            let doomed = match name {
                Name::Temp(id) => temp_name(id),
                Name::Final(id) if keep.iter().any(|k| k.id == id) => continue,
                Name::Final(id) => {
                    self.written.lock().remove(&id);
                    final_name(id)
                }
            };
            self.remove(&doomed);
        }
        Ok(())
    }

    /// A writer of new files for another thread: see [`FileWriter`].
    pub(crate) fn file_writer(&self) -> FileWriter {
        FileWriter {
            dir: self.dir.clone(),
            node_id: self.node_id,
            durable: self.durable,
            next_id: self.next_id.clone(),
            written: self.written.clone(),
        }
    }

    /// The reference of file `id`, which a [`FileWriter`] of this directory wrote and no
    /// one adopted yet, if its file is still there (a clean-up may have removed it).
    pub(crate) fn take_written(&mut self, id: u64) -> Option<SnapshotRef> {
        let r = self.written.lock().remove(&id)?;
        self.path(&final_name(id)).is_file().then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(index: u64, len: usize) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta::at(index, 2),
            data: (0..len).map(|i| (i * 7 + index as usize) as u8).collect(),
        }
    }

    #[test]
    fn write_read_and_keep_two() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SnapshotDir::open(dir.path(), 1, true, None).unwrap();
        let a = s.write(&snap(10, 1000), &[]).unwrap();
        let b = s.write(&snap(20, 2000), std::slice::from_ref(&a)).unwrap();
        let c = s.write(&snap(30, 3000), std::slice::from_ref(&b)).unwrap();
        assert_eq!(s.read(&c).unwrap(), snap(30, 3000));
        assert_eq!(s.read(&b).unwrap(), snap(20, 2000));
        // `a` was neither kept nor the new one.
        assert!(matches!(s.read(&a), Err(StorageError::Corrupt { .. })));
        assert_eq!(
            s.size_on_disk_bytes().unwrap(),
            (2 * HEADER_BYTES + 5000) as u64
        );
    }

    #[test]
    fn open_removes_temporaries_and_unadopted_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SnapshotDir::open(dir.path(), 1, true, None).unwrap();
        let a = s.write(&snap(10, 100), &[]).unwrap();
        let b = s.write(&snap(20, 100), std::slice::from_ref(&a)).unwrap();
        let sd = dir.path().join(SNAPSHOT_DIR);
        // A save no sync adopted, and a temporary of a save cut short.
        let c_id = b.id + 5;
        fs::copy(sd.join(final_name(b.id)), sd.join(final_name(c_id))).unwrap();
        fs::write(sd.join(temp_name(c_id + 1)), b"half").unwrap();
        // Current is b: a (older) stays, c (newer, unadopted) and the temporary go.
        let s = SnapshotDir::open(dir.path(), 1, true, Some(&b)).unwrap();
        let mut left: Vec<_> = SnapshotDir::list(&sd).unwrap();
        left.sort_by_key(|n| format!("{n:?}"));
        assert_eq!(left, vec![Name::Final(a.id), Name::Final(b.id)]);
        assert_eq!(s.read(&b).unwrap(), snap(20, 100));
        // Ids keep growing past every id seen.
        assert!(s.next_id.load(Ordering::SeqCst) > c_id + 1);
    }

    #[test]
    fn damaged_or_missing_current_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SnapshotDir::open(dir.path(), 1, true, None).unwrap();
        let a = s.write(&snap(10, 5000), &[]).unwrap();
        let path = dir.path().join(SNAPSHOT_DIR).join(final_name(a.id));
        let good = fs::read(&path).unwrap();
        for at in [0, 5, 20, 47, HEADER_BYTES, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            match SnapshotDir::open(dir.path(), 1, true, Some(&a)) {
                Err(StorageError::Corrupt { detail, .. }) => {
                    assert!(detail.contains("snapshot file"), "{detail}")
                }
                other => panic!("flip at {at}: {other:?}"),
            }
        }
        for len in [0, 10, HEADER_BYTES, good.len() - 1] {
            fs::write(&path, &good[..len]).unwrap();
            assert!(matches!(
                SnapshotDir::open(dir.path(), 1, true, Some(&a)),
                Err(StorageError::Corrupt { .. })
            ));
        }
        fs::remove_file(&path).unwrap();
        match SnapshotDir::open(dir.path(), 1, true, Some(&a)) {
            Err(StorageError::Corrupt { detail, .. }) => assert!(detail.contains("missing")),
            other => panic!("{other:?}"),
        }
    }
}
