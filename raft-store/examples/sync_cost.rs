//! Measures what a durability point costs on this machine's disk, and where it goes.
//!
//! ```text
//! cargo run -p raft-store --release --example sync_cost [-- DIR [ROUNDS [BATCH]]]
//! ```
//!
//! Round-robin, so that a change in the machine's load hits every variant alike:
//! (1) the disk's floor: a 100-byte `pwrite` appended to a plain file and `fdatasync`;
//! (2) SledLog with `SyncMode::FlushOnly`; (3) SledLog with real durability. Each
//! SledLog round appends BATCH (default 1) 100-byte entries and syncs. Prints percentiles and, for the
//! SledLogs, the split between sled's apply, sled's flush and the fdatasync.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use raft_core::{Entry, EntryKind, Log};
use raft_store::{SledLog, SledLogOptions, SyncMode};

fn percentiles(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<28} p50 {:>9.1?}  p90 {:>9.1?}  p99 {:>9.1?}",
        p(0.5),
        p(0.9),
        p(0.99)
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap().join("target/bench-data"));
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(2000);
    let batch: u64 = args.next().and_then(|r| r.parse().ok()).unwrap_or(1);
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();

    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("plain"))
        .unwrap();
    let open = |name: &str, mode| {
        let mut o = SledLogOptions::new("sync-cost", 1);
        o.sync_mode = mode;
        if let Some(max) = std::env::var("RECORD_BYTES_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            o.record_bytes_max = max;
        }
        SledLog::open_with(dir.path().join(name), o).unwrap()
    };
    let mut flush_only = open("flush-only", SyncMode::FlushOnly);
    let mut durable = open("durable", SyncMode::Fdatasync);
    let data: bytes::Bytes = vec![7u8; 100].into();
    let (mut t_file, mut t_flush, mut t_durable) = (vec![], vec![], vec![]);
    for round in 0..rounds as u64 {
        let start = Instant::now();
        file.write_all(&data).unwrap();
        file.sync_data().unwrap();
        t_file.push(start.elapsed());
        for (log, times) in [
            (&mut flush_only, &mut t_flush),
            (&mut durable, &mut t_durable),
        ] {
            let entries: Vec<Entry> = (round * batch + 1..=(round + 1) * batch)
                .map(|index| Entry {
                    term: 1,
                    index,
                    kind: EntryKind::Command,
                    data: data.clone(),
                })
                .collect();
            let start = Instant::now();
            log.append(&entries).unwrap();
            log.sync().unwrap();
            times.push(start.elapsed());
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{rounds} rounds of {batch} entries in {}; load average {}",
        dir.path().display(),
        load.trim()
    );
    percentiles("plain file write+fdatasync", t_file);
    percentiles("SledLog FlushOnly", t_flush);
    percentiles("SledLog Fdatasync", t_durable);
    for (name, log) in [("FlushOnly", &flush_only), ("Fdatasync", &durable)] {
        let blobs = std::fs::read_dir(log.dir().join("blobs")).map_or(0, |d| d.count());
        let disk = log.size_on_disk_bytes().unwrap_or(0);
        println!("{name:<10} {blobs} blob files, {} KiB on disk", disk / 1024);
        let s = log.sync_stats();
        let per = |d: Duration| d / s.syncs as u32;
        println!(
            "{name:<10} mean per sync: sled apply {:?}, sled flush {:?}, fdatasync {:?}",
            per(s.apply),
            per(s.flush),
            per(s.fsync)
        );
    }
}
