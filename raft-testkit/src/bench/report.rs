//! What a benchmark run reports, as text for people and JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use raft_core::node::NodeCounters;
use serde::Serialize;

use super::floor::{us, FloorLatency};
use super::histogram::Histogram;
use super::{BenchConfig, LogKind};

/// The machine's floor, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Floors {
    /// A plain loopback UDP ping-pong between two threads.
    pub udp_round_trip: FloorLatency,
    /// One `SledLog` append of one entry and sync (sled runs only).
    pub sled_sync: Option<FloorLatency>,
    /// One SledLog per node syncing at once on the same disk (sled runs only): syncs
    /// per second of all of them together, the disk's ceiling for the cluster.
    pub sled_parallel_syncs_per_second: Option<f64>,
    /// The latency of one sync while the others sync too.
    pub sled_parallel_sync: Option<FloorLatency>,
    /// The filesystem of the temporary directory the sled logs live in.
    pub sled_filesystem: Option<String>,
    /// Writes per second the same number of closed-loop client threads reach against
    /// a server that does nothing (see `floor::client_ceiling`).
    pub client_ceiling_per_second: f64,
}

impl Floors {
    /// The least a single-client commit can take on this machine now: one round trip,
    /// plus one durable sync with `SledLog` (the leader's and the follower's syncs can
    /// overlap, so one counts).
    pub fn commit_floor_us(&self) -> f64 {
        self.udp_round_trip.p50_us + self.sled_sync.map_or(0.0, |s| s.p50_us)
    }
}

/// Commit latency as the clients saw it: from `propose` to the applied response.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    /// Writes measured.
    pub samples: u64,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Largest, microseconds.
    pub max_us: f64,
    /// The floor the ratios divide by: UDP round trip (+ one sled sync), microseconds.
    pub floor_us: f64,
    /// `p50 / floor`.
    pub p50_over_floor: f64,
    /// `p99 / floor`.
    pub p99_over_floor: f64,
}

impl LatencyReport {
    pub(crate) fn of(h: &Histogram, floors: &Floors, _log: LogKind) -> Self {
        let floor = floors.commit_floor_us();
        let p50 = us(h.quantile(0.5));
        let p99 = us(h.quantile(0.99));
        Self {
            samples: h.len(),
            mean_us: us(h.mean()),
            p50_us: p50,
            p99_us: p99,
            p999_us: us(h.quantile(0.999)),
            max_us: us(h.max()),
            floor_us: floor,
            p50_over_floor: p50 / floor,
            p99_over_floor: p99 / floor,
        }
    }
}

/// CPU time of the whole process (every node, the transports, the clients) in the
/// measured window.
#[derive(Clone, Debug, Serialize)]
pub struct CpuReport {
    /// CPU seconds (user + system) of the process in the window.
    pub seconds: Option<f64>,
    /// CPU seconds per 100,000 committed entries.
    pub seconds_per_100k_entries: Option<f64>,
    /// Average busy cores in the window.
    pub cores_busy: Option<f64>,
    /// CPU seconds by thread kind (all nodes together), e.g. `raft-loop`, `bench-client`.
    pub by_thread_kind: BTreeMap<String, f64>,
    /// Voluntary context switches (a thread blocked) per committed entry, all threads.
    pub voluntary_switches_per_entry: f64,
    /// Involuntary context switches (a thread was preempted) per committed entry.
    pub involuntary_switches_per_entry: f64,
}

impl CpuReport {
    pub(crate) fn of(
        cpu: Option<Duration>,
        by_thread: &BTreeMap<String, Duration>,
        switches: (u64, u64),
        entries: u64,
        window_seconds: f64,
    ) -> Self {
        let seconds = cpu.map(|d| d.as_secs_f64());
        let per_entry = |n: u64| n as f64 / entries.max(1) as f64;
        Self {
            seconds,
            seconds_per_100k_entries: seconds
                .filter(|_| entries > 0)
                .map(|s| s * 100_000.0 / entries as f64),
            cores_busy: seconds.map(|s| s / window_seconds),
            by_thread_kind: by_thread
                .iter()
                .filter(|(_, d)| !d.is_zero())
                .map(|(k, d)| (k.clone(), d.as_secs_f64()))
                .collect(),
            voluntary_switches_per_entry: per_entry(switches.0),
            involuntary_switches_per_entry: per_entry(switches.1),
        }
    }
}

/// Memory. Every node runs in this one process, so only the process's figures are
/// measured; the per-node figure is an estimate.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    /// Resident set before the cluster started (the benchmark itself), bytes.
    pub rss_before_cluster_bytes: Option<u64>,
    /// Peak resident set of the process over the run (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// `(peak - before) / nodes`: clients' stacks and buffers are counted in it.
    pub per_node_estimate_bytes: Option<u64>,
}

impl MemoryReport {
    pub(crate) fn of(before: Option<u64>, peak: Option<u64>, nodes: u64) -> Self {
        Self {
            rss_before_cluster_bytes: before,
            peak_rss_bytes: peak,
            per_node_estimate_bytes: match (before, peak) {
                (Some(b), Some(p)) => Some(p.saturating_sub(b) / nodes.max(1)),
                _ => None,
            },
        }
    }
}

/// What one node did in the window, per second.
#[derive(Clone, Debug, Serialize)]
pub struct NodeActivity {
    /// Log syncs (one per WaitLoop turn that wrote something).
    pub syncs_per_second: f64,
    /// Commit index advance per sync: the group-commit batch.
    pub entries_per_sync: f64,
    /// Messages handed to the transport.
    pub messages_sent_per_second: f64,
    /// Messages stepped into the protocol.
    pub messages_received_per_second: f64,
    /// Messages the transport dropped (full queues, ...) in the window.
    pub transport_dropped: u64,
    /// Commit index advance per second.
    pub commits_per_second: f64,
}

impl NodeActivity {
    pub(crate) fn delta(
        before: (NodeCounters, u64),
        after: (NodeCounters, u64),
        secs: f64,
    ) -> Self {
        let (b, a) = (before.0, after.0);
        let commits = after.1.saturating_sub(before.1);
        let syncs = a.syncs.saturating_sub(b.syncs);
        Self {
            syncs_per_second: syncs as f64 / secs,
            entries_per_sync: if syncs == 0 {
                0.0
            } else {
                commits as f64 / syncs as f64
            },
            messages_sent_per_second: a.messages_sent.saturating_sub(b.messages_sent) as f64 / secs,
            messages_received_per_second: a.messages_received.saturating_sub(b.messages_received)
                as f64
                / secs,
            transport_dropped: a.transport.dropped.saturating_sub(b.transport.dropped),
            commits_per_second: commits as f64 / secs,
        }
    }
}

/// The outcome of a throughput and latency run.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputReport {
    /// What ran.
    pub config: BenchConfig,
    /// The leader's id.
    pub leader: u64,
    /// Whether the leader lost its role during the run (it should not).
    pub leader_changed: Option<bool>,
    /// Entries committed over the whole run, warm-up included (the leader's commit
    /// index at the end), to divide whole-run profiler counts by.
    pub run_entries: u64,
    /// The measured window, seconds.
    pub window_seconds: f64,
    /// Writes acknowledged to clients in the window.
    pub committed_entries: u64,
    /// `committed_entries / window_seconds`.
    pub entries_per_second: f64,
    /// Writes that failed in the window.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Commit latency.
    pub latency: LatencyReport,
    /// CPU.
    pub cpu: CpuReport,
    /// Memory.
    pub memory: MemoryReport,
    /// The machine's floor.
    pub floors: Floors,
    /// The leader's activity.
    pub leader_activity: NodeActivity,
    /// One follower's activity.
    pub follower_activity: Option<NodeActivity>,
}

fn mib(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

impl ThroughputReport {
    /// The report for people.
    pub fn text(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "raft bench: {} nodes, {} log, {}, {}, {} clients x {}, {}-byte entries, {:.1} s (after {:.1} s warm-up){}",
            c.nodes,
            match c.log {
                LogKind::Mem => "MemLog",
                LogKind::Sled => "SledLog (fdatasync)",
            },
            if c.encrypt {
                format!("encrypted (kdf_iterations {})", c.kdf_iterations)
            } else {
                "plaintext".into()
            },
            match c.transport {
                super::TransportKind::Udp => "UDP transport",
                super::TransportKind::Channel => "ChannelNetwork transport",
            },
            c.clients,
            match (c.pipeline, c.pipeline_api) {
                (0, _) => "1 blocking write in flight".to_string(),
                (n, super::PipelineApi::Submitter) => format!("{n} in flight (Submitter)"),
                (n, super::PipelineApi::Propose) => {
                    format!("{n} in flight (propose, wait on the oldest)")
                }
            },
            c.entry_bytes,
            self.window_seconds,
            c.warmup_seconds,
            if self.leader_changed == Some(true) {
                " -- WARNING: the leader changed during the run"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "  throughput      {:>12.0} committed entries/s ({} entries, {} errors{})",
            self.entries_per_second,
            self.committed_entries,
            self.errors,
            self.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(", first: {e}"))
        );
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  commit latency  p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us (mean {:.1} us)",
            l.p50_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
        );
        let _ = writeln!(
            s,
            "                  = {:.2}x / {:.2}x the floor of {:.1} us (p50 / p99)",
            l.p50_over_floor, l.p99_over_floor, l.floor_us
        );
        let f = &self.floors;
        let _ = writeln!(
            s,
            "  floor           loopback UDP round trip p50 {:.1} us, p99 {:.1} us{}",
            f.udp_round_trip.p50_us,
            f.udp_round_trip.p99_us,
            f.sled_sync.map_or(String::new(), |y| format!(
                "; SledLog append+sync p50 {:.1} us, p99 {:.1} us (on {})",
                y.p50_us,
                y.p99_us,
                f.sled_filesystem.as_deref().unwrap_or("?")
            ))
        );
        if let (Some(rate), Some(one)) = (f.sled_parallel_syncs_per_second, f.sled_parallel_sync) {
            let _ = writeln!(
                s,
                "                  {} SledLogs syncing at once on this disk: {:.0} syncs/s together, p50 {:.1} us each",
                c.nodes, rate, one.p50_us
            );
        }
        let _ = writeln!(
            s,
            "                  {} client threads against a no-op server: {:.0} writes/s (the ceiling of thread-per-client)",
            c.clients, f.client_ceiling_per_second
        );
        let cpu = &self.cpu;
        let _ = writeln!(
            s,
            "  cpu             {} s per 100k entries ({} cores busy; whole process, clients included)",
            opt(cpu.seconds_per_100k_entries, 3),
            opt(cpu.cores_busy, 2)
        );
        let total: f64 = cpu.by_thread_kind.values().sum();
        let mut kinds: Vec<_> = cpu.by_thread_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = kinds
            .iter()
            .map(|(k, v)| format!("{k} {:.0}%", 100.0 * **v / total.max(1e-9)))
            .collect();
        let _ = writeln!(s, "                  by thread: {}", parts.join(", "));
        let _ = writeln!(
            s,
            "                  context switches per entry: {:.1} voluntary, {:.1} involuntary",
            cpu.voluntary_switches_per_entry, cpu.involuntary_switches_per_entry
        );
        let m = &self.memory;
        let _ = writeln!(
            s,
            "  memory          peak RSS {} for the whole process (before the cluster: {}); about {} per node (estimate: all nodes share one process)",
            mib(m.peak_rss_bytes),
            mib(m.rss_before_cluster_bytes),
            mib(m.per_node_estimate_bytes)
        );
        for (who, a) in [
            ("leader", Some(&self.leader_activity)),
            ("follower", self.follower_activity.as_ref()),
        ] {
            if let Some(a) = a {
                let _ = writeln!(
                    s,
                    "  {who:<15} {:.0} syncs/s ({:.1} entries each), {:.0} msgs sent/s, {:.0} received/s, {} dropped",
                    a.syncs_per_second,
                    a.entries_per_sync,
                    a.messages_sent_per_second,
                    a.messages_received_per_second,
                    a.transport_dropped
                );
            }
        }
        s
    }

    /// The report for scripts.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}
