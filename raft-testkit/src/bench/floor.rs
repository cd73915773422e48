//! The machine's floor, measured in the same run as the cluster: what one loopback UDP
//! round trip and one durable sync cost right now. A commit cannot be faster than one
//! round trip (leader -> follower -> leader), nor, with `SledLog`, than one sync.

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use raft_core::{Entry, EntryKind, Log};
use raft_store::SledLog;
use serde::Serialize;

use super::histogram::Histogram;

/// Round trips timed after the warm-up.
const PING_PONGS: u32 = 20_000;
/// Round trips run first and not timed.
const PING_PONGS_WARMUP: u32 = 2_000;
/// Durable syncs timed.
const SYNCS: u64 = 300;

/// Latency quantiles of a floor measurement, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FloorLatency {
    /// How many samples.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

impl FloorLatency {
    /// A floor that was not measured.
    pub const NOT_MEASURED: FloorLatency = FloorLatency {
        samples: 0,
        p50_us: 0.0,
        p99_us: 0.0,
    };

    fn of(h: &Histogram) -> Self {
        Self {
            samples: h.len(),
            p50_us: us(h.quantile(0.5)),
            p99_us: us(h.quantile(0.99)),
        }
    }
}

pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One loopback UDP round trip: a thread echoes `payload_bytes`-byte datagrams back to
/// the sender, which waits for each echo before sending the next. Both sides block in
/// the kernel, as the transport's threads do, so this includes two thread wake-ups.
///
/// # Errors
/// Sockets that cannot be bound or a lost datagram (after 1 s).
pub fn udp_round_trip(payload_bytes: usize) -> anyhow::Result<FloorLatency> {
    let a = UdpSocket::bind("127.0.0.1:0").context("bind ping socket")?;
    let b = UdpSocket::bind("127.0.0.1:0").context("bind pong socket")?;
    a.connect(b.local_addr()?)?;
    b.connect(a.local_addr()?)?;
    a.set_read_timeout(Some(Duration::from_secs(1)))?;
    b.set_read_timeout(Some(Duration::from_secs(1)))?;
    let total = PING_PONGS + PING_PONGS_WARMUP;
    let echo = thread::Builder::new().name("bench-pong".into()).spawn(
        move || -> std::io::Result<()> {
            let mut buf = vec![0u8; 65_536];
            for _ in 0..total {
                let n = b.recv(&mut buf)?;
                b.send(&buf[..n])?;
            }
            Ok(())
        },
    )?;
    let payload = vec![7u8; payload_bytes.max(1)];
    let mut buf = vec![0u8; 65_536];
    let mut h = Histogram::new();
    for i in 0..total {
        let start = Instant::now();
        a.send(&payload)?;
        a.recv(&mut buf).context("echo lost")?;
        if i >= PING_PONGS_WARMUP {
            h.record(start.elapsed());
        }
    }
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?
        .context("echo thread")?;
    Ok(FloorLatency::of(&h))
}

/// One durable sync of `SledLog`: append one `entry_bytes` entry, then `sync` (sled's
/// flush and `fdatasync`), in a fresh temporary directory on the default temp path.
///
/// # Errors
/// Storage that cannot be opened or written.
pub fn sled_sync(entry_bytes: usize) -> anyhow::Result<FloorLatency> {
    let dir = tempfile::tempdir()?;
    let mut log = SledLog::open(dir.path(), "bench floor", 1)?;
    let data = bytes::Bytes::from(vec![7u8; entry_bytes]);
    let mut h = Histogram::new();
    for index in 1..=SYNCS + 20 {
        let start = Instant::now();
        append_and_sync(&mut log, index, &data)?;
        if index > 20 {
            h.record(start.elapsed());
        }
    }
    Ok(FloorLatency::of(&h))
}

/// One durable write of the floor measurements: entry `index` (term 1) then a sync.
fn append_and_sync(log: &mut SledLog, index: u64, data: &bytes::Bytes) -> anyhow::Result<()> {
    log.append(&[Entry {
        term: 1,
        index,
        kind: EntryKind::Command,
        data: data.clone(),
    }])?;
    log.sync()?;
    Ok(())
}

/// What `logs` SledLogs syncing at once (one thread each, each appending one
/// `entry_bytes` entry then syncing, in a loop, for `run`) get from the disk: the
/// syncs per second of all of them together, and the latency of one sync. The nodes of
/// a local cluster share one disk like this, so this is the ceiling of their syncs.
///
/// # Errors
/// Storage that cannot be opened or written.
pub fn sled_parallel_syncs(
    logs: usize,
    entry_bytes: usize,
    run: Duration,
) -> anyhow::Result<(f64, FloorLatency)> {
    let dirs = (0..logs)
        .map(|_| tempfile::tempdir())
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now() + Duration::from_millis(50);
    let threads = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let path = dir.path().to_path_buf();
            let data = bytes::Bytes::from(vec![7u8; entry_bytes]);
            thread::Builder::new()
                .name(format!("bench-sync-{i}"))
                .spawn(move || -> anyhow::Result<Histogram> {
                    let mut log = SledLog::open(&path, "bench floor", i as u64 + 1)?;
                    let mut h = Histogram::new();
                    thread::sleep(start.saturating_duration_since(Instant::now()));
                    let mut index = 0;
                    while start.elapsed() < run {
                        index += 1;
                        let t = Instant::now();
                        append_and_sync(&mut log, index, &data)?;
                        h.record(t.elapsed());
                    }
                    Ok(h)
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut all = Histogram::new();
    for t in threads {
        let h = t
            .join()
            .map_err(|_| anyhow::anyhow!("sync thread panicked"))??;
        all.merge(&h);
    }
    Ok((all.len() as f64 / run.as_secs_f64(), FloorLatency::of(&all)))
}

/// The most writes per second `clients` closed-loop client threads can complete when
/// nothing but the hand-offs costs anything: each client sends a request carrying a
/// fresh reply channel to one server thread (which answers whole bursts at once) and
/// waits for its answer, as a client of a node does. No Raft, no network: the ceiling
/// of the thread-per-client model on this machine now.
///
/// # Errors
/// A thread that cannot be spawned.
pub fn client_ceiling(clients: usize, run: Duration) -> anyhow::Result<f64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let (tx, rx) = crossbeam_channel::unbounded::<crossbeam_channel::Sender<()>>();
    let server = thread::Builder::new()
        .name("bench-echo".into())
        .spawn(move || {
            let mut burst = Vec::new();
            while let Ok(reply) = rx.recv() {
                burst.push(reply);
                burst.extend(rx.try_iter());
                for reply in burst.drain(..) {
                    let _ = reply.send(());
                }
            }
        })?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads = (0..clients.max(1))
        .map(|i| {
            let (tx, stop, done) = (tx.clone(), stop.clone(), done.clone());
            thread::Builder::new()
                .name(format!("bench-ceiling-{i}"))
                .spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (reply, answer) = crossbeam_channel::bounded(1);
                        if tx.send(reply).is_err() || answer.recv().is_err() {
                            break;
                        }
                        n += 1;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop(tx);
    let start = Instant::now();
    thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed();
    let _ = server.join();
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}
