//! Codec benchmarks: encode+seal and open+decode for a heartbeat and for a 64-entry
//! append of 100-byte entries, plaintext / lz4 / AES+HMAC / both.
//!
//! Run: `cargo bench -p raft-net --bench codec`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft_core::{Entry, EntryKind, Message, MessageBody};
use raft_net::{ClusterKeys, Codec, NetConfig};

fn heartbeat() -> Message {
    Message {
        from: 1,
        to: 2,
        term: 42,
        body: MessageBody::Heartbeat {
            commit: 123_456,
            read_round: 7,
        },
    }
}

/// 64 entries of 100 bytes of key/value-like text (compressible, as real commands are).
fn append64() -> Message {
    let entries = (0..64u64)
        .map(|i| {
            let mut data = format!(
                "set user:{:08} {{\"name\":\"user {i}\",\"balance\":{}}}",
                1_000 + i,
                i * 37
            )
            .into_bytes();
            data.resize(100, b' ');
            Entry {
                term: 42,
                index: 100_000 + i,
                kind: EntryKind::Command,
                data: data.into(),
            }
        })
        .collect();
    Message {
        from: 1,
        to: 2,
        term: 42,
        body: MessageBody::Append {
            prev_index: 99_999,
            prev_term: 42,
            entries,
            commit: 99_990,
        },
    }
}

fn codecs() -> Vec<(&'static str, Codec)> {
    let keys = ClusterKeys::derive("bench password", "bench", 1_000);
    let make = |keys: Option<ClusterKeys>, compress| {
        Codec::with_keys("bench", keys, NetConfig::LAN_DATAGRAM_BYTES, compress)
    };
    vec![
        ("plain", make(None, None)),
        ("lz4", make(None, Some(0))),
        ("aes", make(Some(keys.clone()), None)),
        ("aes+lz4", make(Some(keys), Some(0))),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, msg) in [("heartbeat", heartbeat()), ("append64x100", append64())] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        for (mode, codec) in codecs() {
            let mut sealer = codec.sealer(1);
            let size = sealer.seal(&msg).unwrap().len();
            eprintln!("{name}/{mode}: {size} B per datagram");
            group.bench_function(format!("seal/{mode}"), |b| {
                b.iter(|| sealer.seal(black_box(&msg)).unwrap().len())
            });
            let mut opener = codec.opener();
            // Each iteration opens a fresh datagram (a new sequence number), so the
            // replay window lets it through and the whole path runs; sealing it is
            // setup, not measured.
            group.bench_function(format!("open/{mode}"), |b| {
                b.iter_batched(
                    || sealer.seal(&msg).unwrap().to_vec(),
                    |datagram| {
                        opener
                            .open(black_box(&datagram), Instant::now())
                            .unwrap()
                            .message
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
