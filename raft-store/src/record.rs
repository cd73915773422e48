//! The bytes [`crate::SledLog`] stores, and how they are checked.
//!
//! Keys (one sled tree; one tree so that one atomic sled batch covers entries and metadata):
//!
//! - `b"m/owner"`: [`Owner`], written once when the directory is created.
//! - `b"m/state"`: [`State`]: hard state, compaction point, the current snapshot file
//!   (the snapshot's bytes live in a file, see `snapfile.rs`, never in sled) and the
//!   last index the log had at the sync that wrote it.
//! - `b"e"` + first index as 8 big-endian bytes + chunk number as 4 big-endian bytes:
//!   one chunk of a *batch record* holding the entries of one `append` call (or of a
//!   slice of it), in index order, so sled pays its per-key cost once per batch rather
//!   than once per entry. A record is cut into chunks of at most [`CHUNK_BYTES_MAX`]
//!   bytes, numbered from 0, so that no sled value is large: a sled leaf holds up to 17
//!   values and is rewritten whole every few updates, and a leaf over a quarter of a
//!   segment goes to a separate blob file (see `SLED_SEGMENT_BYTES`). Small chunks keep
//!   every leaf inline, whatever the entry sizes (a 1 MiB entry is 16 chunks).
//!
//! A batch record (its chunks concatenated) is
//!
//! ```text
//! magic u8 | count u32 LE | first index u64 LE | header crc32 u32 LE
//! then per entry: term u64 LE | kind u8 | len u32 LE | data [len] | crc32 u32 LE
//! ```
//!
//! The header crc covers the 13 header bytes before it. Each entry's crc covers its index
//! (implied: first index + position, as 8 LE bytes), term, kind, length and data, so a
//! damaged entry is reported with its own index, and a record copied under the wrong key
//! fails; a missing chunk makes an entry run past the record's end. A metadata record is
//! `crc32 u32 LE | postcard bytes`, the crc over the postcard bytes and the key.

use bytes::Bytes;
use raft_core::{Entry, EntryKind, HardState, LogIndex, NodeId, SnapshotMeta, StorageError, Term};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::snapfile::SnapshotRef;

/// The format version in every batch record's first byte.
pub(crate) const RECORD_MAGIC: u8 = 0xB1;
/// The format version in the owner record; bumped on any incompatible layout change.
///
/// - 1: snapshot stored in sled under `m/snapshot`, one key per record.
/// - 2: snapshots as files, records cut into chunks (keys carry a chunk number).
/// - 3: the state record's snapshot metadata carries the configuration in force at the
///   snapshot (`SnapshotMeta::membership`). A version-2 directory is read with
///   [`StateV2`] (no configuration: the node's initial configuration holds at its
///   snapshot) and upgraded in place when it is opened.
pub(crate) const FORMAT_VERSION: u32 = 3;
/// The previous format, still opened: the same but for the snapshot metadata.
pub(crate) const FORMAT_VERSION_NO_CONFIG: u32 = 2;
/// The largest sled value a record chunk takes.
pub(crate) const CHUNK_BYTES_MAX: usize = 64 << 10;

pub(crate) const OWNER_KEY: &[u8] = b"m/owner";
pub(crate) const STATE_KEY: &[u8] = b"m/state";
pub(crate) const RECORD_PREFIX: u8 = b'e';

const HEADER_BYTES: usize = 1 + 4 + 8;
const HEADER_CRC_BYTES: usize = 4;
const ENTRY_HEADER_BYTES: usize = 8 + 1 + 4;
const ENTRY_CRC_BYTES: usize = 4;

/// The bytes a batch record of `entries` takes.
pub(crate) fn record_bytes(entries: &[Entry]) -> usize {
    HEADER_BYTES
        + HEADER_CRC_BYTES
        + entries
            .iter()
            .map(|e| ENTRY_HEADER_BYTES + e.data.len() + ENTRY_CRC_BYTES)
            .sum::<usize>()
}

/// The sled key of chunk `chunk` of the batch record whose first entry is `first`.
pub(crate) fn record_key(first: LogIndex, chunk: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[0] = RECORD_PREFIX;
    key[1..9].copy_from_slice(&first.to_be_bytes());
    key[9..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// The first index and chunk number named by a record key, if it is one.
pub(crate) fn parse_record_key(key: &[u8]) -> Option<(LogIndex, u32)> {
    if key.len() != 13 || key[0] != RECORD_PREFIX {
        return None;
    }
    let first = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let chunk = u32::from_be_bytes(key[9..].try_into().ok()?);
    Some((first, chunk))
}

/// How many chunks a record of `len` bytes is stored in.
pub(crate) fn chunk_count(len: usize) -> u32 {
    u32::try_from(len.div_ceil(CHUNK_BYTES_MAX).max(1)).expect("a record is under 256 TiB")
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Command => 0,
        EntryKind::Noop => 1,
        EntryKind::Membership => 2,
    }
}

fn entry_crc(index: LogIndex, header: &[u8], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(header);
    h.update(data);
    h.finalize()
}

/// Encodes contiguous, non-empty `entries` as one batch record.
pub(crate) fn encode_record(entries: &[Entry]) -> Vec<u8> {
    debug_assert!(
        !entries.is_empty(),
        "a batch record holds at least one entry"
    );
    let mut out = Vec::with_capacity(record_bytes(entries));
    out.push(RECORD_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&entries[0].index.to_le_bytes());
    let crc = crc32fast::hash(&out[..HEADER_BYTES]);
    out.extend_from_slice(&crc.to_le_bytes());
    for e in entries {
        let start = out.len();
        out.extend_from_slice(&e.term.to_le_bytes());
        out.push(kind_byte(e.kind));
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        let crc = entry_crc(e.index, &out[start..], &e.data);
        out.extend_from_slice(&e.data);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

fn corrupt(index: LogIndex, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        index,
        detail: detail.into(),
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The byte limit of a range read: admits entries while their [`Entry::size_bytes`] stay
/// within `max`, but always the first one.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    max: u64,
    used: u64,
    taken: usize,
    spent: bool,
}

impl ByteBudget {
    pub(crate) fn new(max: u64) -> Self {
        Self {
            max,
            used: 0,
            taken: 0,
            spent: false,
        }
    }

    pub(crate) fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// Whether `entry` still fits; once one does not, none does.
    pub(crate) fn admit(&mut self, entry: &Entry) -> bool {
        let used = self.used.saturating_add(entry.size_bytes());
        if self.spent || (self.taken > 0 && used > self.max) {
            self.spent = true;
            return false;
        }
        self.used = used;
        self.taken += 1;
        true
    }

    /// Whether an entry was refused.
    pub(crate) fn spent(&self) -> bool {
        self.spent
    }
}

/// A batch record whose header was checked; entries are checked as they are read.
pub(crate) struct Record {
    bytes: Bytes,
    first: LogIndex,
    count: u64,
}

impl Record {
    /// Checks the header of the record stored under the key for `key_first`.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming `key_first` when the header is damaged.
    pub(crate) fn parse(key_first: LogIndex, bytes: Bytes) -> Result<Self, StorageError> {
        if bytes.len() < HEADER_BYTES + HEADER_CRC_BYTES {
            return Err(corrupt(
                key_first,
                format!(
                    "batch record is {} bytes, shorter than its header",
                    bytes.len()
                ),
            ));
        }
        let crc = read_u32(&bytes, HEADER_BYTES);
        if crc32fast::hash(&bytes[..HEADER_BYTES]) != crc {
            return Err(corrupt(key_first, "batch record header fails its checksum"));
        }
        if bytes[0] != RECORD_MAGIC {
            return Err(corrupt(
                key_first,
                format!("unknown batch record format {:#x}", bytes[0]),
            ));
        }
        let count = u64::from(read_u32(&bytes, 1));
        let first = read_u64(&bytes, 5);
        if first != key_first {
            return Err(corrupt(
                key_first,
                format!("batch record under key {key_first} says it starts at {first}"),
            ));
        }
        if count == 0 {
            return Err(corrupt(key_first, "batch record holds no entries"));
        }
        Ok(Self {
            bytes,
            first,
            count,
        })
    }

    /// The record's first index.
    #[cfg(test)]
    pub(crate) fn first(&self) -> LogIndex {
        self.first
    }

    /// The record's last index.
    pub(crate) fn last(&self) -> LogIndex {
        self.first + self.count - 1
    }

    /// Decodes and checks entries `[from, to)` (clamped to the record), skipping the ones
    /// before `from` without checking their data. Stops early when `budget` is spent.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the first damaged entry.
    pub(crate) fn read(
        &self,
        from: LogIndex,
        to: LogIndex,
        budget: &mut ByteBudget,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        let b = &self.bytes[..];
        let mut at = HEADER_BYTES + HEADER_CRC_BYTES;
        for i in 0..self.count {
            let index = self.first + i;
            if index >= to {
                return Ok(());
            }
            if b.len() < at + ENTRY_HEADER_BYTES {
                return Err(corrupt(index, "batch record ends inside an entry header"));
            }
            let len = read_u32(b, at + 9) as usize;
            let data_at = at + ENTRY_HEADER_BYTES;
            let end = data_at
                .checked_add(len)
                .and_then(|x| x.checked_add(ENTRY_CRC_BYTES))
                .filter(|&end| end <= b.len())
                .ok_or_else(|| corrupt(index, "entry length runs past the batch record"))?;
            if index >= from {
                let crc = read_u32(b, data_at + len);
                if entry_crc(index, &b[at..data_at], &b[data_at..data_at + len]) != crc {
                    return Err(corrupt(index, "entry fails its checksum"));
                }
                let kind = match b[at + 8] {
                    0 => EntryKind::Command,
                    1 => EntryKind::Noop,
                    2 => EntryKind::Membership,
                    other => return Err(corrupt(index, format!("unknown entry kind {other}"))),
                };
                let entry = Entry {
                    term: read_u64(b, at),
                    index,
                    kind,
                    data: self.bytes.slice(data_at..data_at + len),
                };
                if !budget.admit(&entry) {
                    return Ok(());
                }
                out.push(entry);
            }
            at = end;
        }
        if at != b.len() {
            return Err(corrupt(
                self.last(),
                format!("{} stray bytes after the last entry", b.len() - at),
            ));
        }
        Ok(())
    }

    /// Decodes and checks every entry.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] naming the first damaged entry.
    #[cfg(test)]
    pub(crate) fn all(&self) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::with_capacity(self.count as usize);
        self.read(
            self.first,
            LogIndex::MAX,
            &mut ByteBudget::unlimited(),
            &mut out,
        )?;
        Ok(out)
    }
}

/// Who a directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub(crate) format_version: u32,
    pub(crate) cluster_id: String,
    pub(crate) node_id: NodeId,
}

impl Owner {
    pub(crate) fn describe(&self) -> String {
        format!("cluster {:?} node {}", self.cluster_id, self.node_id)
    }
}

/// Everything besides entries, rewritten by every sync that changed any of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) hard_state: HardState,
    /// The compaction point: the log starts after it.
    pub(crate) snapshot: SnapshotMeta,
    /// The current snapshot file, if a snapshot was ever saved.
    pub(crate) snapshot_file: Option<SnapshotRef>,
    /// The log's last index when this was written: records past it were never synced.
    pub(crate) last_index: LogIndex,
    /// The term at `last_index`.
    pub(crate) last_term: Term,
    /// How many syncs wrote a state record; compared with the sync marker on open.
    pub(crate) seq: u64,
}

/// [`SnapshotMeta`] as format 2 stored it: no configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotMetaV2 {
    pub(crate) last_index: LogIndex,
    pub(crate) last_term: Term,
}

impl SnapshotMetaV2 {
    fn upgrade(self) -> SnapshotMeta {
        SnapshotMeta::at(self.last_index, self.last_term)
    }
}

/// [`SnapshotRef`] as format 2 stored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRefV2 {
    pub(crate) id: u64,
    pub(crate) meta: SnapshotMetaV2,
    pub(crate) len: u64,
    pub(crate) crc: u32,
}

/// [`State`] as format 2 stored it (field for field, so that postcard, which is not
/// self-describing, reads its bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateV2 {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: SnapshotMetaV2,
    pub(crate) snapshot_file: Option<SnapshotRefV2>,
    pub(crate) last_index: LogIndex,
    pub(crate) last_term: Term,
    pub(crate) seq: u64,
}

impl StateV2 {
    /// The same state in the current format: the snapshot carries no configuration.
    pub(crate) fn upgrade(self) -> State {
        State {
            hard_state: self.hard_state,
            snapshot: self.snapshot.upgrade(),
            snapshot_file: self.snapshot_file.map(|r| SnapshotRef {
                id: r.id,
                meta: r.meta.upgrade(),
                len: r.len,
                crc: r.crc,
            }),
            last_index: self.last_index,
            last_term: self.last_term,
            seq: self.seq,
        }
    }
}

/// Encodes a metadata record: crc32 over key and payload, then the postcard payload.
pub(crate) fn encode_meta<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, StorageError> {
    let payload =
        postcard::to_allocvec(value).map_err(|e| StorageError::Io(format!("encode: {e}")))?;
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(&payload);
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a metadata record written by [`encode_meta`].
///
/// # Errors
/// [`StorageError::Corrupt`] with index 0 when the checksum or the payload is bad.
pub(crate) fn decode_meta<T: DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StorageError> {
    let name = String::from_utf8_lossy(key);
    if bytes.len() < 4 {
        return Err(corrupt(0, format!("metadata record {name} is truncated")));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(&bytes[4..]);
    if h.finalize() != read_u32(bytes, 0) {
        return Err(corrupt(
            0,
            format!("metadata record {name} fails its checksum"),
        ));
    }
    postcard::from_bytes(&bytes[4..])
        .map_err(|e| corrupt(0, format!("metadata record {name} does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: LogIndex, term: Term, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind: if data.is_empty() {
                EntryKind::Noop
            } else {
                EntryKind::Command
            },
            data: Bytes::copy_from_slice(data),
        }
    }

    fn sample() -> Vec<Entry> {
        vec![
            entry(7, 1, b"abc"),
            entry(8, 2, b""),
            entry(9, 2, &[9; 300]),
        ]
    }

    #[test]
    fn round_trip() {
        let entries = sample();
        let bytes = encode_record(&entries);
        assert_eq!(bytes.len(), record_bytes(&entries));
        let rec = Record::parse(7, bytes.into()).unwrap();
        assert_eq!((rec.first(), rec.last()), (7, 9));
        assert_eq!(rec.all().unwrap(), entries);
        let mut out = Vec::new();
        rec.read(8, 9, &mut ByteBudget::unlimited(), &mut out)
            .unwrap();
        assert_eq!(out, entries[1..2]);
    }

    #[test]
    fn every_flipped_byte_is_reported_with_the_right_index() {
        let entries = sample();
        let good = encode_record(&entries);
        let first_entry_end =
            HEADER_BYTES + HEADER_CRC_BYTES + ENTRY_HEADER_BYTES + 3 + ENTRY_CRC_BYTES;
        let second_entry_end = first_entry_end + ENTRY_HEADER_BYTES + ENTRY_CRC_BYTES;
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            // The header names the record's first index, which is also entry 7's.
            let expected = if at < first_entry_end {
                7
            } else if at < second_entry_end {
                8
            } else {
                9
            };
            let result = Record::parse(7, bad.into()).and_then(|r| r.all());
            match result {
                Err(StorageError::Corrupt { index, .. }) => {
                    assert_eq!(index, expected, "flip at byte {at}")
                }
                other => panic!("flip at byte {at}: expected corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_records_are_corrupt_not_panics() {
        let good = encode_record(&sample());
        for len in 0..good.len() {
            let result =
                Record::parse(7, Bytes::copy_from_slice(&good[..len])).and_then(|r| r.all());
            assert!(
                matches!(result, Err(StorageError::Corrupt { .. })),
                "length {len}: {result:?}"
            );
        }
    }

    #[test]
    fn record_under_wrong_key_is_corrupt() {
        let good = encode_record(&sample());
        assert!(matches!(
            Record::parse(8, good.into()),
            Err(StorageError::Corrupt { index: 8, .. })
        ));
    }

    #[test]
    fn meta_round_trip_and_damage() {
        let state = State {
            hard_state: HardState {
                term: 3,
                vote: Some(2),
                commit: 5,
            },
            snapshot: SnapshotMeta::at(2, 1),
            snapshot_file: Some(SnapshotRef {
                id: 3,
                meta: SnapshotMeta::at(2, 1),
                len: 1234,
                crc: 0xdead_beef,
            }),
            last_index: 9,
            last_term: 3,
            seq: 4,
        };
        let bytes = encode_meta(STATE_KEY, &state).unwrap();
        assert_eq!(decode_meta::<State>(STATE_KEY, &bytes).unwrap(), state);
        assert!(decode_meta::<State>(OWNER_KEY, &bytes).is_err());
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(matches!(
                decode_meta::<State>(STATE_KEY, &bad),
                Err(StorageError::Corrupt { index: 0, .. })
            ));
        }
    }

    #[test]
    fn keys_sort_by_index() {
        assert!(record_key(255, 7) < record_key(256, 0));
        assert!(record_key(256, 1) < record_key(256, 2));
        assert_eq!(
            parse_record_key(&record_key(1 << 40, 9)),
            Some((1 << 40, 9))
        );
        assert_eq!(parse_record_key(OWNER_KEY), None);
    }
}
