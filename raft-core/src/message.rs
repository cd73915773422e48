//! The messages nodes exchange. Plain Rust types with serde derives; the transport
//! encodes them (raft-net uses postcard).

use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term it would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// Why an append was refused, so the leader can skip a whole conflicting term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    /// The follower's last log index.
    pub last_index: LogIndex,
    /// The first index of the follower's conflicting term at `prev_index`, or
    /// `last_index + 1` when the follower's log is too short.
    pub conflict_index: LogIndex,
    /// The follower's term at `prev_index`, if it had an entry there.
    pub conflict_term: Option<Term>,
}

/// The body of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Pre-vote request (Raft thesis §9.6): would you vote for me at `term`?
    /// Changes nobody's term.
    PreVote {
        /// Candidate's last log index.
        last_log_index: LogIndex,
        /// Candidate's last log term.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// RequestVote (§5.2).
    Vote {
        /// Candidate's last log index.
        last_log_index: LogIndex,
        /// Candidate's last log term.
        last_log_term: Term,
        /// Set when a leadership transfer asked for this election: the receiver votes
        /// even if it heard from a leader recently.
        transfer: bool,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (§5.3).
    Append {
        /// Index of the entry just before `entries`.
        prev_index: LogIndex,
        /// Term of the entry at `prev_index`.
        prev_term: Term,
        /// Entries to store; may be empty for a probe.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: LogIndex,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResponse {
        /// On success, the follower's log matches the leader's up to this index.
        /// On rejection, the `prev_index` that was refused.
        index: LogIndex,
        /// `None` on success; the follower's hint on rejection.
        reject: Option<RejectHint>,
    },
    /// Leader heartbeat; also confirms leadership for reads.
    Heartbeat {
        /// The commit index the follower may adopt: at most what it is known to match.
        commit: LogIndex,
        /// The newest read round this heartbeat belongs to (0: none).
        read_round: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echo of the heartbeat's `read_round`.
        read_round: u64,
        /// The follower's last log index, so a lagging follower is noticed.
        last_index: LogIndex,
    },
    /// A follower asks the leader for a read index on behalf of a local read.
    ReadIndex {
        /// Caller's id for the request.
        request_id: u64,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// Echo of the request id.
        request_id: u64,
        /// The index to wait for before reading; `None` if the leader cannot serve it.
        index: Option<LogIndex>,
    },
    /// A follower forwards a client's command to the leader.
    Propose {
        /// Caller's id for the request.
        request_id: u64,
        /// The command.
        data: bytes::Bytes,
    },
    /// The leader's answer to [`MessageBody::Propose`].
    ProposeResponse {
        /// Echo of the request id.
        request_id: u64,
        /// Where the command was appended as (index, term), or `None` if refused.
        placed: Option<(LogIndex, Term)>,
    },
    /// Leadership transfer: the receiver should start an election at once (thesis §3.10).
    TimeoutNow,
    /// One chunk of a snapshot for a follower whose next entry was compacted away.
    /// Chunks are streamed without the total size up front; the last one carries the
    /// checksum of the whole.
    InstallSnapshot {
        /// The snapshot being sent.
        meta: SnapshotMeta,
        /// Where this chunk starts in the snapshot's bytes.
        offset: u64,
        /// The chunk.
        data: bytes::Bytes,
        /// On the last chunk: the CRC-32 of the whole snapshot.
        done: Option<u32>,
    },
    /// A follower acknowledges snapshot bytes received in order.
    SnapshotResponse {
        /// The snapshot's last index.
        last_index: LogIndex,
        /// Bytes received contiguously from the start: the next offset it needs.
        next_offset: u64,
    },
}

impl MessageBody {
    /// Whether a message of this kind may be sent before the sender's pending writes are
    /// durable: only what a leader sends its followers (appends, heartbeats, snapshot
    /// chunks), which carries its log but promises nothing about its own storage. See
    /// [`crate::Ready::take_messages_before_sync`].
    pub fn may_precede_sync(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        )
    }

    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "pre_vote",
            MessageBody::PreVoteResponse { .. } => "pre_vote_response",
            MessageBody::Vote { .. } => "vote",
            MessageBody::VoteResponse { .. } => "vote_response",
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append_response",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_response",
            MessageBody::ReadIndex { .. } => "read_index",
            MessageBody::ReadIndexResponse { .. } => "read_index_response",
            MessageBody::Propose { .. } => "propose",
            MessageBody::ProposeResponse { .. } => "propose_response",
            MessageBody::TimeoutNow => "timeout_now",
            MessageBody::InstallSnapshot { .. } => "install_snapshot",
            MessageBody::SnapshotResponse { .. } => "snapshot_response",
        }
    }
}
