//! What a run simulates: the cluster, the fault profile, snapshot policy, scripted faults
//! and the broken protocol variants.

use raft_core::{Config, Entry, NodeId, ReadMode};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::UNITS_PER_TICK;
use crate::network::{LinkProfile, PartitionKind};

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

    pub(super) fn kinds(&self) -> Vec<FaultKind> {
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
pub(super) enum FaultKind {
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
    /// The most client operations a run starts (`None`: as many as the safety phase
    /// has time for). Shrinking a failing run lowers it.
    pub ops_max: Option<u64>,
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
            ops_max: None,
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

    pub(super) fn node_config(&self, id: NodeId) -> Config {
        let mut c = self.raft.clone();
        c.id = id;
        c.voters = (1..=self.nodes as NodeId).collect();
        c
    }
}
