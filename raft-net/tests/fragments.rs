//! Messages larger than one datagram through the whole receive path (Processor), without
//! sockets: genuine fragments in any order with duplicates, forged fragments with and
//! without the cluster key, hostile fragment headers and requests behind a valid MAC,
//! requests for lost fragments. Each bad datagram is dropped and counted under its kind,
//! none panics, and reassembly memory comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_core::{Entry, EntryKind, Message, MessageBody};
use raft_net::fragment::REQUEST_AFTER_SILENCE;
use raft_net::processor::Control;
use raft_net::wire::{self, FragmentHeader, FragmentRequest};
use raft_net::{ClusterKeys, Codec, DropKind, NetStats, PeerDirectory, Processor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};

const FROM: u64 = 1;
const ME: u64 = 2;
const DATAGRAM: usize = 1_400;

fn addr() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

struct Rig {
    codec: Codec,
    processor: Processor,
    stats: Arc<NetStats>,
}

impl Rig {
    fn new(password: Option<&str>) -> Rig {
        let keys = password.map(|pw| ClusterKeys::derive(pw, "frag", 10));
        let codec = Codec::with_keys("frag", keys, DATAGRAM, Some(1024));
        let dir = PeerDirectory::new();
        dir.insert(FROM, "one", addr());
        let stats = NetStats::new_shared();
        let processor = Processor::new(ME, &codec, dir, Arc::clone(&stats));
        Rig {
            codec,
            processor,
            stats,
        }
    }

    /// Every datagram of `m` as its sender would send them.
    fn seal_all(&self, m: &Message) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let fragmented = self
            .codec
            .sealer(m.from)
            .seal_into(m, &mut |d| out.push(d.to_vec()))
            .unwrap();
        assert_eq!(fragmented.is_some(), out.len() > 1);
        out
    }

    fn process(&mut self, d: &[u8], now: Instant) -> Option<Message> {
        self.processor.process(d, addr(), now)
    }

    fn dropped(&self, kind: DropKind) -> u64 {
        self.stats.snapshot().dropped(kind)
    }
}

/// An append carrying one entry of `len` random (incompressible) bytes.
fn big_append(len: usize, seed: u64) -> Message {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    Message {
        from: FROM,
        to: ME,
        term: 3,
        body: MessageBody::Append {
            prev_index: 9,
            prev_term: 2,
            entries: vec![Entry {
                term: 3,
                index: 10,
                kind: EntryKind::Command,
                data: data.into(),
            }],
            commit: 8,
        },
    }
}

#[test]
fn a_one_mib_entry_arrives_whole_from_shuffled_and_duplicated_fragments() {
    for password in [None, Some("pw")] {
        let mut rig = Rig::new(password);
        let m = big_append(1 << 20, 1);
        let datagrams = rig.seal_all(&m);
        assert!(datagrams.len() > 700, "{}", datagrams.len());
        assert!(datagrams.iter().all(|d| d.len() <= DATAGRAM));
        // Duplicate every 50th, and reorder within runs of 100 datagrams (the replay
        // window, 128 sequence numbers, refuses datagrams that fall further behind;
        // they would be asked for again).
        let dups: Vec<Vec<u8>> = datagrams.iter().step_by(50).cloned().collect();
        let mut rng = StdRng::seed_from_u64(2);
        let mut reordered = Vec::new();
        for (i, run) in datagrams.chunks(100).enumerate() {
            let mut run = run.to_vec();
            run.extend(
                dups.get(2 * i..(2 * i + 2).min(dups.len()))
                    .unwrap_or(&[])
                    .iter()
                    .cloned(),
            );
            run.shuffle(&mut rng);
            reordered.extend(run);
        }
        let datagrams = reordered;
        let now = Instant::now();
        let mut delivered = Vec::new();
        for d in &datagrams {
            delivered.extend(rig.process(d, now));
            assert!(rig.processor.reassembly_bytes() <= 2 << 20);
        }
        assert!(
            delivered.len() == 1 && delivered[0] == m,
            "{password:?}: {} delivered",
            delivered.len()
        );
        assert_eq!(rig.processor.reassembly_bytes(), 0);
        // Duplicates: the replay window catches them when encrypted, the reassembler
        // (fragment already in, or message already assembled) when not.
        let dup_kind = if password.is_some() {
            DropKind::Replayed
        } else {
            DropKind::FragmentDuplicate
        };
        assert_eq!(rig.dropped(dup_kind), dups.len() as u64, "{password:?}");
        assert_eq!(rig.stats.snapshot().messages_reassembled, 1);
    }
}

#[test]
fn forged_fragments_without_the_key_take_no_memory() {
    let mut rig = Rig::new(Some("pw"));
    let mut outsider = Rig::new(Some("not the password"));
    let forged = outsider.seal_all(&big_append(100_000, 3));
    for d in &forged {
        assert!(rig.process(d, Instant::now()).is_none());
    }
    assert_eq!(rig.dropped(DropKind::BadMac), forged.len() as u64);
    assert_eq!(rig.processor.reassembly_bytes(), 0);
    // Flipping a bit in a genuine fragment's fragment header breaks the MAC too.
    let genuine = rig.seal_all(&big_append(100_000, 3));
    let mut bad = genuine[0].clone();
    bad[wire::HEADER_BYTES + wire::IV_BYTES] ^= 1;
    assert!(rig.process(&bad, Instant::now()).is_none());
    assert_eq!(rig.dropped(DropKind::BadMac), forged.len() as u64 + 1);
    let _ = outsider.process(&genuine[0], Instant::now());
}

#[test]
fn fragments_from_an_unknown_peer_are_dropped_before_reassembly() {
    let mut rig = Rig::new(None);
    let mut m = big_append(50_000, 4);
    m.from = 9;
    let d = rig.seal_all(&m);
    for d in &d {
        rig.process(d, Instant::now());
    }
    assert_eq!(rig.dropped(DropKind::UnknownPeer), d.len() as u64);
    assert_eq!(rig.processor.reassembly_bytes(), 0);
}

#[test]
fn hostile_fragment_headers_and_requests_behind_a_valid_mac_are_counted_not_panics() {
    for password in [None, Some("pw")] {
        let mut rig = Rig::new(password);
        let mut sealer = rig.codec.sealer(FROM);
        let frag = |h: FragmentHeader, piece_len: usize| {
            let mut body = Vec::new();
            h.write(&mut body);
            body.extend(std::iter::repeat_n(0xEE, piece_len));
            body
        };
        let good = FragmentHeader {
            message_id: 1,
            index: 0,
            count: 4,
            total_bytes: 4_000,
        };
        let mut cases: Vec<(u8, Vec<u8>, DropKind)> = vec![
            // Too short for a fragment header.
            (wire::FLAG_FRAGMENT, vec![0; 19], DropKind::FragmentInvalid),
            // Index out of range.
            (
                wire::FLAG_FRAGMENT,
                frag(FragmentHeader { index: 4, ..good }, 1_000),
                DropKind::FragmentInvalid,
            ),
            // A count that would exceed what the length allows (tiny pieces).
            (
                wire::FLAG_FRAGMENT,
                frag(
                    FragmentHeader {
                        count: 1_000,
                        ..good
                    },
                    4,
                ),
                DropKind::FragmentInvalid,
            ),
            // A message larger than message_bytes_max.
            (
                wire::FLAG_FRAGMENT,
                frag(
                    FragmentHeader {
                        count: 4_000,
                        total_bytes: u32::MAX,
                        ..good
                    },
                    1_000,
                ),
                DropKind::FragmentInvalid,
            ),
            // A piece of the wrong length.
            (
                wire::FLAG_FRAGMENT,
                frag(good, 999),
                DropKind::FragmentInvalid,
            ),
            // Both fragment flags at once.
            (
                wire::FLAG_FRAGMENT | wire::FLAG_FRAGMENT_REQUEST,
                frag(good, 1_000),
                DropKind::DecodeError,
            ),
            // A request that does not parse, one for someone else.
            (
                wire::FLAG_FRAGMENT_REQUEST,
                vec![1; 30],
                DropKind::FragmentInvalid,
            ),
        ];
        let mut other = Vec::new();
        FragmentRequest {
            to: 7,
            epoch: 1,
            message_id: 1,
            ranges: vec![(0, 1)],
        }
        .write(&mut other);
        cases.push((wire::FLAG_FRAGMENT_REQUEST, other, DropKind::WrongRecipient));
        for (flags, body, kind) in cases {
            let before = rig.dropped(kind);
            let d = sealer.seal_raw(flags, &body).to_vec();
            assert!(rig.process(&d, Instant::now()).is_none());
            assert_eq!(rig.dropped(kind), before + 1, "{kind} {password:?}");
        }
        assert_eq!(rig.processor.reassembly_bytes(), 0);

        // A consistent start, then a fragment that disagrees with it.
        let d = sealer
            .seal_raw(wire::FLAG_FRAGMENT, &frag(good, 1_000))
            .to_vec();
        assert!(rig.process(&d, Instant::now()).is_none());
        assert!(rig.processor.reassembly_bytes() >= 4_000);
        let liar = FragmentHeader {
            index: 1,
            count: 5,
            ..good
        };
        let d = sealer
            .seal_raw(wire::FLAG_FRAGMENT, &frag(liar, 800))
            .to_vec();
        assert!(rig.process(&d, Instant::now()).is_none());
        assert_eq!(rig.dropped(DropKind::FragmentInvalid), 7);
        // The rest, consistent but carrying garbage: assembled, then a decode error.
        for index in 1..4 {
            let h = FragmentHeader { index, ..good };
            let d = sealer
                .seal_raw(wire::FLAG_FRAGMENT, &frag(h, 1_000))
                .to_vec();
            assert!(rig.process(&d, Instant::now()).is_none());
        }
        assert_eq!(rig.dropped(DropKind::DecodeError), 2);
        assert_eq!(rig.processor.reassembly_bytes(), 0);
        // Compressed garbage claiming a huge decompressed length: a decode error too.
        let mut lz = (u32::MAX).to_le_bytes().to_vec();
        lz.extend([0u8; 3_996]);
        let h = FragmentHeader {
            message_id: 2,
            ..good
        };
        for index in 0..4 {
            let piece = &lz[wire::fragment_range(index, 4, 4_000)];
            let mut body = Vec::new();
            FragmentHeader { index, ..h }.write(&mut body);
            body.extend_from_slice(piece);
            let d = sealer
                .seal_raw(wire::FLAG_FRAGMENT | wire::FLAG_COMPRESSED, &body)
                .to_vec();
            assert!(rig.process(&d, Instant::now()).is_none());
        }
        assert_eq!(rig.dropped(DropKind::DecodeError), 3);
    }
}

#[test]
fn lost_fragments_are_asked_for_and_a_timed_out_message_is_dropped() {
    let mut rig = Rig::new(Some("pw"));
    let m = big_append(30_000, 5);
    let mut sealer = rig.codec.sealer(FROM);
    let mut datagrams = Vec::new();
    let fragmented = sealer
        .seal_into(&m, &mut |d| datagrams.push(d.to_vec()))
        .unwrap()
        .unwrap();
    let t0 = Instant::now();
    for (i, d) in datagrams.iter().enumerate() {
        if i != 3 && i != 4 && i != 10 {
            assert!(rig.process(d, t0).is_none());
        }
    }
    rig.processor.poll(t0);
    assert!(rig.processor.take_control().is_empty());
    let t1 = t0 + REQUEST_AFTER_SILENCE;
    assert_eq!(rig.processor.next_deadline(), Some(t1));
    rig.processor.poll(t1);
    let control = rig.processor.take_control();
    let [Control::Request(request)] = &control[..] else {
        panic!("{control:?}");
    };
    assert_eq!(request.to, FROM);
    assert_eq!(request.epoch, sealer.epoch());
    assert_eq!(request.message_id, fragmented.message_id);
    assert_eq!(request.ranges, vec![(3, 2), (10, 1)]);
    // The sender answers with fresh datagrams of the same pieces: the message completes.
    let mut got = None;
    for &(first, n) in &request.ranges {
        for i in first..first + n {
            let d = sealer.seal_fragment(&fragmented, i).to_vec();
            got = got.or(rig.process(&d, t1));
        }
    }
    assert!(got == Some(m), "the repaired message differs");

    // Peer asks us: that becomes a resend for the sender thread.
    let mut asking = rig.codec.sealer(FROM);
    let ask = FragmentRequest {
        to: ME,
        ..request.clone()
    };
    let d = asking.seal_request(&ask).to_vec();
    assert!(rig.process(&d, t1).is_none());
    assert_eq!(
        rig.processor.take_control(),
        vec![Control::Resend {
            from: FROM,
            request: ask
        }]
    );

    // A message missing a fragment for good is dropped after the timeout.
    let m2 = big_append(30_000, 6);
    let datagrams = rig.seal_all(&m2);
    for d in &datagrams[1..] {
        rig.process(d, t1);
    }
    assert!(rig.processor.reassembly_bytes() > 30_000);
    rig.processor.poll(t1 + Duration::from_secs(2));
    assert_eq!(rig.dropped(DropKind::ReassemblyTimeout), 1);
    assert_eq!(rig.processor.reassembly_bytes(), 0);
    assert_eq!(rig.processor.next_deadline(), None);
}
