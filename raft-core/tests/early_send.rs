//! Thesis §10.2.1: a leader may send its appends before its own write is durable, but
//! counts itself towards a commit only for what it has persisted; everything that
//! promises durable state waits for the sync.

use bytes::Bytes;
use raft_core::{Config, MemLog, Message, MessageBody, Raft, Ready, Role};

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Persists and advances a ready the way the runtime does (MemLog: no real sync).
fn persist_and_advance(raft: &mut Raft<MemLog>, ready: Ready) {
    use raft_core::Log;
    raft.log_mut().append(&ready.entries).unwrap();
    if let Some(hs) = ready.hard_state {
        raft.log_mut().set_hard_state(hs).unwrap();
    }
    raft.advance(ready);
}

fn drain(raft: &mut Raft<MemLog>) {
    while raft.has_ready() {
        let ready = raft.ready();
        persist_and_advance(raft, ready);
    }
}

/// Node 1 leads nodes 1..=3 at term 1; both followers acknowledged its no-op.
fn leader() -> Raft<MemLog> {
    let mut raft = Raft::new(Config::new(1, [1, 2, 3]), MemLog::new(), 1).unwrap();
    raft.campaign();
    drain(&mut raft);
    raft.step(msg(2, 1, 1, MessageBody::PreVoteResponse { granted: true }));
    drain(&mut raft);
    raft.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    drain(&mut raft);
    assert_eq!(raft.role(), Role::Leader);
    let noop = raft.last_index();
    for from in [2, 3] {
        raft.step(msg(
            from,
            1,
            1,
            MessageBody::AppendResponse {
                index: noop,
                reject: None,
            },
        ));
    }
    drain(&mut raft);
    assert_eq!(raft.commit_index(), noop);
    raft
}

#[test]
fn a_leaders_appends_may_precede_its_sync_and_it_counts_itself_only_once_persisted() {
    let mut raft = leader();
    let index = raft.propose(Bytes::from_static(b"x")).unwrap().0;
    let mut ready = raft.ready();
    assert_eq!(ready.entries.last().map(|e| e.index), Some(index));
    let early = ready.take_messages_before_sync();
    assert_eq!(early.len(), 2, "one append per follower: {early:?}");
    assert!(early
        .iter()
        .all(|m| matches!(m.body, MessageBody::Append { .. })));
    assert!(ready.messages.is_empty());
    // Node 2 persists and acknowledges before the leader's own write is durable: with
    // the leader not counted, one follower of three is no majority.
    raft.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse {
            index,
            reject: None,
        },
    ));
    assert!(
        raft.commit_index() < index,
        "committed on one durable copy out of three"
    );
    // Once the leader has persisted (advance), it counts itself: two of three.
    persist_and_advance(&mut raft, ready);
    assert_eq!(raft.commit_index(), index);
    // And two followers make a majority without the leader (§10.2.1).
    let index = raft.propose(Bytes::from_static(b"y")).unwrap().0;
    let mut ready = raft.ready();
    ready.take_messages_before_sync();
    for from in [2, 3] {
        raft.step(msg(
            from,
            1,
            1,
            MessageBody::AppendResponse {
                index,
                reject: None,
            },
        ));
    }
    assert_eq!(raft.commit_index(), index);
    persist_and_advance(&mut raft, ready);
}

#[test]
fn acknowledgements_and_votes_wait_for_the_sync() {
    // A follower's acknowledgement of an append.
    let mut follower = Raft::new(Config::new(2, [1, 2, 3]), MemLog::new(), 1).unwrap();
    follower.step(msg(
        1,
        2,
        1,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![raft_core::Entry {
                term: 1,
                index: 1,
                kind: raft_core::EntryKind::Noop,
                data: Bytes::new(),
            }],
            commit: 0,
        },
    ));
    let mut ready = follower.ready();
    assert!(ready.take_messages_before_sync().is_empty());
    assert!(matches!(
        ready.messages[..],
        [Message {
            body: MessageBody::AppendResponse { reject: None, .. },
            ..
        }]
    ));
    persist_and_advance(&mut follower, ready);

    // A granted vote.
    let mut voter = Raft::new(Config::new(3, [1, 2, 3]), MemLog::new(), 1).unwrap();
    voter.step(msg(
        1,
        3,
        1,
        MessageBody::Vote {
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
        },
    ));
    let mut ready = voter.ready();
    assert!(ready.hard_state.is_some());
    assert!(ready.take_messages_before_sync().is_empty());
    assert!(matches!(
        ready.messages[..],
        [Message {
            body: MessageBody::VoteResponse { granted: true },
            ..
        }]
    ));
}
