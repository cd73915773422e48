//! `Raft`: the protocol state machine. Pure and deterministic: no threads, sockets,
//! files or clocks; randomness only from the seeded RNG given at construction.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::membership::{self, ConfigHistory, MembershipChange, MembershipError};
use super::progress::{Progress, ProgressState};
use super::quorum::VoteResult;
use super::raft_log::RaftLog;
use super::ready::{ForwardedProposal, ReadState, Ready, Role, SnapshotChunk, SoftState};
use crate::config::{Config, ConfigError, ReadMode};
use crate::message::{Message, MessageBody, RejectHint};
use crate::storage::Log;
use crate::types::{
    Entry, EntryKind, HardState, LogIndex, Membership, NodeId, SnapshotInfo, SnapshotMeta, Term,
};

mod election;
mod leader;
mod members;
mod propose;
mod read;
mod replication;
mod snapshot;

use read::PendingRead;
use replication::Send;
use snapshot::IncomingSnapshot;

/// Most bytes of committed entries handed out in one [`Ready`].
const COMMITTED_BYTES_PER_READY_MAX: u64 = 4 * 1024 * 1024;
/// How many recent heartbeat rounds the leader remembers the send tick of (for leases).
const READ_ROUNDS_REMEMBERED_MAX: usize = 1024;

/// Why a proposal or read was refused. The caller may retry elsewhere or later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader; `leader` is who it believes leads, if anyone.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The command is larger than [`crate::Config::entry_bytes_max`].
    #[error(
        "proposal of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes (entry_bytes_max)"
    )]
    TooLarge {
        /// The command's length in bytes.
        size_bytes: u64,
        /// The largest allowed: [`crate::Config::entry_bytes_max`].
        limit_bytes: u64,
    },
    /// Too many entries are waiting to commit; retry shortly.
    #[error("too many uncommitted entries ({0}); retry later")]
    Busy(u64),
    /// A leadership transfer is in progress; retry on the new leader.
    #[error("leadership transfer in progress")]
    Transferring,
    /// The membership change does not apply to the configuration in force.
    #[error("membership change refused: {0}")]
    Membership(#[from] MembershipError),
    /// A membership change is still in flight (its entry, at `index`, is not committed,
    /// or a joint configuration is not yet left): one change at a time (thesis §4.1).
    #[error("a membership change is in flight (entry {index}); retry once it commits")]
    ChangeInFlight {
        /// The index of the configuration entry not yet committed.
        index: LogIndex,
    },
    /// A new leader must commit an entry of its own term before it changes the
    /// membership (thesis §4.1, the fix for the single-server change bug); retry shortly.
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    NotCommittedInTerm,
}

/// Deliberately broken protocol variants, to prove the simulator's checkers catch them.
/// Public only with the `fault-injection` feature; without it no `Raft` can be switched
/// to one ([`Raft::broken`] is `false`), so a real build never runs one.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenVariant {
    /// Grant votes without the §5.4.1 up-to-date check.
    VoteWithoutLogCheck,
    /// Commit entries of older terms by counting replicas (the Figure 8 bug).
    CommitOlderTerms,
    /// Accept a membership change while the previous one is not committed yet (two
    /// changes in flight, against thesis §4.1).
    TwoChangesInFlight,
    /// Take a snapshot transfer for complete once its last chunk arrives, without
    /// waiting for the chunks before it or checking its checksum: the driver stores, and
    /// the node restores from, a partial snapshot.
    InstallPartialSnapshot,
    /// Install a snapshot without adopting the configuration its metadata carries: the
    /// node keeps the configuration it had at the snapshot's index.
    SnapshotWithoutConfig,
    /// Ignore vote requests of a stale term instead of refusing them with the current
    /// term (the candidate never learns the term it must campaign above).
    IgnoreStaleVotes,
    /// Without check-quorum, take a vote request of a higher term from a node outside
    /// the configuration while hearing from a leader (thesis §4.2.3 says to ignore it):
    /// a removed node that keeps campaigning deposes leader after leader.
    DisruptiveOutsiders,
}

/// What one ready handed out: its last entry (index, term) and last committed index.
#[derive(Clone, Debug)]
struct HandedOut {
    last_entry: Option<(LogIndex, Term)>,
    last_committed: Option<LogIndex>,
    snapshot: Option<SnapshotMeta>,
}

/// Counters of protocol events, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolCounters {
    /// Elections this node started (real, not pre-vote).
    pub elections_started: u64,
    /// Times this node became leader.
    pub became_leader: u64,
    /// Messages ignored (stale term, wrong role, ...).
    pub messages_ignored: u64,
    /// Append rejections this node sent.
    pub appends_rejected: u64,
}

/// A follower's replication state as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Highest index known replicated on the peer.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Probe or replicate.
    pub state: ProgressState,
    /// Appends in flight.
    pub inflight_messages: usize,
}

/// A snapshot of the protocol's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Role, term and known leader.
    pub soft: SoftState,
    /// Vote in the current term.
    pub vote: Option<NodeId>,
    /// Highest committed index.
    pub commit_index: LogIndex,
    /// Highest index handed out for applying.
    pub applied_index: LogIndex,
    /// Last index in the log.
    pub last_index: LogIndex,
    /// On the leader: each follower's progress.
    pub peers: Vec<PeerStatus>,
    /// Event counters.
    pub counters: ProtocolCounters,
    /// Logical time: ticks since this instance started.
    pub ticks: u64,
    /// The configuration in force (the latest in the log, committed or not).
    pub membership: Membership,
}

/// The Raft protocol for one node.
///
/// Drive it with [`Raft::tick`], [`Raft::step`], [`Raft::propose`] and
/// [`Raft::read_index`]; collect work with [`Raft::ready`] and hand it back with
/// [`Raft::advance`] once done.
///
/// ```
/// use raft_core::{Config, MemLog, Raft, Role};
/// let mut node = Raft::new(Config::new(1, [1]), MemLog::new(), 7).unwrap();
/// node.campaign();
/// let ready = node.ready();
/// assert_eq!(ready.soft_state.unwrap().role, Role::Leader);
/// node.advance(ready);
/// ```
pub struct Raft<L: Log> {
    id: NodeId,
    config: Config,
    /// The configurations the log holds; the last one is in force (thesis §4.1).
    configs: ConfigHistory,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    role: Role,
    log: RaftLog<L>,
    /// Leader only: every other member's progress (voters and learners).
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last reset of the election timer (or, on a leader, since the
    /// last check-quorum round).
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    /// Invariant: in `[election_timeout_ticks, 2 * election_timeout_ticks)`.
    randomized_election_timeout: u32,
    rng: ChaCha8Rng,
    /// Logical time: ticks since construction.
    now_ticks: u64,
    msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    forwarded: Vec<ForwardedProposal>,
    /// Leader: reads waiting for a heartbeat round to confirm leadership.
    pending_reads: VecDeque<PendingRead>,
    /// Leader: reads waiting for the first commit of this term.
    reads_before_first_commit: Vec<(NodeId, u64)>,
    read_round: u64,
    read_round_needed: bool,
    /// Send tick of recent rounds; front is round `read_round + 1 - len`.
    round_sent_ticks: VecDeque<u64>,
    broadcast_needed: bool,
    lead_transferee: Option<NodeId>,
    /// Ticks since the current leadership transfer started; it is abandoned after an
    /// election timeout. Kept apart from `election_elapsed`, which times check-quorum:
    /// starting a transfer must not postpone a leader's check that it still has a quorum.
    transfer_elapsed: u32,
    /// Leader: a TimeoutNow went out this term. The transferee's election is honoured by
    /// followers even inside our lease, and a delayed TimeoutNow can start it long after
    /// the transfer was abandoned, so lease reads are off for the rest of the term.
    timeout_now_sent: bool,
    /// Started from a log that had seen a term: this is a restart, not a first boot.
    restarted: bool,
    /// `campaign()` was asked for while a lease this node granted may still hold (see
    /// [`Raft::campaign`]): the node no longer answers the leader, and campaigns once an
    /// election timeout has passed since it last did.
    campaign_pending: bool,
    prev_soft: SoftState,
    prev_hard: HardState,
    /// What the outstanding ready handed out: its last entry (index, term) and its last
    /// committed index. Recorded here so `advance` does not depend on what the driver
    /// did with the ready's vectors (it may move them out).
    handed_out: Option<HandedOut>,
    /// Follower: the snapshot being received.
    incoming: Option<IncomingSnapshot>,
    /// Follower: received snapshot data for the driver to write, in order.
    snapshot_writes: Vec<SnapshotChunk>,
    /// Follower: a received snapshot, every byte written, for the driver to make durable.
    received_snapshot: Option<SnapshotInfo>,
    /// Follower: a received snapshot, durable, for the driver to install.
    pending_snapshot: Option<SnapshotMeta>,
    counters: ProtocolCounters,
    #[cfg(feature = "fault-injection")]
    broken: Option<BrokenVariant>,
}

impl<L: Log> std::fmt::Debug for Raft<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("term", &self.term)
            .field("leader", &self.leader)
            .field("commit", &self.log.committed)
            .field("last_index", &self.log.last_index())
            .finish()
    }
}

impl<L: Log> Raft<L> {
    /// A node that resumes from whatever `log` holds (term, vote, commit and entries),
    /// as a follower. `seed` drives its randomized election timeouts. A log whose stored
    /// snapshot is ahead of its compaction point (a crash between the two writes of an
    /// install) is compacted to the snapshot first.
    ///
    /// # Errors
    /// An invalid config.
    pub fn new(config: Config, mut log: L, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let hard = log.hard_state();
        // The state machine starts from the stored snapshot, if any (the runtime
        // restores it). Only its metadata is read here, not its data.
        let snapshot = match log.snapshot_info() {
            Ok(info) => info.map(|i| i.meta),
            Err(e) => {
                return Err(ConfigError::new(
                    "log",
                    format!("cannot read the stored snapshot: {e}"),
                ))
            }
        };
        // The configuration in force at the snapshot is in its metadata; a snapshot
        // stored before configurations were kept with snapshots has none, and the initial
        // configuration (`config.voters`) then holds until a configuration entry.
        let base = match snapshot
            .as_ref()
            .and_then(|m| m.membership.clone().map(|c| (m.last_index, c)))
        {
            Some((index, m)) => match m.validate() {
                Ok(()) => Some((index, m)),
                Err(e) => {
                    return Err(ConfigError::new(
                        "log",
                        format!("the stored snapshot's configuration is invalid: {e}"),
                    ))
                }
            },
            None => None,
        };
        // Installing a snapshot is two writes, save then compact, and a crash before the
        // sync may keep only the first: the snapshot then lies beyond a log that does not
        // hold its last entry (or disagrees there). Finish the compaction, or the log
        // would have no term for the index the node resumes from.
        if let Some(meta) = &snapshot {
            if meta.last_index > log.snapshot_meta().last_index
                && log.term(meta.last_index).ok() != Some(meta.last_term)
            {
                log.compact(meta.clone()).map_err(|e| {
                    ConfigError::new(
                        "log",
                        format!("cannot compact the log to the stored snapshot: {e}"),
                    )
                })?;
            }
        }
        let snapshot_index = snapshot.as_ref().map_or(0, |m| m.last_index);
        let applied = snapshot_index.max(log.snapshot_meta().last_index);
        let log = RaftLog::new(log, applied);
        let configs = Self::load_configs(&config, &log, base)?;
        let soft = SoftState {
            role: Role::Follower,
            term: hard.term,
            leader: None,
        };
        let mut raft = Self {
            id: config.id,
            configs,
            term: hard.term,
            vote: hard.vote,
            leader: None,
            role: Role::Follower,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            rng: ChaCha8Rng::seed_from_u64(seed ^ config.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            now_ticks: 0,
            msgs: Vec::new(),
            read_states: Vec::new(),
            forwarded: Vec::new(),
            pending_reads: VecDeque::new(),
            reads_before_first_commit: Vec::new(),
            read_round: 0,
            read_round_needed: false,
            round_sent_ticks: VecDeque::new(),
            broadcast_needed: false,
            lead_transferee: None,
            transfer_elapsed: 0,
            timeout_now_sent: false,
            restarted: hard.term > 0,
            campaign_pending: false,
            prev_soft: soft,
            prev_hard: HardState {
                commit: log.committed,
                ..hard
            },
            handed_out: None,
            incoming: None,
            snapshot_writes: Vec::new(),
            received_snapshot: None,
            pending_snapshot: None,
            counters: ProtocolCounters::default(),
            config,
            log,
            #[cfg(feature = "fault-injection")]
            broken: None,
        };
        raft.reset_randomized_timeout();
        if !raft.configs.current().is_voter(raft.id) {
            log::info!(
                "n{} is not a voter of {:?}: it does not campaign until a configuration makes it one",
                raft.id,
                raft.configs.current()
            );
        }
        log::info!(
            "n{} starting at term {} with log {}..={} and commit {}",
            raft.id,
            raft.term,
            raft.log.first_index(),
            raft.log.last_index(),
            raft.log.committed
        );
        Ok(raft)
    }

    /// Switches on a deliberately broken variant (tests of the simulator only).
    #[cfg(feature = "fault-injection")]
    pub fn set_broken_variant(&mut self, variant: Option<BrokenVariant>) {
        self.broken = variant;
    }

    /// Whether this node runs broken variant `variant` (simulator tests only).
    #[cfg(feature = "fault-injection")]
    fn broken(&self, variant: BrokenVariant) -> bool {
        self.broken == Some(variant)
    }

    /// Whether this node runs broken variant `variant`: never, in a build without the
    /// `fault-injection` feature (the compiler folds every check away).
    #[cfg(not(feature = "fault-injection"))]
    #[inline(always)]
    fn broken(&self, _variant: BrokenVariant) -> bool {
        false
    }

    // ----- accessors -------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Vote in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// Highest committed index.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }
    /// Last index in the log (persisted or not).
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    /// The protocol's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The storage, for reading.
    pub fn log(&self) -> &L {
        &self.log.log
    }
    /// The storage, for the driver to write what a [`Ready`] asks.
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log.log
    }
    /// The compaction point to pass to [`Log::compact`] to drop entries up to `index`,
    /// clamped to what is applied and persisted; `None` if there is nothing to compact.
    /// Like [`Raft::snapshot_meta_at`], it names the configuration in force there, so a
    /// log's `snapshot_meta()` never lacks one it could have had. The driver must have
    /// stored a snapshot covering it first.
    pub fn compaction_meta(&self, index: LogIndex) -> Option<SnapshotMeta> {
        let mut meta = self.log.compaction_meta(index)?;
        meta.membership = Some(self.configs.at(meta.last_index).clone());
        Some(meta)
    }

    /// Highest index handed out for applying.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    /// Gives the storage back, ending this protocol instance (a stopped node).
    pub fn into_log(self) -> L {
        self.log.log
    }
    /// Term of the entry at `index`, if the log has it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    /// Entries `[low, high)` (persisted or not), up to `max_bytes`.
    ///
    /// # Errors
    /// Compacted or unavailable indexes.
    pub fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, crate::StorageError> {
        self.log.entries(low, high, max_bytes)
    }

    /// Whether new entries would wait anyway: this node leads, and every follower's
    /// appends are held back (`inflight_small_appends_max` small appends unanswered: big
    /// ones, see [`Config::big_append_bytes_min`], do not count) or paused. A driver may
    /// then leave proposals queued until an answer arrives and propose them together: one
    /// write and one append for the lot.
    pub fn replication_held(&self) -> bool {
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        let small_max = self.config.inflight_small_appends_max as usize;
        let big_bytes_min = self.config.big_append_bytes_min();
        self.role == Role::Leader
            && !self.progress.is_empty()
            && self.progress.values().all(|pr| {
                pr.is_paused(messages_max, bytes_max)
                    || (pr.state == ProgressState::Replicate
                        && pr.inflight_small_messages(big_bytes_min) >= small_max)
            })
    }

    /// The randomized election timeout currently in force, in ticks.
    pub fn randomized_election_timeout(&self) -> u32 {
        self.randomized_election_timeout
    }

    /// A snapshot of the protocol's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            soft: self.soft_state(),
            vote: self.vote,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
            last_index: self.log.last_index(),
            peers: self
                .progress
                .iter()
                .map(|(&id, p)| PeerStatus {
                    id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    inflight_messages: p.inflight_messages(),
                })
                .collect(),
            counters: self.counters,
            ticks: self.now_ticks,
            membership: self.configs.current().clone(),
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Every other member: voters of both halves of a joint configuration and learners.
    fn peers(&self) -> Vec<NodeId> {
        let id = self.id;
        self.configs
            .current()
            .members()
            .filter(move |v| *v != id)
            .collect()
    }

    /// Every other voter (both halves of a joint configuration): who is asked for votes.
    fn voter_peers(&self) -> Vec<NodeId> {
        let id = self.id;
        let m = self.configs.current();
        m.members().filter(|v| *v != id && m.is_voter(*v)).collect()
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    // ----- role changes ----------------------------------------------------------------

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_timeout();
        self.votes.clear();
        self.progress.clear();
        self.lead_transferee = None;
        self.timeout_now_sent = false;
        self.broadcast_needed = false;
        self.read_round_needed = false;
        self.fail_pending_reads();
    }

    fn reset_randomized_timeout(&mut self) {
        let t = self.config.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.gen_range(t..2 * t);
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let was_leader = self.role == Role::Leader;
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        if was_leader {
            log::info!("n{} stepped down at term {}", self.id, self.term);
        }
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not pre-campaign");
        // Pre-vote changes neither term nor vote.
        self.votes.clear();
        self.leader = None;
        self.role = Role::PreCandidate;
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
        log::debug!("n{} became pre-candidate at term {}", self.id, self.term);
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.counters.elections_started += 1;
        log::info!("n{} became candidate at term {}", self.id, self.term);
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.counters.became_leader += 1;
        self.sync_progress();
        // §8: an empty entry of the new term lets the leader commit everything before it.
        let index = self.log.last_index() + 1;
        self.log.append_unstable(&[Entry {
            term,
            index,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        }]);
        self.broadcast_needed = true;
        log::info!("n{} became leader at term {}", self.id, self.term);
    }

    // ----- inputs ----------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    /// Handles one message from a peer. Malformed or stale input is logged and ignored.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id {
            log::warn!("n{} ignoring a message addressed to n{}", self.id, m.to);
            self.counters.messages_ignored += 1;
            return;
        }
        // Any other node may write: a node joining the cluster hears from a leader its
        // configuration does not list yet, and a removed node's requests are answered
        // (pre-vote and check-quorum keep it from disrupting, thesis §4.2.3).
        if m.from == 0 || m.from == self.id {
            log::warn!("n{} ignoring a message from n{}", self.id, m.from);
            self.counters.messages_ignored += 1;
            return;
        }
        // A node waiting to campaign (see `campaign`) no longer answers its leader, so
        // the lease it granted runs out.
        if self.campaign_pending
            && m.term == self.term
            && matches!(
                m.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::InstallSnapshot { .. }
            )
        {
            self.counters.messages_ignored += 1;
            return;
        }
        // Requests between a follower and the leader that do not depend on terms.
        match m.body {
            MessageBody::Propose { request_id, data } => {
                return self.handle_forwarded_propose(m.from, request_id, data);
            }
            MessageBody::ProposeResponse { request_id, placed } => {
                self.forwarded
                    .push(ForwardedProposal { request_id, placed });
                return;
            }
            MessageBody::ReadIndex { request_id } => {
                if self.role == Role::Leader {
                    self.leader_read(m.from, request_id);
                } else {
                    self.send(
                        m.from,
                        MessageBody::ReadIndexResponse {
                            request_id,
                            index: None,
                        },
                    );
                }
                return;
            }
            MessageBody::ReadIndexResponse { request_id, index } => {
                self.read_states.push(ReadState { request_id, index });
                return;
            }
            _ => {}
        }

        if m.term > self.term {
            let is_vote_request = matches!(
                m.body,
                MessageBody::Vote { .. } | MessageBody::PreVote { .. }
            );
            let transfer = matches!(m.body, MessageBody::Vote { transfer: true, .. });
            // Under lease reads, a node in its first election timeout after a restart
            // may have acknowledged a leader's heartbeat just before it crashed, and
            // that acknowledgement may hold up the leader's lease: it must not vote
            // yet, although it no longer knows of any leader.
            let just_restarted = self.restarted_inside_a_lease_window();
            let in_lease = self.config.check_quorum
                && (self.leader.is_some() || just_restarted)
                && self.election_elapsed < self.config.election_timeout_ticks;
            // Thesis §4.2.3 (disruptive servers): a node outside our configuration (a
            // removed server that never learned it, its log stale) times out and
            // campaigns forever. Without pre-vote and check-quorum, each vote request
            // at a higher term would depose a working leader; and since a stale-term
            // request is refused with our term (Figure 2), the removed node always
            // learns the term to campaign above next: the simulator's seed 2568 never
            // settled a leader long enough to finish a snapshot transfer. So, whatever
            // the configuration, while we hear from a leader we neither update our
            // term nor vote for a node that is not a voter of our configuration.
            let outsider_in_lease = !self.config.check_quorum
                && !self.broken(BrokenVariant::DisruptiveOutsiders)
                && !self.membership().is_voter(m.from)
                && self.leader.is_some()
                && self.election_elapsed < self.config.election_timeout_ticks;
            let in_lease = in_lease || outsider_in_lease;
            if is_vote_request && in_lease && !transfer {
                log::debug!(
                    "n{} ignoring {} from n{} at term {}: heard from leader {:?} {} ticks ago",
                    self.id,
                    m.body.kind(),
                    m.from,
                    m.term,
                    self.leader,
                    self.election_elapsed
                );
                self.counters.messages_ignored += 1;
                return;
            }
            match m.body {
                // A pre-vote request never changes our term; a granted pre-vote answer
                // carries the term the pre-candidate asked about.
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => {
                    log::info!(
                        "n{} learned of leader n{} at term {}",
                        self.id,
                        m.from,
                        m.term
                    );
                    self.become_follower(m.term, Some(m.from));
                }
                _ => {
                    log::info!(
                        "n{} saw term {} > {} in {} from n{}",
                        self.id,
                        m.term,
                        self.term,
                        m.body.kind(),
                        m.from
                    );
                    // A follower's election timer restarts when it hears from a leader
                    // or grants its vote (Figure 2), not when a vote request merely
                    // raises its term: a candidate whose log is too short to win would
                    // otherwise hold off, election after election, the nodes that could.
                    let elapsed = self.election_elapsed;
                    self.become_follower(m.term, None);
                    if is_vote_request {
                        self.election_elapsed = elapsed;
                    }
                }
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    // A stale leader may be unable to learn our term otherwise (Figure
                    // 2: reply with the current term): it would never get a vote request
                    // from us under pre-vote, nor from a candidate whose configuration
                    // does not list it (a leader that removed itself and lost touch
                    // before its removal committed, thesis §4.2.2), while we, a voter it
                    // needs, ignore it: tell it.
                    self.send(
                        m.from,
                        MessageBody::AppendResponse {
                            index: 0,
                            reject: None,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { granted: false });
                }
                MessageBody::Vote { .. } if !self.broken(BrokenVariant::IgnoreStaleVotes) => {
                    // Figure 2: a vote request of a stale term is refused with the
                    // current term, which the candidate adopts. Ignored instead, a
                    // candidate that only ever asks voters whose terms were raised past
                    // its own by a node outside its configuration (a removed node with a
                    // stale log that keeps campaigning, without pre-vote) never learns
                    // their term and campaigns below it forever: the simulator's seed 891
                    // (membership campaign) had no leader for good after healing.
                    self.send(m.from, MessageBody::VoteResponse { granted: false });
                }
                _ => {
                    log::trace!(
                        "n{} ignoring {} from n{} at stale term {} < {}",
                        self.id,
                        m.body.kind(),
                        m.from,
                        m.term,
                        self.term
                    );
                }
            }
            self.counters.messages_ignored += 1;
            return;
        }

        match m.body {
            MessageBody::Vote { .. } | MessageBody::PreVote { .. } => self.handle_vote_request(&m),
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    // ----- output ----------------------------------------------------------------------

    /// Whether [`Raft::ready`] would return work.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.prev_soft
            || self.pending_snapshot.is_some()
            || !self.snapshot_writes.is_empty()
            || self.received_snapshot.is_some()
            || self.hard_state() != self.prev_hard
            || !self.log.unstable_entries().is_empty()
            || !self.msgs.is_empty()
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || !self.forwarded.is_empty()
            || (self.role == Role::Leader && (self.broadcast_needed || self.read_round_needed))
    }

    /// Collects the work to do. Handle it as [`Ready`] describes, then call
    /// [`Raft::advance`] before the next `ready`.
    pub fn ready(&mut self) -> Ready {
        self.flush_leader_sends();
        self.step_down_if_removed();
        let soft = self.soft_state();
        let hard = self.hard_state();
        let ready = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            snapshot: self.pending_snapshot.take(),
            snapshot_chunks: std::mem::take(&mut self.snapshot_writes),
            received_snapshot: self.received_snapshot.take(),
            hard_state: (hard != self.prev_hard).then_some(hard),
            entries: self.log.unstable_entries().to_vec(),
            messages: std::mem::take(&mut self.msgs),
            committed: self.log.next_committed(COMMITTED_BYTES_PER_READY_MAX),
            read_states: std::mem::take(&mut self.read_states),
            forwarded: std::mem::take(&mut self.forwarded),
        };
        self.prev_soft = soft;
        self.prev_hard = hard;
        assert!(
            self.handed_out.is_none(),
            "ready() called twice without advance(): the driver must advance every ready"
        );
        self.handed_out = Some(HandedOut {
            last_entry: ready.entries.last().map(|e| (e.index, e.term)),
            last_committed: ready.committed.last().map(|e| e.index),
            snapshot: ready.snapshot.clone(),
        });
        ready
    }

    /// Acknowledges that `ready` was handled: its entries and hard state are durable,
    /// its messages sent and its committed entries handed to the state machine.
    ///
    /// The ready's vectors may have been moved out by the driver: what was handed out is
    /// remembered by the protocol itself.
    ///
    /// # Panics
    /// If no ready is outstanding.
    pub fn advance(&mut self, ready: Ready) {
        drop(ready);
        let HandedOut {
            last_entry: stable,
            last_committed: applied,
            snapshot,
        } = self
            .handed_out
            .take()
            .expect("advance() without an outstanding ready()");
        if let Some(meta) = snapshot {
            self.log.snapshot_persisted(meta);
        }
        if let Some((index, term)) = stable {
            self.log.stable_to(index, term);
            if self.role == Role::Leader && self.maybe_commit() {
                self.broadcast_needed = true;
            }
        }
        if let Some(index) = applied {
            self.log.applied_to(index);
        }
        self.configs
            .forget_before(self.log.first_index().saturating_sub(1));
    }
}
