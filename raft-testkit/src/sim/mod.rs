//! The deterministic simulator: N protocol instances, a simulated clock, network, disks
//! and clients, all driven from one seed.
//!
//! A run has two phases (the TigerBeetle shape):
//!
//! 1. **Safety**: for [`SimConfig::safety_ticks`] ticks, clients write and read while the
//!    fault injector partitions the network (symmetric, one-way, an isolated leader, a
//!    bridge node), crashes nodes (losing a random prefix of their unsynced writes) and
//!    restarts them, pauses nodes, forces elections and leadership transfers; links lose,
//!    duplicate, delay (with a long tail) and so reorder messages; node clocks run at
//!    different rates. Every check of [`crate::checker`] runs after every event.
//! 2. **Liveness**: every fault heals (crashed nodes restart, paused ones resume, the
//!    network is clean). Within [`SimConfig::liveness_bound_ticks`] a leader must exist,
//!    a new write must commit, and every node must apply it.
//!
//! Then no acknowledged write may be missing, every node's state machine must equal the
//! state the committed log prefix it applied produces, and the client history must be
//! linearizable.
//!
//! Snapshots ([`SnapshotPolicy`]): nodes snapshot their state machine every so many
//! applied entries and compact their logs behind it, keeping a trailing window, so
//! followers that fall behind catch up by InstallSnapshot, whose chunks the network
//! loses, duplicates and reorders like any message. A node restores its state machine
//! from an installed snapshot, and from its stored snapshot when it restarts; each
//! restore is compared with the state the committed prefix produces.
//!
//! Everything random comes from one ChaCha RNG seeded by [`SimConfig::seed`]; nothing
//! that decides iterates a `HashMap`; so a seed replays exactly ([`RunReport::trace_hash`]).

mod checks;
mod clients;
mod config;
mod driver;
mod faults;
mod report;
mod workload;
mod world;

pub use config::{Broken, BrokenSnapshot, FaultProfile, Scripted, SimConfig, SnapshotPolicy};
pub use report::{Failure, OpCounts, RunReport};
pub use workload::{Call, KvWorkload, Request, Workload};

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use raft_core::{LogIndex, NodeId, Term};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::{SafetyChecker, Violation};
use crate::network::Network;
use crate::sim_log::SimLog;
use crate::trace::Trace;
use checks::*;
use clients::*;
use driver::*;
use world::*;

/// Simulated time units per tick. Delays and clock skew are finer than a tick.
pub const UNITS_PER_TICK: u64 = 1_000;

/// Step budget of the linearizability search, per key.
pub const LIN_BUDGET_STEPS: u64 = 2_000_000;

/// The id of the liveness phase's marker write.
const MARKER_OP: u64 = u64::MAX;

/// A simulation of one seed. See the module docs.
///
/// `W` is what the cluster replicates and its clients ask: the built-in key/value
/// [`KvWorkload`] unless [`Simulator::with_workload`] gives another.
pub struct Simulator<W: Workload = KvWorkload> {
    workload: W,
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<SimNode<W::Machine>>,
    net: Network,
    clients: Vec<Client>,
    history: Vec<Call<W::Input, W::Output>>,
    hist_clock: u64,
    checker: SafetyChecker,
    trace: Trace,
    faults: BTreeMap<&'static str, u64>,
    ops: OpCounts,
    phase: Phase,
    next_request: u64,
    partition_generation: u64,
    pause_counter: u64,
    /// Per directed link: the newest send sequence delivered, to count reordering.
    link_delivered: BTreeMap<(NodeId, NodeId), u64>,
    /// Acknowledged writes: (op, index where it took effect).
    acked: Vec<(u64, LogIndex)>,
    reference: Reference<W::Machine>,
    liveness_start: u64,
    marker: Option<(usize, LogIndex, Term)>,
    liveness_ticks: Option<u64>,
    events: u64,
    lin_unknown: bool,
    verbose: bool,
}

impl Simulator {
    /// A simulator of the key/value workload for `cfg`, nothing run yet.
    ///
    /// # Panics
    /// If `cfg.broken` is set without the `broken-variants` feature, or the protocol
    /// config is invalid.
    pub fn new(cfg: SimConfig) -> Self {
        let keys = cfg.keys;
        Self::with_workload(cfg, KvWorkload { keys })
    }
}

impl<W: Workload> Simulator<W> {
    /// A simulator for `cfg` replicating `workload`'s state machine, nothing run yet.
    ///
    /// # Panics
    /// If `cfg.broken` is set without the `broken-variants` feature, or the protocol
    /// config is invalid.
    pub fn with_workload(cfg: SimConfig, workload: W) -> Self {
        assert!(
            cfg.broken.is_none() || cfg!(feature = "broken-variants"),
            "broken protocol variants need the broken-variants feature"
        );
        assert!((1..=64).contains(&cfg.nodes), "1 to 64 nodes");
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let ids = cfg.node_ids();
        let mut net = Network::new(&ids, UNITS_PER_TICK / 20, UNITS_PER_TICK / 2, &mut rng);
        net.profile = cfg.faults.link;
        let mut faults = BTreeMap::new();
        let mut nodes = Vec::new();
        for &id in &ids {
            let skew = if cfg.faults.clock_skew_max > 0.0 {
                rng.gen_range(-cfg.faults.clock_skew_max..=cfg.faults.clock_skew_max)
            } else {
                0.0
            };
            if skew.abs() > 0.01 {
                *faults.entry("clock_skewed_nodes").or_insert(0) += 1;
            }
            nodes.push(SimNode {
                id,
                raft: None,
                disk: Some(SimLog::new()),
                life: 0,
                paused: None,
                pause_inbox: Vec::new(),
                stall_next_sync_ticks: None,
                missed_ticks: 0,
                syncing: None,
                tick_units: ((UNITS_PER_TICK as f64) * (1.0 + skew)) as u64,
                machine: workload.fresh(),
                placing: BTreeMap::new(),
                applying: Vec::new(),
                reading: BTreeMap::new(),
                read_waiting: Vec::new(),
                last_role: None,
                last_commit: 0,
                receiving_snapshot: false,
                receive_file: None,
                finishing: None,
                accepted: None,
                snapshots_installed: 0,
                crash_trigger: None,
            });
        }
        let clients = (0..cfg.clients)
            .map(|_| Client {
                leader_hint: None,
                op: None,
            })
            .collect();
        let mut sim = Self {
            workload,
            cfg,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            net,
            clients,
            history: Vec::new(),
            hist_clock: 0,
            checker: SafetyChecker::new(),
            trace: Trace::new(),
            faults,
            ops: OpCounts::default(),
            phase: Phase::Safety,
            next_request: 1,
            partition_generation: 0,
            pause_counter: 0,
            link_delivered: BTreeMap::new(),
            acked: Vec::new(),
            reference: Reference::new(),
            liveness_start: 0,
            marker: None,
            liveness_ticks: None,
            events: 0,
            lin_unknown: false,
            verbose: false,
        };
        for i in 0..sim.nodes.len() {
            sim.start_node(i).expect("a fresh node starts");
        }
        for c in 0..sim.clients.len() {
            let at = sim.rng.gen_range(0..5 * UNITS_PER_TICK);
            sim.schedule(at, Ev::ClientStart { client: c });
        }
        if !sim.cfg.faults.kinds().is_empty() {
            let at = sim.fault_gap();
            sim.schedule(at, Ev::Fault);
        }
        for k in 0..sim.cfg.script.len() {
            let at = sim.cfg.script[k].0 * UNITS_PER_TICK;
            sim.schedule(at, Ev::Script { k });
        }
        let end = sim.cfg.safety_ticks * UNITS_PER_TICK;
        sim.schedule(end, Ev::EndSafety);
        sim
    }

    /// Prints every trace event as it happens (for `--trace`).
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// Runs the seed to the end and reports. A protocol panic is caught and reported as
    /// a [`Violation::ProtocolPanic`].
    pub fn run(mut self) -> RunReport {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.run_inner()));
        let violation = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(v)) => Some(v),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Some(Violation::ProtocolPanic { message })
            }
        };
        let failure = violation.map(|violation| Failure {
            seed: self.cfg.seed,
            nodes: self.cfg.nodes,
            nodes_drawn: self.cfg.nodes_drawn,
            lease_forced: self.cfg.lease_forced,
            membership_forced: self.cfg.membership_forced,
            violation,
            at_tick: self.now as f64 / UNITS_PER_TICK as f64,
            trace: self.trace.last_events(UNITS_PER_TICK),
        });
        RunReport {
            seed: self.cfg.seed,
            nodes: self.cfg.nodes,
            faults: self.faults,
            ops: self.ops,
            events: self.events,
            ticks: self.now / UNITS_PER_TICK,
            liveness_ticks: self.liveness_ticks,
            lin_unknown: self.lin_unknown,
            trace_hash: self.trace.hash(),
            snapshots_installed: self
                .nodes
                .iter()
                .map(|n| (n.id, n.snapshots_installed))
                .collect(),
            failure,
        }
    }
}

/// Runs one seed with [`SimConfig::random`].
pub fn run_seed(seed: u64, nodes: Option<usize>) -> RunReport {
    Simulator::new(SimConfig::random(seed, nodes)).run()
}
