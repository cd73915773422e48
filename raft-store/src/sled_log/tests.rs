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
