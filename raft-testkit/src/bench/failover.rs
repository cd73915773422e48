//! Failover: while clients write, the leader is stopped abruptly (its threads end, no
//! hand-over); how long until a new leader commits its first client write?

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use raft_core::node::Node;
use raft_core::{NodeId, Role};
use serde::Serialize;

use super::{BenchConfig, Sink};

/// How long the clients write before the leader is stopped.
const WRITE_BEFORE_KILL: Duration = Duration::from_millis(300);
/// A trial with no new commit after this long fails.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One trial.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// The leader that was stopped.
    pub killed: NodeId,
    /// From the stop to a surviving node reporting itself leader, milliseconds
    /// (polled every millisecond).
    pub elected_ms: Option<f64>,
    /// From the stop to the first client write acknowledged by a surviving node,
    /// milliseconds.
    pub first_commit_ms: Option<f64>,
}

/// The outcome of the failover measurement.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverReport {
    /// What ran.
    pub config: BenchConfig,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
    /// Median time to the first commit, milliseconds.
    pub p50_ms: f64,
    /// Longest time to the first commit, milliseconds (infinite if a trial failed).
    pub max_ms: f64,
    /// Median time to a new leader, milliseconds.
    pub elected_p50_ms: f64,
    /// The target: twice the longest election timeout, milliseconds.
    pub target_ms: f64,
    /// Whether every trial met the target.
    pub all_within_target: bool,
}

impl FailoverReport {
    /// The report for people.
    pub fn text(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "raft bench failover: {} nodes, {:?} log, {}, {} clients, {} trials",
            c.nodes,
            c.log,
            if c.encrypt { "encrypted" } else { "plaintext" },
            c.clients,
            self.trials.len()
        );
        let _ = writeln!(
            s,
            "  new leader's first commit after the leader stops: p50 {:.1} ms, max {:.1} ms (target: every trial within {:.0} ms: {})",
            self.p50_ms,
            self.max_ms,
            self.target_ms,
            if self.all_within_target { "met" } else { "MISSED" }
        );
        let _ = writeln!(s, "  new leader elected: p50 {:.1} ms", self.elected_p50_ms);
        let fmt = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.1}"));
        let trials: Vec<String> = self
            .trials
            .iter()
            .map(|t| format!("{}/{}", fmt(t.elected_ms), fmt(t.first_commit_ms)))
            .collect();
        let _ = writeln!(
            s,
            "  trials (elected/first commit, ms): {}",
            trials.join(" ")
        );
        s
    }

    /// The report for scripts.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}

/// Runs `config.trials` failover trials, each on a fresh cluster.
///
/// # Errors
/// A cluster that cannot start or elect its first leader.
pub fn run_failover(config: &BenchConfig) -> anyhow::Result<FailoverReport> {
    anyhow::ensure!(config.nodes >= 3, "failover needs at least 3 nodes");
    anyhow::ensure!(config.clients > 0, "at least one client");
    let mut trials = Vec::new();
    for i in 0..config.trials {
        let trial = run_trial(config).with_context(|| format!("trial {i}"))?;
        log::info!("failover trial {i}: {trial:?}");
        trials.push(trial);
    }
    let target = config.failover_target().as_secs_f64() * 1e3;
    let mut commits: Vec<f64> = trials
        .iter()
        .map(|t| t.first_commit_ms.unwrap_or(f64::INFINITY))
        .collect();
    commits.sort_by(f64::total_cmp);
    let mut elected: Vec<f64> = trials
        .iter()
        .map(|t| t.elected_ms.unwrap_or(f64::INFINITY))
        .collect();
    elected.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    let max_ms = commits.last().copied().unwrap_or(f64::NAN);
    Ok(FailoverReport {
        config: config.clone(),
        p50_ms: median(&commits),
        max_ms,
        elected_p50_ms: median(&elected),
        target_ms: target,
        all_within_target: !trials.is_empty() && max_ms <= target,
        trials,
    })
}

/// What the clients share: when and which leader was stopped, and the earliest write a
/// surviving node acknowledged after that.
struct Kill {
    at: OnceLock<Instant>,
    /// The stopped leader's id; 0 until it is stopped.
    killed: AtomicU64,
    /// Nanoseconds from `at` to the first acknowledged write; `u64::MAX`: none yet.
    first_ack_ns: AtomicU64,
    done: AtomicBool,
}

fn run_trial(config: &BenchConfig) -> anyhow::Result<Trial> {
    let mut cluster = config
        .start_cluster(|_| Sink::default())
        .context("start the cluster")?;
    let leader = cluster.wait_for_leader(START_TIMEOUT)?;
    let nodes: Arc<Vec<Node<Sink>>> = Arc::new(
        (1..=config.nodes)
            .map(|id| cluster.node(id).expect("running").clone())
            .collect(),
    );
    nodes[(leader - 1) as usize].propose_with_retry(Bytes::from_static(b"warm"), START_TIMEOUT)?;
    let kill = Arc::new(Kill {
        at: OnceLock::new(),
        killed: AtomicU64::new(0),
        first_ack_ns: AtomicU64::new(u64::MAX),
        done: AtomicBool::new(false),
    });
    let entry = Bytes::from(vec![0x5a; config.entry_bytes]);
    let clients: Vec<_> = (0..config.clients)
        .map(|i| {
            let (nodes, kill, entry) = (nodes.clone(), kill.clone(), entry.clone());
            thread::Builder::new()
                .name(format!("bench-client-{i}"))
                .spawn(move || client(&nodes, leader, &kill, &entry))
                .context("spawn a client")
        })
        .collect::<anyhow::Result<_>>()?;
    thread::sleep(WRITE_BEFORE_KILL);

    let at = Instant::now();
    kill.at.set(at).expect("set once");
    kill.killed.store(leader, Ordering::Release);
    cluster.stop_node(leader);
    let mut elected = None;
    while at.elapsed() < TRIAL_TIMEOUT {
        if elected.is_none()
            && cluster
                .running()
                .iter()
                .any(|n| n.status().role == Role::Leader)
        {
            elected = Some(at.elapsed());
        }
        if elected.is_some() && kill.first_ack_ns.load(Ordering::Acquire) != u64::MAX {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    kill.done.store(true, Ordering::Release);
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    let first = kill.first_ack_ns.load(Ordering::Acquire);
    Ok(Trial {
        killed: leader,
        elected_ms: elected.map(|d| d.as_secs_f64() * 1e3),
        first_commit_ms: (first != u64::MAX).then(|| first as f64 / 1e6),
    })
}

/// Writes through the node it believes leads; after a failure, looks for a running
/// node that says it leads (or any running node, which forwards to the leader).
fn client(nodes: &[Node<Sink>], first_leader: NodeId, kill: &Kill, entry: &Bytes) {
    let mut target = first_leader;
    let mut next_guess = 0usize;
    while !kill.done.load(Ordering::Acquire) {
        let node = &nodes[(target - 1) as usize];
        let result = node
            .propose(entry.clone())
            .and_then(|p| p.wait(WRITE_TIMEOUT));
        let done_at = Instant::now();
        if result.is_ok() {
            let killed = kill.killed.load(Ordering::Acquire);
            if killed != 0 && killed != target {
                let at = *kill.at.get().expect("set before killed");
                let ns = done_at.saturating_duration_since(at).as_nanos() as u64;
                kill.first_ack_ns.fetch_min(ns, Ordering::AcqRel);
            }
            continue;
        }
        // Find the leader again: one that says so, else the next running node.
        let running: Vec<&Node<Sink>> = nodes.iter().filter(|n| n.is_running()).collect();
        target = match running.iter().find(|n| n.status().role == Role::Leader) {
            Some(n) => n.id(),
            None if running.is_empty() => first_leader,
            None => {
                next_guess += 1;
                running[next_guess % running.len()].id()
            }
        };
        thread::sleep(Duration::from_millis(1));
    }
}
