//! The sync marker: a small file beside sled's that remembers the latest completed sync,
//! so that opening can tell when sled came back with less than was synced.
//!
//! Why: sled checksums its own log messages, and on recovery treats the first damaged
//! message as the end of its log. A damaged byte in the middle of the file therefore does
//! not fail sled's open: sled silently rolls back to the state before the damage, which is
//! self-consistent, so the checks on our own records cannot notice. The marker can: it is
//! written after every completed durability point with that sync's sequence number, and
//! on open a state record older than the marker means synced writes were lost.
//!
//! The marker never claims more than is durable (it is written only after the sync it
//! names completed), so it cannot cause a false alarm. It is not itself synced, to keep
//! sync at one durability point: after a process crash it is exact; after a power loss it
//! may lag behind by the kernel's writeback delay (typically up to 30 s), and detection of
//! a rollback within that window is lost.
//!
//! Layout: two 32-byte slots written alternately (slot `seq % 2`), so a torn write of one
//! leaves the other; each is `magic u32 | seq u64 | last_index u64 | last_term u64 |
//! crc32 u32`, little-endian, the crc over the 28 bytes before it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use raft_core::{LogIndex, Term};

/// The marker file's name in the log directory.
pub(crate) const MARKER_FILE: &str = "raft-store.marker";
const MAGIC: u32 = 0x5254_4D31; // "RTM1"
const SLOT_BYTES: usize = 32;

/// What the latest completed sync left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) seq: u64,
    pub(crate) last_index: LogIndex,
    pub(crate) last_term: Term,
}

impl Mark {
    fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut b = [0u8; SLOT_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..20].copy_from_slice(&self.last_index.to_le_bytes());
        b[20..28].copy_from_slice(&self.last_term.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[28..32]);
        if b[0..4] != MAGIC.to_le_bytes() || crc32fast::hash(&b[..28]) != u32::from_le_bytes(crc) {
            return None;
        }
        Some(Self {
            seq: u64_at(4),
            last_index: u64_at(12),
            last_term: u64_at(20),
        })
    }
}

/// The open marker file.
#[derive(Debug)]
pub(crate) struct SyncMarker {
    file: File,
}

impl SyncMarker {
    /// Opens (or creates) the marker in `dir` and returns the latest intact mark in it.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Option<Mark>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(MARKER_FILE))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let latest = bytes
            .chunks_exact(SLOT_BYTES)
            .take(2)
            .filter_map(Mark::decode)
            .max_by_key(|m| m.seq);
        Ok((Self { file }, latest))
    }

    /// Records `mark`, which must describe a completed sync.
    pub(crate) fn write(&mut self, mark: Mark) -> io::Result<()> {
        let slot = (mark.seq % 2) * SLOT_BYTES as u64;
        self.file.write_all_at(&mark.encode(), slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_intact_slot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, latest) = SyncMarker::open(dir.path()).unwrap();
        assert_eq!(latest, None);
        let mark = |seq| Mark {
            seq,
            last_index: seq * 10,
            last_term: 1,
        };
        m.write(mark(1)).unwrap();
        m.write(mark(2)).unwrap();
        m.write(mark(3)).unwrap();
        drop(m);
        assert_eq!(SyncMarker::open(dir.path()).unwrap().1, Some(mark(3)));
        // Tear the slot of seq 3: seq 2 remains.
        let path = dir.path().join(MARKER_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(SyncMarker::open(dir.path()).unwrap().1, Some(mark(2)));
    }
}
