//! Append + sync benchmarks for MemLog and SledLog.
//!
//! `cargo bench -p raft-store` runs them all; `cargo bench -p raft-store -- latency` or
//! `-- throughput` one group. Besides criterion's report, the latency group prints
//! p50/p90/p99 of every single append+sync it timed.
//!
//! - `latency/<log>`: append one 100-byte entry, then sync (the durability point).
//! - `throughput/<log>/<n>`: append a batch of `n` 100-byte entries, then sync once.
//!
//! Logs: `mem` (MemLog), `sled` (SledLog, real durability: flush + fdatasync) and
//! `sled-flush-only` (SledLog with SyncMode::FlushOnly, to show what the fdatasync costs).
//! The sled logs are compacted outside the timed region now and then, as a node does after
//! a snapshot, so the files stay bounded.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::{Entry, EntryKind, Log, SnapshotMeta};
use raft_store::{MemLog, SledLog, SledLogOptions, SyncMode};

const ENTRY_BYTES: usize = 100;
/// Entries kept after a compaction.
const KEEP_ENTRIES: u64 = 10_000;
/// Compact once the log holds this many entries.
const COMPACT_AT_ENTRIES: u64 = 200_000;

struct Writer {
    log: Box<dyn Log>,
    _dir: Option<tempfile::TempDir>,
    next: u64,
    data: Bytes,
}

impl Writer {
    fn new(kind: &str) -> Self {
        let (log, dir): (Box<dyn Log>, _) = match kind {
            "mem" => (Box::new(MemLog::new()), None),
            "sled" | "sled-flush-only" => {
                let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
                let mut options = SledLogOptions::new("bench", 1);
                if kind == "sled-flush-only" {
                    options.sync_mode = SyncMode::FlushOnly;
                }
                let log = SledLog::open_with(dir.path(), options).expect("open sled log");
                (Box::new(log), Some(dir))
            }
            other => panic!("unknown log {other}"),
        };
        Self {
            log,
            _dir: dir,
            next: 1,
            data: vec![0xAB; ENTRY_BYTES].into(),
        }
    }

    fn batch(&self, n: u64) -> Vec<Entry> {
        (self.next..self.next + n)
            .map(|index| Entry {
                term: 1,
                index,
                kind: EntryKind::Command,
                data: self.data.clone(),
            })
            .collect()
    }

    /// The timed operation: append `entries` and sync.
    fn write(&mut self, entries: &[Entry]) {
        self.log.append(entries).expect("append");
        self.log.sync().expect("sync");
        self.next += entries.len() as u64;
    }

    /// Keeps the log bounded, outside the timed region.
    fn maybe_compact(&mut self) {
        let last = self.next - 1;
        if last - self.log.first_index() + 1 < COMPACT_AT_ENTRIES {
            return;
        }
        let at = last - KEEP_ENTRIES;
        let meta = SnapshotMeta::at(at, self.log.term(at).expect("term"));
        self.log.compact(meta).expect("compact");
        self.log.sync().expect("sync");
    }
}

/// Where the sled benchmarks write: `RAFT_STORE_BENCH_DIR`, else the target directory
/// (on the same disk as the project, unlike a tmpfs /tmp).
fn bench_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("RAFT_STORE_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency");
    group.throughput(Throughput::Elements(1));
    for kind in ["mem", "sled", "sled-flush-only"] {
        let mut w = Writer::new(kind);
        let mut all = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(kind), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let entries = w.batch(1);
                    let start = Instant::now();
                    w.write(&entries);
                    let took = start.elapsed();
                    total += took;
                    all.push(took);
                    w.maybe_compact();
                }
                total
            })
        });
        all.sort();
        println!(
            "latency/{kind}: append+sync of one {ENTRY_BYTES}-byte entry over {} samples: \
             p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            all.len(),
            percentile(&all, 0.50),
            percentile(&all, 0.90),
            percentile(&all, 0.99),
            all[all.len() - 1]
        );
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    for kind in ["mem", "sled", "sled-flush-only"] {
        for n in [1u64, 16, 64, 256] {
            let mut w = Writer::new(kind);
            group.throughput(Throughput::Elements(n));
            group.bench_function(BenchmarkId::new(kind, n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let entries = w.batch(n);
                        let start = Instant::now();
                        w.write(&entries);
                        total += start.elapsed();
                        w.maybe_compact();
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    targets = latency, throughput
}
criterion_main!(benches);
