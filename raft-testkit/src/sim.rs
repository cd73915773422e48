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

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use raft_core::{
    Config, Entry, EntryKind, Log, LogIndex, Message, MessageBody, NodeId, ProposeError, Raft,
    ReadMode, Ready, Role, Snapshot, StorageError, Term,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::{digest, DiskState, LogView, SafetyChecker, Violation};
use crate::kv::{KvCommand, KvState};
use crate::linearizability::{check_kv, format_op, KvInput, LinResult, Operation};
use crate::network::{Fate, LinkProfile, Network, PartitionKind};
use crate::sim_log::SimLog;
use crate::trace::{Trace, TraceEvent};

/// Simulated time units per tick. Delays and clock skew are finer than a tick.
pub const UNITS_PER_TICK: u64 = 1_000;

/// Step budget of the linearizability search, per key.
pub const LIN_BUDGET_STEPS: u64 = 2_000_000;

/// The id of the liveness phase's marker write.
const MARKER_OP: u64 = u64::MAX;

/// A deliberately broken protocol variant to run (needs the `broken-variants` feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Votes granted without the §5.4.1 up-to-date check.
    VoteWithoutLogCheck,
    /// Entries of older terms committed by counting replicas (Figure 8).
    CommitOlderTerms,
    /// A driver bug, not a protocol one: a node that resumes from a pause or a stalled
    /// sync handles what queued up meanwhile (messages, client requests) before it
    /// catches up on the ticks it missed, as the WaitLoop did before issue 19. A leader
    /// then answers a queued lease read with a lease that ran out during the stall.
    TicksAfterQueue,
    /// A leader accepts a membership change while the previous one is not committed
    /// (two changes in flight): the membership checker catches the entry it appends.
    TwoChangesInFlight,
    /// A snapshot transfer is taken for complete when its last chunk arrives, without
    /// the chunks before it or a checksum check: the follower stores, and restores
    /// from, a partial snapshot (see `BrokenVariant::InstallPartialSnapshot`).
    InstallPartialSnapshot,
    /// A follower installs a snapshot without adopting the configuration in its
    /// metadata (see `BrokenVariant::SnapshotWithoutConfig`): it keeps counting votes
    /// and commits with the configuration it had.
    SnapshotWithoutConfig,
    /// Vote requests of a stale term are ignored instead of refused with the current
    /// term (see `BrokenVariant::IgnoreStaleVotes`): seed 891 of the membership campaign
    /// then never elects a leader again.
    IgnoreStaleVotes,
    /// Without check-quorum, a vote request of a higher term from a node outside the
    /// configuration deposes the leader (see `BrokenVariant::DisruptiveOutsiders`): seed
    /// 2568 then never keeps a leader long enough to catch a node up by snapshot.
    DisruptiveOutsiders,
}

/// A deliberately broken state machine snapshot, to prove that restores are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenSnapshot {
    /// Snapshots leave out the table of applied operation ids (client sessions): a
    /// node restored from one would apply a retried write a second time.
    WithoutSessions,
    /// The log is compacted before the snapshot that covers it is stored, so a crash can
    /// keep the compaction and lose the snapshot: what a runtime that adopted (or
    /// compacted behind) a snapshot before its file was durable would do.
    CompactBeforeSave,
}

/// When nodes snapshot their state machine and compact their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// A node snapshots once it has applied this many entries past its last snapshot.
    pub every_applied_entries: u64,
    /// Entries kept below the snapshot for slow followers: the log is compacted to the
    /// snapshot's index minus this (and never past what is applied and persisted).
    pub trailing_entries: u64,
}

/// A fault at a chosen moment, for scenarios written by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scripted {
    /// Cut `node` off from every other node (both ways) until [`Scripted::Heal`].
    Isolate(NodeId),
    /// Heal the network.
    Heal,
    /// Crash `node`; it restarts after `down_ticks`.
    Crash {
        /// The node.
        node: NodeId,
        /// Ticks until it restarts.
        down_ticks: u64,
    },
    /// Crash `node` right after the next snapshot chunk it receives that does not
    /// complete the snapshot (a transfer interrupted half way); it restarts after
    /// `down_ticks`.
    CrashWhileReceivingSnapshot {
        /// The node.
        node: NodeId,
        /// Ticks until it restarts.
        down_ticks: u64,
    },
    /// Crash `node` right after it writes the next snapshot it installs from the leader
    /// (saved, log compacted, entries and hard state written) and before the sync,
    /// keeping the first `kept_writes` of that ready's unsynced writes (the save is the
    /// first, the compaction the second; earlier unsynced writes, such as commit-only
    /// hard states, all survive); it restarts after `down_ticks`.
    CrashBeforeSnapshotSync {
        /// The node.
        node: NodeId,
        /// How many unsynced writes survive.
        kept_writes: usize,
        /// Ticks until it restarts.
        down_ticks: u64,
    },
}

/// Which faults a run injects and how hard. Chosen per seed ("swarm testing": each seed
/// enables a random subset, so some runs hammer one fault kind and others mix them).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultProfile {
    /// Link behaviour during the safety phase.
    pub link: LinkProfile,
    /// Symmetric partitions.
    pub partition_symmetric: bool,
    /// One-way partitions.
    pub partition_one_way: bool,
    /// Isolating the current leader.
    pub isolate_leader: bool,
    /// Bridge partitions.
    pub bridge: bool,
    /// Crashes (and restarts).
    pub crash: bool,
    /// Process restarts: a crash followed by a restart within a tick (a supervisor
    /// restarting a killed process), which is what tests that a node does not forget
    /// promises it made before the crash (votes, lease acknowledgements).
    pub quick_restart: bool,
    /// Pauses.
    pub pause: bool,
    /// Stalled syncs: a node's next sync blocks it (as the runtime's WaitLoop blocks in
    /// a long fsync), for up to `node_down_ticks_max`: it misses ticks and its queue
    /// fills; when the sync returns it finishes that ready, catches up on the ticks,
    /// then handles the queue, in the runtime's order.
    pub stall: bool,
    /// Leadership transfers.
    pub transfer: bool,
    /// Forced elections (`campaign` on a random node).
    pub campaign: bool,
    /// Membership changes proposed to the leader (thesis §4): add a learner, promote
    /// one, remove a voter (the leader too) or a learner, replace a voter, swap two
    /// voters through a joint configuration.
    pub membership: bool,
    /// Ticks between fault injections: uniform in this range.
    pub fault_gap_ticks: (u64, u64),
    /// Largest clock-rate deviation of a node, as a fraction (0.05: ±5%).
    pub clock_skew_max: f64,
    /// Chance that a node which just became leader is crashed within two ticks (needs
    /// `crash`).
    pub new_leader_crash: f64,
}

impl FaultProfile {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            link: LinkProfile::clean(),
            partition_symmetric: false,
            partition_one_way: false,
            isolate_leader: false,
            bridge: false,
            crash: false,
            quick_restart: false,
            pause: false,
            stall: false,
            transfer: false,
            campaign: false,
            membership: false,
            fault_gap_ticks: (10, 50),
            clock_skew_max: 0.0,
            new_leader_crash: 0.0,
        }
    }

    fn kinds(&self) -> Vec<FaultKind> {
        let mut k = Vec::new();
        let flags = [
            (
                self.partition_symmetric,
                FaultKind::Partition(PartitionKind::Symmetric),
            ),
            (
                self.partition_one_way,
                FaultKind::Partition(PartitionKind::OneWay),
            ),
            (
                self.isolate_leader,
                FaultKind::Partition(PartitionKind::IsolateLeader),
            ),
            (self.bridge, FaultKind::Partition(PartitionKind::Bridge)),
            (self.crash, FaultKind::Crash),
            (self.quick_restart, FaultKind::QuickRestart),
            (self.pause, FaultKind::Pause),
            (self.stall, FaultKind::Stall),
            (self.transfer, FaultKind::Transfer),
            (self.campaign, FaultKind::Campaign),
            (self.membership, FaultKind::Membership),
        ];
        for (on, kind) in flags {
            if on {
                k.push(kind);
            }
        }
        k
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    Partition(PartitionKind),
    Crash,
    QuickRestart,
    Pause,
    Stall,
    Transfer,
    Campaign,
    Membership,
}

/// Everything a run depends on. Build one with [`SimConfig::random`] (what the campaign
/// does) or by hand for a targeted test.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Cluster size (3 to 7): the voters of the initial configuration, n1 to n`nodes`.
    pub nodes: usize,
    /// Nodes that run from the start outside the configuration (ids after the voters),
    /// for membership changes to add.
    pub spare_nodes: usize,
    /// [`SimConfig::random`] drew the size from the seed (no fixed size was given): a
    /// replay must not fix it either, or the seed's other choices change.
    pub nodes_drawn: bool,
    /// The protocol configuration shared by all nodes (`id` and `voters` are set per node).
    pub raft: Config,
    /// The faults to inject.
    pub faults: FaultProfile,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients use (few keys: more contention per key).
    pub keys: u64,
    /// Length of the safety phase.
    pub safety_ticks: u64,
    /// Bound of the liveness phase: after healing, a leader, a new commit and its apply
    /// on every node must all happen within this many ticks.
    pub liveness_bound_ticks: u64,
    /// A client abandons an attempt after this long and tries another node.
    pub client_attempt_timeout_ticks: u64,
    /// A client gives up an operation after this long (it then never returns).
    pub client_op_timeout_ticks: u64,
    /// Longest time a node stays crashed or paused.
    pub node_down_ticks_max: u64,
    /// Longest time a partition lasts.
    pub partition_ticks_max: u64,
    /// A deliberately broken protocol variant, if any.
    pub broken: Option<Broken>,
    /// Snapshots and log compaction; `None`: logs are never compacted.
    pub snapshots: Option<SnapshotPolicy>,
    /// A deliberately broken state machine snapshot, if any.
    pub broken_snapshot: Option<BrokenSnapshot>,
    /// Faults at fixed ticks of the safety phase, besides the random ones.
    pub script: Vec<(u64, Scripted)>,
    /// [`SimConfig::force_lease_reads`] was applied (a replay must apply it too).
    pub lease_forced: bool,
    /// [`SimConfig::force_membership`] was applied (a replay must apply it too).
    pub membership_forced: bool,
}

impl SimConfig {
    /// A calm run: no faults, default protocol settings.
    pub fn calm(seed: u64, nodes: usize) -> Self {
        let mut raft = Config::new(1, [1]);
        raft.election_timeout_ticks = 10;
        raft.heartbeat_interval_ticks = 2;
        Self {
            seed,
            nodes,
            spare_nodes: 0,
            nodes_drawn: false,
            raft,
            faults: FaultProfile::none(),
            clients: 3,
            keys: 3,
            safety_ticks: 500,
            liveness_bound_ticks: 400,
            client_attempt_timeout_ticks: 25,
            client_op_timeout_ticks: 80,
            node_down_ticks_max: 60,
            partition_ticks_max: 80,
            broken: None,
            snapshots: None,
            broken_snapshot: None,
            script: Vec::new(),
            lease_forced: false,
            membership_forced: false,
        }
    }

    /// The configuration the campaign uses for `seed`: protocol options and fault kinds
    /// drawn from the seed. `nodes` fixes the cluster size (else 3 to 7).
    pub fn random(seed: u64, nodes: Option<usize>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_5f63_6f6e_6669);
        let nodes_drawn = nodes.is_none();
        let nodes = nodes.unwrap_or_else(|| rng.gen_range(3..=7));
        let mut c = Self::calm(seed, nodes);
        c.nodes_drawn = nodes_drawn;
        let r = &mut c.raft;
        r.election_timeout_ticks = 10;
        r.heartbeat_interval_ticks = rng.gen_range(1..=3);
        r.pre_vote = rng.gen_bool(0.5);
        r.check_quorum = rng.gen_bool(0.6);
        r.read_mode = if r.check_quorum && rng.gen_bool(0.5) {
            ReadMode::Lease
        } else {
            ReadMode::ReadIndex
        };
        r.lease_drift_ticks = 2;
        // One 25-byte command costs 65 bytes: sometimes one entry per append.
        let entry = 25 + Entry::OVERHEAD_BYTES;
        r.append_bytes_max = *[entry, 2 * entry, 4 * entry, 16 * entry, 60 * 1024]
            .choose(&mut rng)
            .expect("not empty");
        r.inflight_messages_max = rng.gen_range(1..=8);
        r.inflight_bytes_max = r.append_bytes_max * u64::from(r.inflight_messages_max);
        r.uncommitted_entries_max = *[8, 64, 100_000].choose(&mut rng).expect("not empty");
        let lossy = rng.gen_bool(0.7);
        c.faults = FaultProfile {
            link: LinkProfile {
                loss: if lossy { rng.gen_range(0.0..0.15) } else { 0.0 },
                duplicate: if rng.gen_bool(0.5) {
                    rng.gen_range(0.0..0.1)
                } else {
                    0.0
                },
                long_tail: if rng.gen_bool(0.7) {
                    rng.gen_range(0.0..0.05)
                } else {
                    0.0
                },
                long_tail_max_units: rng.gen_range(2..=30) * UNITS_PER_TICK,
            },
            partition_symmetric: rng.gen_bool(0.6),
            partition_one_way: rng.gen_bool(0.6),
            isolate_leader: rng.gen_bool(0.6),
            bridge: rng.gen_bool(0.6),
            crash: rng.gen_bool(0.7),
            quick_restart: rng.gen_bool(0.5),
            pause: rng.gen_bool(0.6),
            stall: false, // drawn below, from its own stream
            transfer: rng.gen_bool(0.5),
            campaign: rng.gen_bool(0.4),
            membership: false, // drawn below, from its own stream
            fault_gap_ticks: *[(1, 10), (5, 30), (20, 120)]
                .choose(&mut rng)
                .expect("not empty"),
            // The lease holds while clocks differ by less than the drift allowance:
            // (T - 1) / (T - drift) = 9/8 here, so keep rates within ±5% under leases.
            clock_skew_max: if r.read_mode == ReadMode::Lease {
                0.05
            } else {
                0.2
            },
            new_leader_crash: *[0.0, 0.1, 0.3].choose(&mut rng).expect("not empty"),
        };
        c.clients = rng.gen_range(2..=6);
        c.keys = rng.gen_range(1..=5);
        c.safety_ticks = rng.gen_range(600..=1500);
        // Snapshots are drawn from their own stream, so the choices above stay what they
        // were before snapshots existed. Some seeds snapshot every few entries with no
        // trailing window (compaction all the time, transfers to any follower one entry
        // behind), others rarely; chunks are sometimes smaller than the snapshot's
        // header, so a transfer takes many messages that the network can lose,
        // duplicate and reorder.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x736e_6170_7368_6f74);
        c.snapshots = Some(SnapshotPolicy {
            every_applied_entries: *[2, 5, 20, 80, 300].choose(&mut rng).expect("not empty"),
            trailing_entries: *[0, 0, 1, 5, 30].choose(&mut rng).expect("not empty"),
        });
        c.raft.snapshot_chunk_bytes = *[16, 100, 1024, 64 * 1024]
            .choose(&mut rng)
            .expect("not empty");
        // Append batching (Nagle-like), also from its own stream: mostly on, as by
        // default; sometimes looser or off.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e61_676c_6521);
        let window = c.raft.inflight_messages_max;
        c.raft.inflight_small_appends_max = *[1, 1, 2.min(window), window]
            .choose(&mut rng)
            .expect("not empty");
        // Stalled syncs (issue 19), from their own stream as well.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7374_616c_6c21);
        c.faults.stall = rng.gen_bool(0.5);
        // Membership changes, from their own stream too, with up to two spare nodes.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006d_656d_6265_7273);
        c.faults.membership = rng.gen_bool(0.4);
        let spare = rng.gen_range(0..=2);
        if c.faults.membership {
            c.spare_nodes = spare;
        }
        c
    }

    /// Membership changes on every seed, with one or two spare nodes: the membership
    /// campaign (`sim --membership`).
    pub fn force_membership(&mut self) {
        self.faults.membership = true;
        if self.spare_nodes == 0 {
            self.spare_nodes = 1 + (self.seed % 2) as usize;
        }
        self.membership_forced = true;
    }

    /// Every node's id: the initial voters, then the spare nodes.
    pub fn node_ids(&self) -> Vec<NodeId> {
        (1..=(self.nodes + self.spare_nodes) as NodeId).collect()
    }

    /// Lease reads on every node (with the check-quorum they need), and clock rates kept
    /// within the drift the lease allows, whatever the seed drew: the campaign for lease
    /// safety (`sim --lease`). Pauses and stalled syncs are on as well.
    pub fn force_lease_reads(&mut self) {
        self.raft.check_quorum = true;
        self.raft.read_mode = ReadMode::Lease;
        self.faults.clock_skew_max = self.faults.clock_skew_max.min(0.05);
        self.faults.pause = true;
        self.faults.stall = true;
        self.lease_forced = true;
    }

    fn node_config(&self, id: NodeId) -> Config {
        let mut c = self.raft.clone();
        c.id = id;
        c.voters = (1..=self.nodes as NodeId).collect();
        c
    }
}

/// Operation counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Writes invoked.
    pub writes: u64,
    /// Reads invoked.
    pub reads: u64,
    /// Operations that returned.
    pub ok: u64,
    /// Operations that never returned (timed out or still open at the end).
    pub never_returned: u64,
    /// Operations the linearizability checker examined (after pruning).
    pub checked: u64,
}

/// A failed run: what broke, when, and the last events before it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed, to replay.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Whether the size was drawn from the seed (replay without `--nodes`).
    pub nodes_drawn: bool,
    /// Whether lease reads were forced on (replay with `--lease`).
    pub lease_forced: bool,
    /// Whether membership changes were forced on (replay with `--membership`).
    pub membership_forced: bool,
    /// What broke.
    pub violation: Violation,
    /// When, in ticks.
    pub at_tick: f64,
    /// The last events, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({} nodes) failed at tick {:.3}: {}",
            self.seed, self.nodes, self.at_tick, self.violation
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        let nodes = if self.nodes_drawn {
            String::new()
        } else {
            format!(" --nodes {}", self.nodes)
        };
        let lease = if self.lease_forced { " --lease" } else { "" };
        let membership = if self.membership_forced {
            " --membership"
        } else {
            ""
        };
        write!(
            f,
            "replay: cargo run --release -p raft-testkit --bin sim -- --seed {}{nodes}{lease}{membership} --trace",
            self.seed
        )
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Faults injected, by kind (including message-level faults).
    pub faults: BTreeMap<&'static str, u64>,
    /// Client operations.
    pub ops: OpCounts,
    /// Events processed.
    pub events: u64,
    /// Simulated ticks elapsed.
    pub ticks: u64,
    /// Ticks from healing to the first new commit in the liveness phase.
    pub liveness_ticks: Option<u64>,
    /// Whether the linearizability search gave up on some key (budget exceeded).
    pub lin_unknown: bool,
    /// A hash of every event: equal for two runs of the same seed.
    pub trace_hash: u64,
    /// Snapshots each node installed from a leader.
    pub snapshots_installed: BTreeMap<NodeId, u64>,
    /// The failure, if any.
    pub failure: Option<Failure>,
}

// ----- internals ------------------------------------------------------------------------

#[derive(Debug)]
enum Ev {
    Tick {
        node: usize,
        life: u32,
    },
    Deliver {
        msg: Message,
        send_seq: u64,
    },
    SyncDone {
        node: usize,
        life: u32,
    },
    /// The sync after a node stored a snapshot of its own.
    SnapshotSync {
        node: usize,
        life: u32,
    },
    /// A follower's received snapshot file is durable (synced and renamed).
    ReceivedDurable {
        node: usize,
        life: u32,
    },
    /// The `k`th scripted fault.
    Script {
        k: usize,
    },
    /// A crash a scripted trigger fired; `kept_writes` as in [`SimLog::crash_keeping`].
    TriggeredCrash {
        node: usize,
        life: u32,
        kept_writes: Option<usize>,
        down_ticks: u64,
    },
    Fault,
    /// One more fault, outside the regular schedule.
    ExtraFault,
    HealPartition {
        generation: u64,
    },
    Restart {
        node: usize,
    },
    Resume {
        node: usize,
        pause: u64,
    },
    ClientStart {
        client: usize,
    },
    ClientResend {
        client: usize,
        op: u64,
    },
    ClientArrive {
        node: usize,
        client: usize,
        op: u64,
        attempt: u32,
        request: u64,
    },
    ClientTimeout {
        client: usize,
        op: u64,
        attempt: u32,
    },
    /// Crash and quickly restart a node, if partition `generation` is still in force.
    QuickRestart {
        node: usize,
        generation: u64,
    },
    /// Crash a node that just became leader, if it still leads that term.
    CrashNewLeader {
        node: usize,
        term: Term,
    },
    EndSafety,
}

/// A client's request in progress at a node.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    client: usize,
    op: u64,
    attempt: u32,
}

#[derive(Debug)]
enum Reply {
    /// Done: a read's output, or the index where a write took effect.
    Ok(Option<Option<u64>>, Option<LogIndex>),
    /// Definitely did not take effect (or a read failed): retry, at `hint` if known.
    Retry(Option<NodeId>),
}

struct SimNode {
    id: NodeId,
    raft: Option<Raft<SimLog>>,
    /// The disk while crashed.
    disk: Option<SimLog>,
    life: u32,
    paused: Option<u64>,
    pause_inbox: Vec<Ev>,
    missed_ticks: u64,
    /// The next sync stalls the node for this many ticks (a `Stall` fault).
    stall_next_sync_ticks: Option<u64>,
    syncing: Option<Ready>,
    tick_units: u64,
    kv: KvState,
    /// Proposals waiting for the leader's placement, by request id.
    placing: BTreeMap<u64, Waiter>,
    /// Placed proposals waiting to be applied: (waiter, index).
    applying: Vec<(Waiter, LogIndex)>,
    /// Reads waiting for a read index, by request id, with their key.
    reading: BTreeMap<u64, (Waiter, u64)>,
    /// Reads waiting for the state machine to reach their index: (waiter, key, index).
    read_waiting: Vec<(Waiter, u64, LogIndex)>,
    /// Last role and term and commit reported to the trace.
    last_role: Option<(Role, Term)>,
    last_commit: LogIndex,
    /// The node got a chunk of a snapshot it has not installed yet (in this life).
    receiving_snapshot: bool,
    /// The snapshot being received, as written so far (a temporary file: lost in a
    /// crash). Not checked here: the protocol decides when it is complete.
    receive_file: Option<Snapshot>,
    /// A received snapshot whose file is being made durable (`Ev::ReceivedDurable`).
    finishing: Option<Snapshot>,
    /// A received snapshot, durable, that the protocol accepted: stored in the log with
    /// the ready that installs it.
    accepted: Option<Snapshot>,
    snapshots_installed: u64,
    /// A scripted crash waiting for its moment.
    crash_trigger: Option<Scripted>,
}

struct ClientOp {
    id: u64,
    input: KvInput,
    attempt: u32,
    node: usize,
    deadline: u64,
}

struct Client {
    leader_hint: Option<NodeId>,
    op: Option<ClientOp>,
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Phase {
    Safety,
    Liveness,
    Done,
}

struct RaftView<'a>(&'a Raft<SimLog>);

impl LogView for RaftView<'_> {
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.0.term_at(index)
    }

    fn compacted_to(&self) -> LogIndex {
        let stored = self.0.log().snapshot_meta().last_index;
        // A snapshot installed from the leader moves the protocol's log start (and its
        // applied index) before the driver has stored it: the log then holds the
        // snapshot's last index but not the one before.
        let applied = self.0.applied_index();
        let installing = applied > stored
            && self.0.term_at(applied).is_some()
            && self.0.term_at(applied - 1).is_none();
        if installing {
            applied
        } else {
            stored
        }
    }
}

/// The state each committed prefix produces: the ground truth that restored snapshots
/// and final state machines are compared with.
#[derive(Default)]
struct Reference {
    /// The committed entries' data: `entries[i - 1]` is index `i`. Filled as nodes
    /// apply (the checker has verified that they agree).
    entries: Vec<Bytes>,
    /// States already built, by applied index, to build later ones from.
    states: BTreeMap<LogIndex, KvState>,
}

impl Reference {
    const STATES_MAX: usize = 64;

    fn applied(&mut self, index: LogIndex, data: &Bytes) {
        if index == self.entries.len() as LogIndex + 1 {
            self.entries.push(data.clone());
        }
    }

    /// The state after applying the committed entries up to `index`, if all are known.
    fn state_at(&mut self, index: LogIndex) -> Option<KvState> {
        if index > self.entries.len() as LogIndex {
            return None;
        }
        let (from, mut state) = self
            .states
            .range(..=index)
            .next_back()
            .map_or((0, KvState::default()), |(&i, s)| (i, s.clone()));
        for i in from + 1..=index {
            state.apply(i, &self.entries[(i - 1) as usize]);
        }
        if self.states.len() >= Self::STATES_MAX {
            self.states.pop_first();
        }
        self.states.insert(index, state.clone());
        Some(state)
    }

    /// Checks a state machine against the committed prefix it claims to hold.
    fn check(&mut self, node: NodeId, kv: &KvState) -> Result<(), Violation> {
        let index = kv.applied_index();
        let Some(expected) = self.state_at(index) else {
            return Err(Violation::BadSnapshot {
                node,
                index,
                detail: format!(
                    "it holds {index} entries, only {} are known committed",
                    self.entries.len()
                ),
            });
        };
        if *kv != expected {
            return Err(Violation::BadSnapshot {
                node,
                index,
                detail: format!(
                    "its state ({} keys, {} operations) differs from the committed \
                     prefix's ({} keys, {} operations)",
                    kv.key_count(),
                    kv.operation_count(),
                    expected.key_count(),
                    expected.operation_count()
                ),
            });
        }
        Ok(())
    }
}

/// A simulation of one seed. See the module docs.
pub struct Simulator {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<SimNode>,
    net: Network,
    clients: Vec<Client>,
    history: Vec<Operation>,
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
    reference: Reference,
    liveness_start: u64,
    marker: Option<(usize, LogIndex, Term)>,
    liveness_ticks: Option<u64>,
    events: u64,
    lin_unknown: bool,
    verbose: bool,
}

impl Simulator {
    /// A simulator for `cfg`, nothing run yet.
    ///
    /// # Panics
    /// If `cfg.broken` is set without the `broken-variants` feature, or the protocol
    /// config is invalid.
    pub fn new(cfg: SimConfig) -> Self {
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
                kv: KvState::new(),
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
            reference: Reference::default(),
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

    fn run_inner(&mut self) -> Result<(), Violation> {
        while self.phase != Phase::Done {
            let Some(((time, _), ev)) = self.queue.pop_first() else {
                return Err(Violation::Liveness {
                    detail: "the event queue ran dry".into(),
                });
            };
            self.now = time;
            self.events += 1;
            self.handle(ev)?;
            if self.phase == Phase::Liveness {
                self.check_liveness()?;
            }
        }
        self.final_checks()
    }

    // ----- scheduling and bookkeeping ----------------------------------------------------

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn schedule_in(&mut self, delay: u64, ev: Ev) {
        self.schedule(self.now + delay, ev);
    }

    fn count(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_insert(0) += 1;
    }

    fn record(&mut self, event: TraceEvent) {
        if self.verbose {
            println!("{:>9.3} {event}", self.now as f64 / UNITS_PER_TICK as f64);
        }
        self.trace.record(self.now, event);
    }

    fn fault_gap(&mut self) -> u64 {
        let (lo, hi) = self.cfg.faults.fault_gap_ticks;
        self.rng
            .gen_range(lo * UNITS_PER_TICK..=hi * UNITS_PER_TICK)
    }

    fn hist_time(&mut self) -> u64 {
        self.hist_clock += 1;
        self.hist_clock
    }

    fn node_is_up(&self, i: usize) -> bool {
        self.nodes[i].raft.is_some()
    }

    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.paused.is_none())
            .filter_map(|(i, n)| n.raft.as_ref().map(|r| (i, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(i, _)| i)
    }

    // ----- node lifecycle ----------------------------------------------------------------

    fn start_node(&mut self, i: usize) -> Result<(), Violation> {
        let disk = self.nodes[i]
            .disk
            .take()
            .expect("a stopped node has a disk");
        let durable = disk.hard_state();
        let last_index = disk.last_index();
        let id = self.nodes[i].id;
        let stored = disk.snapshot().map_err(|e| Violation::Storage {
            node: id,
            detail: e.to_string(),
        })?;
        let config = self.cfg.node_config(self.nodes[i].id);
        let seed = self.rng.gen();
        #[allow(unused_mut)]
        let mut raft = Raft::new(config, disk, seed).expect("valid config");
        #[cfg(feature = "broken-variants")]
        if let Some(b) = self.cfg.broken {
            use raft_core::protocol::BrokenVariant;
            raft.set_broken_variant(match b {
                Broken::VoteWithoutLogCheck => Some(BrokenVariant::VoteWithoutLogCheck),
                Broken::CommitOlderTerms => Some(BrokenVariant::CommitOlderTerms),
                Broken::TwoChangesInFlight => Some(BrokenVariant::TwoChangesInFlight),
                Broken::TicksAfterQueue => None, // the driver's bug: see `resume`
                Broken::InstallPartialSnapshot => Some(BrokenVariant::InstallPartialSnapshot),
                Broken::SnapshotWithoutConfig => Some(BrokenVariant::SnapshotWithoutConfig),
                Broken::IgnoreStaleVotes => Some(BrokenVariant::IgnoreStaleVotes),
                Broken::DisruptiveOutsiders => Some(BrokenVariant::DisruptiveOutsiders),
            });
        }
        let snapshot_index = stored.as_ref().map_or(0, |s| s.meta.last_index);
        if self.nodes[i].life > 0 {
            let disk = DiskState {
                hard_state: durable,
                last_index,
                snapshot_index,
            };
            self.checker.observe_restart(
                id,
                disk,
                raft.term(),
                raft.vote(),
                raft.commit_index(),
            )?;
            self.record(TraceEvent::Restart {
                node: id,
                term: raft.term(),
                commit: raft.commit_index(),
                last_index,
            });
        }
        // The state machine starts from the stored snapshot, as `Raft::new` expects.
        let kv = match &stored {
            Some(snapshot) => self.restore_snapshot(id, snapshot)?,
            None => KvState::new(),
        };
        if stored.is_some() && self.nodes[i].life > 0 {
            self.count("snapshot_restored_at_restart");
        }
        let node = &mut self.nodes[i];
        node.raft = Some(raft);
        node.kv = kv;
        node.last_role = None;
        node.last_commit = 0;
        node.receiving_snapshot = false;
        let life = node.life;
        let first_tick = self.rng.gen_range(1..=self.nodes[i].tick_units);
        self.schedule_in(first_tick, Ev::Tick { node: i, life });
        self.after_node_event(i)
    }

    fn crash(&mut self, i: usize) -> Result<(), Violation> {
        self.crash_keeping(i, None)
    }

    /// Crashes node `i`, keeping `kept_writes` of its unsynced writes (random if `None`).
    fn crash_keeping(&mut self, i: usize, kept_writes: Option<usize>) -> Result<(), Violation> {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return Ok(());
        };
        let snapshot_unsynced = raft.log().snapshot_pending();
        let (disk, outcome) = match kept_writes {
            Some(k) => raft.log().crash_keeping(k, None),
            None => raft.log().crash(&mut self.rng),
        };
        if snapshot_unsynced {
            self.count("crash_before_snapshot_sync");
        }
        if self.nodes[i].receiving_snapshot {
            self.count("crash_while_receiving_snapshot");
        }
        if outcome.lost_snapshot {
            self.count("crash_lost_unsynced_snapshot");
        }
        if outcome.snapshot_without_compaction {
            self.count("crash_kept_snapshot_not_compaction");
        }
        self.nodes[i].raft = None;
        let node = &mut self.nodes[i];
        node.disk = Some(disk);
        node.life += 1;
        node.paused = None;
        node.pause_inbox.clear();
        node.missed_ticks = 0;
        node.stall_next_sync_ticks = None;
        node.syncing = None;
        node.placing.clear();
        node.applying.clear();
        node.reading.clear();
        node.read_waiting.clear();
        node.receiving_snapshot = false;
        node.receive_file = None;
        node.finishing = None;
        node.accepted = None;
        let id = node.id;
        self.checker.observe_crash(id);
        self.count("crash");
        if outcome.lost_anything() {
            self.count("crash_lost_unsynced_writes");
        }
        if outcome.torn_append {
            self.count("crash_torn_append");
        }
        self.record(TraceEvent::Crash { node: id, outcome });
        Ok(())
    }

    // ----- the event loop ----------------------------------------------------------------

    fn handle(&mut self, ev: Ev) -> Result<(), Violation> {
        match ev {
            Ev::Tick { node, life } => self.on_tick(node, life),
            Ev::Deliver { msg, send_seq } => self.on_deliver(msg, send_seq),
            Ev::SyncDone { node, life } => self.on_sync_done(node, life),
            Ev::SnapshotSync { node, life } => self.on_snapshot_sync(node, life),
            Ev::ReceivedDurable { node, life } => self.on_received_durable(node, life),
            Ev::Script { k } => self.on_script(k),
            Ev::TriggeredCrash {
                node,
                life,
                kept_writes,
                down_ticks,
            } => {
                if self.nodes[node].life != life || self.phase != Phase::Safety {
                    return Ok(());
                }
                self.count("scripted_crash");
                self.crash_keeping(node, kept_writes)?;
                self.schedule_in(down_ticks * UNITS_PER_TICK, Ev::Restart { node });
                Ok(())
            }
            Ev::Fault => self.on_fault(),
            Ev::ExtraFault => self.inject_fault(),
            Ev::HealPartition { generation } => {
                if generation == self.partition_generation && self.net.is_partitioned() {
                    self.net.heal();
                    self.count("heal");
                    self.record(TraceEvent::Heal);
                }
                Ok(())
            }
            Ev::Restart { node } => {
                if self.node_is_up(node) || self.phase != Phase::Safety {
                    return Ok(());
                }
                self.count("restart");
                self.start_node(node)
            }
            Ev::Resume { node, pause } => {
                if self.nodes[node].paused == Some(pause) {
                    self.resume(node)?;
                }
                Ok(())
            }
            Ev::ClientStart { client } => {
                self.client_start(client);
                Ok(())
            }
            Ev::ClientResend { client, op } => {
                self.client_send(client, op);
                Ok(())
            }
            Ev::ClientArrive {
                node,
                client,
                op,
                attempt,
                request,
            } => self.on_client_arrive(node, client, op, attempt, request),
            Ev::ClientTimeout {
                client,
                op,
                attempt,
            } => {
                self.on_client_timeout(client, op, attempt);
                Ok(())
            }
            Ev::CrashNewLeader { node, term } => {
                let leads = self.nodes[node]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader && r.term() == term);
                if !leads || self.phase != Phase::Safety {
                    return Ok(());
                }
                self.count("crash_new_leader");
                self.crash(node)?;
                let d = self.rng.gen_range(UNITS_PER_TICK / 4..=5 * UNITS_PER_TICK);
                self.schedule_in(d, Ev::Restart { node });
                Ok(())
            }
            Ev::QuickRestart { node, generation } => {
                if generation != self.partition_generation
                    || !self.net.is_partitioned()
                    || !self.node_is_up(node)
                    || self.phase != Phase::Safety
                {
                    return Ok(());
                }
                self.count("quick_restart");
                self.crash(node)?;
                let d = self.rng.gen_range(UNITS_PER_TICK / 10..=UNITS_PER_TICK);
                self.schedule_in(d, Ev::Restart { node });
                Ok(())
            }
            Ev::EndSafety => self.start_liveness(),
        }
    }

    fn on_tick(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life || node.raft.is_none() {
            return Ok(());
        }
        let period = node.tick_units;
        self.schedule_in(period, Ev::Tick { node: i, life });
        let node = &mut self.nodes[i];
        if node.paused.is_some() {
            node.missed_ticks += 1;
            return Ok(());
        }
        node.raft.as_mut().expect("up").tick();
        self.trace.record_quiet(self.now, i as u64);
        self.drive(i)?;
        self.after_node_event(i)
    }

    fn on_deliver(&mut self, msg: Message, send_seq: u64) -> Result<(), Violation> {
        let i = (msg.to - 1) as usize;
        if !self.net.connected(msg.from, msg.to) {
            self.count("msg_cut_by_partition");
            self.record(TraceEvent::Drop {
                from: msg.from,
                to: msg.to,
                kind: msg.body.kind(),
                cut: true,
            });
            return Ok(());
        }
        if !self.node_is_up(i) {
            return Ok(());
        }
        if self.nodes[i].paused.is_some() {
            self.nodes[i]
                .pause_inbox
                .push(Ev::Deliver { msg, send_seq });
            return Ok(());
        }
        let newest = self.link_delivered.entry((msg.from, msg.to)).or_insert(0);
        let reordered = send_seq < *newest;
        *newest = (*newest).max(send_seq);
        if reordered {
            self.count("msg_reordered");
        }
        self.record(TraceEvent::Deliver {
            from: msg.from,
            to: msg.to,
            term: msg.term,
            kind: msg.body.kind(),
            detail: msg_detail(&msg.body),
        });
        let partial_chunk = match &msg.body {
            MessageBody::InstallSnapshot { done, .. } => {
                if reordered {
                    self.count("snapshot_chunk_reordered");
                }
                self.nodes[i].receiving_snapshot = true;
                done.is_none()
            }
            _ => false,
        };
        self.nodes[i].raft.as_mut().expect("up").step(msg);
        self.drive(i)?;
        if partial_chunk {
            self.fire_trigger(i, 0, |t| {
                matches!(t, Scripted::CrashWhileReceivingSnapshot { .. })
            });
        }
        self.after_node_event(i)
    }

    fn on_sync_done(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life || node.raft.is_none() {
            return Ok(());
        }
        if node.paused.is_some() {
            node.pause_inbox.push(Ev::SyncDone { node: i, life });
            return Ok(());
        }
        let raft = node.raft.as_mut().expect("up");
        raft.log_mut().sync().map_err(|e| Violation::Storage {
            node: node.id,
            detail: e.to_string(),
        })?;
        let hs = raft.log().hard_state();
        let id = node.id;
        let ready = node.syncing.take().expect("a sync was in flight");
        self.checker.observe_sync(id, hs);
        self.finish_ready(i, ready)?;
        self.drive(i)?;
        self.after_node_event(i)
    }

    /// A received snapshot's file is durable: the protocol learns it and, if it still
    /// needs the snapshot, installs it with its next ready.
    fn on_received_durable(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life || node.raft.is_none() {
            return Ok(());
        }
        if node.paused.is_some() {
            node.pause_inbox.push(Ev::ReceivedDurable { node: i, life });
            return Ok(());
        }
        let Some(snapshot) = node.finishing.take() else {
            return Ok(());
        };
        let raft = node.raft.as_mut().expect("up");
        if raft.snapshot_received(snapshot.meta.clone(), true) {
            node.accepted = Some(snapshot);
            self.count("snapshot_received_durable");
        } else {
            self.count("snapshot_received_not_needed");
        }
        self.drive(i)?;
        self.after_node_event(i)
    }

    fn on_snapshot_sync(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life {
            return Ok(());
        }
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        // A paused process does not run its disk syncs either.
        if node.paused.is_some() {
            node.pause_inbox.push(Ev::SnapshotSync { node: i, life });
            return Ok(());
        }
        raft.log_mut().sync().map_err(|e| Violation::Storage {
            node: node.id,
            detail: e.to_string(),
        })?;
        let hs = raft.log().hard_state();
        self.checker.observe_sync(node.id, hs);
        Ok(())
    }

    fn on_script(&mut self, k: usize) -> Result<(), Violation> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        let action = self.cfg.script[k].1;
        self.count("scripted_fault");
        match action {
            Scripted::Isolate(node) => {
                let others: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .map(|n| n.id)
                    .filter(|&id| id != node)
                    .collect();
                self.net.cut_between(&[node], &others);
                self.partition_generation += 1;
                self.record(TraceEvent::Partition {
                    description: format!("n{node} isolated (scripted)"),
                });
            }
            Scripted::Heal => {
                self.net.heal();
                self.record(TraceEvent::Heal);
            }
            Scripted::Crash { node, down_ticks } => {
                let i = (node - 1) as usize;
                self.crash(i)?;
                self.schedule_in(down_ticks * UNITS_PER_TICK, Ev::Restart { node: i });
            }
            Scripted::CrashWhileReceivingSnapshot { node, .. }
            | Scripted::CrashBeforeSnapshotSync { node, .. } => {
                self.nodes[(node - 1) as usize].crash_trigger = Some(action);
            }
        }
        Ok(())
    }

    /// Fires node `i`'s scripted crash if `now` is its moment: right away, before any
    /// other event (the pending sync in particular).
    /// `writes_before`: unsynced writes the node had before the moment's own writes.
    fn fire_trigger(&mut self, i: usize, writes_before: usize, moment: fn(&Scripted) -> bool) {
        let Some(trigger) = self.nodes[i].crash_trigger.filter(moment) else {
            return;
        };
        let (kept_writes, down_ticks) = match trigger {
            Scripted::CrashBeforeSnapshotSync {
                kept_writes,
                down_ticks,
                ..
            } => (Some(writes_before.saturating_add(kept_writes)), down_ticks),
            Scripted::CrashWhileReceivingSnapshot { down_ticks, .. } => (None, down_ticks),
            _ => return,
        };
        self.nodes[i].crash_trigger = None;
        let life = self.nodes[i].life;
        self.schedule_in(
            0,
            Ev::TriggeredCrash {
                node: i,
                life,
                kept_writes,
                down_ticks,
            },
        );
    }

    /// Handles readies until none is left or one waits for its sync.
    fn drive(&mut self, i: usize) -> Result<(), Violation> {
        loop {
            let node = &mut self.nodes[i];
            if node.syncing.is_some() || node.paused.is_some() {
                return Ok(());
            }
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                return Ok(());
            }
            let id = node.id;
            let ready = raft.ready();
            // Received snapshot data goes to a temporary file, unsynced; a complete one
            // is synced and renamed off the protocol's thread, which learns it later.
            for chunk in &ready.snapshot_chunks {
                if chunk.offset == 0 {
                    node.receive_file = Some(Snapshot {
                        meta: chunk.meta.clone(),
                        data: Default::default(),
                    });
                }
                match node.receive_file.as_mut() {
                    Some(f) if f.meta == chunk.meta && f.data.len() as u64 == chunk.offset => {
                        let mut data = f.data.to_vec();
                        data.extend_from_slice(&chunk.data);
                        f.data = data.into();
                    }
                    other => {
                        return Err(Violation::Storage {
                            node: id,
                            detail: format!(
                                "snapshot data for {:?} at offset {} after {:?}",
                                chunk.meta,
                                chunk.offset,
                                other.map(|f| (f.meta.clone(), f.data.len()))
                            ),
                        })
                    }
                }
            }
            if let Some(info) = &ready.received_snapshot {
                match node.receive_file.take() {
                    Some(f) if f.meta == info.meta => {
                        node.finishing = Some(f);
                        let life = node.life;
                        // A big file's fsync can take a while: sometimes several ticks.
                        let delay = if self.rng.gen_bool(0.1) {
                            self.rng.gen_range(UNITS_PER_TICK..=4 * UNITS_PER_TICK)
                        } else {
                            self.rng.gen_range(10..=UNITS_PER_TICK / 2)
                        };
                        self.schedule_in(delay, Ev::ReceivedDurable { node: i, life });
                    }
                    other => {
                        return Err(Violation::Storage {
                            node: id,
                            detail: format!(
                                "the snapshot {:?} is complete but {:?} was written",
                                info.meta,
                                other.map(|f| f.meta)
                            ),
                        })
                    }
                }
            }
            let node = &mut self.nodes[i];
            let raft = node.raft.as_mut().expect("up");
            if !ready.must_sync() {
                self.finish_ready(i, ready)?;
                continue;
            }
            let storage = move |e: raft_core::StorageError| Violation::Storage {
                node: id,
                detail: e.to_string(),
            };
            // A ready that moves only the commit index is written but not synced, as the
            // runtime does (`Ready::must_sync_after`): a crash may lose it, and the node
            // must then learn the commit index again from the leader.
            if !ready.must_sync_after(&raft.log().durable_hard_state()) {
                if let Some(hs) = ready.hard_state {
                    raft.log_mut().set_hard_state(hs).map_err(storage)?;
                }
                self.count("commit_written_unsynced");
                // The checker sees the new commit index before anything is applied.
                self.after_node_event(i)?;
                self.finish_ready(i, ready)?;
                continue;
            }
            // 1. Store the snapshot and compact the log to it, before the entries that
            // follow it; then write entries and hard state. All of it is visible now and
            // durable at the sync.
            let writes_before = raft.log().pending_writes();
            if let Some(meta) = &ready.snapshot {
                let snapshot = match node.accepted.take() {
                    Some(s) if s.meta == *meta => s,
                    other => {
                        return Err(Violation::Storage {
                            node: id,
                            detail: format!(
                                "the protocol installs {meta:?} but {:?} was received",
                                other.map(|s| s.meta)
                            ),
                        })
                    }
                };
                let log = raft.log_mut();
                log.save_snapshot(&snapshot).map_err(storage)?;
                log.compact(meta.clone()).map_err(storage)?;
            }
            if raft.role() == Role::Leader {
                for e in ready
                    .entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::Membership && e.term == raft.term())
                {
                    let next = raft.membership_at(e.index);
                    let prev_index = raft.membership_since(e.index - 1);
                    let prev = raft.membership_at(e.index - 1);
                    let commit = raft.commit_index();
                    let commit_term = raft
                        .term_at(commit)
                        .or_else(|| self.checker.committed_term(commit));
                    self.checker.observe_membership_appended(
                        id,
                        e.term,
                        e.index,
                        prev_index,
                        prev,
                        next,
                        commit,
                        commit_term,
                    )?;
                }
            }
            if let Some(first) = ready.entries.first() {
                let prev_term = raft.log().term(first.index - 1).unwrap_or(0);
                raft.log_mut().append(&ready.entries).map_err(storage)?;
                let written: Vec<(LogIndex, Term, u64)> = ready
                    .entries
                    .iter()
                    .map(|e| (e.index, e.term, entry_digest(e)))
                    .collect();
                self.checker.observe_write(id, prev_term, &written)?;
            }
            let node = &mut self.nodes[i];
            let raft = node.raft.as_mut().expect("up");
            if let Some(hs) = ready.hard_state {
                raft.log_mut().set_hard_state(hs).map_err(storage)?;
            }
            // 2. The leader's appends, heartbeats and snapshot chunks go out before its
            // own write is durable, as the runtime sends them (Ready::take_messages_before_sync):
            // a crash before the sync then leaves followers with entries the leader lost.
            let mut ready = ready;
            let early = ready.take_messages_before_sync();
            // 3. The sync completes after a disk delay; a crash before then tears the tail.
            let installs = ready.snapshot.is_some();
            node.syncing = Some(ready);
            if !early.is_empty() {
                self.count("sent_before_sync");
                for msg in early {
                    self.send(msg);
                }
            }
            let node = &mut self.nodes[i];
            let life = node.life;
            if let Some(ticks) = node.stall_next_sync_ticks.take() {
                // The runtime's WaitLoop blocks in its sync: the node misses ticks and
                // its queue fills until the sync returns (see `resume`).
                self.pause_counter += 1;
                let pause = self.pause_counter;
                let node = &mut self.nodes[i];
                node.paused = Some(pause);
                node.missed_ticks = 0;
                let id = node.id;
                self.count("stall");
                self.record(TraceEvent::Stall { node: id, ticks });
                let delay = ticks * UNITS_PER_TICK;
                self.schedule_in(delay, Ev::SyncDone { node: i, life });
                self.schedule_in(delay + 1, Ev::Resume { node: i, pause });
            } else {
                let delay = if self.rng.gen_bool(0.05) {
                    self.rng.gen_range(UNITS_PER_TICK..=3 * UNITS_PER_TICK)
                } else {
                    self.rng.gen_range(10..=UNITS_PER_TICK / 4)
                };
                self.schedule_in(delay, Ev::SyncDone { node: i, life });
            }
            if installs {
                self.fire_trigger(i, writes_before, |t| {
                    matches!(t, Scripted::CrashBeforeSnapshotSync { .. })
                });
            }
            return Ok(());
        }
    }

    /// The rest of a ready, once its writes are durable: send, apply, answer, advance.
    fn finish_ready(&mut self, i: usize, ready: Ready) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        let Ready {
            soft_state,
            snapshot,
            snapshot_chunks,
            received_snapshot,
            hard_state,
            entries,
            messages,
            committed,
            read_states,
            forwarded,
        } = ready;
        for msg in messages {
            if let MessageBody::VoteResponse { granted: true } = msg.body {
                self.checker
                    .observe_vote_granted(msg.from, msg.term, msg.to)?;
            }
            self.send(msg);
        }
        // The state machine restarts from an installed snapshot before it applies the
        // entries that follow it, read from the log that now stores it.
        if let Some(meta) = &snapshot {
            let raft = self.nodes[i].raft.as_ref().expect("up");
            let stored = raft
                .log()
                .snapshot()
                .ok()
                .flatten()
                .filter(|s| s.meta == *meta)
                .ok_or_else(|| Violation::Storage {
                    node: id,
                    detail: format!("installed {meta:?} but the log does not store it"),
                })?;
            let kv = self.restore_snapshot(id, &stored)?;
            let node = &mut self.nodes[i];
            node.kv = kv;
            node.receiving_snapshot = false;
            node.snapshots_installed += 1;
            self.count("snapshot_installed");
            self.record(TraceEvent::SnapshotInstalled {
                node: id,
                index: meta.last_index,
            });
        }
        if !committed.is_empty() {
            let raft = self.nodes[i].raft.as_ref().expect("up");
            let commit = raft.commit_index();
            let applied: Vec<(LogIndex, Term, u64)> = committed
                .iter()
                .map(|e| (e.index, e.term, entry_digest(e)))
                .collect();
            self.checker.observe_applied(id, commit, &applied)?;
            let kv = &mut self.nodes[i].kv;
            for e in &committed {
                // Only commands reach the state machine; a configuration entry is the
                // protocol's (it advances the applied index like a no-op).
                let data = if e.kind == EntryKind::Command {
                    e.data.clone()
                } else {
                    Bytes::new()
                };
                kv.apply(e.index, &data);
                self.reference.applied(e.index, &data);
            }
        }
        let mut replies = Vec::new();
        let node = &mut self.nodes[i];
        for rs in read_states {
            let Some((w, key)) = node.reading.remove(&rs.request_id) else {
                continue;
            };
            match rs.index {
                Some(index) => node.read_waiting.push((w, key, index)),
                None => replies.push((w, Reply::Retry(None))),
            }
        }
        for fp in forwarded {
            let Some(w) = node.placing.remove(&fp.request_id) else {
                continue;
            };
            match fp.placed {
                Some((index, _term)) => node.applying.push((w, index)),
                None => replies.push((w, Reply::Retry(None))),
            }
        }
        let ready = Ready {
            soft_state,
            snapshot,
            snapshot_chunks,
            received_snapshot,
            hard_state,
            entries,
            messages: Vec::new(),
            committed,
            read_states: Vec::new(),
            forwarded: Vec::new(),
        };
        node.raft.as_mut().expect("up").advance(ready);
        self.serve_waiting(i, &mut replies);
        for (w, reply) in replies {
            self.client_reply(w, reply);
        }
        self.maybe_snapshot(i)
    }

    /// A state machine restored from `snapshot` on node `id`, checked against the
    /// committed prefix it claims to hold.
    fn restore_snapshot(&mut self, id: NodeId, snapshot: &Snapshot) -> Result<KvState, Violation> {
        let index = snapshot.meta.last_index;
        let bad = |detail: String| Violation::BadSnapshot {
            node: id,
            index,
            detail: format!("it does not decode: {detail}"),
        };
        let kv = KvState::restore(&snapshot.data).map_err(bad)?;
        if kv.applied_index() != index {
            return Err(Violation::BadSnapshot {
                node: id,
                index,
                detail: format!("its state machine is at {}", kv.applied_index()),
            });
        }
        self.checker
            .observe_snapshot_restored(id, snapshot.meta.clone())?;
        self.reference.check(id, &kv)?;
        Ok(kv)
    }

    /// Snapshots node `i`'s state machine and compacts its log, if the policy says so.
    /// Like the runtime, it saves the snapshot, compacts, and syncs a little later (a
    /// crash before then keeps the old snapshot or the new one, whole).
    fn maybe_snapshot(&mut self, i: usize) -> Result<(), Violation> {
        let Some(policy) = self.cfg.snapshots else {
            return Ok(());
        };
        let node = &mut self.nodes[i];
        let id = node.id;
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let storage = |e: StorageError| Violation::Storage {
            node: id,
            detail: e.to_string(),
        };
        let applied = node.kv.applied_index();
        let last = raft.log().snapshot().map_err(storage)?;
        let last = last.map_or(0, |s| s.meta.last_index);
        if applied < last + policy.every_applied_entries {
            return Ok(());
        }
        let state = match self.cfg.broken_snapshot {
            Some(BrokenSnapshot::WithoutSessions) => node.kv.snapshot_without_sessions(),
            None | Some(BrokenSnapshot::CompactBeforeSave) => node.kv.snapshot(),
        };
        // With the configuration at `applied` in its metadata, as the runtime does.
        let Some(meta) = raft.snapshot_meta_at(applied) else {
            return Ok(()); // compacted already: a newer snapshot was installed
        };
        let snapshot = Snapshot { meta, data: state };
        let compact_first = self.cfg.broken_snapshot == Some(BrokenSnapshot::CompactBeforeSave);
        if !compact_first {
            raft.log_mut().save_snapshot(&snapshot).map_err(storage)?;
        }
        let keep_from = applied.saturating_sub(policy.trailing_entries);
        let compaction = raft.compaction_meta(keep_from);
        if let Some(meta) = &compaction {
            raft.log_mut().compact(meta.clone()).map_err(storage)?;
        }
        if compact_first {
            raft.log_mut().save_snapshot(&snapshot).map_err(storage)?;
        }
        if compaction.is_some() {
            self.count("log_compacted");
        }
        let compacted_to = self.nodes[i]
            .raft
            .as_ref()
            .expect("up")
            .log()
            .snapshot_meta()
            .last_index;
        self.count("snapshot_taken");
        self.record(TraceEvent::SnapshotTaken {
            node: id,
            index: applied,
            compacted_to,
        });
        let life = self.nodes[i].life;
        let delay = self.rng.gen_range(10..=UNITS_PER_TICK / 2);
        self.schedule_in(delay, Ev::SnapshotSync { node: i, life });
        Ok(())
    }

    /// Answers the requests whose condition the node's state machine now meets.
    fn serve_waiting(&mut self, i: usize, replies: &mut Vec<(Waiter, Reply)>) {
        let node = &mut self.nodes[i];
        let applied = node.kv.applied_index();
        let kv = &node.kv;
        node.applying.retain(|&(w, index)| {
            if let Some(at) = kv.applied_at(w.op) {
                replies.push((w, Reply::Ok(None, Some(at))));
                false
            } else if applied >= index {
                // Something else is at that index: this attempt did not take effect.
                replies.push((w, Reply::Retry(None)));
                false
            } else {
                true
            }
        });
        node.read_waiting.retain(|&(w, key, index)| {
            if applied >= index {
                replies.push((w, Reply::Ok(Some(kv.get(key)), None)));
                false
            } else {
                true
            }
        });
    }

    fn send(&mut self, msg: Message) {
        let fate = self.net.fate(msg.from, msg.to, &mut self.rng);
        let chunk = matches!(msg.body, MessageBody::InstallSnapshot { .. });
        if let MessageBody::InstallSnapshot { offset, .. } = msg.body {
            self.count("snapshot_chunk_sent");
            if offset == 0 {
                self.count("snapshot_transfer_started");
            }
        }
        match fate {
            Fate::Dropped => {
                let cut = !self.net.connected(msg.from, msg.to);
                self.count(if cut {
                    "msg_cut_by_partition"
                } else {
                    "msg_lost"
                });
                if chunk && !cut {
                    self.count("snapshot_chunk_lost");
                }
            }
            Fate::Delivered(delays) => {
                if delays.len() > 1 {
                    self.count("msg_duplicated");
                    if chunk {
                        self.count("snapshot_chunk_duplicated");
                    }
                }
                self.seq += 1;
                let send_seq = self.seq;
                let profile = self.net.profile;
                for d in delays {
                    if profile.long_tail > 0.0 && d > UNITS_PER_TICK {
                        self.count("msg_long_tail");
                    }
                    self.schedule_in(
                        d,
                        Ev::Deliver {
                            msg: msg.clone(),
                            send_seq,
                        },
                    );
                }
            }
        }
    }

    /// Runs the checks on a node after an event touched it.
    fn after_node_event(&mut self, i: usize) -> Result<(), Violation> {
        let Self {
            nodes,
            checker,
            trace,
            now,
            verbose,
            ..
        } = self;
        let node = &nodes[i];
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let (role, term, commit) = (raft.role(), raft.term(), raft.commit_index());
        let view = RaftView(raft);
        checker.observe_state(node.id, role, term, raft.vote(), &view)?;
        let leader_logs = |id: NodeId| -> Option<Box<dyn LogView + '_>> {
            nodes[(id - 1) as usize]
                .raft
                .as_ref()
                .map(|r| Box::new(RaftView(r)) as Box<dyn LogView>)
        };
        checker.observe_commit(node.id, commit, term, &view, &leader_logs)?;
        checker.observe_configuration_at_commit(node.id, commit, raft.membership_at(commit))?;
        let mut events = Vec::new();
        let became_leader = role == Role::Leader && node.last_role != Some((role, term));
        if became_leader {
            let since = raft.membership_since(raft.last_index());
            let removed_from = (since > commit && since > 0).then(|| raft.membership_at(since - 1));
            checker.observe_leader_membership(node.id, term, raft.membership(), removed_from)?;
        }
        if node.last_role != Some((role, term)) {
            events.push(TraceEvent::Role {
                node: node.id,
                role,
                term,
                leader: raft.leader(),
            });
        }
        if commit != node.last_commit {
            events.push(TraceEvent::Commit {
                node: node.id,
                index: commit,
            });
        }
        let node = &mut nodes[i];
        node.last_role = Some((role, term));
        node.last_commit = commit;
        for e in events {
            if *verbose {
                println!("{:>9.3} {e}", *now as f64 / UNITS_PER_TICK as f64);
            }
            trace.record(*now, e);
        }
        // New leaders are fragile: crash some of them mid-way through their first
        // replication round (the Figure 8 situations live there).
        if became_leader
            && self.phase == Phase::Safety
            && self.cfg.faults.crash
            && self.rng.gen_bool(self.cfg.faults.new_leader_crash)
        {
            let d = self.rng.gen_range(0..=2 * UNITS_PER_TICK);
            self.schedule_in(d, Ev::CrashNewLeader { node: i, term });
        }
        Ok(())
    }

    // ----- faults ------------------------------------------------------------------------

    fn on_fault(&mut self) -> Result<(), Violation> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        // Sometimes faults come in bursts: several within a tick, so that one fault
        // lands in the window another one opened.
        let gap = if self.rng.gen_bool(0.25) {
            self.rng.gen_range(0..=UNITS_PER_TICK)
        } else {
            self.fault_gap()
        };
        self.schedule_in(gap, Ev::Fault);
        self.inject_fault()
    }

    fn inject_fault(&mut self) -> Result<(), Violation> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        let kinds = self.cfg.faults.kinds();
        let kind = *kinds
            .choose(&mut self.rng)
            .expect("some fault kind is enabled");
        match kind {
            FaultKind::Partition(pk) => {
                let leader = self.leader().map(|i| self.nodes[i].id);
                let description = self.net.partition(pk, leader, &mut self.rng);
                self.count(match pk {
                    PartitionKind::Symmetric => "partition_symmetric",
                    PartitionKind::OneWay => "partition_one_way",
                    PartitionKind::IsolateLeader => "partition_isolate_leader",
                    PartitionKind::Bridge => "partition_bridge",
                });
                self.record(TraceEvent::Partition { description });
                self.partition_generation += 1;
                let generation = self.partition_generation;
                // The bridge node is the only link between the halves: restarting it
                // once the far half has lost touch with the leader tests that it does
                // not forget what it promised the leader (its lease acknowledgement).
                if let Some(bridge) = self.net.bridge {
                    if self.cfg.faults.quick_restart && self.rng.gen_bool(0.5) {
                        let t = u64::from(self.cfg.raft.election_timeout_ticks);
                        let d = self
                            .rng
                            .gen_range(t * UNITS_PER_TICK..=3 * t * UNITS_PER_TICK);
                        let node = (bridge - 1) as usize;
                        self.schedule_in(d, Ev::QuickRestart { node, generation });
                        // ... and sometimes cut the leader off right after.
                        if self.rng.gen_bool(0.5) {
                            let e = d + self.rng.gen_range(0..=UNITS_PER_TICK);
                            self.schedule_in(e, Ev::ExtraFault);
                        }
                    }
                }
                let d = self
                    .rng
                    .gen_range(UNITS_PER_TICK..=self.cfg.partition_ticks_max * UNITS_PER_TICK);
                self.schedule_in(d, Ev::HealPartition { generation });
            }
            FaultKind::Crash => {
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i))
                    .collect();
                // Crash the leader, or a node with unsynced writes (to tear its tail),
                // more often than chance would.
                let unsynced: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&i| self.nodes[i].syncing.is_some())
                    .collect();
                // And a node in the middle of a snapshot: receiving one, or with one
                // stored but not synced.
                let snapshotting: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let n = &self.nodes[i];
                        n.receiving_snapshot
                            || n.raft.as_ref().is_some_and(|r| r.log().snapshot_pending())
                    })
                    .collect();
                let pick = self.rng.gen_range(0..10);
                let victim = match (pick, self.leader()) {
                    (0..=2, Some(l)) => Some(l),
                    (3..=4, _) if !unsynced.is_empty() => unsynced.choose(&mut self.rng).copied(),
                    (5, _) if !snapshotting.is_empty() => {
                        snapshotting.choose(&mut self.rng).copied()
                    }
                    _ => up.choose(&mut self.rng).copied(),
                };
                if let Some(i) = victim {
                    self.crash(i)?;
                    // Often a quick restart, which matters for anything that relies on
                    // a node remembering recent history (leases).
                    let max = if self.rng.gen_bool(0.5) {
                        5
                    } else {
                        self.cfg.node_down_ticks_max
                    };
                    let d = self
                        .rng
                        .gen_range(UNITS_PER_TICK / 4..=max * UNITS_PER_TICK);
                    self.schedule_in(d, Ev::Restart { node: i });
                }
            }
            FaultKind::QuickRestart => {
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i))
                    .collect();
                if let Some(&i) = up.choose(&mut self.rng) {
                    self.count("quick_restart");
                    self.crash(i)?;
                    let d = self.rng.gen_range(UNITS_PER_TICK / 10..=UNITS_PER_TICK);
                    self.schedule_in(d, Ev::Restart { node: i });
                }
            }
            FaultKind::Pause => {
                let candidates: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i) && self.nodes[i].paused.is_none())
                    .collect();
                if let Some(&i) = candidates.choose(&mut self.rng) {
                    self.pause_counter += 1;
                    let ticks = self.rng.gen_range(1..=self.cfg.node_down_ticks_max);
                    self.nodes[i].paused = Some(self.pause_counter);
                    self.nodes[i].missed_ticks = 0;
                    self.count("pause");
                    let node = self.nodes[i].id;
                    self.record(TraceEvent::Pause { node, ticks });
                    let pause = self.pause_counter;
                    self.schedule_in(ticks * UNITS_PER_TICK, Ev::Resume { node: i, pause });
                }
            }
            FaultKind::Stall => {
                // Half the time the leader: a leader that stalls while the others move on
                // is the case lease reads must survive.
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i) && self.nodes[i].paused.is_none())
                    .collect();
                let leader = self.leader().filter(|_| self.rng.gen_bool(0.5));
                if let Some(i) = leader.or_else(|| up.choose(&mut self.rng).copied()) {
                    let ticks = self.rng.gen_range(1..=self.cfg.node_down_ticks_max);
                    self.nodes[i].stall_next_sync_ticks = Some(ticks);
                }
            }
            FaultKind::Transfer => {
                if let Some(l) = self.leader() {
                    let others: Vec<NodeId> = self
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|&id| id != self.nodes[l].id)
                        .collect();
                    let to = *others.choose(&mut self.rng).expect("more than one node");
                    let from = self.nodes[l].id;
                    let raft = self.nodes[l].raft.as_mut().expect("up");
                    if raft.transfer_leadership(to).is_ok() {
                        self.count("transfer_leadership");
                        self.record(TraceEvent::Transfer { from, to });
                        self.drive(l)?;
                        self.after_node_event(l)?;
                    }
                }
            }
            FaultKind::Membership => self.change_membership()?,
            FaultKind::Campaign => {
                let candidates: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| {
                        self.nodes[i].paused.is_none()
                            && self.nodes[i]
                                .raft
                                .as_ref()
                                .is_some_and(|r| r.role() != Role::Leader)
                    })
                    .collect();
                if let Some(&i) = candidates.choose(&mut self.rng) {
                    self.count("forced_campaign");
                    let node = self.nodes[i].id;
                    self.record(TraceEvent::Campaign { node });
                    self.nodes[i].raft.as_mut().expect("up").campaign();
                    self.drive(i)?;
                    self.after_node_event(i)?;
                }
            }
        }
        Ok(())
    }

    /// Proposes a membership change drawn from the leader's configuration in force: add
    /// a learner, promote a learner, remove a voter (the leader itself too) or a
    /// learner, replace a voter, or swap two voters through a joint configuration. The
    /// protocol refuses a change while another is in flight or before the leader
    /// committed an entry of its term; that is counted, not a failure.
    fn change_membership(&mut self) -> Result<(), Violation> {
        use raft_core::protocol::membership::MembershipChange;
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let all = self.cfg.node_ids();
        let m = self.nodes[l]
            .raft
            .as_ref()
            .expect("up")
            .membership()
            .clone();
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        let learners: Vec<NodeId> = m.learners.iter().copied().collect();
        let outsiders: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|&id| !m.is_voter(id) && !m.is_learner(id))
            .collect();
        let non_voters: Vec<NodeId> = learners.iter().chain(&outsiders).copied().collect();
        // Keep at least two voters, so that the cluster keeps some fault tolerance.
        let mut options: Vec<&'static str> = Vec::new();
        if !outsiders.is_empty() {
            options.push("membership_add_learner");
        }
        if !learners.is_empty() {
            options.extend(["membership_promote", "membership_remove_learner"]);
        }
        if voters.len() > 2 {
            options.push("membership_remove_voter");
        }
        if !non_voters.is_empty() {
            options.push("membership_replace");
        }
        if non_voters.len() >= 2 && voters.len() >= 2 {
            options.push("membership_joint_swap");
        }
        let Some(&kind) = options.choose(&mut self.rng) else {
            return Ok(());
        };
        let rng = &mut self.rng;
        let pick = |from: &[NodeId], rng: &mut ChaCha8Rng| *from.choose(rng).expect("not empty");
        let change = match kind {
            "membership_add_learner" => MembershipChange::AddLearner(pick(&outsiders, rng)),
            "membership_promote" => MembershipChange::Promote(pick(&learners, rng)),
            "membership_remove_learner" => MembershipChange::Remove(pick(&learners, rng)),
            "membership_remove_voter" => MembershipChange::Remove(pick(&voters, rng)),
            _ => {
                let swap = if kind == "membership_joint_swap" {
                    2
                } else {
                    1
                };
                let out: Vec<NodeId> = voters.choose_multiple(rng, swap).copied().collect();
                let inn: Vec<NodeId> = non_voters.choose_multiple(rng, swap).copied().collect();
                let mut next_voters = m.voters.clone();
                let mut next_learners = m.learners.clone();
                for id in &out {
                    next_voters.remove(id);
                    // Half the time a replaced voter stays on as a learner.
                    if rng.gen_bool(0.5) {
                        next_learners.insert(*id);
                    }
                }
                for id in &inn {
                    next_voters.insert(*id);
                    next_learners.remove(id);
                }
                MembershipChange::ChangeTo {
                    voters: next_voters,
                    learners: next_learners,
                }
            }
        };
        let raft = self.nodes[l].raft.as_mut().expect("up");
        match raft.propose_membership(change.clone()) {
            Ok((index, _term)) => {
                self.count(kind);
                let leader = self.nodes[l].id;
                self.record(TraceEvent::Membership {
                    leader,
                    index,
                    change: format!("{change:?}"),
                });
                self.drive(l)?;
                self.after_node_event(l)?;
            }
            Err(_) => self.count("membership_refused"),
        }
        Ok(())
    }

    fn resume(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        node.paused = None;
        let missed = std::mem::take(&mut node.missed_ticks);
        let inbox = std::mem::take(&mut node.pause_inbox);
        let id = node.id;
        self.record(TraceEvent::Resume {
            node: id,
            missed_ticks: missed,
        });
        // The runtime's order (WaitLoop::keep_time): a sync the node was blocked in
        // returns first; the ticks that passed are caught up before the node decides
        // anything more (the rest of that ready, then its queue), as a runtime that counts
        // ticks from a monotonic clock must: otherwise a paused leader would trust a lease
        // that has long expired.
        let (syncs, queued): (Vec<Ev>, Vec<Ev>) = inbox
            .into_iter()
            .partition(|ev| matches!(ev, Ev::SyncDone { .. } | Ev::SnapshotSync { .. }));
        let ticks_first = self.cfg.broken != Some(Broken::TicksAfterQueue);
        if ticks_first {
            self.catch_up_ticks(i, missed)?;
        }
        for ev in syncs.into_iter().chain(queued) {
            self.handle(ev)?;
        }
        if !ticks_first {
            self.catch_up_ticks(i, missed)?;
        }
        self.drive(i)?;
        self.after_node_event(i)
    }

    fn catch_up_ticks(&mut self, i: usize, missed: u64) -> Result<(), Violation> {
        for _ in 0..missed {
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                raft.tick();
            }
            self.drive(i)?;
            self.after_node_event(i)?;
        }
        Ok(())
    }

    // ----- clients -----------------------------------------------------------------------

    fn client_start(&mut self, c: usize) {
        if self.phase == Phase::Done || self.clients[c].op.is_some() {
            return;
        }
        let key = self.rng.gen_range(0..self.cfg.keys);
        let id = self.history.len() as u64;
        let input = if self.rng.gen_bool(0.5) {
            self.ops.writes += 1;
            KvInput::Put { key, value: id }
        } else {
            self.ops.reads += 1;
            KvInput::Get { key }
        };
        let call = self.hist_time();
        self.history.push(Operation {
            client: c as u64,
            input,
            output: None,
            call,
            ret: None,
        });
        let deadline = self.now + self.cfg.client_op_timeout_ticks * UNITS_PER_TICK;
        self.clients[c].op = Some(ClientOp {
            id,
            input,
            attempt: 0,
            node: 0,
            deadline,
        });
        self.client_send(c, id);
    }

    fn client_send(&mut self, c: usize, op: u64) {
        let n = self.nodes.len();
        let hint = self.clients[c].leader_hint.take();
        let pick = self.rng.gen_range(0..n);
        let Some(cur) = self.clients[c].op.as_mut().filter(|o| o.id == op) else {
            return;
        };
        let node = match hint {
            Some(id) => (id - 1) as usize,
            None => pick,
        };
        cur.attempt += 1;
        cur.node = node;
        let (attempt, input) = (cur.attempt, cur.input);
        let request = self.next_request;
        self.next_request += 1;
        if attempt == 1 {
            let id = self.nodes[node].id;
            self.record(TraceEvent::Invoke {
                client: c,
                op,
                node: id,
                input,
            });
        }
        let d = self.rng.gen_range(10..=UNITS_PER_TICK / 4);
        self.schedule_in(
            d,
            Ev::ClientArrive {
                node,
                client: c,
                op,
                attempt,
                request,
            },
        );
        self.schedule_in(
            self.cfg.client_attempt_timeout_ticks * UNITS_PER_TICK,
            Ev::ClientTimeout {
                client: c,
                op,
                attempt,
            },
        );
    }

    fn on_client_arrive(
        &mut self,
        i: usize,
        client: usize,
        op: u64,
        attempt: u32,
        request: u64,
    ) -> Result<(), Violation> {
        if !self.node_is_up(i) {
            return Ok(()); // the client will time out
        }
        if self.nodes[i].paused.is_some() {
            self.nodes[i].pause_inbox.push(Ev::ClientArrive {
                node: i,
                client,
                op,
                attempt,
                request,
            });
            return Ok(());
        }
        let w = Waiter {
            client,
            op,
            attempt,
        };
        let input = self.history[op as usize].input;
        let node = &mut self.nodes[i];
        let raft = node.raft.as_mut().expect("up");
        let result = match input {
            KvInput::Put { key, value } => {
                let cmd = KvCommand::Put { op, key, value }.encode();
                let r = raft.propose_or_forward(request, cmd);
                if r.is_ok() {
                    node.placing.insert(request, w);
                }
                r
            }
            KvInput::Get { key } => {
                let r = raft.read_index(request);
                if r.is_ok() {
                    node.reading.insert(request, (w, key));
                }
                r
            }
        };
        if let Err(e) = result {
            let hint = match e {
                ProposeError::NotLeader { leader } => leader,
                _ => None,
            };
            self.client_reply(w, Reply::Retry(hint));
        }
        self.drive(i)?;
        self.after_node_event(i)
    }

    fn on_client_timeout(&mut self, c: usize, op: u64, attempt: u32) {
        let Some(cur) = self.clients[c].op.as_ref() else {
            return;
        };
        if cur.id != op || cur.attempt != attempt {
            return;
        }
        if self.now >= cur.deadline {
            self.client_give_up(c);
            return;
        }
        // Try another node: the one asked may be down, cut off or slow.
        let avoid = cur.node;
        let others: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&i| i != avoid)
            .map(|i| self.nodes[i].id)
            .collect();
        self.clients[c].leader_hint = others.choose(&mut self.rng).copied();
        self.client_send(c, op);
    }

    fn client_give_up(&mut self, c: usize) {
        let Some(cur) = self.clients[c].op.take() else {
            return;
        };
        self.ops.never_returned += 1;
        self.record(TraceEvent::GiveUp {
            client: c,
            op: cur.id,
        });
        let think = self.rng.gen_range(0..=2 * UNITS_PER_TICK);
        self.schedule_in(think, Ev::ClientStart { client: c });
    }

    fn client_reply(&mut self, w: Waiter, reply: Reply) {
        let Some(cur) = self.clients[w.client].op.as_ref() else {
            return;
        };
        if cur.id != w.op {
            return;
        }
        match reply {
            Reply::Ok(output, write_index) => {
                let ret = self.hist_time();
                let h = &mut self.history[w.op as usize];
                h.ret = Some(ret);
                h.output = output;
                if let Some(index) = write_index {
                    self.acked.push((w.op, index));
                }
                self.clients[w.client].op = None;
                self.ops.ok += 1;
                self.record(TraceEvent::Return {
                    client: w.client,
                    op: w.op,
                    output,
                });
                let think = self.rng.gen_range(0..=2 * UNITS_PER_TICK);
                self.schedule_in(think, Ev::ClientStart { client: w.client });
            }
            Reply::Retry(hint) => {
                // Only the answer to the current attempt redirects the client.
                if cur.attempt != w.attempt {
                    return;
                }
                if self.now >= cur.deadline {
                    self.client_give_up(w.client);
                    return;
                }
                self.clients[w.client].leader_hint = hint;
                let backoff = self.rng.gen_range(UNITS_PER_TICK / 2..=2 * UNITS_PER_TICK);
                self.schedule_in(
                    backoff,
                    Ev::ClientResend {
                        client: w.client,
                        op: w.op,
                    },
                );
            }
        }
    }

    // ----- liveness and the end ----------------------------------------------------------

    fn start_liveness(&mut self) -> Result<(), Violation> {
        self.phase = Phase::Liveness;
        self.liveness_start = self.now;
        self.record(TraceEvent::Phase {
            description: "liveness phase: every fault heals",
        });
        self.net.heal();
        self.net.profile = LinkProfile::clean();
        for i in 0..self.nodes.len() {
            self.nodes[i].stall_next_sync_ticks = None;
            if !self.node_is_up(i) {
                self.start_node(i)?;
            } else if self.nodes[i].paused.is_some() {
                self.resume(i)?;
            }
        }
        Ok(())
    }

    fn check_liveness(&mut self) -> Result<(), Violation> {
        let elapsed = self.now - self.liveness_start;
        if elapsed > self.cfg.liveness_bound_ticks * UNITS_PER_TICK {
            let detail = match (self.marker, self.liveness_ticks) {
                (None, _) => "no leader accepted a write".to_string(),
                (Some((i, index, _)), None) => {
                    format!("the write placed at {index} on n{} did not commit", i + 1)
                }
                (Some((_, index, _)), Some(_)) => {
                    let members: Vec<NodeId> = self
                        .leader()
                        .and_then(|l| self.nodes[l].raft.as_ref())
                        .map(|r| r.membership().members().collect())
                        .unwrap_or_default();
                    let behind: Vec<String> = self
                        .nodes
                        .iter()
                        .filter(|n| members.contains(&n.id) && n.kv.applied_index() < index)
                        .map(|n| format!("n{} at {}", n.id, n.kv.applied_index()))
                        .collect();
                    format!("the write at {index} committed but was not applied on {behind:?}")
                }
            };
            return Err(Violation::Liveness {
                detail: format!(
                    "within {} ticks of healing: {detail}",
                    self.cfg.liveness_bound_ticks
                ),
            });
        }
        match self.marker {
            None => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let cmd = KvCommand::Put {
                    op: MARKER_OP,
                    key: u64::MAX,
                    value: 0,
                }
                .encode();
                let raft = self.nodes[l].raft.as_mut().expect("up");
                if let Ok((index, term)) = raft.propose(cmd) {
                    self.marker = Some((l, index, term));
                    self.drive(l)?;
                    self.after_node_event(l)?;
                }
            }
            Some((l, index, term)) => {
                let Some(raft) = self.nodes[l].raft.as_ref() else {
                    self.marker = None;
                    return Ok(());
                };
                // Once compacted, the log no longer says; the committed record does.
                let ours = match raft.term_at(index) {
                    Some(t) => t == term,
                    None => self.checker.committed_term(index) == Some(term),
                };
                if !ours {
                    self.marker = None; // overwritten by a newer leader: propose again
                    return Ok(());
                }
                // A leader that lost its term before the write committed may never
                // hear of it again (removed from the configuration, nobody sends it
                // entries to overwrite it): propose again at the current leader.
                let deposed = raft.role() != Role::Leader || raft.term() != term;
                if deposed && raft.commit_index() < index {
                    self.marker = None;
                    return Ok(());
                }
                // Every member of the leader's configuration applies it; a node outside
                // it (removed, or never added) gets nothing more.
                let members: Vec<NodeId> = raft.membership().members().collect();
                if self.liveness_ticks.is_none() && raft.commit_index() >= index {
                    self.liveness_ticks = Some(elapsed / UNITS_PER_TICK);
                    self.record(TraceEvent::Phase {
                        description: "liveness: a new write committed",
                    });
                }
                if self.liveness_ticks.is_some()
                    && self
                        .nodes
                        .iter()
                        .filter(|n| members.contains(&n.id))
                        .all(|n| n.kv.applied_index() >= index)
                {
                    self.record(TraceEvent::Phase {
                        description: "liveness: every node applied it",
                    });
                    self.phase = Phase::Done;
                }
            }
        }
        Ok(())
    }

    fn final_checks(&mut self) -> Result<(), Violation> {
        // No acknowledged write lost: it is committed where it was acknowledged, and
        // every node that applied that far applied it there.
        for &(op, index) in &self.acked {
            if self.checker.committed_term(index).is_none() {
                return Err(Violation::AckedWriteLost {
                    op,
                    index,
                    detail: "the index is not known committed".into(),
                });
            }
            for n in &self.nodes {
                if n.kv.applied_index() >= index && n.kv.applied_at(op) != Some(index) {
                    return Err(Violation::AckedWriteLost {
                        op,
                        index,
                        detail: format!(
                            "n{} applied up to {} and has it at {:?}",
                            n.id,
                            n.kv.applied_index(),
                            n.kv.applied_at(op)
                        ),
                    });
                }
            }
        }
        // Every state machine is the state its applied committed prefix produces.
        for i in 0..self.nodes.len() {
            let (id, kv) = (self.nodes[i].id, self.nodes[i].kv.clone());
            self.reference.check(id, &kv)?;
        }
        // The history: open operations never returned.
        for c in 0..self.clients.len() {
            if self.clients[c].op.take().is_some() {
                self.ops.never_returned += 1;
            }
        }
        self.ops.checked = self.history.len() as u64;
        match check_kv(&self.history, LIN_BUDGET_STEPS) {
            LinResult::Ok => Ok(()),
            LinResult::Unknown { .. } => {
                self.lin_unknown = true;
                Ok(())
            }
            LinResult::Illegal { key, detail } => {
                if std::env::var("SIM_DUMP_HISTORY").is_ok() {
                    for o in self.history.iter().filter(|o| o.input.key() == key) {
                        eprintln!("{}", format_op(o));
                    }
                }
                let ops: Vec<String> = self
                    .history
                    .iter()
                    .filter(|o| o.input.key() == key)
                    .rev()
                    .take(12)
                    .map(format_op)
                    .collect();
                Err(Violation::NotLinearizable {
                    key,
                    detail: format!("{detail}; last operations on the key (newest first): {ops:?}"),
                })
            }
        }
    }
}

fn entry_digest(e: &Entry) -> u64 {
    digest(&e.data)
        ^ match e.kind {
            EntryKind::Noop => 0x9e37,
            EntryKind::Membership => 0x7f4a,
            EntryKind::Command => 0,
        }
}

fn msg_detail(body: &MessageBody) -> [u64; 4] {
    match body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => [*prev_index, *prev_term, entries.len() as u64, *commit],
        MessageBody::AppendResponse { index, reject } => match reject {
            None => [*index, 0, 0, 0],
            Some(h) => [*index, 1, h.last_index, h.conflict_index],
        },
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => [*last_log_index, *last_log_term, u64::from(*transfer), 0],
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => [*last_log_index, *last_log_term, 0, 0],
        MessageBody::VoteResponse { granted } | MessageBody::PreVoteResponse { granted } => {
            [u64::from(*granted), 0, 0, 0]
        }
        MessageBody::Heartbeat { commit, read_round } => [*commit, *read_round, 0, 0],
        MessageBody::HeartbeatResponse {
            read_round,
            last_index,
        } => [*read_round, *last_index, 0, 0],
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => [
            meta.last_index,
            *offset,
            data.len() as u64,
            u64::from(done.is_some()),
        ],
        MessageBody::SnapshotResponse {
            last_index,
            next_offset,
        } => [*last_index, *next_offset, 0, 0],
        _ => [0; 4],
    }
}

/// Runs one seed with [`SimConfig::random`].
pub fn run_seed(seed: u64, nodes: Option<usize>) -> RunReport {
    Simulator::new(SimConfig::random(seed, nodes)).run()
}
