//! Datagrams per second through a loopback pair of transports (all six threads, the
//! sockets and the codec), plaintext and encrypted, heartbeats and 64-entry appends.
//!
//! Run: `cargo bench -p raft-net --bench loopback`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_channel::Receiver;
use raft_core::{Entry, EntryKind, Message, MessageBody, Transport};
use raft_net::{NetConfig, UdpTransport};

/// Messages per burst: well under the socket buffer, so loss is rare.
const BURST: u64 = 256;

fn pair(password: Option<&str>) -> (UdpTransport, UdpTransport, Receiver<Message>) {
    let config = |id| {
        let mut c = NetConfig::new(id, "bench", "127.0.0.1:0");
        c.password = password.map(str::to_string);
        c.kdf_iterations = 1_000;
        c
    };
    let mut a = UdpTransport::bind(config(1)).unwrap();
    let mut b = UdpTransport::bind(config(2)).unwrap();
    a.directory().insert(2, "b", b.local_addr());
    b.directory().insert(1, "a", a.local_addr());
    let (tx_a, _) = crossbeam_channel::bounded(1);
    let (tx_b, rx_b) = crossbeam_channel::bounded(4 * BURST as usize);
    a.start(tx_a).unwrap();
    b.start(tx_b).unwrap();
    (a, b, rx_b)
}

fn append64() -> Message {
    let entries = (0..64u64)
        .map(|i| Entry {
            term: 1,
            index: i + 1,
            kind: EntryKind::Command,
            data: vec![b'v'; 100].into(),
        })
        .collect();
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries,
            commit: 0,
        },
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Elements(1));
    let heartbeat = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    };
    for (kind, msg) in [("heartbeat", heartbeat), ("append64x100", append64())] {
        for password in [None, Some("pw")] {
            let (mut a, mut b, inbox) = pair(password);
            let mode = if password.is_some() { "aes" } else { "plain" };
            let mut lost = 0u64;
            group.bench_function(format!("{kind}/{mode}"), |bench| {
                bench.iter_custom(|iters| {
                    let started = Instant::now();
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(BURST);
                        a.send(vec![msg.clone(); n as usize]);
                        for _ in 0..n {
                            if inbox.recv_timeout(Duration::from_millis(200)).is_err() {
                                lost += 1;
                                break;
                            }
                        }
                        left -= n;
                    }
                    started.elapsed()
                })
            });
            eprintln!(
                "loopback {kind}/{mode}: {lost} bursts saw loss; receiver: {}",
                b.stats()
            );
            a.stop();
            b.stop();
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
