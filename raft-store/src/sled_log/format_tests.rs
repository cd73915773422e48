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
