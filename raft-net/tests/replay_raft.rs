//! A replay that does get through (to a receiver that just restarted and so has no
//! replay window yet) is harmless: Raft treats it as a late duplicate. Shown with
//! raft-core's protocol state machine, fed exactly what the transport would deliver.

use std::time::Instant;

use raft_core::{Config, Entry, EntryKind, Log, MemLog, Message, MessageBody, Raft};
use raft_net::{ClusterKeys, Codec, NetConfig};

fn drive(raft: &mut Raft<MemLog>) -> Vec<Message> {
    let ready = raft.ready();
    raft.log_mut().append(&ready.entries).unwrap();
    if let Some(hs) = ready.hard_state {
        raft.log_mut().set_hard_state(hs).unwrap();
    }
    raft.log_mut().sync().unwrap();
    let out = ready.messages.clone();
    raft.advance(ready);
    out
}

fn append(prev_index: u64, entries: &[(u64, &[u8])], commit: u64) -> Message {
    let entries = entries
        .iter()
        .enumerate()
        .map(|(i, &(term, data))| Entry {
            term,
            index: prev_index + 1 + i as u64,
            kind: EntryKind::Command,
            data: data.to_vec().into(),
        })
        .collect();
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index,
            prev_term: if prev_index == 0 { 0 } else { 1 },
            entries,
            commit,
        },
    }
}

#[test]
fn replays_that_get_through_are_harmless_to_raft() {
    let keys = ClusterKeys::derive("pw", "replay", 10);
    let codec = Codec::with_keys("replay", Some(keys), NetConfig::LAN_DATAGRAM_BYTES, None);
    let mut leader = codec.sealer(1);
    // What an attacker captured: the leader's first append, then a later one.
    let old = leader.seal(&append(0, &[(1, b"a")], 0)).unwrap().to_vec();
    let newer = leader
        .seal(&append(1, &[(1, b"b"), (1, b"c")], 1))
        .unwrap()
        .to_vec();

    let mut follower = Raft::new(Config::new(2, [1, 2, 3]), MemLog::new(), 7).unwrap();
    let mut opener = codec.opener();
    for d in [&old, &newer] {
        follower.step(opener.open(d, Instant::now()).unwrap().message);
        drive(&mut follower);
    }
    assert_eq!(follower.log().last_index(), 3);

    // The follower's transport restarts: a fresh opener has no window, so the replayed
    // old datagrams are accepted once each...
    let mut restarted = codec.opener();
    for d in [&old, &newer, &old] {
        if let Ok(opened) = restarted.open(d, Instant::now()) {
            follower.step(opened.message);
            drive(&mut follower);
        }
    }
    // ...and change nothing: the log keeps all three entries (the stale append for
    // index 1 matches and truncates nothing), the term is unchanged.
    assert_eq!(follower.log().last_index(), 3);
    let entries = follower.log().entries(1, 4, u64::MAX).unwrap();
    let data: Vec<&[u8]> = entries.iter().map(|e| &e.data[..]).collect();
    assert_eq!(data, [&b"a"[..], b"b", b"c"]);
    assert_eq!(follower.term(), 1);
}
