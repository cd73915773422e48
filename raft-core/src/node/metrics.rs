//! Metrics through the [`metrics`] facade: counters, gauges and histograms an operator
//! scrapes (term, role, indexes, elections, proposals, messages, log write and sync
//! latency, apply batches, snapshots).
//!
//! Like `log`, the library only records; the application chooses where the numbers go
//! by installing a recorder (for example `metrics-exporter-prometheus`, which `raft-kv
//! node --metrics-addr` serves). With no recorder installed every handle is a no-op and
//! recording costs a branch: the handles are registered once, when the node starts, on
//! the thread that calls [`super::NodeBuilder::start`] (so a thread-local recorder set
//! with [`metrics::with_local_recorder`] around `start` captures a node's metrics too).
//!
//! Every metric carries the label [`LABEL_NODE`] (the node id), since several nodes may
//! share a process. The names are the constants below; their units are in the names
//! (`_total` counters, `_seconds`, `_bytes`, `_entries`). docs/operations.md lists them
//! all with their types and meanings.
//!
//! Where they are recorded: gauges and the counters that [`super::NodeCounters`] and
//! [`crate::protocol::ProtocolCounters`] already keep are published from the WaitLoop's
//! status publication (every tick, and at each role change); per-kind message counters,
//! leader changes, proposal failures by reason and snapshot counters at their source
//! on the WaitLoop; the log write and sync histograms around `Log::append` and
//! `Log::sync`; the apply histograms on the apply thread.
//!
//! ```
//! use std::time::Duration;
//!
//! use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig};
//! use raft_core::MemLog;
//! use metrics_util::debugging::DebuggingRecorder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A recorder for this thread only; an application would install one globally
//! // (`metrics::set_global_recorder`) before starting its nodes.
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let net = ChannelNetwork::new();
//! let node = metrics::with_local_recorder(&recorder, || {
//!     Node::builder(NodeConfig::new(1, [1]))
//!         .log(MemLog::new())
//!         .transport(net.transport(1))
//!         .state_machine(KvStore::<String, String>::new())
//!         .start()
//! })?;
//! node.wait_for_leader(Duration::from_secs(10))?;
//! node.stop();
//! let names: Vec<String> = snapshotter
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .map(|(key, ..)| key.key().name().to_string())
//!     .collect();
//! assert!(names.iter().any(|n| n == raft_core::node::metrics::TERM));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use parking_lot::Mutex;

use super::status::{ClusterState, NodeStatus};
use crate::message::{Message, MessageBody};
use crate::protocol::{ProposeError, Role};
use crate::types::NodeId;

/// Label on every metric: the node's id.
pub const LABEL_NODE: &str = "node";
/// Label of [`MESSAGES_SENT_TOTAL`] and [`MESSAGES_RECEIVED_TOTAL`]: the message kind
/// (`append`, `heartbeat`, `pre_vote`, `vote`, `install_snapshot`, ...).
pub const LABEL_KIND: &str = "kind";
/// Label of [`ROLE`]: `follower`, `pre_candidate`, `candidate` or `leader`.
pub const LABEL_ROLE: &str = "role";
/// Label of [`PROPOSALS_FAILED_TOTAL`]: why (`no_leader`, `too_large`, `busy`,
/// `transferring`, `other`).
pub const LABEL_REASON: &str = "reason";
/// Label of [`LOG_SYNC_SECONDS`]: what the sync made durable (`ready`: entries, term,
/// vote or commit index; `snapshot`: a stored snapshot and the compaction behind it).
pub const LABEL_CAUSE: &str = "cause";

/// Gauge: the current term.
pub const TERM: &str = "raft_term";
/// Gauge: 1 on the leader, else 0.
pub const IS_LEADER: &str = "raft_is_leader";
/// Gauge, one series per [`LABEL_ROLE`] value: 1 for the node's current role, 0 for
/// the others.
pub const ROLE: &str = "raft_role";
/// Gauge: the id of the leader this node knows of, 0 when none.
pub const LEADER_ID: &str = "raft_leader_id";
/// Gauge: highest committed index.
pub const COMMIT_INDEX: &str = "raft_commit_index";
/// Gauge: highest index applied to the state machine.
pub const APPLIED_INDEX: &str = "raft_applied_index";
/// Gauge: last index in the log.
pub const LAST_INDEX: &str = "raft_last_index";
/// Gauge: first index still in the log.
pub const FIRST_INDEX: &str = "raft_first_index";
/// Gauge: last index covered by the stored snapshot (0: none).
pub const SNAPSHOT_INDEX: &str = "raft_snapshot_index";
/// Gauge: 1 once the node has found its cluster, else 0.
pub const CLUSTER_FOUND: &str = "raft_cluster_found";
/// Gauge: on the leader, the most entries any follower is behind (0 elsewhere).
pub const FOLLOWER_LAG_MAX_ENTRIES: &str = "raft_follower_lag_max_entries";

/// Counter: times the leader this node knows of changed: to another node, to none, or
/// the same leader in a new term (each `Event::LeaderChanged`).
pub const LEADER_CHANGES_TOTAL: &str = "raft_leader_changes_total";
/// Counter: elections this node started (real ones; pre-vote rounds show as
/// [`MESSAGES_SENT_TOTAL`] of kind `pre_vote`).
pub const ELECTIONS_STARTED_TOTAL: &str = "raft_elections_started_total";
/// Counter: times this node became leader.
pub const BECAME_LEADER_TOTAL: &str = "raft_became_leader_total";
/// Counter: messages the protocol ignored (stale term, wrong role, ...).
pub const MESSAGES_IGNORED_TOTAL: &str = "raft_messages_ignored_total";
/// Counter: append rejections this node sent (its log disagreed with the leader's).
pub const APPENDS_REJECTED_TOTAL: &str = "raft_appends_rejected_total";
/// Counter: proposals accepted from this node's handles.
pub const PROPOSALS_TOTAL: &str = "raft_proposals_total";
/// Counter, by [`LABEL_REASON`]: proposals refused or failed.
pub const PROPOSALS_FAILED_TOTAL: &str = "raft_proposals_failed_total";
/// Counter, by [`LABEL_KIND`]: messages handed to the transport.
pub const MESSAGES_SENT_TOTAL: &str = "raft_messages_sent_total";
/// Counter, by [`LABEL_KIND`]: messages stepped into the protocol.
pub const MESSAGES_RECEIVED_TOTAL: &str = "raft_messages_received_total";
/// Counter: log syncs (group commits).
pub const SYNCS_TOTAL: &str = "raft_syncs_total";
/// Counter: events dropped because a subscriber fell behind.
pub const EVENTS_DROPPED_TOTAL: &str = "raft_events_dropped_total";
/// Counter: messages the transport sent (its own unit: datagrams for raft-net).
pub const TRANSPORT_SENT_TOTAL: &str = "raft_transport_sent_total";
/// Counter: messages the transport delivered to the node.
pub const TRANSPORT_RECEIVED_TOTAL: &str = "raft_transport_received_total";
/// Counter: messages or datagrams the transport dropped, for any reason.
pub const TRANSPORT_DROPPED_TOTAL: &str = "raft_transport_dropped_total";

/// Counter: snapshots this node took of its state machine and stored in its log.
pub const SNAPSHOTS_TAKEN_TOTAL: &str = "raft_snapshots_taken_total";
/// Counter: bytes of the snapshots taken, as stored.
pub const SNAPSHOT_TAKEN_BYTES_TOTAL: &str = "raft_snapshot_taken_bytes_total";
/// Counter: snapshot chunks sent to followers (`install_snapshot` messages).
pub const SNAPSHOT_CHUNKS_SENT_TOTAL: &str = "raft_snapshot_chunks_sent_total";
/// Counter: snapshot bytes sent to followers.
pub const SNAPSHOT_SENT_BYTES_TOTAL: &str = "raft_snapshot_sent_bytes_total";
/// Counter: snapshots received from a leader and installed.
pub const SNAPSHOTS_INSTALLED_TOTAL: &str = "raft_snapshots_installed_total";
/// Counter: bytes of the snapshots installed.
pub const SNAPSHOT_INSTALLED_BYTES_TOTAL: &str = "raft_snapshot_installed_bytes_total";

/// Counter: `install_snapshot` messages this node held back (or, past one window,
/// dropped for the leader to resend) because received snapshot data waiting for the disk
/// had reached `snapshot_receive_buffer_bytes`.
pub const SNAPSHOT_CHUNKS_DEFERRED_TOTAL: &str = "raft_snapshot_chunks_deferred_total";
/// Gauge: bytes of a snapshot being received that wait in memory for the disk.
pub const SNAPSHOT_RECEIVE_BUFFER_BYTES: &str = "raft_snapshot_receive_buffer_bytes";

/// Histogram: seconds one `Log::append` (the entries of one Ready) took, before its sync.
pub const LOG_APPEND_SECONDS: &str = "raft_log_append_seconds";
/// Histogram, by [`LABEL_CAUSE`]: seconds one `Log::sync` blocked the WaitLoop.
pub const LOG_SYNC_SECONDS: &str = "raft_log_sync_seconds";
/// Histogram: entries in one batch of committed entries handed to the apply thread.
pub const APPLY_BATCH_ENTRIES: &str = "raft_apply_batch_entries";
/// Histogram: seconds the apply thread took to apply one batch.
pub const APPLY_SECONDS: &str = "raft_apply_seconds";

/// Every role, with its [`LABEL_ROLE`] value.
const ROLES: [(Role, &str); 4] = [
    (Role::Follower, "follower"),
    (Role::PreCandidate, "pre_candidate"),
    (Role::Candidate, "candidate"),
    (Role::Leader, "leader"),
];

/// The message kinds registered at start ([`MessageBody::kind`]); a kind not listed is
/// registered when first seen, with the global recorder.
const KINDS: [&str; 15] = [
    "pre_vote",
    "pre_vote_response",
    "vote",
    "vote_response",
    "append",
    "append_response",
    "heartbeat",
    "heartbeat_response",
    "read_index",
    "read_index_response",
    "propose",
    "propose_response",
    "timeout_now",
    "install_snapshot",
    "snapshot_response",
];

/// The proposal failure reasons ([`LABEL_REASON`]), all registered at start.
const REASONS: [&str; 6] = [
    "no_leader",
    "not_leader",
    "too_large",
    "busy",
    "transferring",
    "other",
];

/// Per-kind message counters (the kinds are few, so a linear search beats hashing).
/// Every kind of [`KINDS`] is registered at start, so a recorder set for the starting
/// thread only sees them all.
#[derive(Default)]
struct ByKind {
    /// (kind, sent, received).
    kinds: Vec<(&'static str, Counter, Counter)>,
}

impl ByKind {
    fn new(node: &str) -> Self {
        let mut by_kind = Self::default();
        for kind in KINDS {
            by_kind.get(node, kind);
        }
        by_kind
    }

    fn get(&mut self, node: &str, kind: &'static str) -> &(&'static str, Counter, Counter) {
        let at = match self.kinds.iter().position(|(k, ..)| *k == kind) {
            Some(at) => at,
            None => {
                self.kinds.push((
                    kind,
                    counter!(MESSAGES_SENT_TOTAL, LABEL_NODE => node.to_string(), LABEL_KIND => kind),
                    counter!(MESSAGES_RECEIVED_TOTAL, LABEL_NODE => node.to_string(), LABEL_KIND => kind),
                ));
                self.kinds.len() - 1
            }
        };
        &self.kinds[at]
    }
}

/// The handles of one node's metrics, registered once at start with the recorder in
/// force then. Invariant: every handle carries `node = <id>`.
pub(crate) struct NodeMetrics {
    node: String,
    term: Gauge,
    is_leader: Gauge,
    roles: [Gauge; 4],
    leader_id: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    first_index: Gauge,
    snapshot_index: Gauge,
    cluster_found: Gauge,
    follower_lag_max: Gauge,
    leader_changes: Counter,
    elections_started: Counter,
    became_leader: Counter,
    messages_ignored: Counter,
    appends_rejected: Counter,
    proposals: Counter,
    syncs: Counter,
    events_dropped: Counter,
    transport_sent: Counter,
    transport_received: Counter,
    transport_dropped: Counter,
    snapshots_taken: Counter,
    snapshot_taken_bytes: Counter,
    snapshot_chunks_sent: Counter,
    snapshot_sent_bytes: Counter,
    snapshots_installed: Counter,
    snapshot_installed_bytes: Counter,
    snapshot_chunks_deferred: Counter,
    snapshot_receive_buffer: Gauge,
    log_append: Histogram,
    sync_ready: Histogram,
    sync_snapshot: Histogram,
    apply_batch: Histogram,
    apply_seconds: Histogram,
    /// Proposal failures by reason: one handle per [`REASONS`] entry, in order.
    failed: Vec<Counter>,
    /// Touched by the WaitLoop only (one uncontended lock per batch).
    by_kind: Mutex<ByKind>,
}

impl NodeMetrics {
    /// Registers node `id`'s metrics with the recorder in force on this thread.
    pub(crate) fn new(id: NodeId) -> Self {
        let node = id.to_string();
        let n = || node.clone();
        let roles = ROLES.map(|(_, name)| gauge!(ROLE, LABEL_NODE => n(), LABEL_ROLE => name));
        Self {
            term: gauge!(TERM, LABEL_NODE => n()),
            is_leader: gauge!(IS_LEADER, LABEL_NODE => n()),
            roles,
            leader_id: gauge!(LEADER_ID, LABEL_NODE => n()),
            commit_index: gauge!(COMMIT_INDEX, LABEL_NODE => n()),
            applied_index: gauge!(APPLIED_INDEX, LABEL_NODE => n()),
            last_index: gauge!(LAST_INDEX, LABEL_NODE => n()),
            first_index: gauge!(FIRST_INDEX, LABEL_NODE => n()),
            snapshot_index: gauge!(SNAPSHOT_INDEX, LABEL_NODE => n()),
            cluster_found: gauge!(CLUSTER_FOUND, LABEL_NODE => n()),
            follower_lag_max: gauge!(FOLLOWER_LAG_MAX_ENTRIES, LABEL_NODE => n()),
            leader_changes: counter!(LEADER_CHANGES_TOTAL, LABEL_NODE => n()),
            elections_started: counter!(ELECTIONS_STARTED_TOTAL, LABEL_NODE => n()),
            became_leader: counter!(BECAME_LEADER_TOTAL, LABEL_NODE => n()),
            messages_ignored: counter!(MESSAGES_IGNORED_TOTAL, LABEL_NODE => n()),
            appends_rejected: counter!(APPENDS_REJECTED_TOTAL, LABEL_NODE => n()),
            proposals: counter!(PROPOSALS_TOTAL, LABEL_NODE => n()),
            syncs: counter!(SYNCS_TOTAL, LABEL_NODE => n()),
            events_dropped: counter!(EVENTS_DROPPED_TOTAL, LABEL_NODE => n()),
            transport_sent: counter!(TRANSPORT_SENT_TOTAL, LABEL_NODE => n()),
            transport_received: counter!(TRANSPORT_RECEIVED_TOTAL, LABEL_NODE => n()),
            transport_dropped: counter!(TRANSPORT_DROPPED_TOTAL, LABEL_NODE => n()),
            snapshots_taken: counter!(SNAPSHOTS_TAKEN_TOTAL, LABEL_NODE => n()),
            snapshot_taken_bytes: counter!(SNAPSHOT_TAKEN_BYTES_TOTAL, LABEL_NODE => n()),
            snapshot_chunks_sent: counter!(SNAPSHOT_CHUNKS_SENT_TOTAL, LABEL_NODE => n()),
            snapshot_sent_bytes: counter!(SNAPSHOT_SENT_BYTES_TOTAL, LABEL_NODE => n()),
            snapshots_installed: counter!(SNAPSHOTS_INSTALLED_TOTAL, LABEL_NODE => n()),
            snapshot_installed_bytes: counter!(SNAPSHOT_INSTALLED_BYTES_TOTAL, LABEL_NODE => n()),
            snapshot_chunks_deferred: counter!(SNAPSHOT_CHUNKS_DEFERRED_TOTAL, LABEL_NODE => n()),
            snapshot_receive_buffer: gauge!(SNAPSHOT_RECEIVE_BUFFER_BYTES, LABEL_NODE => n()),
            log_append: histogram!(LOG_APPEND_SECONDS, LABEL_NODE => n()),
            sync_ready: histogram!(LOG_SYNC_SECONDS, LABEL_NODE => n(), LABEL_CAUSE => "ready"),
            sync_snapshot: histogram!(LOG_SYNC_SECONDS, LABEL_NODE => n(), LABEL_CAUSE => "snapshot"),
            apply_batch: histogram!(APPLY_BATCH_ENTRIES, LABEL_NODE => n()),
            apply_seconds: histogram!(APPLY_SECONDS, LABEL_NODE => n()),
            failed: REASONS
                .iter()
                .map(|&r| counter!(PROPOSALS_FAILED_TOTAL, LABEL_NODE => n(), LABEL_REASON => r))
                .collect(),
            by_kind: Mutex::new(ByKind::new(&node)),
            node,
        }
    }

    /// Publishes the gauges and the cumulative counters of `status` (the WaitLoop's
    /// status publication calls it, so it runs every tick).
    pub(crate) fn publish(&self, status: &NodeStatus) {
        self.term.set(status.term as f64);
        self.is_leader
            .set(if status.is_leader() { 1.0 } else { 0.0 });
        for ((role, _), gauge) in ROLES.iter().zip(&self.roles) {
            gauge.set(if *role == status.role { 1.0 } else { 0.0 });
        }
        self.leader_id.set(status.leader.unwrap_or(0) as f64);
        self.commit_index.set(status.commit_index as f64);
        self.applied_index.set(status.applied_index as f64);
        self.last_index.set(status.last_index as f64);
        self.first_index.set(status.first_index as f64);
        self.snapshot_index.set(status.snapshot_index as f64);
        self.cluster_found.set(match status.cluster {
            ClusterState::Found => 1.0,
            _ => 0.0,
        });
        let lag_max = status.peers.iter().map(|p| p.lag).max().unwrap_or(0);
        self.follower_lag_max.set(lag_max as f64);
        let c = &status.counters;
        self.elections_started
            .absolute(c.protocol.elections_started);
        self.became_leader.absolute(c.protocol.became_leader);
        self.messages_ignored.absolute(c.protocol.messages_ignored);
        self.appends_rejected.absolute(c.protocol.appends_rejected);
        self.proposals.absolute(c.proposals);
        self.syncs.absolute(c.syncs);
        self.events_dropped.absolute(c.events_dropped);
        self.snapshot_chunks_deferred
            .absolute(c.snapshot_chunks_deferred);
        self.transport_sent.absolute(c.transport.sent);
        self.transport_received.absolute(c.transport.received);
        self.transport_dropped.absolute(c.transport.dropped);
    }

    /// The leader this node knows of changed.
    pub(crate) fn leader_changed(&self) {
        self.leader_changes.increment(1);
    }

    /// A proposal failed at once because no leader was known.
    pub(crate) fn proposal_failed_no_leader(&self) {
        self.proposal_failed("no_leader");
    }

    /// The protocol refused a proposal.
    pub(crate) fn proposal_rejected(&self, e: &ProposeError) {
        #[allow(unreachable_patterns)] // variants added later count as `other`
        let reason = match e {
            ProposeError::NotLeader { .. } => "not_leader",
            ProposeError::TooLarge { .. } => "too_large",
            ProposeError::Busy(_) => "busy",
            ProposeError::Transferring => "transferring",
            _ => "other",
        };
        self.proposal_failed(reason);
    }

    fn proposal_failed(&self, reason: &'static str) {
        let at = REASONS.iter().position(|r| *r == reason);
        self.failed[at.unwrap_or(REASONS.len() - 1)].increment(1);
    }

    /// Counts `messages` about to be handed to the transport, by kind, and the snapshot
    /// chunks among them.
    pub(crate) fn sent(&self, messages: &[Message]) {
        let mut by_kind = self.by_kind.lock();
        for m in messages {
            by_kind.get(&self.node, m.body.kind()).1.increment(1);
            if let MessageBody::InstallSnapshot { data, .. } = &m.body {
                self.snapshot_chunks_sent.increment(1);
                self.snapshot_sent_bytes.increment(data.len() as u64);
            }
        }
    }

    /// Counts one message stepped into the protocol.
    pub(crate) fn received(&self, m: &Message) {
        self.by_kind
            .lock()
            .get(&self.node, m.body.kind())
            .2
            .increment(1);
    }

    /// A snapshot this node took was stored, `size_bytes` long.
    pub(crate) fn snapshot_taken(&self, size_bytes: u64) {
        self.snapshots_taken.increment(1);
        self.snapshot_taken_bytes.increment(size_bytes);
    }

    /// A snapshot of `size_bytes` from the leader is being installed.
    pub(crate) fn snapshot_installed(&self, size_bytes: usize) {
        self.snapshots_installed.increment(1);
        self.snapshot_installed_bytes.increment(size_bytes as u64);
    }

    /// `bytes` of a snapshot being received wait for the disk.
    pub(crate) fn snapshot_receive_buffered(&self, bytes: u64) {
        self.snapshot_receive_buffer.set(bytes as f64);
    }

    /// One `Log::append` took `took`.
    pub(crate) fn log_appended(&self, took: Duration) {
        self.log_append.record(took.as_secs_f64());
    }

    /// One `Log::sync` for `cause` (`"snapshot"` or anything else: a Ready) took `took`.
    pub(crate) fn log_synced(&self, cause: &str, took: Duration) {
        let h = if cause == "snapshot" {
            &self.sync_snapshot
        } else {
            &self.sync_ready
        };
        h.record(took.as_secs_f64());
    }

    /// The apply thread applied a batch of `entries` in `took`.
    pub(crate) fn applied(&self, entries: usize, took: Duration) {
        self.apply_batch.record(entries as f64);
        self.apply_seconds.record(took.as_secs_f64());
    }
}
