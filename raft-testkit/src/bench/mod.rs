//! The cluster benchmark: real nodes in this process, talking over real loopback UDP,
//! driven by closed-loop clients (each writes one entry and waits for it to be applied
//! before writing the next, as openraft's benchmark does).
//!
//! Run it with `cargo run --release -p raft-testkit --bin bench -- --help`;
//! `docs/performance.md` has the results and what limits them.
//!
//! ```no_run
//! use raft_testkit::bench::{self, BenchConfig, LogKind};
//! let config = BenchConfig { log: LogKind::Mem, clients: 64, ..BenchConfig::default() };
//! let report = bench::run_throughput(&config)?;
//! println!("{}", report.text());
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod failover;
pub mod floor;
pub mod histogram;
pub mod proc_stats;
pub mod report;
pub mod sink;
pub mod soak;
pub mod throughput;

use std::time::Duration;

use raft_core::node::{NodeConfig, StateMachine};
use raft_core::NodeId;
use serde::Serialize;

pub use failover::{run_failover, FailoverReport};
pub use report::ThroughputReport;
pub use sink::Sink;
pub use soak::{run_soak, SoakConfig};
pub use throughput::run_throughput;

use crate::cluster::{ClusterOptions, LocalCluster};

/// Where the nodes keep their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// `raft_core::MemLog`: no durability, no I/O.
    Mem,
    /// `raft_store::SledLog` with its real durability point (flush and `fdatasync`).
    Sled,
}

impl std::str::FromStr for LogKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mem" => Ok(Self::Mem),
            "sled" => Ok(Self::Sled),
            other => Err(format!("unknown log {other:?}: use mem or sled")),
        }
    }
}

/// How the nodes talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// raft-net's `UdpTransport` over loopback.
    Udp,
    /// `raft_core::node::ChannelNetwork`: in-process, no sockets, no serialization.
    Channel,
}

impl std::str::FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udp" => Ok(Self::Udp),
            "channel" => Ok(Self::Channel),
            other => Err(format!("unknown transport {other:?}: use udp or channel")),
        }
    }
}

/// Which client API keeps `pipeline` writes in flight per client thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineApi {
    /// `Node::submitter`: submit without blocking, drain completions in bulk.
    Submitter,
    /// `Node::propose` per write, then wait on the oldest `Proposal` (the way to
    /// pipeline before the submitter; kept for A/B runs).
    Propose,
}

impl std::str::FromStr for PipelineApi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "submitter" => Ok(Self::Submitter),
            "propose" => Ok(Self::Propose),
            other => Err(format!(
                "unknown pipeline api {other:?}: use submitter or propose"
            )),
        }
    }
}

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    /// Nodes in the cluster.
    pub nodes: u64,
    /// Log storage.
    pub log: LogKind,
    /// Encrypt and authenticate every datagram (AES-256-CBC + HMAC-SHA256).
    pub encrypt: bool,
    /// PBKDF2 iterations of the cluster password. Only start-up pays for it; the bench
    /// lowers it from the production default so a run starts quickly.
    pub kdf_iterations: u32,
    /// Concurrent closed-loop clients (threads), all writing through the leader.
    pub clients: usize,
    /// Writes each client thread keeps in flight (0: one blocking write at a time,
    /// closed loop).
    pub pipeline: usize,
    /// How pipelined clients keep their writes in flight.
    pub pipeline_api: PipelineApi,
    /// How the nodes talk.
    pub transport: TransportKind,
    /// Bytes of each command (the runtime adds a 16-byte envelope to each entry).
    pub entry_bytes: usize,
    /// Length of the measured window.
    pub seconds: f64,
    /// Time the clients run before the window opens (not measured).
    pub warmup_seconds: f64,
    /// Failover trials.
    pub trials: u32,
    /// Skip the floor measurements (they read as zero), so that a profiler attached to
    /// the whole run sees only the cluster.
    pub skip_floor: bool,
    /// Every node's runtime settings (id, voters and join settings are the cluster's).
    /// The library's defaults unless `--node-config` says otherwise.
    pub node_config: NodeConfig,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            log: LogKind::Mem,
            encrypt: false,
            kdf_iterations: 1_000,
            clients: 64,
            pipeline: 0,
            pipeline_api: PipelineApi::Submitter,
            transport: TransportKind::Udp,
            entry_bytes: 100,
            seconds: 10.0,
            warmup_seconds: 1.0,
            trials: 20,
            skip_floor: false,
            node_config: NodeConfig::default(),
        }
    }
}

impl BenchConfig {
    /// The local cluster these settings describe.
    pub fn cluster_options(&self) -> ClusterOptions {
        ClusterOptions {
            nodes: self.nodes,
            sled: self.log == LogKind::Sled,
            password: self.encrypt.then(|| "bench cluster password".to_string()),
            kdf_iterations: self.kdf_iterations,
            name: "bench".into(),
            channel: self.transport == TransportKind::Channel,
            ..ClusterOptions::default()
        }
    }

    /// Starts the cluster these settings describe, with `make` state machines.
    ///
    /// # Errors
    /// A node that cannot start.
    pub fn start_cluster<S: StateMachine>(
        &self,
        make: impl Fn(NodeId) -> S + Send + Sync + 'static,
    ) -> anyhow::Result<LocalCluster<S>> {
        let template = self.node_config.clone();
        LocalCluster::start_tuned(self.cluster_options(), make, move |c| {
            let mut t = template.clone();
            t.protocol.id = c.protocol.id;
            t.protocol.voters = std::mem::take(&mut c.protocol.voters);
            t.join_attempts = c.join_attempts;
            t.join_attempt_interval_ms = c.join_attempt_interval_ms;
            *c = t;
        })
    }

    /// The failover target: twice the longest randomized election timeout
    /// (`2 x 2 x election_timeout_ticks x tick_interval_ms`).
    pub fn failover_target(&self) -> Duration {
        let c = &self.node_config;
        Duration::from_millis(
            2 * 2 * u64::from(c.protocol.election_timeout_ticks) * c.tick_interval_ms,
        )
    }
}

/// The filesystem type holding `path` (`ext4`, `tmpfs`, ...), from `/proc/mounts`: a
/// sync on tmpfs costs nothing, so the report names it.
pub fn filesystem_of(path: &std::path::Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, at, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at).then(|| (at.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}
