//! Fuzzes the whole receive path: everything the processor thread does with a datagram
//! (header checks, MAC, replay window, decryption, decompression, postcard decoding,
//! peer and recipient checks). The first input byte picks how far in the bytes start:
//!
//! - 0: raw datagram, plaintext node          - 1: raw datagram, encrypted node
//! - 2: valid plaintext header + body          - 3: same, compressed flag set
//! - 4: body sealed with the cluster key       - 5: same, compressed flag set
//!
//! Modes 2-5 get hostile bytes past the header checks and the MAC, as an insider or a
//! corrupted sender could. Run with `-malloc_limit_mb=2` to prove no input makes the
//! decoder allocate more than a bounded amount.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use raft_net::wire::{self, Header};
use raft_net::{ClusterKeys, Codec, NetConfig, NetStats, PeerDirectory, Processor, Sealer};

const CLUSTER: &str = "fuzz";

struct Rig {
    plain: Processor,
    encrypted: Processor,
    sealer: Sealer,
    buf: Vec<u8>,
}

fn rig() -> Rig {
    let dir = PeerDirectory::new();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    dir.insert(1, "one", addr);
    dir.insert(2, "two", addr);
    let plain = Codec::with_keys(CLUSTER, None, NetConfig::LAN_DATAGRAM_BYTES, Some(64));
    let keys = ClusterKeys::derive("fuzz password", CLUSTER, 10);
    let encrypted = Codec::with_keys(CLUSTER, Some(keys), NetConfig::LAN_DATAGRAM_BYTES, Some(64));
    Rig {
        plain: Processor::new(2, &plain, dir.clone(), NetStats::new_shared()),
        encrypted: Processor::new(2, &encrypted, dir, NetStats::new_shared()),
        sealer: encrypted.sealer(1),
        buf: Vec::new(),
    }
}

static RIG: Mutex<Option<Rig>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut guard = RIG.lock().unwrap();
    let rig = guard.get_or_insert_with(rig);
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let now = Instant::now();
    match mode % 6 {
        0 => drop(rig.plain.process(rest, from, now)),
        1 => drop(rig.encrypted.process(rest, from, now)),
        m @ (2 | 3) => {
            rig.buf.clear();
            Header {
                version: wire::PROTOCOL_VERSION,
                flags: if m == 3 { wire::FLAG_COMPRESSED } else { 0 },
                cluster_id: wire::cluster_id(CLUSTER),
                sender: 1,
                epoch: 1,
                seq: 1,
            }
            .write(&mut rig.buf);
            rig.buf.extend_from_slice(rest);
            drop(rig.plain.process(&rig.buf, from, now));
        }
        m => {
            let datagram = rig.sealer.seal_raw_body(rest, m == 5).to_vec();
            drop(rig.encrypted.process(&datagram, from, now));
        }
    }
});
