//! Throughput and commit latency: closed-loop clients writing through the leader.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use raft_core::node::{Node, NodeCounters, NodeError, Proposal, Ticket};
use raft_core::NodeId;

use super::floor;
use super::histogram::Histogram;
use super::proc_stats;
use super::report::{
    CpuReport, Floors, LatencyReport, MemoryReport, NodeActivity, ThroughputReport,
};
use super::{BenchConfig, LogKind, PipelineApi, Sink};
use crate::cluster::LocalCluster;

/// How long one client waits for one write before counting it as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the cluster may take to elect its first leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

/// What one client thread saw in the measured window.
struct ClientOutcome {
    latencies: Histogram,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Measures the floor, starts the cluster, runs the clients for the warm-up and the
/// measured window, and reports.
///
/// # Errors
/// A floor measurement or the cluster could not run; no leader in time.
pub fn run_throughput(config: &BenchConfig) -> anyhow::Result<ThroughputReport> {
    anyhow::ensure!(config.clients > 0, "at least one client");
    anyhow::ensure!(config.seconds > 0.0, "a positive duration");
    let floors = measure_floors(config)?;
    let rss_before = proc_stats::rss_bytes();

    let cluster = config
        .start_cluster(|_| Sink::default())
        .context("start the cluster")?;
    let leader_id = cluster.wait_for_leader(START_TIMEOUT)?;
    for n in cluster.running() {
        n.wait_for_cluster(START_TIMEOUT)?;
    }
    let leader = cluster.node(leader_id).expect("running").clone();
    // One write first, so the leader has committed in its term before the clock starts.
    leader.propose_with_retry(Bytes::from_static(b"warm"), START_TIMEOUT)?;

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let entry = Bytes::from(vec![0x5a; config.entry_bytes]);
    let clients: Vec<_> = (0..config.clients)
        .map(|i| {
            let (node, phase, entry) = (leader.clone(), phase.clone(), entry.clone());
            let (pipeline, api) = (config.pipeline, config.pipeline_api);
            thread::Builder::new()
                .name(format!("bench-client-{i}"))
                .spawn(move || match (pipeline, api) {
                    (0, _) => client(&node, &phase, &entry),
                    (n, PipelineApi::Submitter) => submitter_client(&node, &phase, &entry, n),
                    (n, PipelineApi::Propose) => propose_client(&node, &phase, &entry, n),
                })
                .context("spawn a client")
        })
        .collect::<anyhow::Result<_>>()?;

    thread::sleep(Duration::from_secs_f64(config.warmup_seconds));
    let follower_id = (1..=config.nodes).find(|&id| id != leader_id);
    let activity_before = activity(&cluster, leader_id, follower_id);
    let cpu_before = proc_stats::process_cpu();
    let threads_before = proc_stats::cpu_by_thread_kind();
    let switches_before = proc_stats::context_switches();
    let started = Instant::now();
    phase.store(MEASURE, Ordering::Release);
    thread::sleep(Duration::from_secs_f64(config.seconds));
    phase.store(DONE, Ordering::Release);
    let window = started.elapsed();
    let cpu_after = proc_stats::process_cpu();
    let threads_after = proc_stats::cpu_by_thread_kind();
    let switches_after = proc_stats::context_switches();
    let activity_after = activity(&cluster, leader_id, follower_id);

    let mut latencies = Histogram::new();
    let (mut acked, mut errors, mut first_error) = (0, 0, None);
    for c in clients {
        let outcome = c
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        latencies.merge(&outcome.latencies);
        acked += outcome.acked;
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
    }
    let leader_after = cluster.node(leader_id).map(|n| n.status());
    drop(cluster);
    let peak = proc_stats::peak_rss_bytes();

    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let by_thread = proc_stats::cpu_delta(&threads_before, &threads_after);
    let secs = window.as_secs_f64();
    let latency = LatencyReport::of(&latencies, &floors, config.log);
    Ok(ThroughputReport {
        config: config.clone(),
        leader: leader_id,
        leader_changed: leader_after
            .as_ref()
            .map(|s| s.role != raft_core::Role::Leader),
        run_entries: leader_after.map_or(0, |s| s.commit_index),
        window_seconds: secs,
        committed_entries: acked,
        entries_per_second: acked as f64 / secs,
        errors,
        first_error,
        latency,
        cpu: CpuReport::of(
            cpu,
            &by_thread,
            (
                switches_after.0.saturating_sub(switches_before.0),
                switches_after.1.saturating_sub(switches_before.1),
            ),
            acked,
            secs,
        ),
        memory: MemoryReport::of(rss_before, peak, config.nodes),
        floors,
        leader_activity: NodeActivity::delta(activity_before.0, activity_after.0, secs),
        follower_activity: match (activity_before.1, activity_after.1) {
            (Some(b), Some(a)) => Some(NodeActivity::delta(b, a, secs)),
            _ => None,
        },
    })
}

fn measure_floors(config: &BenchConfig) -> anyhow::Result<Floors> {
    if config.skip_floor {
        return Ok(Floors {
            udp_round_trip: floor::FloorLatency::NOT_MEASURED,
            sled_sync: None,
            sled_parallel_syncs_per_second: None,
            sled_parallel_sync: None,
            sled_filesystem: None,
            client_ceiling_per_second: 0.0,
        });
    }
    let udp = floor::udp_round_trip(config.entry_bytes).context("loopback UDP round trip")?;
    let (sync, parallel, fs) = match config.log {
        LogKind::Mem => (None, None, None),
        LogKind::Sled => (
            Some(floor::sled_sync(config.entry_bytes).context("one SledLog sync")?),
            Some(
                floor::sled_parallel_syncs(
                    config.nodes as usize,
                    config.entry_bytes,
                    Duration::from_secs_f64(config.seconds.min(1.0)),
                )
                .context("parallel SledLog syncs")?,
            ),
            super::filesystem_of(&std::env::temp_dir()),
        ),
    };
    let ceiling = floor::client_ceiling(
        config.clients,
        Duration::from_secs_f64(config.seconds.min(1.0)),
    )
    .context("client ceiling")?;
    Ok(Floors {
        udp_round_trip: udp,
        sled_sync: sync,
        sled_parallel_syncs_per_second: parallel.map(|p| p.0),
        sled_parallel_sync: parallel.map(|p| p.1),
        sled_filesystem: fs,
        client_ceiling_per_second: ceiling,
    })
}

/// The counters and commit index of the leader and of one follower.
fn activity(
    cluster: &LocalCluster<Sink>,
    leader: NodeId,
    follower: Option<NodeId>,
) -> ((NodeCounters, u64), Option<(NodeCounters, u64)>) {
    let read = |id: NodeId| {
        cluster.node(id).map(|n| {
            let s = n.status();
            (s.counters, s.commit_index)
        })
    };
    (read(leader).unwrap_or_default(), follower.and_then(read))
}

fn client(node: &Node<Sink>, phase: &AtomicU8, entry: &Bytes) -> ClientOutcome {
    let mut out = ClientOutcome {
        latencies: Histogram::new(),
        acked: 0,
        errors: 0,
        first_error: None,
    };
    loop {
        let before = phase.load(Ordering::Acquire);
        if before == DONE {
            return out;
        }
        let start = Instant::now();
        let result = node
            .propose(entry.clone())
            .and_then(|p| p.wait(WRITE_TIMEOUT));
        let elapsed = start.elapsed();
        // Counted when it completes inside the window.
        let measuring = phase.load(Ordering::Acquire) == MEASURE;
        match result {
            Ok(()) => {
                if measuring {
                    out.latencies.record(elapsed);
                    out.acked += 1;
                }
            }
            Err(e) => {
                if measuring {
                    out.errors += 1;
                    out.first_error.get_or_insert_with(|| e.to_string());
                }
                if matches!(e, NodeError::Stopped) {
                    return out;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl ClientOutcome {
    fn new() -> Self {
        Self {
            latencies: Histogram::new(),
            acked: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// Counts one write's outcome if the window is open.
    fn record(&mut self, phase: &AtomicU8, latency: Duration, result: Result<(), NodeError>) {
        if phase.load(Ordering::Acquire) != MEASURE {
            return;
        }
        match result {
            Ok(()) => {
                self.latencies.record(latency);
                self.acked += 1;
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Keeps `pipeline` writes in flight through a `Submitter`: tops the pipeline up with
/// one `submit_batch`, then drains every completion that arrived.
fn submitter_client(
    node: &Node<Sink>,
    phase: &AtomicU8,
    entry: &Bytes,
    pipeline: usize,
) -> ClientOutcome {
    let mut out = ClientOutcome::new();
    let mut submitter = node.submitter().with_in_flight_max(pipeline);
    let mut sent: HashMap<Ticket, Instant> = HashMap::with_capacity(pipeline);
    let mut done = Vec::with_capacity(pipeline);
    while phase.load(Ordering::Acquire) != DONE {
        let room = pipeline - submitter.in_flight();
        if room > 0 {
            match submitter.submit_batch(vec![entry.clone(); room]) {
                Ok(tickets) => {
                    let now = Instant::now();
                    sent.extend(tickets.into_iter().map(|t| (t, now)));
                }
                Err(NodeError::Stopped) => return out,
                Err(e) => {
                    // Busy: the node's queue is full; drain and try again.
                    out.record(phase, Duration::ZERO, Err(e));
                }
            }
        }
        submitter.drain_timeout(&mut done, Duration::from_millis(100));
        let now = Instant::now();
        for (ticket, result) in done.drain(..) {
            let latency = sent.remove(&ticket).map_or(Duration::ZERO, |t| now - t);
            let stopped = matches!(result, Err(NodeError::Stopped));
            out.record(phase, latency, result);
            if stopped {
                return out;
            }
        }
    }
    out
}

/// Keeps `pipeline` writes in flight with `Node::propose`, waiting on the oldest.
fn propose_client(
    node: &Node<Sink>,
    phase: &AtomicU8,
    entry: &Bytes,
    pipeline: usize,
) -> ClientOutcome {
    let mut out = ClientOutcome::new();
    let mut in_flight: VecDeque<(Instant, Proposal<()>)> = VecDeque::with_capacity(pipeline);
    while phase.load(Ordering::Acquire) != DONE {
        while in_flight.len() < pipeline {
            match node.propose(entry.clone()) {
                Ok(p) => in_flight.push_back((Instant::now(), p)),
                Err(NodeError::Stopped) => return out,
                Err(e) => {
                    out.record(phase, Duration::ZERO, Err(e));
                    break;
                }
            }
        }
        let Some((started, p)) = in_flight.pop_front() else {
            thread::sleep(Duration::from_millis(1));
            continue;
        };
        let result = p.wait(WRITE_TIMEOUT);
        let stopped = matches!(result, Err(NodeError::Stopped));
        out.record(phase, started.elapsed(), result);
        if stopped {
            return out;
        }
    }
    out
}
