//! Hostile input through the whole receive path (Processor: header checks, MAC, replay
//! window, decryption, decompression, decoding, peer checks), without sockets, so every
//! case is deterministic. Each bad datagram must be dropped and counted under its kind;
//! none may panic. The proptests are the CI version of the fuzz target in ../fuzz.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use proptest::prelude::*;
use raft_core::{Entry, EntryKind, Message, MessageBody};
use raft_net::wire::{self, Header};
use raft_net::{ClusterKeys, Codec, DropKind, NetConfig, NetStats, PeerDirectory, Processor};

const FROM: u64 = 1;
const ME: u64 = 2;

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
        Rig::with_cluster("hostile", password)
    }

    fn with_cluster(cluster: &str, password: Option<&str>) -> Rig {
        let keys = password.map(|pw| ClusterKeys::derive(pw, cluster, 10));
        let codec = Codec::with_keys(cluster, keys, NetConfig::LAN_DATAGRAM_BYTES, Some(256));
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

    fn seal(&self, m: &Message) -> Vec<u8> {
        self.codec.sealer(m.from).seal(m).unwrap().to_vec()
    }

    /// Processes one datagram; returns the kind it was dropped under, or None if delivered.
    fn verdict(&mut self, datagram: &[u8]) -> Option<DropKind> {
        let before = self.stats.snapshot();
        let delivered = self.processor.process(datagram, addr(), Instant::now());
        let after = self.stats.snapshot();
        let changed: Vec<DropKind> = DropKind::ALL
            .iter()
            .copied()
            .filter(|&k| after.dropped(k) != before.dropped(k))
            .collect();
        match delivered {
            Some(_) => {
                assert!(changed.is_empty(), "delivered and counted as {changed:?}");
                None
            }
            None => {
                assert_eq!(
                    changed.len(),
                    1,
                    "a drop is counted under exactly one kind: {changed:?}"
                );
                assert_eq!(after.dropped_total(), before.dropped_total() + 1);
                Some(changed[0])
            }
        }
    }
}

fn heartbeat() -> Message {
    msg(
        FROM,
        ME,
        MessageBody::Heartbeat {
            commit: 1,
            read_round: 2,
        },
    )
}

fn big_append() -> Message {
    let entries = (1..=64)
        .map(|i| Entry {
            term: 1,
            index: i,
            kind: EntryKind::Command,
            data: vec![b'x'; 100].into(),
        })
        .collect();
    msg(
        FROM,
        ME,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries,
            commit: 0,
        },
    )
}

#[test]
fn valid_datagrams_are_delivered_in_both_modes() {
    for pw in [None, Some("pw")] {
        let mut rig = Rig::new(pw);
        for m in [heartbeat(), big_append()] {
            let d = rig.seal(&m);
            assert_eq!(rig.verdict(&d), None);
        }
    }
}

#[test]
fn truncated_datagrams_are_counted() {
    for pw in [None, Some("pw")] {
        let mut rig = Rig::new(pw);
        let d = rig.seal(&big_append());
        for len in 0..d.len() {
            let kind = rig.verdict(&d[..len]).expect("a prefix is never delivered");
            if len < wire::HEADER_BYTES {
                assert_eq!(kind, DropKind::Truncated, "len {len}");
            } else if pw.is_some() {
                // The MAC (or the block framing) catches every cut of an encrypted datagram.
                assert!(
                    matches!(kind, DropKind::Truncated | DropKind::BadMac),
                    "len {len}: {kind}"
                );
            } else {
                assert_eq!(kind, DropKind::DecodeError, "len {len}");
            }
        }
    }
}

#[test]
fn oversized_datagrams_are_counted() {
    let mut rig = Rig::new(None);
    let mut d = rig.seal(&heartbeat());
    d.resize(wire::MAX_UDP_PAYLOAD_BYTES + 1, 0);
    assert_eq!(rig.verdict(&d), Some(DropKind::Oversized));
    assert_eq!(rig.verdict(&vec![0u8; 1 << 20]), Some(DropKind::Oversized));
}

#[test]
fn wrong_magic_version_and_cluster_are_counted() {
    for pw in [None, Some("pw")] {
        let mut rig = Rig::new(pw);
        let good = rig.seal(&heartbeat());
        let mut d = good.clone();
        d[0] = b'X';
        assert_eq!(rig.verdict(&d), Some(DropKind::WrongMagic));
        // 1 is the version before membership changes: refused like any other.
        for v in [0u8, 1, 3, 255] {
            let mut d = good.clone();
            d[4] = v;
            assert_eq!(rig.verdict(&d), Some(DropKind::WrongVersion), "version {v}");
            // Even a bare prefix naming a future version is counted as such.
            assert_eq!(
                rig.verdict(&d[..wire::PREFIX_BYTES]),
                Some(DropKind::WrongVersion)
            );
        }
        let other = Rig::with_cluster("someone else", pw);
        assert_eq!(
            rig.verdict(&other.seal(&heartbeat())),
            Some(DropKind::WrongCluster)
        );
    }
}

#[test]
fn unknown_flags_and_reserved_bytes_are_decode_errors() {
    let mut rig = Rig::new(None);
    let good = rig.seal(&heartbeat());
    let mut d = good.clone();
    d[5] |= 0x80;
    assert_eq!(rig.verdict(&d), Some(DropKind::DecodeError));
    let mut d = good;
    d[7] = 1;
    assert_eq!(rig.verdict(&d), Some(DropKind::DecodeError));
}

#[test]
fn every_bit_flip_of_an_encrypted_datagram_is_caught() {
    let mut rig = Rig::new(Some("pw"));
    let d = rig.seal(&heartbeat());
    for byte in 0..d.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = d.clone();
            bad[byte] ^= bit;
            let kind = rig
                .verdict(&bad)
                .unwrap_or_else(|| panic!("byte {byte} bit {bit:#x} delivered"));
            let expected = match byte {
                0..=3 => DropKind::WrongMagic,
                4 => DropKind::WrongVersion,
                5 if bit == 0x80 => DropKind::DecodeError,
                5 => DropKind::BadMac, // the compression flag is under the MAC
                6..=7 => DropKind::DecodeError,
                8..=15 => DropKind::WrongCluster,
                _ => DropKind::BadMac,
            };
            assert_eq!(kind, expected, "byte {byte} bit {bit:#x}");
        }
    }
    // The original still passes once; then it is a replay.
    assert_eq!(rig.verdict(&d), None);
    assert_eq!(rig.verdict(&d), Some(DropKind::Replayed));
}

#[test]
fn wrong_password_and_plaintext_mismatch_are_counted() {
    let mut rig = Rig::new(Some("right"));
    let wrong = Rig::new(Some("wrong"));
    assert_eq!(
        rig.verdict(&wrong.seal(&heartbeat())),
        Some(DropKind::BadMac)
    );
    let plain = Rig::new(None);
    assert_eq!(
        rig.verdict(&plain.seal(&heartbeat())),
        Some(DropKind::SecurityMismatch)
    );
    let mut plain = Rig::new(None);
    assert_eq!(
        plain.verdict(&rig.seal(&heartbeat())),
        Some(DropKind::SecurityMismatch)
    );
}

#[test]
fn replayed_datagrams_are_counted_and_not_delivered() {
    let mut rig = Rig::new(Some("pw"));
    let mut sealer = rig.codec.sealer(FROM);
    let first = sealer.seal(&heartbeat()).unwrap().to_vec();
    let second = sealer.seal(&big_append()).unwrap().to_vec();
    // Reordered delivery is fine; each datagram passes once.
    assert_eq!(rig.verdict(&second), None);
    assert_eq!(rig.verdict(&first), None);
    for _ in 0..5 {
        assert_eq!(rig.verdict(&first), Some(DropKind::Replayed));
        assert_eq!(rig.verdict(&second), Some(DropKind::Replayed));
    }
    // A restarted sender (new epoch) is accepted; then its old datagrams are refused.
    let fresh = rig.codec.sealer(FROM).seal(&heartbeat()).unwrap().to_vec();
    assert_eq!(rig.verdict(&fresh), None);
    assert_eq!(rig.verdict(&first), Some(DropKind::Replayed));
}

#[test]
fn unknown_peer_wrong_recipient_and_forged_sender_are_counted() {
    let mut rig = Rig::new(Some("pw"));
    // Node 7 has the password but is not in the directory.
    let from7 = rig
        .codec
        .sealer(7)
        .seal(&msg(7, ME, MessageBody::TimeoutNow))
        .unwrap()
        .to_vec();
    assert_eq!(rig.verdict(&from7), Some(DropKind::UnknownPeer));
    let to9 = rig.seal(&msg(FROM, 9, MessageBody::TimeoutNow));
    assert_eq!(rig.verdict(&to9), Some(DropKind::WrongRecipient));
    // The header says node 1, the body says node 3: refused.
    let forged = rig
        .codec
        .sealer(FROM)
        .seal(&msg(3, ME, MessageBody::TimeoutNow))
        .unwrap()
        .to_vec();
    assert_eq!(rig.verdict(&forged), Some(DropKind::DecodeError));
}

/// A sealed body with a valid MAC but hostile contents.
fn sealed_body(rig: &Rig, body: &[u8], compressed: bool) -> Vec<u8> {
    rig.codec
        .sealer(FROM)
        .seal_raw_body(body, compressed)
        .to_vec()
}

#[test]
fn hostile_bodies_behind_a_valid_mac_are_decode_errors() {
    for pw in [None, Some("pw")] {
        let mut rig = Rig::new(pw);
        // Postcard: from=1, to=2, term=1, Append tag 4, prev 0, prev_term 0, then an
        // entry count of u64::MAX: must fail fast, not pre-allocate.
        let mut body = vec![1, 2, 1, 4, 0, 0];
        body.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &body, false)),
            Some(DropKind::DecodeError)
        );
        // A Propose whose byte string claims 4 GiB.
        let body = [1, 2, 1, 11, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &body, false)),
            Some(DropKind::DecodeError)
        );
        // An unknown enum tag, trailing bytes, an empty body.
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &[1, 2, 1, 99], false)),
            Some(DropKind::DecodeError)
        );
        let mut ok = postcard::to_allocvec(&heartbeat()).unwrap();
        assert_eq!(rig.verdict(&sealed_body(&rig, &ok, false)), None);
        ok.push(0);
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &ok, false)),
            Some(DropKind::DecodeError)
        );
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &[], false)),
            Some(DropKind::DecodeError)
        );
        // lz4: a decompressed length beyond UDP's limit, a lying length, a corrupt block.
        let mut claim = (10_000_000u32).to_le_bytes().to_vec();
        claim.extend_from_slice(&[0x10, b'a']);
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &claim, true)),
            Some(DropKind::DecodeError)
        );
        let real = lz4_flex::block::compress(&postcard::to_allocvec(&big_append()).unwrap());
        let mut lying = 100u32.to_le_bytes().to_vec();
        lying.extend_from_slice(&real);
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &lying, true)),
            Some(DropKind::DecodeError)
        );
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &[1, 2], true)),
            Some(DropKind::DecodeError)
        );
        let mut corrupt = 6000u32.to_le_bytes().to_vec();
        corrupt.extend_from_slice(&[0xFF; 64]);
        assert_eq!(
            rig.verdict(&sealed_body(&rig, &corrupt, true)),
            Some(DropKind::DecodeError)
        );
    }
}

/// Builds a header-valid plaintext datagram around arbitrary body bytes.
fn plaintext_with_body(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    Header {
        version: wire::PROTOCOL_VERSION,
        flags,
        cluster_id: wire::cluster_id("hostile"),
        sender: FROM,
        epoch: 1,
        seq: 1,
    }
    .write(&mut d);
    d.extend_from_slice(body);
    d
}

/// Fewer cases without optimisation, so a debug `cargo test` stays quick.
const CASES: u32 = if cfg!(debug_assertions) { 300 } else { 2_000 };

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Random bytes: never delivered, never a panic, always counted once.
    #[test]
    fn random_datagrams_are_dropped(bytes in proptest::collection::vec(any::<u8>(), 0..2_000), pw in any::<bool>()) {
        let mut rig = Rig::new(pw.then_some("pw"));
        prop_assert!(rig.verdict(&bytes).is_some());
    }

    /// Random bytes after a valid plaintext header: the decoder's hostile-input path.
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2_000), flags in 0u8..4) {
        let mut rig = Rig::new(None);
        let _ = rig.verdict(&plaintext_with_body(flags & 1, &body));
    }

    /// Random bodies behind a valid MAC (what an insider could send).
    #[test]
    fn random_sealed_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2_000), compressed in any::<bool>()) {
        let mut rig = Rig::new(Some("pw"));
        let d = sealed_body(&rig, &body, compressed);
        let _ = rig.verdict(&d);
    }

    /// Mutations of valid datagrams: flips, cuts and extensions.
    #[test]
    fn mutated_datagrams_never_panic(
        pw in any::<bool>(),
        kind in 0usize..14,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
        extra in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut rig = Rig::new(pw.then_some("pw"));
        let body = every_body().swap_remove(kind);
        let mut d = rig.seal(&msg(FROM, ME, body));
        for (at, x) in flips {
            let at = at % d.len();
            d[at] ^= x;
        }
        d.truncate(cut % (d.len() + 1));
        d.extend_from_slice(&extra);
        let _ = rig.verdict(&d);
    }

    /// The contract with raft-core: any Append whose entries add up to at most
    /// max_append_bytes() of size_bytes fits one datagram, whatever its numbers.
    #[test]
    fn appends_within_max_append_bytes_always_fit(
        datagram_bytes_max in prop_oneof![Just(512usize), Just(1_400), Just(9_000), Just(61_440), Just(65_507)],
        encrypted in any::<bool>(),
        compress in any::<bool>(),
        lens in proptest::collection::vec(0usize..3_000, 0..200),
        big in any::<bool>(),
    ) {
        let keys = encrypted.then(|| ClusterKeys::derive("pw", "fit", 10));
        let codec = Codec::with_keys("fit", keys, datagram_bytes_max, compress.then_some(0));
        let max = codec.max_append_bytes();
        let n = |small: u64| if big { u64::MAX - small } else { small };
        let mut entries = Vec::new();
        let mut total = 0;
        for (i, len) in lens.into_iter().enumerate() {
            let e = Entry { term: n(1), index: n(i as u64), kind: EntryKind::Command, data: vec![0xC3; len].into() };
            if total + e.size_bytes() > max {
                break;
            }
            total += e.size_bytes();
            entries.push(e);
        }
        let m = Message { from: n(1), to: n(2), term: n(3), body: MessageBody::Append { prev_index: n(4), prev_term: n(5), entries, commit: n(6) } };
        let d = codec.sealer(n(1)).seal(&m).expect("fits").to_vec();
        prop_assert!(d.len() <= datagram_bytes_max);
        let opened = codec.opener().open(&d, Instant::now()).unwrap();
        prop_assert_eq!(opened.message, m);
    }
}

/// Writes a seed corpus for the fuzz target (one valid input per mode and message kind):
/// `RAFT_NET_FUZZ_SEEDS=raft-net/fuzz/corpus/receive cargo test -p raft-net --test hostile -- --ignored`.
#[test]
#[ignore = "writes files; run by hand before fuzzing"]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("RAFT_NET_FUZZ_SEEDS") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    // Must match the fuzz target's rig: cluster "fuzz", password "fuzz password", 10 rounds.
    let plain = Codec::with_keys("fuzz", None, NetConfig::LAN_DATAGRAM_BYTES, Some(64));
    let keys = ClusterKeys::derive("fuzz password", "fuzz", 10);
    let enc = Codec::with_keys("fuzz", Some(keys), NetConfig::LAN_DATAGRAM_BYTES, Some(64));
    let mut n = 0;
    let mut write = |mode: u8, bytes: &[u8]| {
        let mut seed = vec![mode];
        seed.extend_from_slice(bytes);
        std::fs::write(format!("{dir}/seed-{n:03}"), seed).unwrap();
        n += 1;
    };
    for body in every_body().into_iter().chain([big_append().body]) {
        let m = msg(1, 2, body);
        write(0, plain.sealer(1).seal(&m).unwrap());
        write(1, enc.sealer(1).seal(&m).unwrap());
        let encoded = postcard::to_allocvec(&m).unwrap();
        write(2, &encoded);
        write(4, &encoded);
        let mut compressed = (encoded.len() as u32).to_le_bytes().to_vec();
        compressed.extend_from_slice(&lz4_flex::block::compress(&encoded));
        write(3, &compressed);
        write(5, &compressed);
    }
}
