//! `SledLog`'s `SnapshotWriter` (issue 18, item 2): snapshot files written on another
//! thread while the log goes on appending and syncing, then adopted on the log's thread;
//! only an adopted and synced snapshot survives a reopen, and the directory keeps at most
//! two snapshot files.

mod common;

use bytes::Bytes;
use common::{run, Fixture, SledFixture};
use raft_core::{Log, Snapshot, SnapshotChunks, SnapshotMeta};

fn snapshot(index: u64, term: u64, len: usize) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta::at(index, term),
        data: Bytes::from(
            (0..len)
                .map(|i| (i as u64 * 31 + index) as u8)
                .collect::<Vec<_>>(),
        ),
    }
}

/// The files in the snapshot directory, once the log's reaper deleted what it dropped.
fn snapshot_files(f: &SledFixture) -> usize {
    if let Some(log) = &f.log {
        log.wait_removals();
    }
    std::fs::read_dir(f.dir.path().join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn written_off_thread_adopted_and_synced_survives_a_reopen() {
    let mut f = SledFixture::create();
    f.log().append(&run(1, 300, 1)).unwrap();
    f.log().sync().unwrap();
    let mut writer = f.log().snapshot_writer().expect("SledLog offers a writer");
    let snap = snapshot(200, 1, 300_000);
    // The write runs on another thread while the log appends and syncs.
    let (written, _) = std::thread::scope(|s| {
        let w = s.spawn(|| writer.write_whole(&snap));
        f.log().append(&run(301, 400, 1)).unwrap();
        f.log().sync().unwrap();
        (w.join().unwrap().expect("written"), ())
    });
    assert_eq!(written.meta, snap.meta);
    assert_eq!(written.size_bytes, 300_000);
    // Written but not adopted: the stored snapshot is unchanged.
    assert!(f.log().snapshot().unwrap().is_none());
    f.log().adopt_snapshot(&written).unwrap();
    f.log().compact(snap.meta.clone()).unwrap();
    f.log().sync().unwrap();
    let log = f.reopen().unwrap();
    assert_eq!(log.snapshot().unwrap(), Some(snap));
    assert_eq!(log.first_index(), 201);
    assert_eq!(log.last_index(), 400);
}

#[test]
fn a_written_file_never_adopted_is_removed_on_reopen() {
    let mut f = SledFixture::create();
    f.log().append(&run(1, 50, 1)).unwrap();
    f.log().sync().unwrap();
    let mut writer = f.log().snapshot_writer().unwrap();
    writer.write_whole(&snapshot(40, 1, 10_000)).unwrap();
    assert_eq!(snapshot_files(&f), 1);
    let log = f.reopen().unwrap();
    assert!(log.snapshot().unwrap().is_none());
    assert_eq!(
        snapshot_files(&f),
        0,
        "an unadopted file outlived the reopen"
    );
}

#[test]
fn adoption_keeps_at_most_two_files_and_refuses_unknown_ones() {
    let mut f = SledFixture::create();
    f.log().append(&run(1, 100, 1)).unwrap();
    f.log().sync().unwrap();
    let mut writer = f.log().snapshot_writer().unwrap();
    for index in [20, 40, 60, 80] {
        let w = writer.write_whole(&snapshot(index, 1, 5_000)).unwrap();
        f.log().adopt_snapshot(&w).unwrap();
        f.log().sync().unwrap();
        assert!(snapshot_files(&f) <= 2, "{} files", snapshot_files(&f));
    }
    assert_eq!(f.log().snapshot().unwrap(), Some(snapshot(80, 1, 5_000)));
    let bogus = raft_core::WrittenSnapshot {
        meta: SnapshotMeta::at(90, 1),
        id: 9_999,
        size_bytes: 1,
    };
    let e = f.log().adopt_snapshot(&bogus).unwrap_err();
    assert!(e.to_string().contains("9999"), "{e}");
    assert_eq!(f.log().snapshot().unwrap(), Some(snapshot(80, 1, 5_000)));
}

/// Issue 18, item 2: a leader sends a snapshot in chunks read from its file; the log's
/// metadata gives its length and checksum without reading it, and a transfer's open file
/// stays readable after a newer snapshot replaced (and removed) it.
fn chunks_of(chunks: &dyn SnapshotChunks, chunk_bytes: u64) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let chunk = chunks
            .read_chunk(all.len() as u64, chunk_bytes)
            .expect("chunk");
        if chunk.is_empty() {
            return all;
        }
        assert!(chunk.len() as u64 <= chunk_bytes);
        all.extend_from_slice(&chunk);
    }
}

#[test]
fn chunks_are_read_from_the_file_and_outlive_its_replacement() {
    let mut f = SledFixture::create();
    assert_eq!(f.log().snapshot_info().unwrap(), None);
    assert!(f.log().open_snapshot().unwrap().is_none());
    f.log().append(&run(1, 100, 1)).unwrap();
    f.log().sync().unwrap();
    let mut writer = f.log().snapshot_writer().unwrap();
    let first = snapshot(50, 1, 300_001);
    let w = writer.write_whole(&first).unwrap();
    f.log().adopt_snapshot(&w).unwrap();
    // Pending (adopted, not yet synced) already: chunks come from its file.
    let info = f.log().snapshot_info().unwrap().expect("a snapshot");
    assert_eq!(info.meta, first.meta);
    assert_eq!(info.len_bytes, 300_001);
    assert_eq!(info.crc32, crc32fast::hash(&first.data));
    let open = f.log().open_snapshot().unwrap().expect("a snapshot");
    assert_eq!(open.info(), info);
    assert_eq!(chunks_of(&*open, 48 * 1024), first.data);
    // Past the end: empty.
    assert!(open.read_chunk(400_000, 10).unwrap().is_empty());
    // The same answers as MemLog's default implementation.
    let mut mem = raft_core::MemLog::new();
    mem.save_snapshot(&first).unwrap();
    assert_eq!(mem.snapshot_info().unwrap(), Some(info.clone()));
    let mem_open = mem.open_snapshot().unwrap().expect("a snapshot");
    assert_eq!(mem_open.info(), info);
    assert_eq!(chunks_of(&*mem_open, 7_000), first.data);
    // Replaced twice (the first file is removed): the open transfer still reads it.
    for index in [80, 90] {
        let w = writer.write_whole(&snapshot(index, 1, 1_000)).unwrap();
        f.log().adopt_snapshot(&w).unwrap();
        f.log().sync().unwrap();
    }
    assert_eq!(snapshot_files(&f), 2);
    assert_eq!(chunks_of(&*open, 7_000), first.data);
    let second = snapshot(90, 1, 1_000);
    let open = f.log().open_snapshot().unwrap().expect("a snapshot");
    assert_eq!(chunks_of(&*open, 300), second.data);
    // Survives a reopen.
    let log = f.reopen().unwrap();
    let open = log.open_snapshot().unwrap().expect("a snapshot");
    assert_eq!(open.info().crc32, crc32fast::hash(&second.data));
    assert_eq!(chunks_of(&*open, 48 * 1024), second.data);
}
