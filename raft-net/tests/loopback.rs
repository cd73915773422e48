//! Real UDP on 127.0.0.1 with ephemeral ports: every message kind between three nodes,
//! with and without encryption; wrong passwords; replays through an attacker's relay;
//! run-time directory updates; shutdown.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use raft_core::{Entry, EntryKind, Message, MessageBody, Transport};
use raft_net::{DropKind, NetConfig, UdpTransport};

/// Sends every kind from every node to every other node and checks each inbox got
/// exactly what was sent to it.
fn exchange_every_kind(configs: Vec<NetConfig>) -> Cluster {
    let mut cluster = Cluster::start(configs);
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.config().node_id).collect();
    let mut expected: Vec<Vec<Message>> = vec![Vec::new(); ids.len()];
    for (i, &from) in ids.iter().enumerate() {
        let mut batch = Vec::new();
        for (j, &to) in ids.iter().enumerate() {
            if i == j {
                continue;
            }
            for body in every_body() {
                let m = msg(from, to, body);
                expected[j].push(m.clone());
                batch.push(m);
            }
        }
        cluster.nodes[i].send(batch);
    }
    for (j, inbox) in cluster.inboxes.iter().enumerate() {
        let mut got = recv_n(inbox, expected[j].len());
        // UDP may reorder; compare as multisets.
        let key = |m: &Message| format!("{m:?}");
        got.sort_by_key(key);
        expected[j].sort_by_key(key);
        assert_eq!(got, expected[j], "node {}", ids[j]);
    }
    for node in &cluster.nodes {
        let s = node.stats();
        assert_eq!(s.dropped_total(), 0, "n{}: {s}", node.config().node_id);
    }
    cluster
}

#[test]
fn three_nodes_exchange_every_message_kind_in_plaintext() {
    let configs = (1..=3).map(|id| config(id, "kinds", None)).collect();
    exchange_every_kind(configs);
}

#[test]
fn three_nodes_exchange_every_message_kind_encrypted() {
    let configs = (1..=3)
        .map(|id| config(id, "kinds", Some("s3cret")))
        .collect();
    exchange_every_kind(configs);
}

#[test]
fn three_nodes_exchange_every_message_kind_compressed_and_encrypted() {
    let configs = (1..=3)
        .map(|id| {
            let mut c = config(id, "kinds", Some("s3cret"));
            c.compress_bytes_min = Some(0); // compress everything that shrinks
            c
        })
        .collect();
    exchange_every_kind(configs);
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "the default KDF cost is slow without optimisation"
)]
fn the_default_kdf_cost_works_end_to_end() {
    let configs = (1..=2)
        .map(|id| {
            let mut c = config(id, "kdf", Some("s3cret"));
            c.kdf_iterations = NetConfig::DEFAULT_KDF_ITERATIONS;
            c
        })
        .collect();
    exchange_every_kind(configs);
}

/// An Append with the largest numbers whose entries add up to `max_append_bytes` of
/// size_bytes (each entry carrying at most `entry_data_max` bytes).
fn full_append(from: u64, to: u64, max_append_bytes: u64, entry_data_max: u64) -> Message {
    let mut entries = Vec::new();
    let mut left = max_append_bytes;
    let mut index = u64::MAX / 2;
    while left >= Entry::OVERHEAD_BYTES {
        let len = (left - Entry::OVERHEAD_BYTES).min(entry_data_max);
        entries.push(Entry {
            term: u64::MAX,
            index,
            kind: EntryKind::Command,
            data: vec![0xA5; len as usize].into(),
        });
        index += 1;
        left -= len + Entry::OVERHEAD_BYTES;
    }
    Message {
        from,
        to,
        term: u64::MAX,
        body: MessageBody::Append {
            prev_index: u64::MAX,
            prev_term: u64::MAX,
            entries,
            commit: u64::MAX,
        },
    }
}

#[test]
fn a_full_append_fits_one_datagram_and_a_larger_one_goes_in_fragments() {
    for datagram_bytes_max in [
        NetConfig::INTERNET_SAFE_DATAGRAM_BYTES,
        NetConfig::LAN_DATAGRAM_BYTES,
    ] {
        for password in [None, Some("pw")] {
            let configs = (1..=2)
                .map(|id| {
                    let mut c = config(id, "full", password);
                    c.datagram_bytes_max = datagram_bytes_max;
                    c.compress_bytes_min = None; // the worst case: nothing shrinks
                    c
                })
                .collect();
            let mut cluster = Cluster::start(configs);
            let max = cluster.nodes[0].max_append_bytes();
            let full = full_append(1, 2, max, 1000);
            cluster.nodes[0].send(vec![full.clone()]);
            let got = recv_n(&cluster.inboxes[1], 1);
            assert_eq!(got[0], full, "{datagram_bytes_max} {password:?}");
            let sent = cluster.nodes[0].stats();
            assert!(sent.sent_bytes <= datagram_bytes_max as u64, "{sent}");

            assert_eq!(sent.fragmented_messages_sent, 0, "{sent}");

            // size_bytes is an upper bound, so slightly more may still fit; an entry as
            // large as the datagram cannot: it travels in fragments.
            let over = full_append(
                1,
                2,
                datagram_bytes_max as u64 + Entry::OVERHEAD_BYTES,
                u64::MAX,
            );
            cluster.nodes[0].send(vec![over.clone()]);
            let got = recv_n(&cluster.inboxes[1], 1);
            assert_eq!(got[0], over, "{datagram_bytes_max} {password:?}");
            let sent = cluster.nodes[0].stats();
            assert_eq!(sent.fragmented_messages_sent, 1, "{sent}");
            // The processor counts after it delivers: wait for the counter.
            assert!(
                wait_until(DEADLINE, || cluster.nodes[1].stats().messages_reassembled
                    == 1),
                "{}",
                cluster.nodes[1].stats()
            );

            // Past message_bytes_max it is dropped and counted, no panic.
            let huge = full_append(
                1,
                2,
                NetConfig::MESSAGE_BYTES_MAX_DEFAULT as u64 + Entry::OVERHEAD_BYTES,
                u64::MAX,
            );
            let huge = Message {
                term: u64::MAX - 1, // not a repeat of `over`'s entries (same indexes)
                ..huge
            };
            cluster.nodes[0].send(vec![huge]);
            assert!(
                wait_until(DEADLINE, || cluster.nodes[0]
                    .stats()
                    .dropped(DropKind::TooLarge)
                    == 1),
                "{datagram_bytes_max} {password:?}: {}",
                cluster.nodes[0].stats()
            );
        }
    }
}

#[test]
fn a_wrong_or_missing_password_can_neither_read_nor_inject() {
    let configs = vec![
        config(1, "sec", Some("right")),
        config(2, "sec", Some("right")),
        config(3, "sec", Some("wrong")),
        config(4, "sec", None),
    ];
    let mut cluster = Cluster::start(configs);
    let secret = MessageBody::Propose {
        request_id: 1,
        data: b"launch codes 0000".to_vec().into(),
    };

    // Inject: 3 (wrong password) and 4 (none) send to 1.
    cluster.nodes[2].send(vec![msg(3, 1, secret.clone())]);
    cluster.nodes[3].send(vec![msg(4, 1, secret.clone())]);
    // Read: 1 sends to 3 and 4.
    cluster.nodes[0].send(vec![msg(1, 3, secret.clone()), msg(1, 4, secret.clone())]);
    let n1 = &cluster.nodes[0];
    assert!(
        wait_until(DEADLINE, || {
            let s = n1.stats();
            s.dropped(DropKind::BadMac) == 1 && s.dropped(DropKind::SecurityMismatch) == 1
        }),
        "{}",
        n1.stats()
    );
    assert!(wait_until(DEADLINE, || cluster.nodes[2]
        .stats()
        .dropped(DropKind::BadMac)
        == 1));
    assert!(wait_until(DEADLINE, || cluster.nodes[3]
        .stats()
        .dropped(DropKind::SecurityMismatch)
        == 1));
    // The legitimate pair still talks, and nothing leaked into any inbox.
    cluster.nodes[1].send(vec![msg(2, 1, secret.clone())]);
    assert_eq!(recv_n(&cluster.inboxes[0], 1)[0].from, 2);
    for inbox in &cluster.inboxes {
        assert!(inbox.try_recv().is_err());
    }

    // And the bytes on the wire do not contain the plaintext: capture what 1 sends.
    let eavesdropper = UdpSocket::bind("127.0.0.1:0").unwrap();
    eavesdropper.set_read_timeout(Some(DEADLINE)).unwrap();
    cluster.nodes[0]
        .directory()
        .insert(5, "eve", eavesdropper.local_addr().unwrap());
    cluster.nodes[0].send(vec![msg(1, 5, secret)]);
    let mut buf = [0u8; 2048];
    let (n, _) = eavesdropper.recv_from(&mut buf).unwrap();
    assert!(n > 40);
    assert!(!buf[..n].windows(12).any(|w| w == b"launch codes"));
}

#[test]
fn replayed_datagrams_are_harmless() {
    let mut cluster = Cluster::start(vec![
        config(1, "replay", Some("pw")),
        config(2, "replay", Some("pw")),
    ]);
    // The attacker sits on the path: node 1 believes node 2 lives at the relay.
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay.set_read_timeout(Some(DEADLINE)).unwrap();
    let n2_addr = cluster.nodes[1].local_addr();
    cluster.nodes[0]
        .directory()
        .insert(2, "n2", relay.local_addr().unwrap());

    let relay_all = |count: usize| -> Vec<Vec<u8>> {
        let mut captured = Vec::new();
        let mut buf = [0u8; 65_536];
        for _ in 0..count {
            let (n, _) = relay.recv_from(&mut buf).expect("relay receives");
            captured.push(buf[..n].to_vec());
            relay.send_to(&buf[..n], n2_addr).unwrap();
        }
        captured
    };

    let sent: Vec<Message> = every_body().into_iter().map(|b| msg(1, 2, b)).collect();
    cluster.nodes[0].send(sent.clone());
    let captured = relay_all(sent.len());
    assert_eq!(recv_n(&cluster.inboxes[1], sent.len()).len(), sent.len());

    // Replay everything three times: all counted, none delivered.
    for _ in 0..3 {
        for d in &captured {
            relay.send_to(d, n2_addr).unwrap();
        }
    }
    let n2 = cluster.nodes[1].stats_handle();
    let replays = 3 * captured.len() as u64;
    assert!(
        wait_until(DEADLINE, || n2.snapshot().dropped(DropKind::Replayed)
            == replays),
        "{}",
        n2.snapshot()
    );
    assert!(cluster.inboxes[1].try_recv().is_err());

    // Node 1 restarts (new epoch). Its new datagrams pass; the old ones still do not.
    cluster.nodes[0].stop();
    let mut restarted = UdpTransport::bind(config(1, "replay", Some("pw"))).unwrap();
    restarted
        .directory()
        .insert(2, "n2", relay.local_addr().unwrap());
    let (tx, _rx) = crossbeam_channel::bounded(16);
    restarted.start(tx).unwrap();
    let hello = msg(
        1,
        2,
        MessageBody::Heartbeat {
            commit: 1,
            read_round: 0,
        },
    );
    restarted.send(vec![hello.clone()]);
    relay_all(1);
    assert_eq!(recv_n(&cluster.inboxes[1], 1)[0], hello);
    for d in &captured {
        relay.send_to(d, n2_addr).unwrap();
    }
    let replays = replays + captured.len() as u64;
    assert!(
        wait_until(DEADLINE, || n2.snapshot().dropped(DropKind::Replayed)
            == replays),
        "{}",
        n2.snapshot()
    );
    assert!(cluster.inboxes[1].try_recv().is_err());
    restarted.stop();
}

#[test]
fn the_peer_directory_is_updated_at_run_time() {
    let mut cluster = Cluster::start(vec![config(1, "dir", None), config(2, "dir", None)]);
    let hb = msg(
        1,
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    );
    let dir = cluster.nodes[0].directory();
    let n2 = dir.remove(2).unwrap();
    cluster.nodes[0].send(vec![hb.clone()]);
    assert!(wait_until(DEADLINE, || cluster.nodes[0]
        .stats()
        .dropped(DropKind::NoAddress)
        == 1));
    dir.insert(2, n2.name, n2.addr);
    cluster.nodes[0].send(vec![hb.clone()]);
    assert_eq!(recv_n(&cluster.inboxes[1], 1)[0], hb);

    // The receiving side: a sender it does not know is dropped.
    cluster.nodes[1].directory().remove(1);
    cluster.nodes[0].send(vec![hb]);
    assert!(wait_until(DEADLINE, || cluster.nodes[1]
        .stats()
        .dropped(DropKind::UnknownPeer)
        == 1));
}

#[test]
fn another_cluster_and_a_misaddressed_message_are_dropped() {
    let mut cluster = Cluster::start(vec![
        config(1, "blue", None),
        config(2, "blue", None),
        config(3, "green", None),
    ]);
    cluster.nodes[2].send(vec![msg(3, 1, MessageBody::TimeoutNow)]);
    assert!(wait_until(DEADLINE, || cluster.nodes[0]
        .stats()
        .dropped(DropKind::WrongCluster)
        == 1));
    // Node 1 sends a message for node 3 to node 2's address.
    let n2_addr = cluster.nodes[1].local_addr();
    cluster.nodes[0].directory().insert(3, "n3", n2_addr);
    cluster.nodes[0].send(vec![msg(1, 3, MessageBody::TimeoutNow)]);
    assert!(wait_until(DEADLINE, || cluster.nodes[1]
        .stats()
        .dropped(DropKind::WrongRecipient)
        == 1));
    assert!(cluster.inboxes[0].try_recv().is_err());
    assert!(cluster.inboxes[1].try_recv().is_err());
}

#[test]
fn garbage_from_the_network_is_counted_not_delivered() {
    let cluster = Cluster::start(vec![config(1, "junk", Some("pw"))]);
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = cluster.nodes[0].local_addr();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..200usize {
        let len = i * 7 % 1500;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        attacker.send_to(&junk, target).unwrap();
    }
    let n1 = &cluster.nodes[0];
    // Loopback may still lose datagrams under load, so wait for what arrived.
    assert!(
        wait_until(DEADLINE, || {
            let s = n1.stats();
            s.received_datagrams > 0 && s.dropped_total() == s.received_datagrams
        }),
        "{}",
        n1.stats()
    );
    assert!(cluster.inboxes[0].try_recv().is_err());
}

#[test]
fn stop_joins_every_thread_promptly_and_is_idempotent() {
    let mut t = UdpTransport::bind(config(1, "stop", None)).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    t.start(tx).unwrap();
    assert!(
        t.start(crossbeam_channel::bounded(1).0).is_err(),
        "start twice is refused"
    );
    #[cfg(target_os = "linux")]
    {
        // A new thread names itself as it starts, so wait for the names to appear.
        // Linux keeps 15 characters of a thread's name.
        let names = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .collect()
        };
        let roles = ["raft-listener-n", "raft-processor-", "raft-sender-n1"];
        assert!(
            wait_until(DEADLINE, || {
                let names = names();
                roles
                    .iter()
                    .all(|role| names.iter().any(|n| n.starts_with(role)))
            }),
            "{roles:?} not all in {:?}",
            names()
        );
    }
    let started = Instant::now();
    t.stop();
    // The wake-up datagram makes this immediate; the bound is for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The inbox's sender (held by the processor) is gone: every thread ended.
    assert!(rx.recv_timeout(DEADLINE).is_err());
    t.stop();
    t.send(vec![msg(1, 2, MessageBody::TimeoutNow)]);
    assert_eq!(t.stats().dropped(DropKind::NotRunning), 1);
}

#[test]
fn a_full_inbox_drops_and_counts() {
    let mut a = UdpTransport::bind(config(1, "full", None)).unwrap();
    let mut b = UdpTransport::bind(config(2, "full", None)).unwrap();
    a.directory().insert(2, "b", b.local_addr());
    b.directory().insert(1, "a", a.local_addr());
    let (tx_a, _rx_a) = crossbeam_channel::bounded(1);
    let (tx_b, rx_b) = crossbeam_channel::bounded(1);
    a.start(tx_a).unwrap();
    b.start(tx_b).unwrap();
    let hb = msg(
        1,
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    );
    a.send(vec![hb.clone(), hb.clone(), hb]);
    assert!(wait_until(DEADLINE, || {
        let s = b.stats();
        s.delivered_messages + s.dropped(DropKind::InboxFull) == 3
    }));
    assert_eq!(b.stats().delivered_messages, 1);
    assert!(rx_b.try_recv().is_ok());
}
