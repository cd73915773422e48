//! The soak benchmark: a 3-node SledLog cluster under sustained closed-loop writes, with
//! a snapshot every `snapshot_every` entries, checking that each node's disk stays within
//! the budget of `docs/operations.md` (`2 x (live log + latest snapshot) + 64 MiB`) at
//! every sample, that throughput does not fall off as snapshots accumulate, and counting
//! leader changes.
//!
//! ```text
//! cargo run --release -p raft-testkit --bin bench -- --soak
//! cargo run --release -p raft-testkit --bin bench -- --soak --soak-scale 0.1
//! ```
//!
//! The state machine ([`SoakStore`]) keeps the newest commands in a ring of slots up to
//! `state_max_bytes`, like a KV store whose keys get overwritten once it is full, so its
//! snapshots grow with the run up to that size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use raft_core::node::{Node, NodeError, RestoreError, StateMachine};
use raft_core::{LogIndex, NodeId, Role};
use serde::Serialize;

use super::{BenchConfig, LogKind};

/// How long one client waits for one write before counting it as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the cluster may take to elect its first leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The slack of the disk budget.
pub const BUDGET_SLACK_BYTES: u64 = 64 << 20;
/// Bytes a stored entry costs besides the command: the runtime's 16-byte envelope and
/// SledLog's 17-byte entry header and crc.
const ENTRY_OVERHEAD_BYTES: u64 = 16 + 17;

/// A state machine of bounded size: command `i` goes to slot `i % slots`.
#[derive(Clone, Debug)]
pub struct SoakStore {
    slots: Vec<Bytes>,
    slots_max: usize,
    next: usize,
}

impl SoakStore {
    /// A store of at most `state_max_bytes` of `entry_bytes` commands.
    pub fn new(state_max_bytes: usize, entry_bytes: usize) -> Self {
        Self {
            slots: Vec::new(),
            slots_max: (state_max_bytes / entry_bytes.max(1)).max(1),
            next: 0,
        }
    }

    /// Bytes of state.
    pub fn state_bytes(&self) -> usize {
        self.slots.iter().map(Bytes::len).sum()
    }
}

impl StateMachine for SoakStore {
    type Response = ();

    fn apply(&mut self, _index: LogIndex, command: &[u8]) {
        let command = Bytes::copy_from_slice(command);
        if self.slots.len() < self.slots_max {
            self.slots.push(command);
        } else {
            self.slots[self.next] = command;
        }
        self.next = (self.next + 1) % self.slots_max;
    }

    /// `next u64 | then per slot: len u32 | bytes`.
    fn snapshot(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(8 + self.state_bytes() + 4 * self.slots.len());
        out.extend_from_slice(&(self.next as u64).to_le_bytes());
        for s in &self.slots {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
        Some(out)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let bad = || RestoreError("a truncated SoakStore snapshot".into());
        let next = u64::from_le_bytes(
            data.get(..8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        let mut at = 8;
        let mut slots = Vec::new();
        while at < data.len() {
            let len = u32::from_le_bytes(
                data.get(at..at + 4)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ) as usize;
            at += 4;
            slots.push(Bytes::copy_from_slice(
                data.get(at..at + len).ok_or_else(bad)?,
            ));
            at += len;
        }
        if slots.len() > self.slots_max || next as usize >= self.slots_max {
            return Err(RestoreError(format!(
                "a SoakStore snapshot of {} slots does not fit {} slots",
                slots.len(),
                self.slots_max
            )));
        }
        self.slots = slots;
        self.next = next as usize;
        Ok(())
    }
}

/// One phase of a soak run: a fresh cluster writing `entries` commands of `entry_bytes`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SoakPhase {
    /// Commands to commit.
    pub entries: u64,
    /// Bytes per command.
    pub entry_bytes: usize,
}

/// What to soak.
#[derive(Clone, Debug, Serialize)]
pub struct SoakConfig {
    /// The phases, each on a fresh cluster.
    pub phases: Vec<SoakPhase>,
    /// Snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// The state machine's size cap.
    pub state_max_bytes: usize,
    /// Seconds between two disk samples (printed as they are taken).
    pub sample_seconds: f64,
}

impl SoakConfig {
    /// The issue-18 soak, scaled: 1,000,000 commands of 100 B, then 200,000 of 1 KB,
    /// snapshots every 10,000, state up to 16 MiB; `scale` multiplies the counts.
    pub fn standard(scale: f64) -> Self {
        let n = |x: f64| ((x * scale).round() as u64).max(1);
        Self {
            phases: vec![
                SoakPhase {
                    entries: n(1_000_000.0),
                    entry_bytes: 100,
                },
                SoakPhase {
                    entries: n(200_000.0),
                    entry_bytes: 1_000,
                },
            ],
            snapshot_every: 10_000,
            state_max_bytes: 16 << 20,
            sample_seconds: 5.0,
        }
    }
}

/// One disk sample of one node.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DiskSample {
    /// Seconds since the phase started.
    pub at_seconds: f64,
    /// The node.
    pub node: NodeId,
    /// Entries committed by the clients so far.
    pub committed: u64,
    /// Bytes under the node's data directory.
    pub disk_bytes: u64,
    /// `2 x (live log + latest snapshot) + 64 MiB` for the node at that moment.
    pub budget_bytes: u64,
}

/// What one phase saw.
#[derive(Clone, Debug, Serialize)]
pub struct SoakPhaseReport {
    /// The phase.
    pub phase: SoakPhase,
    /// Wall time of the phase.
    pub seconds: f64,
    /// Commands committed and acknowledged.
    pub committed: u64,
    /// Failed writes.
    pub errors: u64,
    /// Commits per second over the first 10% of the commands.
    pub first_tenth_per_second: f64,
    /// Commits per second over the last 10%.
    pub last_tenth_per_second: f64,
    /// Leader changes seen (a new leader id or term after the first leader).
    pub leader_changes: u64,
    /// The largest disk of any node at any sample.
    pub max_disk_bytes: u64,
    /// The largest `disk / budget` at any sample.
    pub max_budget_ratio: f64,
    /// Samples over the budget.
    pub over_budget_samples: u64,
    /// Every sample.
    pub samples: Vec<DiskSample>,
}

impl SoakPhaseReport {
    /// A few lines for people.
    pub fn text(&self) -> String {
        format!(
            "soak {} x {} B: {} committed in {:.1} s ({} errors); {:.0}/s in the first 10%, \
             {:.0}/s in the last 10% ({:.0}%); {} leader changes; disk max {:.1} MiB per node, \
             {:.0}% of the budget at worst, {} samples over it\n",
            self.phase.entries,
            self.phase.entry_bytes,
            self.committed,
            self.seconds,
            self.errors,
            self.first_tenth_per_second,
            self.last_tenth_per_second,
            100.0 * self.last_tenth_per_second / self.first_tenth_per_second.max(1e-9),
            self.leader_changes,
            self.max_disk_bytes as f64 / (1 << 20) as f64,
            100.0 * self.max_budget_ratio,
            self.over_budget_samples,
        )
    }
}

/// Runs every phase of `soak` on a fresh cluster of `config` (forced to SledLog).
///
/// # Errors
/// A cluster that cannot start or elect a leader.
pub fn run_soak(config: &BenchConfig, soak: &SoakConfig) -> anyhow::Result<Vec<SoakPhaseReport>> {
    soak.phases
        .iter()
        .map(|phase| run_phase(config, soak, *phase))
        .collect()
}

/// Bytes of the newest snapshot file under a SledLog directory (0: none yet).
fn newest_snapshot_bytes(dir: &std::path::Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir.join("snapshots")) else {
        return 0;
    };
    read.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .max_by_key(|e| e.file_name())
        .and_then(|e| e.metadata().ok())
        .map_or(0, |m| m.len())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn run_phase(
    config: &BenchConfig,
    soak: &SoakConfig,
    phase: SoakPhase,
) -> anyhow::Result<SoakPhaseReport> {
    anyhow::ensure!(config.clients > 0, "at least one client");
    let mut config = config.clone();
    config.log = LogKind::Sled;
    config.node_config.snapshot_after_entries = soak.snapshot_every;
    let (state_max, entry_bytes) = (soak.state_max_bytes, phase.entry_bytes);
    let cluster = config
        .start_cluster(move |_| SoakStore::new(state_max, entry_bytes))
        .context("start the cluster")?;
    let first_leader = cluster.wait_for_leader(START_TIMEOUT)?;
    for n in cluster.running() {
        n.wait_for_cluster(START_TIMEOUT)?;
    }
    let nodes: Vec<Node<SoakStore>> = cluster.running().into_iter().cloned().collect();
    let leader = Arc::new(AtomicU64::new(first_leader));
    nodes[(first_leader - 1) as usize]
        .propose_with_retry(Bytes::from(vec![0u8; entry_bytes]), START_TIMEOUT)?;

    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let entry = Bytes::from(vec![0x5a; entry_bytes]);
    let started = Instant::now();
    let clients: Vec<_> = (0..config.clients)
        .map(|i| {
            let (nodes, leader, acked, errors, entry) = (
                nodes.clone(),
                leader.clone(),
                acked.clone(),
                errors.clone(),
                entry.clone(),
            );
            let target = phase.entries;
            thread::Builder::new()
                .name(format!("soak-client-{i}"))
                .spawn(move || {
                    while acked.load(Ordering::Relaxed) < target {
                        let node = &nodes[(leader.load(Ordering::Relaxed) - 1) as usize];
                        match node
                            .propose(entry.clone())
                            .and_then(|p| p.wait(WRITE_TIMEOUT))
                        {
                            Ok(()) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(NodeError::Stopped) => return,
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                })
                .context("spawn a client")
        })
        .collect::<anyhow::Result<_>>()?;

    // Watch: leader changes every 20 ms, disk every `sample_seconds`, tenths as they pass.
    let dirs: Vec<_> = (1..=config.nodes)
        .map(|id| cluster.dir(id).to_path_buf())
        .collect();
    let tenth = (phase.entries / 10).max(1);
    let (mut first_tenth_at, mut last_tenth_from) = (None, None);
    let mut samples = Vec::new();
    let (mut leader_changes, mut seen) = (0u64, (first_leader, 0u64));
    let mut next_sample = Instant::now();
    let mut last_print = (Instant::now(), 0u64);
    loop {
        let now_acked = acked.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        if first_tenth_at.is_none() && now_acked >= tenth {
            first_tenth_at = Some(elapsed);
        }
        if last_tenth_from.is_none() && now_acked >= phase.entries - tenth {
            last_tenth_from = Some((elapsed, now_acked));
        }
        let statuses: Vec<_> = nodes.iter().map(|n| n.status()).collect();
        if let Some(s) = statuses.iter().find(|s| s.role == Role::Leader) {
            if seen.1 == 0 {
                seen.1 = s.term;
            }
            if (s.id, s.term) != seen {
                leader_changes += 1;
                seen = (s.id, s.term);
                leader.store(s.id, Ordering::Relaxed);
            }
        }
        if Instant::now() >= next_sample || now_acked >= phase.entries {
            next_sample += Duration::from_secs_f64(soak.sample_seconds);
            let mut line = format!(
                "{:>7.1} s {:>9} committed {:>7.0}/s |",
                elapsed.as_secs_f64(),
                now_acked,
                (now_acked - last_print.1) as f64 / last_print.0.elapsed().as_secs_f64().max(1e-9)
            );
            last_print = (Instant::now(), now_acked);
            for (s, dir) in statuses.iter().zip(&dirs) {
                let disk = raft_store::dir_bytes(dir).unwrap_or(0);
                let live = (s.last_index + 1).saturating_sub(s.first_index)
                    * (entry_bytes as u64 + ENTRY_OVERHEAD_BYTES);
                let snapshot = newest_snapshot_bytes(dir);
                let budget = 2 * (live + snapshot) + BUDGET_SLACK_BYTES;
                line += &format!(" n{} {:>6.1}/{:>6.1} MiB", s.id, mib(disk), mib(budget));
                samples.push(DiskSample {
                    at_seconds: elapsed.as_secs_f64(),
                    node: s.id,
                    committed: now_acked,
                    disk_bytes: disk,
                    budget_bytes: budget,
                });
            }
            println!("{line}");
        }
        if now_acked >= phase.entries {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let total = started.elapsed();
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    drop(cluster);
    let first = first_tenth_at.unwrap_or(total).as_secs_f64();
    let (last_from, last_from_acked) = last_tenth_from.unwrap_or((Duration::ZERO, 0));
    let committed = acked.load(Ordering::Relaxed);
    Ok(SoakPhaseReport {
        phase,
        seconds: total.as_secs_f64(),
        committed,
        errors: errors.load(Ordering::Relaxed),
        first_tenth_per_second: tenth as f64 / first.max(1e-9),
        last_tenth_per_second: (committed - last_from_acked) as f64
            / (total - last_from).as_secs_f64().max(1e-9),
        leader_changes,
        max_disk_bytes: samples.iter().map(|s| s.disk_bytes).max().unwrap_or(0),
        max_budget_ratio: samples
            .iter()
            .map(|s| s.disk_bytes as f64 / s.budget_bytes as f64)
            .fold(0.0, f64::max),
        over_budget_samples: samples
            .iter()
            .filter(|s| s.disk_bytes > s.budget_bytes)
            .count() as u64,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_bounded_and_snapshots_round_trip() {
        let mut s = SoakStore::new(1_000, 100);
        for i in 0..25u64 {
            s.apply(i + 1, &[i as u8; 100]);
        }
        assert_eq!(s.state_bytes(), 1_000);
        let snap = s.snapshot().unwrap();
        let mut t = SoakStore::new(1_000, 100);
        t.restore(&snap).unwrap();
        assert_eq!(t.slots, s.slots);
        assert_eq!(t.next, s.next);
        assert!(t.restore(&snap[..snap.len() - 1]).is_err());
        assert!(SoakStore::new(500, 100).restore(&snap).is_err());
    }
}
