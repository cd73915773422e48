//! `Ready`: what the protocol asks its driver to do, in order.

use crate::message::Message;
use bytes::Bytes;

use crate::types::{Entry, HardState, LogIndex, NodeId, SnapshotInfo, SnapshotMeta, Term};

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking whether it could win an election, without raising its term (pre-vote).
    PreCandidate,
    /// Campaigning in an election.
    Candidate,
    /// Leads the cluster.
    Leader,
}

/// The volatile state the driver may want to show or react to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// This node's term.
    pub term: Term,
    /// The leader this node knows of in `term`.
    pub leader: Option<NodeId>,
}

/// The answer to a read request: once the state machine has applied `index`, a read
/// reflects every write acknowledged before the request was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id the caller gave the request.
    pub request_id: u64,
    /// The index to wait for, or `None` if the request failed (leadership lost).
    pub index: Option<LogIndex>,
}

/// The outcome of a proposal forwarded to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardedProposal {
    /// The id the caller gave the proposal.
    pub request_id: u64,
    /// Where the leader appended it as (index, term), or `None` if it refused.
    pub placed: Option<(LogIndex, Term)>,
}

/// A piece of a snapshot this follower receives: write `data` at `offset` of the
/// snapshot covering `meta`. Pieces come in order, from offset 0, without gaps; a piece
/// at offset 0 starts the snapshot over (drop whatever was written for another).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot it belongs to.
    pub meta: SnapshotMeta,
    /// Where its data goes, in bytes from the snapshot's start.
    pub offset: u64,
    /// The data.
    pub data: Bytes,
}

/// A batch of work for the driver. Handle it in this order:
///
/// 0. optionally, send [`Ready::take_messages_before_sync`] first: the leader's appends,
///    heartbeats and snapshot chunks, which promise nothing about this node's storage;
/// 1. write [`Ready::snapshot_chunks`] (no sync needed: they are durable only as a
///    whole, see [`Ready::received_snapshot`]); store [`Ready::snapshot`] if any, append
///    [`Ready::entries`] and store [`Ready::hard_state`], then sync the log (see
///    [`Ready::must_sync_after`]);
/// 2. send [`Ready::messages`] (only now: they may promise what step 1 made durable);
/// 3. apply [`Ready::committed`] in order; answer [`Ready::read_states`] and
///    [`Ready::forwarded`];
/// 4. call [`crate::Raft::advance`] with this ready.
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and passed to Raft::advance"]
pub struct Ready {
    /// New role, term or leader, if any changed since the last ready.
    pub soft_state: Option<SoftState>,
    /// A snapshot received from the leader that the driver made durable and
    /// [`crate::Raft::snapshot_received`] accepted: make it the log's stored snapshot
    /// ([`crate::Log::adopt_snapshot`] or [`crate::Log::save_snapshot`]) and compact the
    /// log to it ([`crate::Log::compact`]), before appending `entries`; then restore the
    /// state machine from the stored snapshot before applying `committed`.
    pub snapshot: Option<SnapshotMeta>,
    /// Data of a snapshot being received, to write in order (see [`SnapshotChunk`]).
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// Every byte of this snapshot was handed out in `snapshot_chunks` and matched the
    /// leader's checksum: make what was written durable (off the thread that drives the
    /// protocol, if that is slow), then call [`crate::Raft::snapshot_received`] with the
    /// outcome. Until then the snapshot is neither installed nor acknowledged.
    pub received_snapshot: Option<SnapshotInfo>,
    /// Hard state to store, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to the log (replacing any suffix from the first one's index).
    pub entries: Vec<Entry>,
    /// Messages to send once the above is durable.
    pub messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed: Vec<Entry>,
    /// Answers to read requests.
    pub read_states: Vec<ReadState>,
    /// Answers to proposals this node forwarded to the leader.
    pub forwarded: Vec<ForwardedProposal>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.snapshot.is_none()
            && self.snapshot_chunks.is_empty()
            && self.received_snapshot.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.forwarded.is_empty()
    }

    /// Removes and returns the messages that may go out before this ready's writes are
    /// durable: a leader's appends, heartbeats and snapshot chunks (Raft thesis §10.2.1).
    /// They carry the leader's log, not a promise about it: the leader counts itself
    /// towards a commit only for entries it has persisted (those of readies it has
    /// [`crate::Raft::advance`]d), so a follower may persist an entry while the leader
    /// is still writing it, and the two writes overlap. Everything that does promise
    /// durable state (a vote, an append acknowledgement) stays in [`Ready::messages`].
    pub fn take_messages_before_sync(&mut self) -> Vec<Message> {
        if self.messages.iter().all(|m| m.body.may_precede_sync()) {
            return std::mem::take(&mut self.messages);
        }
        let (early, late) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|m| m.body.may_precede_sync());
        self.messages = late;
        early
    }

    /// Whether the log must be synced before the messages may be sent: a conservative
    /// answer that needs no memory of earlier readies (any change of hard state counts).
    /// [`Ready::must_sync_after`] is the precise one.
    pub fn must_sync(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }

    /// Whether the log must be synced before the messages may be sent, given the hard
    /// state last made durable: yes for entries, a snapshot, or a new term or vote; not
    /// for a new commit index alone. Nothing sent depends on the commit index being
    /// durable (a restarted node learns it again from the leader), so it is written with
    /// this ready and becomes durable at the next sync. Syncing for it would cost the
    /// leader a sync per commit and every follower one per commit it learns.
    ///
    /// ```
    /// use raft_core::{HardState, Ready};
    /// let durable = HardState { term: 2, vote: Some(1), commit: 5 };
    /// let commit_only = Ready { hard_state: Some(HardState { commit: 7, ..durable }), ..Ready::default() };
    /// assert!(commit_only.must_sync() && !commit_only.must_sync_after(&durable));
    /// let new_term = Ready { hard_state: Some(HardState { term: 3, vote: None, commit: 5 }), ..Ready::default() };
    /// assert!(new_term.must_sync_after(&durable));
    /// ```
    pub fn must_sync_after(&self, durable: &HardState) -> bool {
        !self.entries.is_empty()
            || self.snapshot.is_some()
            || self
                .hard_state
                .is_some_and(|hs| hs.term != durable.term || hs.vote != durable.vote)
    }
}
