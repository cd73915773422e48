//! `SledLog`'s `SnapshotWriter` (issue 18, item 2): snapshot files written on another
//! thread while the log goes on appending and syncing, then adopted on the log's thread;
//! only an adopted and synced snapshot survives a reopen, and the directory keeps at most
//! two snapshot files.

mod common;

use bytes::Bytes;
use common::{run, Fixture, SledFixture};
use raft_core::{Log, Snapshot, SnapshotMeta};

fn snapshot(index: u64, term: u64, len: usize) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: index,
            last_term: term,
        },
        data: Bytes::from(
            (0..len)
                .map(|i| (i as u64 * 31 + index) as u8)
                .collect::<Vec<_>>(),
        ),
    }
}

fn snapshot_files(f: &SledFixture) -> usize {
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
    f.log().compact(snap.meta).unwrap();
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
        meta: SnapshotMeta {
            last_index: 90,
            last_term: 1,
        },
        id: 9_999,
        size_bytes: 1,
    };
    let e = f.log().adopt_snapshot(&bogus).unwrap_err();
    assert!(e.to_string().contains("9999"), "{e}");
    assert_eq!(f.log().snapshot().unwrap(), Some(snapshot(80, 1, 5_000)));
}
