//! `NodeStatus`: what `Node::status()` reports.

use crate::protocol::{PeerStatus, ProtocolCounters, Role};
use crate::transport::TransportCounters;
use crate::types::{LogIndex, NodeId, Term};

/// Whether the node has found its cluster since it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Still looking, in this attempt (from 1).
    Searching {
        /// The current attempt.
        attempt: u32,
    },
    /// Heard from a leader or a majority.
    Found,
    /// Gave up after every attempt; still listening, and becomes `Found` if the
    /// cluster appears later.
    NotFound,
}

/// Counters of the runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Messages stepped into the protocol.
    pub messages_received: u64,
    /// Messages handed to the transport.
    pub messages_sent: u64,
    /// Proposals accepted into the proposal queue.
    pub proposals: u64,
    /// Proposals refused or failed.
    pub proposals_failed: u64,
    /// Log syncs (group commits).
    pub syncs: u64,
    /// Events dropped because a subscriber fell behind.
    pub events_dropped: u64,
    /// `InstallSnapshot` messages held back (stepped later) or, past one window, dropped
    /// (resent by the leader) because received snapshot data waiting for the disk had
    /// reached `NodeConfig::snapshot_receive_buffer_bytes`.
    pub snapshot_chunks_deferred: u64,
    /// The most bytes of received snapshot data that waited for the disk at once since
    /// the node started (a high-water mark, not a total).
    pub snapshot_receive_buffer_high_water_bytes: u64,
    /// The transport's counters.
    pub transport: TransportCounters,
    /// The protocol's counters.
    pub protocol: ProtocolCounters,
}

/// A follower's replication progress, as the leader reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLag {
    /// The peer's replication state.
    pub progress: PeerStatus,
    /// How many entries it is behind the leader's last index.
    pub lag: LogIndex,
}

/// A node's state, as `Node::status()` reports it.
///
/// The WaitLoop publishes the protocol fields (role, term, indexes, peers, counters) at
/// every tick, on every role change and when a snapshot is stored, so they may be up to
/// one tick old; `applied_index` is read live from the apply thread. `Node::status()`
/// keeps the indexes ordered all the same (invariant:
/// `applied_index <= commit_index <= last_index`) by raising a stale commit or last index
/// to what the apply thread has already shown to be committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub id: NodeId,
    /// Follower, candidate or leader.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest committed index.
    pub commit_index: LogIndex,
    /// Highest index applied to the state machine.
    pub applied_index: LogIndex,
    /// Last index in the log.
    pub last_index: LogIndex,
    /// First index still in the log (entries before it were compacted into a snapshot).
    pub first_index: LogIndex,
    /// Last index covered by the stored snapshot (0: none).
    pub snapshot_index: LogIndex,
    /// On the leader: each follower's match index and lag.
    pub peers: Vec<PeerLag>,
    /// Whether the cluster was found.
    pub cluster: ClusterState,
    /// Whether the node is running.
    pub running: bool,
    /// Protocol ticks since start: follows real time, missed ticks included.
    pub ticks: u64,
    /// Counters.
    pub counters: NodeCounters,
}

impl NodeStatus {
    pub(crate) fn initial(id: NodeId) -> Self {
        Self {
            id,
            role: Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            first_index: 1,
            snapshot_index: 0,
            peers: Vec::new(),
            cluster: ClusterState::Searching { attempt: 1 },
            running: true,
            ticks: 0,
            counters: NodeCounters::default(),
        }
    }

    /// Whether this node is the active leader (the original's "UAS running").
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
}
