//! InstallSnapshot at the protocol level: chunking, resumption, checksum, and that a
//! follower discards exactly the entries a snapshot covers (compare hashicorp/raft#697,
//! where a conflicting entry survived an install).

use raft_core::{
    Config, Entry, EntryKind, HardState, Log, MemLog, Message, MessageBody, Raft, SnapshotMeta,
};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Command,
        data: vec![index as u8].into(),
    }
}

/// Node 3 of {1, 2, 3} at term 3 with `log` as (index, term) pairs, commit 3.
fn follower(log: &[(u64, u64)]) -> Raft<MemLog> {
    let mut mem = MemLog::new();
    let entries: Vec<Entry> = log.iter().map(|&(i, t)| entry(i, t)).collect();
    mem.append(&entries).unwrap();
    mem.set_hard_state(HardState {
        term: 3,
        vote: None,
        commit: 3,
    })
    .unwrap();
    Raft::new(Config::new(3, [1, 2, 3]), mem, 1).unwrap()
}

fn chunk(meta: SnapshotMeta, offset: u64, data: &[u8], done: Option<u32>) -> Message {
    Message {
        from: 1,
        to: 3,
        term: 4,
        body: MessageBody::InstallSnapshot {
            meta,
            offset,
            data: data.to_vec().into(),
            done,
        },
    }
}

/// Handles one ready the way the runtime does; returns the messages sent.
fn handle(raft: &mut Raft<MemLog>) -> Vec<Message> {
    thread_local! {
        // The follower's received snapshot, across calls (each test drives one follower
        // on its own thread).
        static INSTALLER: std::cell::RefCell<raft_core::InMemoryInstaller> = Default::default();
    }
    INSTALLER.with(|i| handle_with(raft, &mut i.borrow_mut()))
}

fn handle_with(
    raft: &mut Raft<MemLog>,
    installer: &mut raft_core::InMemoryInstaller,
) -> Vec<Message> {
    let mut msgs = Vec::new();
    // A received snapshot is installed (and acknowledged) by the ready after the one
    // that completed it.
    loop {
        msgs.extend(handle_one(raft, installer));
        if !raft.has_ready() {
            return msgs;
        }
    }
}

fn handle_one(
    raft: &mut Raft<MemLog>,
    installer: &mut raft_core::InMemoryInstaller,
) -> Vec<Message> {
    let ready = raft.ready();
    let log = raft.log_mut();
    installer.persist(log, &ready).unwrap();
    log.append(&ready.entries).unwrap();
    if let Some(hs) = ready.hard_state {
        log.set_hard_state(hs).unwrap();
    }
    log.sync().unwrap();
    let msgs = ready.messages.clone();
    raft.advance(ready);
    installer.after_advance(raft);
    msgs
}

const META: SnapshotMeta = SnapshotMeta::at(5, 3);

#[test]
fn a_conflicting_suffix_does_not_survive_a_snapshot_install() {
    // Entries 4..6 are an old leader's term-2 entries; the snapshot says 5 is term 3.
    let mut f = follower(&[(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]);
    let data = b"state up to 5";
    f.step(chunk(META, 0, data, Some(crc32fast::hash(data))));
    let msgs = handle(&mut f);
    assert!(
        msgs.iter().any(|m| matches!(
            m.body,
            MessageBody::AppendResponse {
                index: 5,
                reject: None
            }
        )),
        "{msgs:?}"
    );
    assert_eq!(f.last_index(), 5, "the conflicting entry 6@2 is gone");
    assert_eq!(f.term_at(6), None);
    assert_eq!(f.term_at(5), Some(3));
    assert_eq!(f.commit_index(), 5);
    assert_eq!((f.log().first_index(), f.log().last_index()), (6, 5));
    assert_eq!(f.log().snapshot().unwrap().unwrap().data.as_ref(), data);
}

#[test]
fn a_consistent_suffix_after_the_snapshot_is_kept() {
    let mut f = follower(&[(1, 1), (2, 1), (3, 1), (4, 3), (5, 3), (6, 3)]);
    let data = b"state up to 5";
    f.step(chunk(META, 0, data, Some(crc32fast::hash(data))));
    handle(&mut f);
    assert_eq!(
        f.last_index(),
        6,
        "6@3 agrees with the snapshot and is kept"
    );
    assert_eq!(f.term_at(6), Some(3));
    assert_eq!(
        f.log().first_index(),
        6,
        "only entries the snapshot covers are discarded"
    );
}

#[test]
fn chunks_are_acknowledged_by_offset_a_gap_is_filled_and_a_bad_checksum_restarts_cleanly() {
    let mut f = follower(&[(1, 1), (2, 1), (3, 1)]);
    let data: Vec<u8> = (0..100u8).collect();
    let crc = crc32fast::hash(&data);
    let next_offset = |msgs: &[Message]| {
        msgs.iter()
            .find_map(|m| match m.body {
                MessageBody::SnapshotResponse { next_offset, .. } => Some(next_offset),
                _ => None,
            })
            .expect("a snapshot response")
    };
    f.step(chunk(META, 0, &data[..40], None));
    assert_eq!(next_offset(&handle(&mut f)), 40);
    // A duplicate chunk is harmless.
    f.step(chunk(META, 0, &data[..40], None));
    assert_eq!(next_offset(&handle(&mut f)), 40);
    // The chunk at 40 is late (or lost): the one at 80 waits for it, and the leader is
    // told 40. This last chunk carries a checksum the whole will fail.
    f.step(chunk(META, 80, &data[80..], Some(crc ^ 1)));
    assert_eq!(next_offset(&handle(&mut f)), 40);
    assert_eq!(f.last_index(), 3, "nothing installed yet");
    // The chunk at 40 fills the gap; the snapshot is whole but fails its checksum:
    // start over from 0.
    f.step(chunk(META, 40, &data[40..80], None));
    assert_eq!(next_offset(&handle(&mut f)), 0);
    assert_eq!(f.last_index(), 3, "a corrupt snapshot is never installed");
    // The whole transfer again, correctly.
    f.step(chunk(META, 0, &data[..50], None));
    handle(&mut f);
    f.step(chunk(META, 50, &data[50..], Some(crc)));
    handle(&mut f);
    assert_eq!(f.last_index(), 5);
    assert_eq!(
        f.log().snapshot().unwrap().unwrap().data.as_ref(),
        &data[..]
    );
}

#[test]
fn a_snapshot_larger_than_the_limit_is_refused() {
    let mut mem = MemLog::new();
    mem.append(&[entry(1, 1)]).unwrap();
    let mut c = Config::new(3, [1, 2, 3]);
    c.snapshot_bytes_max = 10;
    let mut f = Raft::new(c, mem, 1).unwrap();
    f.step(chunk(META, 0, &[0; 8], None));
    handle(&mut f);
    f.step(chunk(META, 8, &[0; 8], Some(0)));
    handle(&mut f);
    assert_eq!(f.last_index(), 1, "nothing installed");
}

#[test]
fn a_snapshot_at_or_below_the_commit_index_is_ignored() {
    let mut f = follower(&[(1, 1), (2, 1), (3, 1), (4, 3), (5, 3), (6, 3)]);
    f.step(Message {
        from: 1,
        to: 3,
        term: 4,
        body: MessageBody::Heartbeat {
            commit: 6,
            read_round: 1,
        },
    });
    handle(&mut f);
    assert_eq!(f.commit_index(), 6);
    f.step(chunk(META, 0, b"old", Some(crc32fast::hash(b"old"))));
    let msgs = handle(&mut f);
    assert!(msgs.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse {
            index: 6,
            reject: None
        }
    )));
    assert_eq!(f.log().snapshot().unwrap(), None);
    assert_eq!(f.last_index(), 6);
}

#[test]
fn chunks_ahead_of_a_gap_wait_within_the_window_and_leftovers_beyond_it_take_no_room() {
    let mut mem = MemLog::new();
    mem.append(&[entry(1, 1)]).unwrap();
    let mut c = Config::new(3, [1, 2, 3]);
    c.append_bytes_max = 40;
    c.snapshot_chunk_bytes = 10;
    c.inflight_bytes_max = 40;
    let mut f = Raft::new(c, mem, 1).unwrap();
    let data: Vec<u8> = (0..100u8).collect();
    let crc = crc32fast::hash(&data);
    let at = |o: usize| &data[o..o + 10];
    let next_offset = |msgs: &[Message]| {
        msgs.iter()
            .find_map(|m| match m.body {
                MessageBody::SnapshotResponse { next_offset, .. } => Some(next_offset),
                _ => None,
            })
            .expect("a snapshot response")
    };
    // Leftovers far past the window (from an attempt before the follower restarted,
    // say) are not kept: they would fill the room reordered chunks need.
    for o in [60, 70, 80] {
        f.step(chunk(META, o as u64, at(o), None));
        handle(&mut f);
    }
    // The window's chunks arrive newest first: each waits for the gap before it.
    for o in [30, 20, 10] {
        f.step(chunk(META, o as u64, at(o), None));
        assert_eq!(next_offset(&handle(&mut f)), 0);
    }
    f.step(chunk(META, 0, at(0), None));
    assert_eq!(next_offset(&handle(&mut f)), 40, "the gap filled");
    // The next window, newest first again; then the last chunk before the one it
    // follows.
    for o in [70, 60, 50] {
        f.step(chunk(META, o as u64, at(o), None));
        handle(&mut f);
    }
    f.step(chunk(META, 40, at(40), None));
    assert_eq!(next_offset(&handle(&mut f)), 80);
    f.step(chunk(META, 90, at(90), Some(crc)));
    assert_eq!(next_offset(&handle(&mut f)), 80);
    f.step(chunk(META, 80, at(80), None));
    handle(&mut f);
    assert_eq!(f.last_index(), 5, "installed");
    assert_eq!(
        f.log().snapshot().unwrap().unwrap().data.as_ref(),
        &data[..]
    );
}

/// Thesis §4.1 and the snapshot metadata (as etcd-io/raft's `ConfState`): a follower that
/// installs a snapshot takes the configuration its metadata carries, in force from its
/// last index, and the stored snapshot keeps it (a restart resumes with it). The state
/// machine's bytes are stored as sent: the configuration is not mixed into them.
#[test]
fn an_installed_snapshot_brings_its_configuration() {
    let mut f = follower(&[(1, 1), (2, 1), (3, 1)]);
    assert_eq!(f.membership(), &raft_core::Membership::new([1, 2, 3], []));
    let m = raft_core::Membership::new([1, 2, 4], [3]);
    let meta = SnapshotMeta {
        membership: Some(m.clone()),
        ..META
    };
    let data = b"state up to 5";
    f.step(chunk(meta.clone(), 0, data, Some(crc32fast::hash(data))));
    handle(&mut f);
    assert_eq!(f.commit_index(), 5);
    assert_eq!(f.membership(), &m, "n3 is a learner now");
    assert_eq!(f.membership_at(5), &m);
    let stored = f.log().snapshot().unwrap().unwrap();
    assert_eq!(stored.meta, meta);
    assert_eq!(stored.data.as_ref(), data);
    // A restart from that log resumes with the snapshot's configuration, not with the
    // initial voters of its config.
    let log = std::mem::take(f.log_mut());
    let f = Raft::new(Config::new(3, [1, 2, 3]), log, 2).unwrap();
    assert_eq!(f.membership(), &m);
}

/// A snapshot whose configuration is invalid (no voters) is refused once received:
/// nothing is installed, the configuration and log stay, and the error is logged.
#[test]
fn a_snapshot_with_an_invalid_configuration_is_refused() {
    let mut f = follower(&[(1, 1), (2, 1), (3, 1)]);
    let meta = SnapshotMeta {
        membership: Some(raft_core::Membership::new([], [3])),
        ..META
    };
    let data = b"state up to 5";
    f.step(chunk(meta, 0, data, Some(crc32fast::hash(data))));
    let msgs = handle(&mut f);
    assert!(
        !msgs
            .iter()
            .any(|m| matches!(m.body, MessageBody::AppendResponse { index: 5, .. })),
        "not acknowledged: {msgs:?}"
    );
    assert_eq!(f.commit_index(), 3);
    assert_eq!(f.last_index(), 3);
    assert_eq!(f.membership(), &raft_core::Membership::new([1, 2, 3], []));
    assert!(f.log().snapshot().unwrap().is_none());
}
