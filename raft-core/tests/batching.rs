//! Batching of appends (`Config::inflight_small_appends_max`): while a small append to a
//! follower is unanswered, new entries wait and then go together; a follower catching up
//! gets full appends at once; `Raft::replication_held` tells the runtime when proposals
//! may wait too.

use bytes::Bytes;
use raft_core::{Config, Log, MemLog, Message, MessageBody, Raft, Role};

fn msg(from: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to: 1,
        term,
        body,
    }
}

fn ack(from: u64, index: u64) -> Message {
    msg(
        from,
        1,
        MessageBody::AppendResponse {
            index,
            reject: None,
        },
    )
}

/// Handles every ready; returns the appends sent as (to, number of entries).
fn drain(raft: &mut Raft<MemLog>) -> Vec<(u64, usize)> {
    let mut appends = Vec::new();
    while raft.has_ready() {
        let ready = raft.ready();
        raft.log_mut().append(&ready.entries).unwrap();
        if let Some(hs) = ready.hard_state {
            raft.log_mut().set_hard_state(hs).unwrap();
        }
        for m in &ready.messages {
            if let MessageBody::Append { entries, .. } = &m.body {
                appends.push((m.to, entries.len()));
            }
        }
        raft.advance(ready);
    }
    appends
}

/// Node 1 leads 1..=3 at term 1; both followers acknowledged its no-op.
fn leader(config: Config) -> Raft<MemLog> {
    let mut raft = Raft::new(config, MemLog::new(), 1).unwrap();
    raft.campaign();
    drain(&mut raft);
    raft.step(msg(2, 1, MessageBody::PreVoteResponse { granted: true }));
    drain(&mut raft);
    raft.step(msg(2, 1, MessageBody::VoteResponse { granted: true }));
    drain(&mut raft);
    assert_eq!(raft.role(), Role::Leader);
    let noop = raft.last_index();
    raft.step(ack(2, noop));
    raft.step(ack(3, noop));
    drain(&mut raft);
    raft
}

#[test]
fn entries_wait_for_the_answer_to_a_small_append_then_go_together() {
    let mut raft = leader(Config::new(1, [1, 2, 3]));
    assert!(!raft.replication_held());
    raft.propose(Bytes::from_static(b"a")).unwrap();
    assert_eq!(
        drain(&mut raft),
        vec![(2, 1), (3, 1)],
        "the first goes at once"
    );
    assert!(raft.replication_held());
    for _ in 0..5 {
        raft.propose(Bytes::from_static(b"b")).unwrap();
        assert_eq!(
            drain(&mut raft),
            vec![],
            "held while the first is unanswered"
        );
    }
    let first = raft.last_index() - 5;
    raft.step(ack(2, first));
    let sent = drain(&mut raft);
    assert!(
        sent.contains(&(2, 5)),
        "the five go together to n2: {sent:?}"
    );
    assert!(
        !sent.iter().any(|&(to, n)| to == 3 && n > 0),
        "n3 still has its append unanswered: {sent:?}"
    );
}

#[test]
fn batching_off_sends_every_proposal_at_once() {
    let mut config = Config::new(1, [1, 2, 3]);
    config.inflight_small_appends_max = config.inflight_messages_max;
    let mut raft = leader(config);
    for _ in 0..3 {
        raft.propose(Bytes::from_static(b"a")).unwrap();
        assert_eq!(drain(&mut raft), vec![(2, 1), (3, 1)]);
    }
    assert!(!raft.replication_held());
}

#[test]
fn full_appends_are_not_held_back() {
    let mut config = Config::new(1, [1, 2, 3]);
    config.append_bytes_max = 1024;
    config.snapshot_chunk_bytes = 1024;
    config.inflight_bytes_max = 64 * 1024;
    let mut raft = leader(config);
    raft.propose(Bytes::from_static(b"a")).unwrap();
    drain(&mut raft);
    // Enough entries for several full appends (3 entries of 340 bytes each): a full
    // one goes although the small one is unanswered.
    let big = Bytes::from(vec![7u8; 300]);
    for _ in 0..12 {
        raft.propose(big.clone()).unwrap();
    }
    assert_eq!(drain(&mut raft), vec![(2, 3), (3, 3)]);
    // Each answer lets the next full append go; the small remainder waits for the last.
    let mut matched = raft.last_index() - 12;
    let mut to_n2 = Vec::new();
    for _ in 0..5 {
        matched += 3;
        raft.step(ack(2, matched.min(raft.last_index())));
        // (Empty appends carry the new commit index.)
        to_n2.extend(
            drain(&mut raft)
                .into_iter()
                .filter(|s| s.0 == 2 && s.1 > 0)
                .map(|s| s.1),
        );
    }
    assert_eq!(to_n2, vec![3, 3, 3], "streamed in full appends");
}

/// Issue 18: an append of at least half `append_bytes_max` (and 4 KiB) is big. Waiting
/// for an answer would let it carry at most as much again, so it goes at once and does
/// not count as a small append in flight. Before, each 50 KB entry of raft-kv's bench
/// (60 KiB appends) waited for the follower's answer to the one before it (its round
/// trip and its disk sync), and the runtime left proposals queued meanwhile
/// (`replication_held`).
#[test]
fn big_appends_go_at_once_and_do_not_hold_small_ones() {
    let mut config = Config::new(1, [1, 2, 3]);
    config.append_bytes_max = 16 * 1024;
    config.inflight_bytes_max = 1024 * 1024;
    assert_eq!(config.big_append_bytes_min(), 8 * 1024);
    let mut raft = leader(config);
    let big = Bytes::from(vec![7u8; 9_000]);
    for n in 0..3 {
        raft.propose(big.clone()).unwrap();
        assert_eq!(
            drain(&mut raft),
            vec![(2, 1), (3, 1)],
            "big entry {n} waited for an answer"
        );
        assert!(!raft.replication_held(), "big appends count as small");
    }
    // Small entries still batch: the first goes (no small append is unanswered), the
    // next ones wait for its answer and go together.
    raft.propose(Bytes::from_static(b"s")).unwrap();
    assert_eq!(drain(&mut raft), vec![(2, 1), (3, 1)]);
    assert!(raft.replication_held());
    for _ in 0..3 {
        raft.propose(Bytes::from_static(b"t")).unwrap();
        assert_eq!(drain(&mut raft), vec![], "held behind the small append");
    }
    // A big entry behind them takes the held ones along, up to the byte limit.
    raft.propose(big).unwrap();
    let sent = drain(&mut raft);
    assert!(
        sent.contains(&(2, 4)) && sent.contains(&(3, 4)),
        "three small and one big: {sent:?}"
    );
}

/// Appends under 4 KiB are small whatever `append_bytes_max` says: with appends of at
/// most one small entry, each still waits for the answer to the one before it.
#[test]
fn tiny_appends_stay_small_under_a_tiny_append_limit() {
    let mut config = Config::new(1, [1, 2, 3]);
    config.append_bytes_max = 1024;
    config.snapshot_chunk_bytes = 1024;
    config.inflight_bytes_max = 64 * 1024;
    let mut raft = leader(config);
    let entry = Bytes::from(vec![7u8; 600]);
    raft.propose(entry.clone()).unwrap();
    assert_eq!(drain(&mut raft), vec![(2, 1), (3, 1)]);
    raft.propose(entry).unwrap();
    assert_eq!(drain(&mut raft), vec![], "a 600-byte append is not big");
    assert!(raft.replication_held());
}

/// Regression: when the first answer commits an entry, the commit index for the other
/// follower is held back (its append is unanswered). Its own answer must then release
/// the commit index even though no entries are left to send, or it learns the commit
/// only from the next heartbeat (the runtime's followers applied a heartbeat late).
#[test]
fn a_commit_index_held_back_goes_out_with_the_next_answer() {
    let mut raft = leader(Config::new(1, [1, 2, 3]));
    raft.propose(Bytes::from_static(b"a")).unwrap();
    drain(&mut raft);
    let a = raft.last_index();
    raft.step(ack(2, a));
    assert_eq!(raft.commit_index(), a, "n1 and n2 make a majority");
    let mut commits_to_3 = Vec::new();
    let mut collect = |raft: &mut Raft<MemLog>| {
        while raft.has_ready() {
            let ready = raft.ready();
            raft.log_mut().append(&ready.entries).unwrap();
            for m in &ready.messages {
                if let (3, MessageBody::Append { commit, .. }) = (m.to, &m.body) {
                    commits_to_3.push(*commit);
                }
            }
            raft.advance(ready);
        }
    };
    collect(&mut raft);
    raft.step(ack(3, a));
    collect(&mut raft);
    assert_eq!(
        commits_to_3.last(),
        Some(&a),
        "n3 is told the commit index once its answer frees the window: {commits_to_3:?}"
    );
}
