//! The value log: large records kept out of sled, in append-only segment files
//! `<dir>/values/values-<seq>.log`; sled stores a small checksummed reference
//! ([`ValueRef`]) under the record's key instead.
//!
//! Why: sled rewrites a whole leaf page (up to 17 values) every few updates and reclaims
//! the old copies only when a segment is at most half live, so large values cost it
//! several times their size on disk: measured, 1 MiB entries took 3x their size after 20
//! entries and grew past `2 x live + 64 MiB` within 80 (issue 18). A raft log is written
//! at its end and dropped from its start, which is what segment files do well: a record
//! is written once, and a segment file is deleted whole once no record in it is live. So
//! the value log holds at most the live large records plus the dead part of its oldest
//! segment and the active segment: `live + 2 x segment_bytes`.
//!
//! Crash safety: a segment is only appended to, and synced (`fdatasync`, and the
//! directory when a segment was created) before the sled batch that names the new
//! records is applied, so a reference never points at bytes that are not durable. A
//! reference names its segment, offset, length and the data's crc32, and carries a crc32
//! of its own over itself and the record's first index. After a restart a new segment is
//! started (old ones are never appended to again, so a torn tail needs no repair), and
//! segments no stored reference names (written by a sync that did not complete, or whose
//! records were all removed just before a crash) are deleted.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft_core::{LogIndex, NodeId, StorageError};

use crate::reaper::Remover;

/// The directory, under the log's, that holds the value log's segments.
pub(crate) const VALUE_DIR: &str = "values";
/// The first byte of a stored reference (a batch record starts with `RECORD_MAGIC`).
pub(crate) const REF_MAGIC: u8 = 0xB2;
/// Bytes of an encoded reference: magic, seq, offset, len, data crc, own crc.
pub(crate) const REF_BYTES: usize = 1 + 8 + 8 + 8 + 4 + 4;
const PREFIX: &str = "values-";
const SUFFIX: &str = ".log";

/// Where a large record's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValueRef {
    /// The segment's sequence number (its file name).
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    /// crc32 of the record's bytes.
    pub(crate) crc: u32,
}

impl ValueRef {
    /// The value stored in sled for the record starting at `first`.
    pub(crate) fn encode(&self, first: LogIndex) -> [u8; REF_BYTES] {
        let mut b = [0u8; REF_BYTES];
        b[0] = REF_MAGIC;
        b[1..9].copy_from_slice(&self.seq.to_le_bytes());
        b[9..17].copy_from_slice(&self.offset.to_le_bytes());
        b[17..25].copy_from_slice(&self.len.to_le_bytes());
        b[25..29].copy_from_slice(&self.crc.to_le_bytes());
        let crc = Self::own_crc(first, &b[..29]);
        b[29..33].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn own_crc(first: LogIndex, bytes: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&first.to_le_bytes());
        h.update(bytes);
        h.finalize()
    }

    /// Whether a stored value is a reference rather than an inline record.
    pub(crate) fn is_ref(value: &[u8]) -> bool {
        value.len() == REF_BYTES && value[0] == REF_MAGIC
    }

    /// Decodes the reference stored for the record starting at `first`.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming `first` when it fails its checksum.
    pub(crate) fn decode(first: LogIndex, b: &[u8]) -> Result<Self, StorageError> {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if !Self::is_ref(b) || Self::own_crc(first, &b[..29]) != u32_at(29) {
            return Err(StorageError::Corrupt {
                index: first,
                detail: format!("the value log reference of the record at {first} is damaged"),
            });
        }
        Ok(Self {
            seq: u64_at(1),
            offset: u64_at(9),
            len: u64_at(17),
            crc: u32_at(25),
        })
    }
}

/// The active segment, written at its end.
#[derive(Debug)]
struct Active {
    seq: u64,
    file: File,
    len: u64,
    /// Written since the last sync.
    dirty: bool,
}

/// The value log of one SledLog directory.
#[derive(Debug)]
pub(crate) struct ValueLog {
    dir: PathBuf,
    node_id: NodeId,
    durable: bool,
    segment_bytes: u64,
    /// Read handles of every segment.
    files: BTreeMap<u64, File>,
    active: Option<Active>,
    next_seq: u64,
    /// The directory's listing changed since the last sync.
    dir_dirty: bool,
    /// Stored references per segment.
    live: BTreeMap<u64, u64>,
    /// Deletes dead segments: in place until the log hands over its reaper's
    /// ([`ValueLog::set_remover`]), then on the reaper's thread.
    remover: Remover,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", path.display()))
}

fn name(seq: u64) -> String {
    format!("{PREFIX}{seq:020}{SUFFIX}")
}

impl ValueLog {
    /// Opens (creating it if needed) the value log under `log_dir`. Segments start
    /// unreferenced: the caller adds the references it finds, then calls
    /// [`ValueLog::remove_unreferenced`].
    pub(crate) fn open(
        log_dir: &Path,
        node_id: NodeId,
        durable: bool,
        segment_bytes: u64,
    ) -> Result<Self, StorageError> {
        let dir = log_dir.join(VALUE_DIR);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
            if durable {
                File::open(log_dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err("cannot sync", log_dir, e))?;
            }
        }
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_err("cannot list", &dir, e))? {
            let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
            let seq = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok());
            match seq {
                Some(seq) => {
                    let file = File::open(entry.path())
                        .map_err(|e| io_err("cannot open", &entry.path(), e))?;
                    files.insert(seq, file);
                }
                None => log::warn!(
                    "n{node_id} ignoring unexpected file {} in the value log",
                    entry.path().display()
                ),
            }
        }
        let next_seq = files.keys().next_back().map_or(1, |s| s + 1);
        Ok(Self {
            dir,
            node_id,
            durable,
            segment_bytes,
            files,
            active: None,
            next_seq,
            dir_dirty: false,
            live: BTreeMap::new(),
            remover: Remover::inline(node_id),
        })
    }

    /// Deletes dead segments through `remover` from now on (off the syncing thread).
    pub(crate) fn set_remover(&mut self, remover: Remover) {
        self.remover = remover;
    }

    /// Counts a stored reference into segment `seq`.
    pub(crate) fn add_ref(&mut self, seq: u64) {
        *self.live.entry(seq).or_default() += 1;
    }

    /// Uncounts a stored reference (the sled batch removing it is durable); deletes the
    /// segment when it was the last one and the segment is not being written (see
    /// [`ValueLog::delete`]).
    pub(crate) fn drop_ref(&mut self, seq: u64) {
        let left = match self.live.get_mut(&seq) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.live.remove(&seq);
            if self.active.as_ref().map(|a| a.seq) != Some(seq) {
                self.delete(seq);
            }
        }
    }

    /// Deletes every segment but the active one that no stored reference names: after a
    /// restart, and after a sync (a segment filled by a sync that failed).
    pub(crate) fn remove_unreferenced(&mut self) {
        let doomed: Vec<u64> = self
            .files
            .keys()
            .filter(|s| {
                !self.live.contains_key(s) && self.active.as_ref().map(|a| a.seq) != Some(**s)
            })
            .copied()
            .collect();
        for seq in doomed {
            log::info!(
                "n{} removing value log segment {} (no record refers to it)",
                self.node_id,
                self.dir.join(name(seq)).display()
            );
            self.delete(seq);
        }
    }

    /// Deletes segment `seq`, which no stored record names, through the remover: off
    /// this thread once the log handed over its reaper. Nothing is synced for it: an
    /// unreferenced segment that a crash brings back (or that could not be deleted) is
    /// removed by the next open's [`ValueLog::remove_unreferenced`].
    fn delete(&mut self, seq: u64) {
        self.files.remove(&seq);
        self.remover.remove(self.dir.join(name(seq)));
    }

    /// Appends `bytes` (one record) to the active segment, starting a new one when it is
    /// full. Durable only after [`ValueLog::sync`].
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<ValueRef, StorageError> {
        if self
            .active
            .as_ref()
            .is_none_or(|a| a.len >= self.segment_bytes)
        {
            self.rotate()?;
        }
        let active = self
            .active
            .as_mut()
            .expect("rotate leaves an active segment");
        let offset = active.len;
        let path = self.dir.join(name(active.seq));
        active
            .file
            .write_all(bytes)
            .map_err(|e| io_err("cannot write", &path, e))?;
        active.len += bytes.len() as u64;
        active.dirty = true;
        Ok(ValueRef {
            seq: active.seq,
            offset,
            len: bytes.len() as u64,
            crc: crc32fast::hash(bytes),
        })
    }

    fn rotate(&mut self) -> Result<(), StorageError> {
        // The full segment is synced before it stops being the active one.
        // It is not deleted here even if no reference names it yet: the references to
        // records just appended to it are counted only once their sled batch is durable.
        // `remove_unreferenced` after that sync removes it if it is still unnamed.
        self.sync()?;
        self.active = None;
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.dir.join(name(seq));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_err("cannot create", &path, e))?;
        let reader = file
            .try_clone()
            .map_err(|e| io_err("cannot open", &path, e))?;
        self.files.insert(seq, reader);
        self.active = Some(Active {
            seq,
            file,
            len: 0,
            dirty: false,
        });
        self.dir_dirty = true;
        Ok(())
    }

    /// Makes every append durable (with a durable log; else only flushes to the kernel,
    /// which appends already did).
    pub(crate) fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(active) = self.active.as_mut().filter(|a| a.dirty) {
            if self.durable {
                active
                    .file
                    .sync_data()
                    .map_err(|e| io_err("cannot sync", &self.dir.join(name(active.seq)), e))?;
            }
            active.dirty = false;
        }
        if self.dir_dirty {
            if self.durable {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err("cannot sync", &self.dir, e))?;
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Reads the record `r` points at, for the record starting at `first`.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming `first` when the segment is missing, too short,
    /// or the bytes fail their checksum.
    pub(crate) fn read(&self, first: LogIndex, r: &ValueRef) -> Result<Bytes, StorageError> {
        let path = self.dir.join(name(r.seq));
        let corrupt = |detail: String| StorageError::Corrupt {
            index: first,
            detail: format!("record at {first} in {}: {detail}", path.display()),
        };
        let file = self
            .files
            .get(&r.seq)
            .ok_or_else(|| corrupt("the value log segment is missing".into()))?;
        let len = usize::try_from(r.len).map_err(|_| corrupt("too large".into()))?;
        let mut buf = vec![0u8; len];
        match file.read_exact_at(&mut buf, r.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(corrupt("the segment ends before the record".into()))
            }
            Err(e) => return Err(io_err("cannot read", &path, e)),
        }
        if crc32fast::hash(&buf) != r.crc {
            return Err(corrupt("its bytes fail their checksum".into()));
        }
        Ok(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_round_trip_and_damage_is_named() {
        let r = ValueRef {
            seq: 3,
            offset: 1 << 33,
            len: 70_000,
            crc: 0xfeed_f00d,
        };
        let b = r.encode(42);
        assert!(ValueRef::is_ref(&b));
        assert_eq!(ValueRef::decode(42, &b).unwrap(), r);
        assert!(
            ValueRef::decode(43, &b).is_err(),
            "a reference under another key"
        );
        for at in 1..b.len() {
            let mut bad = b;
            bad[at] ^= 4;
            assert!(matches!(
                ValueRef::decode(42, &bad),
                Err(StorageError::Corrupt { index: 42, .. })
            ));
        }
    }

    #[test]
    fn segments_rotate_and_die_when_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = ValueLog::open(dir.path(), 1, true, 100).unwrap();
        let a = v.append(&[1; 80]).unwrap();
        let b = v.append(&[2; 80]).unwrap(); // still the first segment (80 < 100)
        let c = v.append(&[3; 10]).unwrap(); // a new one
        v.sync().unwrap();
        assert_eq!((a.seq, b.seq, c.seq), (1, 1, 2));
        for r in [a, b, c] {
            v.add_ref(r.seq);
        }
        assert_eq!(&v.read(7, &b).unwrap()[..], &[2; 80][..]);
        v.drop_ref(a.seq);
        assert!(dir.path().join(VALUE_DIR).join(name(1)).exists());
        v.drop_ref(b.seq);
        assert!(!dir.path().join(VALUE_DIR).join(name(1)).exists());
        assert!(matches!(
            v.read(7, &a),
            Err(StorageError::Corrupt { index: 7, .. })
        ));
        // The active segment stays while unreferenced; a reopen removes it.
        v.drop_ref(c.seq);
        assert!(dir.path().join(VALUE_DIR).join(name(2)).exists());
        drop(v);
        let mut v = ValueLog::open(dir.path(), 1, true, 100).unwrap();
        v.remove_unreferenced();
        assert!(!dir.path().join(VALUE_DIR).join(name(2)).exists());
        assert_eq!(
            v.append(&[4; 5]).unwrap().seq,
            3,
            "sequence numbers are not reused"
        );
    }
}
