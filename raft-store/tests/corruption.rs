//! Damaged directories: a flipped byte in a stored record is refused with the index it
//! belongs to; a record past the last sync is discarded; another owner's directory is
//! refused; random damage to sled's file never panics and never yields a damaged entry.
//!
//! These tests edit the stored bytes through sled directly, so they spell out the on-disk
//! layout documented in `docs/operations.md`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use raft_core::{Log, LogIndex, StorageError};
use raft_store::{SledLog, SledLogOptions};
use rand::{Rng, SeedableRng};

/// SledLog's sled segment size: sled refuses to open a directory with another one.
const SLED_SEGMENT_BYTES: usize = 8 << 20;
const RECORD_HEADER_BYTES: usize = 17;
const ENTRY_HEADER_BYTES: usize = 13;
const ENTRY_CRC_BYTES: usize = 4;

/// The key of chunk `chunk` of the record starting at `first`.
fn chunk_key(first: LogIndex, chunk: u32) -> Vec<u8> {
    let mut k = vec![b'e'];
    k.extend_from_slice(&first.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// The key of a record stored in one chunk.
fn key(first: LogIndex) -> Vec<u8> {
    chunk_key(first, 0)
}

/// Opens the directory with sled itself, waiting for the lock the dropped log's
/// background threads may still hold for a moment.
fn open_raw(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(dir)
            .segment_size(SLED_SEGMENT_BYTES)
            .open()
        {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::yield_now()
            }
            Err(e) => panic!("open raw sled: {e}"),
        }
    }
}

/// A synced log with records [1..=10], [11..=20], [21..=30], each entry's payload
/// `index` bytes long.
fn three_records(dir: &Path) {
    let mut log = SledLog::open(dir, CLUSTER, NODE).unwrap();
    for first in [1, 11, 21] {
        let batch: Vec<_> = (first..first + 10)
            .map(|i| sized(i, 1, i as usize))
            .collect();
        log.append(&batch).unwrap();
        log.sync().unwrap();
    }
}

/// Edits the stored value of record `first` with `edit`.
fn edit_record(dir: &Path, first: LogIndex, edit: impl FnOnce(&mut Vec<u8>)) {
    let db = open_raw(dir);
    let mut value = db.get(key(first)).unwrap().expect("record exists").to_vec();
    edit(&mut value);
    db.insert(key(first), value).unwrap();
    db.flush().unwrap();
}

/// Byte offset of entry `index`'s data inside record `first` (payload of entry i is i bytes).
fn data_offset(first: LogIndex, index: LogIndex) -> usize {
    RECORD_HEADER_BYTES
        + (first..index)
            .map(|i| ENTRY_HEADER_BYTES + i as usize + ENTRY_CRC_BYTES)
            .sum::<usize>()
        + ENTRY_HEADER_BYTES
}

fn open_err(dir: &Path) -> StorageError {
    match SledLog::open(dir, CLUSTER, NODE) {
        Ok(log) => panic!("opened a damaged log: {log:?}"),
        Err(e) => e,
    }
}

#[test]
fn flipped_byte_in_entry_data_names_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    edit_record(dir.path(), 11, |v| v[data_offset(11, 14) + 5] ^= 0x10);
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 14, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("14"),
        "the message names the index: {err}"
    );
}

#[test]
fn flipped_byte_in_entry_term_names_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    // The term is the first field of the entry header.
    edit_record(dir.path(), 21, |v| {
        v[data_offset(21, 30) - ENTRY_HEADER_BYTES] ^= 1
    });
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 30, .. }),
        "{err}"
    );
}

#[test]
fn flipped_byte_in_record_header_names_its_first_index() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    edit_record(dir.path(), 11, |v| v[2] ^= 0xFF);
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 11, .. }),
        "{err}"
    );
}

#[test]
fn truncated_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    edit_record(dir.path(), 1, |v| v.truncate(v.len() - 3));
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 10, .. }),
        "{err}"
    );
}

#[test]
fn missing_record_inside_the_log_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    {
        let db = open_raw(dir.path());
        db.remove(key(11)).unwrap();
        db.flush().unwrap();
    }
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 11, .. }),
        "{err}"
    );
}

#[test]
fn missing_last_record_is_corrupt_not_silently_shorter() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    {
        let db = open_raw(dir.path());
        db.remove(key(21)).unwrap();
        db.flush().unwrap();
    }
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 21, .. }),
        "{err}"
    );
}

#[test]
fn damaged_state_record_is_corrupt_at_index_0() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    {
        let db = open_raw(dir.path());
        let mut v = db.get(b"m/state").unwrap().unwrap().to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        db.insert(b"m/state", v).unwrap();
        db.flush().unwrap();
    }
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 0, .. }),
        "{err}"
    );
}

/// A record past the last synced index can only be the unsynced tail (a sync writes its
/// records and the state record in one atomic batch): torn or whole, it is discarded.
#[test]
fn torn_record_past_the_last_sync_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    {
        let db = open_raw(dir.path());
        // A torn record: a valid-looking start, then nothing.
        db.insert(key(31), vec![0xB1, 3, 0, 0]).unwrap();
        // And a whole one after it.
        let mut whole = db.get(key(21)).unwrap().unwrap().to_vec();
        whole[0] ^= 0; // same bytes, wrong key: would also fail its checks
        db.insert(key(40), whole).unwrap();
        db.flush().unwrap();
    }
    let log = SledLog::open(dir.path(), CLUSTER, NODE).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (1, 30));
    for e in log.entries(1, 31, u64::MAX).unwrap() {
        assert!(intact(&e));
    }
    drop(log);
    let db = open_raw(dir.path());
    assert!(
        db.get(key(31)).unwrap().is_none(),
        "the torn record was removed"
    );
    assert!(db.get(key(40)).unwrap().is_none());
}

#[test]
fn another_nodes_or_clusters_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    let err = SledLog::open(dir.path(), CLUSTER, NODE + 1).unwrap_err();
    match &err {
        StorageError::WrongOwner { expected, found } => {
            assert!(expected.contains("node 2"), "{err}");
            assert!(found.contains("node 1"), "{err}");
        }
        other => panic!("expected WrongOwner, got {other}"),
    }
    let err = SledLog::open(dir.path(), "other-cluster", NODE).unwrap_err();
    assert!(matches!(err, StorageError::WrongOwner { .. }), "{err}");
    assert!(err.to_string().contains("other-cluster"), "{err}");
    // Refusing changed nothing: the owner still opens it.
    let log = SledLog::open(dir.path(), CLUSTER, NODE).unwrap();
    assert_eq!(log.last_index(), 30);
}

#[test]
fn a_foreign_sled_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"hello", b"world").unwrap();
        db.flush().unwrap();
    }
    // sled may still hold its lock for a moment; SledLog waits for it.
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn invalid_options_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SledLog::open(dir.path(), CLUSTER, 0).unwrap_err();
    assert!(err.to_string().contains("node_id"), "{err}");
    let mut options = SledLogOptions::new(CLUSTER, NODE);
    options.record_bytes_max = 0;
    assert!(SledLog::open_with(dir.path(), options).is_err());
}

/// Random bytes of sled's own file are damaged. Whatever sled makes of it, opening must
/// not panic, and a log that opens must be exactly the log that was synced.
#[test]
fn random_damage_to_the_db_file_never_panics_or_returns_bad_entries() {
    let rounds: usize = std::env::var("RAFT_STORE_DAMAGE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = rand::thread_rng().gen();
    println!("damage test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let good = tempfile::tempdir().unwrap();
    three_records(good.path());
    let expected = view(&SledLog::open(good.path(), CLUSTER, NODE).unwrap());
    let db_bytes = std::fs::read(good.path().join("db")).unwrap();
    let written = db_bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let (mut opened, mut refused) = (0, 0);
    // The copies are 8 MiB each (one sled segment): keep them in memory when possible.
    let scratch = Path::new("/dev/shm");
    for round in 0..rounds {
        let dir = if scratch.is_dir() {
            tempfile::tempdir_in(scratch).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        for entry in std::fs::read_dir(good.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
            }
        }
        let mut bytes = db_bytes.clone();
        for _ in 0..rng.gen_range(1..=4) {
            // Within the part sled has written: the rest of the segment is zeroes.
            let at = rng.gen_range(0..written);
            bytes[at] ^= rng.gen_range(1..=255u8);
        }
        std::fs::write(dir.path().join("db"), &bytes).unwrap();
        let result = std::panic::catch_unwind(|| match SledLog::open(dir.path(), CLUSTER, NODE) {
            Ok(log) => {
                if let Some(diff) = difference(&view(&log), &expected) {
                    panic!("opened a log that differs from the synced one: {diff}");
                }
                true
            }
            Err(e) => {
                println!("refused: {e}");
                false
            }
        });
        match result {
            Ok(true) => opened += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("seed {seed} round {round}: SledLog panicked on a damaged file, or opened a wrong log"),
        }
    }
    println!("{rounds} damaged copies: {opened} opened, {refused} refused");
}

/// sled treats the first damaged message of its own log as the end of it, so damage in the
/// middle of its file would silently roll the log back to an older, consistent state. The
/// sync marker turns that into an error.
#[test]
fn damage_inside_sleds_file_is_refused_not_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    let path = dir.path().join("db");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = payload(14, 1, 14);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == &needle[..])
        .expect("entry 14's payload is in the file");
    bytes[at + 3] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 11, .. }),
        "{err}"
    );
}

#[test]
fn removed_sled_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    three_records(dir.path());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "raft-store.marker" {
            let p = entry.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            } else {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 0, .. }),
        "{err}"
    );
}

/// Large entries are stored in chunks of at most 64 KiB, so sled writes no blob file for
/// them (a blob per rewritten leaf was what made the disk grow without bound); they
/// survive a reopen, and a missing or damaged chunk is refused with the entry's index.
#[test]
fn large_entries_are_chunked_without_blobs_and_damaged_chunks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SledLogOptions::new(CLUSTER, NODE);
    options.value_log_threshold_bytes = usize::MAX; // all in sled
    {
        let mut log = SledLog::open_with(dir.path(), options.clone()).unwrap();
        for i in 1..=3 {
            log.append(&[sized(i, 1, 2_500_000)]).unwrap();
            log.sync().unwrap();
        }
        // Overwrite entry 3 with a shorter one: its old chunks beyond the new record go.
        log.append(&[sized(3, 2, 100_000)]).unwrap();
        log.sync().unwrap();
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "chunked records need no sled blob files");
    {
        let log = SledLog::open_with(dir.path(), options).unwrap();
        let entries = log.entries(1, 4, u64::MAX).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(intact));
        assert_eq!(entries[2].data.len(), 100_000);
    }
    {
        let db = open_raw(dir.path());
        let chunks = db.scan_prefix(&key(3)[..9]).count();
        assert_eq!(
            chunks, 2,
            "100 KB record in 2 chunks, the old chunks removed"
        );
        // Damage a byte in the middle chunk of entry 2's record.
        let mut v = db.get(chunk_key(2, 20)).unwrap().unwrap().to_vec();
        v[100] ^= 0x08;
        db.insert(chunk_key(2, 20), v).unwrap();
        db.flush().unwrap();
    }
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 2, .. }),
        "{err}"
    );
    {
        let db = open_raw(dir.path());
        db.remove(chunk_key(2, 20)).unwrap();
        db.flush().unwrap();
    }
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chunk 20"), "{err}");
}

/// Entries larger than a record go to the value log (segment files beside sled); they
/// survive a reopen, segments die once compacted past, and a damaged or missing segment
/// is refused with the entry's index.
#[test]
fn value_log_records_survive_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values");
    let segments = || std::fs::read_dir(&values).unwrap().count();
    {
        let mut log = SledLog::open(dir.path(), CLUSTER, NODE).unwrap();
        for i in 1..=40 {
            log.append(&[sized(i, 1, 1 << 20)]).unwrap();
            log.sync().unwrap();
        }
        assert!(segments() >= 2, "16 MiB segments for 40 MiB");
        assert!(
            log.size_on_disk_bytes().unwrap() < 4 << 20,
            "sled holds references"
        );
        log.compact(raft_core::SnapshotMeta::at(38, 1)).unwrap();
        log.sync().unwrap();
        // Deleted on the log's reaper thread, off the sync.
        log.wait_removals();
        assert_eq!(
            segments(),
            1,
            "segments behind the compaction point are deleted"
        );
    }
    {
        let log = SledLog::open(dir.path(), CLUSTER, NODE).unwrap();
        let entries = log.entries(39, 41, u64::MAX).unwrap();
        assert!(entries.iter().all(intact) && entries.len() == 2);
    }
    let segment = std::fs::read_dir(&values)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&segment).unwrap();
    let mut bad = good.clone();
    let at = bad.len() - 1000; // inside entry 40's record
    bad[at] ^= 0x01;
    std::fs::write(&segment, &bad).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 40, .. }),
        "{err}"
    );
    std::fs::remove_file(&segment).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 39, .. })
            && err.to_string().contains("missing"),
        "{err}"
    );
}

/// A directory of format version 1 (snapshot inside sled, one key per record) is refused
/// with an error naming both versions, and nothing in it is changed.
#[test]
fn format_version_1_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_raw(dir.path());
        // Owner { format_version: 1, cluster_id, node_id } as SledLog 1 wrote it.
        let mut payload = postcard::to_allocvec(&(1u32, CLUSTER.to_string(), NODE)).unwrap();
        let mut h = crc32fast::Hasher::new();
        h.update(b"m/owner");
        h.update(&payload);
        let mut value = h.finalize().to_le_bytes().to_vec();
        value.append(&mut payload);
        db.insert(b"m/owner", value).unwrap();
        db.insert(b"m/snapshot", vec![0u8; 100]).unwrap();
        db.flush().unwrap();
    }
    let err = open_err(dir.path());
    let text = err.to_string();
    assert!(
        matches!(err, StorageError::Corrupt { index: 0, .. })
            && text.contains("format version 1")
            && text.contains("reads only 3 and 2"),
        "{text}"
    );
    assert!(
        !dir.path().join("snapshots").exists(),
        "nothing was created"
    );
    assert!(open_raw(dir.path()).get(b"m/snapshot").unwrap().is_some());
}

/// Snapshots are files: a saved and synced one comes back on reopen; one saved but not
/// synced leaves the previous one current and its file is removed; a damaged or missing
/// current file is a clear error, never an empty state.
#[test]
fn snapshot_files_reopen_and_damage_is_refused() {
    use raft_core::{Snapshot, SnapshotMeta};
    let dir = tempfile::tempdir().unwrap();
    let snap = |index: LogIndex, len: usize| Snapshot {
        meta: SnapshotMeta::at(index, 1),
        data: payload(index, 1, len),
    };
    let files = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    {
        let mut log = SledLog::open(dir.path(), CLUSTER, NODE).unwrap();
        log.append(&run(1, 30, 1)).unwrap();
        log.save_snapshot(&snap(10, 100_000)).unwrap();
        log.sync().unwrap();
        log.save_snapshot(&snap(20, 200_000)).unwrap();
        log.sync().unwrap();
        log.save_snapshot(&snap(30, 300_000)).unwrap(); // never synced
        assert_eq!(log.snapshot().unwrap(), Some(snap(30, 300_000)));
        log.wait_removals();
        assert_eq!(files().len(), 2, "the current one and the new one");
    }
    let log = SledLog::open(dir.path(), CLUSTER, NODE).unwrap();
    assert_eq!(log.snapshot().unwrap(), Some(snap(20, 200_000)));
    drop(log);
    assert_eq!(files().len(), 1, "the unadopted file is removed");
    let path = dir.path().join("snapshots").join(&files()[0]);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[150_000] ^= 0x02;
    std::fs::write(&path, &bad).unwrap();
    let err = open_err(dir.path());
    assert!(
        matches!(err, StorageError::Corrupt { index: 0, .. })
            && err.to_string().contains("checksum"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    let err = open_err(dir.path());
    assert!(err.to_string().contains("missing"), "{err}");
}
