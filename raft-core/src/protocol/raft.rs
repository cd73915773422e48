//! `Raft`: the protocol state machine. Pure and deterministic: no threads, sockets,
//! files or clocks; randomness only from the seeded RNG given at construction.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::progress::{Progress, ProgressState};
use super::quorum::{self, VoteResult};
use super::raft_log::RaftLog;
use super::ready::{ForwardedProposal, ReadState, Ready, Role, SoftState};
use crate::config::{Config, ConfigError, ReadMode};
use crate::message::{Message, MessageBody, RejectHint};
use crate::storage::Log;
use crate::types::{Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};

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
}

/// Deliberately broken protocol variants, to prove the simulator's checkers catch them.
/// Only compiled with the `fault-injection` feature; never in a real build.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenVariant {
    /// Grant votes without the §5.4.1 up-to-date check.
    VoteWithoutLogCheck,
    /// Commit entries of older terms by counting replicas (the Figure 8 bug).
    CommitOlderTerms,
}

/// What one ready handed out: its last entry (index, term) and last committed index.
#[derive(Clone, Copy, Debug)]
struct HandedOut {
    last_entry: Option<(LogIndex, Term)>,
    last_committed: Option<LogIndex>,
    snapshot: Option<SnapshotMeta>,
}

/// A snapshot a follower is receiving, chunk by chunk.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    /// The bytes received contiguously from offset 0.
    data: Vec<u8>,
    /// Chunks that arrived ahead of a gap (reordered), by offset, to be appended once
    /// the gap fills. Only chunks starting less than `inflight_bytes_max` bytes past
    /// `data` (the most a leader sends beyond what was acknowledged), and at most that
    /// many bytes.
    ahead: BTreeMap<u64, Bytes>,
    ahead_bytes: u64,
    /// From the last chunk: the snapshot's length and checksum.
    end: Option<(u64, u32)>,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    from: NodeId,
    request_id: u64,
    index: LogIndex,
    round: u64,
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
    /// Sorted, this node included.
    voters: Vec<NodeId>,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    role: Role,
    log: RaftLog<L>,
    /// Leader only: every other voter's progress.
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
    /// Follower: a received snapshot for the driver to install.
    pending_snapshot: Option<Snapshot>,
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
        // The state machine starts from the stored snapshot, if any (the runtime restores it).
        let snapshot = match log.snapshot() {
            Ok(snap) => snap.map(|s| s.meta),
            Err(e) => {
                return Err(ConfigError::new(
                    "log",
                    format!("cannot read the stored snapshot: {e}"),
                ))
            }
        };
        // Installing a snapshot is two writes, save then compact, and a crash before the
        // sync may keep only the first: the snapshot then lies beyond a log that does not
        // hold its last entry (or disagrees there). Finish the compaction, or the log
        // would have no term for the index the node resumes from.
        if let Some(meta) = snapshot {
            if meta.last_index > log.snapshot_meta().last_index
                && log.term(meta.last_index).ok() != Some(meta.last_term)
            {
                log.compact(meta).map_err(|e| {
                    ConfigError::new(
                        "log",
                        format!("cannot compact the log to the stored snapshot: {e}"),
                    )
                })?;
            }
        }
        let snapshot_index = snapshot.map_or(0, |m| m.last_index);
        let applied = snapshot_index.max(log.snapshot_meta().last_index);
        let log = RaftLog::new(log, applied);
        let voters: Vec<NodeId> = config.voters.iter().copied().collect();
        let soft = SoftState {
            role: Role::Follower,
            term: hard.term,
            leader: None,
        };
        let mut raft = Self {
            id: config.id,
            voters,
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
            pending_snapshot: None,
            counters: ProtocolCounters::default(),
            config,
            log,
            #[cfg(feature = "fault-injection")]
            broken: None,
        };
        raft.reset_randomized_timeout();
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

    #[cfg(feature = "fault-injection")]
    fn broken(&self, variant: BrokenVariant) -> bool {
        self.broken == Some(variant)
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
    /// The driver must have stored a snapshot covering it first.
    pub fn compaction_meta(&self, index: LogIndex) -> Option<SnapshotMeta> {
        self.log.compaction_meta(index)
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
    /// appends are held back (`inflight_small_appends_max` small appends unanswered) or
    /// paused. A driver may then leave proposals queued until an answer arrives and
    /// propose them together: one write and one append for the lot.
    pub fn replication_held(&self) -> bool {
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        let small_max = self.config.inflight_small_appends_max as usize;
        self.role == Role::Leader
            && !self.progress.is_empty()
            && self.progress.values().all(|pr| {
                pr.is_paused(messages_max, bytes_max)
                    || (pr.state == ProgressState::Replicate && pr.inflight_messages() >= small_max)
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

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let id = self.id;
        self.voters.iter().copied().filter(move |v| *v != id)
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
        let next = self.log.last_index() + 1;
        for peer in self.voters.clone() {
            if peer != self.id {
                self.progress.insert(peer, Progress::new(next));
            }
        }
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

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.campaign_pending && !self.granted_lease_may_hold() {
            self.election_elapsed = 0;
            self.start_election(false);
            return;
        }
        if self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            if self.voters.contains(&self.id) {
                self.start_election(false);
            }
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                log::info!(
                    "n{} heard from no majority within an election timeout; stepping down at term {}",
                    self.id,
                    self.term
                );
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.lead_transferee.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_timeout_ticks {
                if let Some(to) = self.lead_transferee.take() {
                    log::info!("n{} gave up transferring leadership to n{to}", self.id);
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.read_round_needed = true;
        }
    }

    fn quorum_recently_active(&mut self) -> bool {
        let mut active = 1; // the leader itself
        for p in self.progress.values_mut() {
            if p.recent_active {
                active += 1;
            }
            p.recent_active = false;
        }
        active >= quorum::majority(self.voters.len())
    }

    /// Starts an election (pre-vote first when configured), as if the election timer had
    /// fired. Does nothing on a leader.
    ///
    /// Under lease reads ([`ReadMode::Lease`]) a follower that heard from the leader
    /// within the last election timeout (or restarted less than one ago) may hold up that
    /// leader's lease: the leader serves reads alone, trusting that this node will not
    /// help elect anyone, itself included, before the lease runs out. Such a node stops
    /// answering the leader and campaigns once an election timeout has passed since it
    /// last heard from it, at most one election timeout later. (Electing a given node at
    /// once is what [`Raft::transfer_leadership`] is for: the leader then stops its
    /// lease reads.) Simulator seed 106384 found the immediate version serving a stale
    /// lease read.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        if self.granted_lease_may_hold() {
            log::info!(
                "n{} will campaign once the lease it granted n{:?} runs out ({} of {} ticks)",
                self.id,
                self.leader,
                self.election_elapsed,
                self.config.election_timeout_ticks
            );
            self.campaign_pending = true;
            return;
        }
        self.start_election(false);
    }

    /// Whether a lease this node granted (by answering a leader) may still hold.
    fn granted_lease_may_hold(&self) -> bool {
        self.config.read_mode == ReadMode::Lease
            && self.config.check_quorum
            && ((self.leader.is_some()
                && self.election_elapsed < self.config.election_timeout_ticks)
                || self.restarted_inside_a_lease_window())
    }

    /// Under lease reads, a node in its first election timeout after a restart may have
    /// acknowledged a leader's heartbeat just before it crashed, holding up that leader's
    /// lease, although it no longer knows of any leader.
    fn restarted_inside_a_lease_window(&self) -> bool {
        self.restarted
            && self.config.read_mode == ReadMode::Lease
            && self.now_ticks < u64::from(self.config.election_timeout_ticks)
    }

    fn start_election(&mut self, transfer: bool) {
        self.campaign_pending = false;
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
            self.votes.insert(self.id, true);
            if quorum::tally(&self.voters, &self.votes) == VoteResult::Won {
                self.start_real_election(false);
                return;
            }
            let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
            for peer in self.peers().collect::<Vec<_>>() {
                self.msgs.push(Message {
                    from: self.id,
                    to: peer,
                    term: self.term + 1,
                    body: MessageBody::PreVote {
                        last_log_index,
                        last_log_term,
                    },
                });
            }
        } else {
            self.start_real_election(transfer);
        }
    }

    fn start_real_election(&mut self, transfer: bool) {
        self.become_candidate();
        self.votes.insert(self.id, true);
        if quorum::tally(&self.voters, &self.votes) == VoteResult::Won {
            self.become_leader();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers().collect::<Vec<_>>() {
            self.send(
                peer,
                MessageBody::Vote {
                    last_log_index,
                    last_log_term,
                    transfer,
                },
            );
        }
    }

    /// Proposes a command. Only the leader accepts; it returns where the entry was placed.
    /// The entry is committed when a later [`Ready::committed`] carries it.
    ///
    /// # Errors
    /// [`ProposeError`]: not the leader, too large, too many uncommitted, transferring.
    pub fn propose(&mut self, data: Bytes) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        let size_bytes = data.len() as u64;
        if size_bytes > self.config.entry_bytes_max {
            return Err(ProposeError::TooLarge {
                size_bytes,
                limit_bytes: self.config.entry_bytes_max,
            });
        }
        let uncommitted = self.log.last_index() - self.log.committed;
        if uncommitted >= self.config.uncommitted_entries_max {
            return Err(ProposeError::Busy(uncommitted));
        }
        let index = self.log.last_index() + 1;
        self.log.append_unstable(&[Entry {
            term: self.term,
            index,
            kind: EntryKind::Command,
            data,
        }]);
        self.broadcast_needed = true;
        Ok((index, self.term))
    }

    /// On a follower, forwards a command to the leader; the outcome arrives in
    /// [`Ready::forwarded`] under `request_id`. On the leader, proposes it directly and
    /// reports the outcome the same way.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] with no known leader; [`ProposeError::TooLarge`] on
    /// any node (so an oversize command is refused before it crosses the network); on the
    /// leader, as [`Raft::propose`].
    pub fn propose_or_forward(&mut self, request_id: u64, data: Bytes) -> Result<(), ProposeError> {
        if data.len() as u64 > self.config.entry_bytes_max {
            return Err(ProposeError::TooLarge {
                size_bytes: data.len() as u64,
                limit_bytes: self.config.entry_bytes_max,
            });
        }
        if self.role == Role::Leader {
            let placed = self.propose(data)?;
            self.forwarded.push(ForwardedProposal {
                request_id,
                placed: Some(placed),
            });
            return Ok(());
        }
        let Some(leader) = self.leader else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        self.send(leader, MessageBody::Propose { request_id, data });
        Ok(())
    }

    /// Asks for a linearizable read. The answer arrives in [`Ready::read_states`]: wait
    /// until the state machine has applied its index, then read locally.
    ///
    /// On the leader: confirmed by a heartbeat round (or at once under a valid lease);
    /// a new leader first waits for an entry of its term to commit. On a follower: asks
    /// the leader.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] when no leader is known.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ProposeError> {
        if self.role == Role::Leader {
            self.leader_read(self.id, request_id);
            return Ok(());
        }
        let Some(leader) = self.leader else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        self.send(leader, MessageBody::ReadIndex { request_id });
        Ok(())
    }

    /// Asks the leader to hand leadership to `to` (thesis §3.10): once `to`'s log is
    /// caught up it is told to campaign at once. Proposals are refused meanwhile; the
    /// attempt is dropped after an election timeout.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] on a non-leader; [`ProposeError::Transferring`] if
    /// `to` is not another voter.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id || !self.progress.contains_key(&to) {
            return Err(ProposeError::Transferring);
        }
        log::info!(
            "n{} transferring leadership to n{to} at term {}",
            self.id,
            self.term
        );
        self.lead_transferee = Some(to);
        self.transfer_elapsed = 0;
        if self.progress[&to].match_index == self.log.last_index() {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, Send::Forced);
        }
        Ok(())
    }

    /// Handles one message from a peer. Malformed or stale input is logged and ignored.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id {
            log::warn!("n{} ignoring a message addressed to n{}", self.id, m.to);
            self.counters.messages_ignored += 1;
            return;
        }
        if !self.voters.contains(&m.from) || m.from == self.id {
            log::warn!(
                "n{} ignoring a message from unknown node n{}",
                self.id,
                m.from
            );
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
                | MessageBody::InstallSnapshot { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader may be unable to learn our term otherwise (it would
                    // never get a vote request from us under pre-vote): tell it.
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

    fn handle_vote_request(&mut self, m: &Message) {
        let (last_log_index, last_log_term, pre) = match m.body {
            MessageBody::Vote {
                last_log_index,
                last_log_term,
                ..
            } => (last_log_index, last_log_term, false),
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => (last_log_index, last_log_term, true),
            _ => unreachable!("only vote requests come here"),
        };
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && m.term > self.term);
        #[cfg(feature = "fault-injection")]
        let up_to_date = self.broken(BrokenVariant::VoteWithoutLogCheck)
            || self.log.is_up_to_date(last_log_index, last_log_term);
        #[cfg(not(feature = "fault-injection"))]
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = can_vote && up_to_date;
        log::debug!(
            "n{} {} {} for n{} at term {} (our last {}@{}, theirs {}@{}, vote {:?})",
            self.id,
            if granted { "grants" } else { "refuses" },
            if pre { "pre-vote" } else { "vote" },
            m.from,
            m.term,
            self.log.last_index(),
            self.log.last_term(),
            last_log_index,
            last_log_term,
            self.vote
        );
        if pre {
            // A granted pre-vote answers in the term asked about, a refusal in ours.
            let term = if granted { m.term } else { self.term };
            self.msgs.push(Message {
                from: self.id,
                to: m.from,
                term,
                body: MessageBody::PreVoteResponse { granted },
            });
        } else {
            if granted {
                // Persisted (the hard state of this ready) before the answer is sent.
                self.vote = Some(m.from);
                self.election_elapsed = 0;
            }
            self.send(m.from, MessageBody::VoteResponse { granted });
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // §5.2: a valid leader of our term exists; fall back to follower.
                self.become_follower(self.term, Some(m.from));
                self.step_follower(m);
            }
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                if m.term != self.term + 1 && granted {
                    return;
                }
                self.votes.insert(m.from, granted);
                match quorum::tally(&self.voters, &self.votes) {
                    VoteResult::Won => self.start_real_election(false),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            MessageBody::VoteResponse { granted } if self.role == Role::Candidate => {
                self.votes.insert(m.from, granted);
                match quorum::tally(&self.voters, &self.votes) {
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            MessageBody::TimeoutNow => {
                log::debug!("n{} ignoring timeout-now as candidate", self.id);
            }
            _ => self.counters.messages_ignored += 1,
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                let commit = commit.min(self.log.last_index());
                self.log.commit_to(commit);
                self.send(
                    m.from,
                    MessageBody::HeartbeatResponse {
                        read_round,
                        last_index: self.log.last_index(),
                    },
                );
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_snapshot_chunk(m.from, meta, offset, &data, done);
            }
            MessageBody::TimeoutNow => {
                log::info!(
                    "n{} told to campaign by n{} (leadership transfer) at term {}",
                    self.id,
                    m.from,
                    self.term
                );
                self.start_election(true);
            }
            _ => self.counters.messages_ignored += 1,
        }
    }

    fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
        commit: LogIndex,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit matches the leader already; keep the rest.
            let skip = (self.log.committed - prev_index) as usize;
            if skip >= entries.len() {
                self.send(
                    leader,
                    MessageBody::AppendResponse {
                        index: self.log.committed,
                        reject: None,
                    },
                );
                return;
            }
            let new_prev = self.log.committed;
            let new_prev_term = entries[skip - 1].term;
            return self.handle_append(leader, new_prev, new_prev_term, &entries[skip..], commit);
        }
        if !entries_are_well_formed(prev_index, prev_term, entries) {
            log::warn!(
                "n{} ignoring malformed append from n{leader} after {prev_index}",
                self.id
            );
            self.counters.messages_ignored += 1;
            return;
        }
        if self.log.matches(prev_index, prev_term) {
            let last_new = self.log.append_after(prev_index, entries);
            self.log.commit_to(commit.min(last_new));
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: last_new,
                    reject: None,
                },
            );
            return;
        }
        let last_index = self.log.last_index();
        let hint = if prev_index > last_index {
            RejectHint {
                last_index,
                conflict_index: last_index + 1,
                conflict_term: None,
            }
        } else {
            RejectHint {
                last_index,
                conflict_index: self.log.first_index_of_term_at(prev_index),
                conflict_term: self.log.term(prev_index),
            }
        };
        log::debug!(
            "n{} rejects append after {prev_index}@{prev_term} from n{leader}: {hint:?}",
            self.id
        );
        self.counters.appends_rejected += 1;
        self.send(
            leader,
            MessageBody::AppendResponse {
                index: prev_index,
                reject: Some(hint),
            },
        );
    }

    /// A chunk of a snapshot from the leader. Chunks ahead of a gap are kept (within the
    /// leader's window) until the gap fills; every chunk is answered with the next
    /// offset needed, so the leader resumes after loss.
    fn handle_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: Option<u32>,
    ) {
        if meta.last_index <= self.log.committed {
            // We already have everything it covers.
            self.incoming = None;
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: self.log.committed,
                    reject: None,
                },
            );
            return;
        }
        if self.incoming.as_ref().map(|i| i.meta) != Some(meta) {
            let newer = self
                .incoming
                .as_ref()
                .is_none_or(|i| meta.last_index > i.meta.last_index);
            if offset != 0 && !newer {
                // A chunk of a transfer we do not have the start of: ask from 0.
                self.send(
                    leader,
                    MessageBody::SnapshotResponse {
                        last_index: meta.last_index,
                        next_offset: 0,
                    },
                );
                return;
            }
            log::info!(
                "n{} receiving a snapshot up to {}@{} from n{leader}",
                self.id,
                meta.last_index,
                meta.last_term
            );
            self.incoming = Some(IncomingSnapshot {
                meta,
                data: Vec::new(),
                ahead: BTreeMap::new(),
                ahead_bytes: 0,
                end: None,
            });
        }
        let bytes_max = self.config.snapshot_bytes_max;
        let window = self.config.inflight_bytes_max;
        let incoming = self.incoming.as_mut().expect("set above");
        let len = data.len() as u64;
        if offset + len > bytes_max {
            log::error!(
                "n{} refusing a snapshot larger than snapshot_bytes_max ({bytes_max} bytes)",
                self.id
            );
            self.incoming = None;
            return;
        }
        if let Some(checksum) = done {
            incoming.end = Some((offset + len, checksum));
        }
        let have = incoming.data.len() as u64;
        if offset == have {
            incoming.data.extend_from_slice(data);
            // The chunks that waited for this one follow it now.
            while let Some(entry) = incoming.ahead.first_entry() {
                let at = *entry.key();
                if at > incoming.data.len() as u64 {
                    break;
                }
                let chunk = entry.remove();
                incoming.ahead_bytes -= chunk.len() as u64;
                if at == incoming.data.len() as u64 {
                    incoming.data.extend_from_slice(&chunk);
                }
            }
        } else if offset > have
            && offset < have + window
            && incoming.ahead_bytes + len <= window
            && !incoming.ahead.contains_key(&offset)
        {
            // Within the leader's window past what we have: anything further is a
            // leftover of an earlier attempt and would only take the room.
            incoming.ahead.insert(offset, Bytes::copy_from_slice(data));
            incoming.ahead_bytes += len;
        }
        let have = incoming.data.len() as u64;
        let complete = incoming.end.is_some_and(|(end, _)| have >= end);
        if !complete {
            self.send(
                leader,
                MessageBody::SnapshotResponse {
                    last_index: meta.last_index,
                    next_offset: have,
                },
            );
            return;
        }
        let incoming = self.incoming.take().expect("set above");
        if Some(crc32fast::hash(&incoming.data)) != incoming.end.map(|(_, checksum)| checksum) {
            log::warn!(
                "n{} snapshot up to {} failed its checksum; asking for it again",
                self.id,
                meta.last_index
            );
            self.send(
                leader,
                MessageBody::SnapshotResponse {
                    last_index: meta.last_index,
                    next_offset: 0,
                },
            );
            return;
        }
        log::info!(
            "n{} installing a snapshot up to {}@{} ({} bytes)",
            self.id,
            meta.last_index,
            meta.last_term,
            incoming.data.len()
        );
        self.log.restore(meta);
        self.pending_snapshot = Some(Snapshot {
            meta,
            data: incoming.data.into(),
        });
        self.send(
            leader,
            MessageBody::AppendResponse {
                index: meta.last_index,
                reject: None,
            },
        );
    }

    fn handle_forwarded_propose(&mut self, from: NodeId, request_id: u64, data: Bytes) {
        let placed = match self.propose(data) {
            Ok(placed) => Some(placed),
            Err(e) => {
                log::debug!("n{} refused a proposal forwarded by n{from}: {e}", self.id);
                None
            }
        };
        self.send(from, MessageBody::ProposeResponse { request_id, placed });
    }

    // ----- leader ----------------------------------------------------------------------

    fn step_leader(&mut self, m: Message) {
        let from = m.from;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match m.body {
            MessageBody::AppendResponse {
                index,
                reject: None,
            } => {
                let round = self.read_round;
                let pr = self.progress.get_mut(&from).expect("checked above");
                if pr.maybe_update(index, round) {
                    let snapshot_done = pr.state == ProgressState::Snapshot
                        && pr
                            .outgoing
                            .as_ref()
                            .is_none_or(|o| index >= o.snapshot.meta.last_index);
                    if pr.state == ProgressState::Probe || snapshot_done {
                        pr.become_replicate();
                    }
                    if self.maybe_commit() {
                        self.broadcast_needed = true;
                    }
                    if self.lead_transferee == Some(from)
                        && self.progress[&from].match_index == self.log.last_index()
                    {
                        self.send_timeout_now(from);
                    }
                }
                let pr = &self.progress[&from];
                if self.log.last_index() > pr.match_index {
                    self.send_append(from, Send::EntriesBatched);
                } else if pr.commit_sent < self.log.committed && !self.broadcast_needed {
                    // The append that would have told it the commit index was held
                    // back for batching while this answer was on its way. (A pending
                    // broadcast tells it anyway.)
                    self.send_append(from, Send::Batched);
                }
            }
            MessageBody::AppendResponse {
                index,
                reject: Some(hint),
            } => {
                if self.progress[&from].state != ProgressState::Snapshot {
                    self.handle_append_rejection(from, index, hint);
                }
            }
            MessageBody::SnapshotResponse {
                last_index,
                next_offset,
            } => {
                let pr = self.progress.get_mut(&from).expect("checked above");
                let Some(o) = pr.outgoing.as_mut() else {
                    return;
                };
                if o.snapshot.meta.last_index != last_index {
                    return;
                }
                if next_offset < o.acked {
                    // Stale, most likely: overtaken by a later answer (reordered or
                    // duplicated); even an answer of 0 may only say that the first
                    // chunk had not arrived yet. But the follower may also have lost
                    // its partial snapshot (restart, checksum failure): kept, and
                    // believed if the transfer makes no progress for a heartbeat
                    // interval (see `behind`). Rewinding at once let every late answer
                    // resend a whole window.
                    o.behind = o.behind.max(Some(next_offset));
                    return;
                }
                o.behind = None;
                o.acked = next_offset.min(o.snapshot.data.len() as u64);
                o.sent = o.sent.max(o.acked);
                self.send_snapshot_chunks(from);
            }
            MessageBody::HeartbeatResponse {
                read_round,
                last_index,
            } => {
                let (messages_max, bytes_max) = (
                    self.config.inflight_messages_max,
                    self.config.inflight_bytes_max,
                );
                let pr = self.progress.get_mut(&from).expect("checked above");
                pr.read_round_acked = pr.read_round_acked.max(read_round);
                if read_round > pr.match_round && last_index < pr.match_index {
                    log::warn!(
                        "n{} n{from} lost entries it had acknowledged (last index {last_index} < \
                         match {}): ephemeral storage restarted? rebuilding its log",
                        self.id,
                        pr.match_index
                    );
                    pr.reset_after_data_loss(last_index);
                }
                match pr.state {
                    ProgressState::Probe => pr.probe_sent = false,
                    ProgressState::Replicate => {
                        if pr.is_paused(messages_max, bytes_max) {
                            pr.free_first_one();
                        }
                    }
                    ProgressState::Snapshot => {
                        if let Some(o) = pr.outgoing.as_mut() {
                            if o.acked == o.acked_at_last_heartbeat {
                                // No progress for a heartbeat interval: chunks were lost,
                                // or the follower has less than we counted.
                                if let Some(behind) = o.behind {
                                    o.acked = behind;
                                }
                                o.sent = o.acked;
                            }
                            o.behind = None;
                            o.acked_at_last_heartbeat = o.acked;
                        }
                        self.release_confirmed_reads();
                        self.send_snapshot_chunks(from);
                        return;
                    }
                }
                let behind = pr.match_index < self.log.last_index() || last_index > pr.match_index;
                self.release_confirmed_reads();
                if behind {
                    // Forced: if every entry was already sent (optimistically) and lost,
                    // an empty append at `next_index - 1` makes the follower reject and
                    // the leader fall back to probing from the follower's real end.
                    self.send_append(from, Send::Forced);
                }
            }
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                log::error!(
                    "n{} got {} from n{from} claiming to lead the same term {}: election safety broken?",
                    self.id,
                    m.body.kind(),
                    self.term
                );
            }
            _ => self.counters.messages_ignored += 1,
        }
    }

    fn handle_append_rejection(&mut self, from: NodeId, rejected: LogIndex, hint: RejectHint) {
        let pr = &self.progress[&from];
        if rejected < pr.match_index
            || (pr.state == ProgressState::Probe && rejected + 1 != pr.next_index)
        {
            // A stale rejection (reordered or duplicated): we already know better.
            return;
        }
        let mut next = match hint.conflict_term {
            // Skip the follower's whole conflicting term: if we have that term, resume
            // after our last entry of it, else before the follower's first entry of it.
            Some(term) => match self.log.last_index_of_term(term) {
                Some(ours) if ours < rejected => ours + 1,
                _ => hint.conflict_index,
            },
            None => hint.conflict_index,
        };
        let pr = self.progress.get_mut(&from).expect("checked above");
        next = next.clamp(pr.match_index + 1, rejected.max(pr.match_index + 1));
        log::debug!(
            "n{} append to n{from} rejected at {rejected}; retrying from {next} ({hint:?})",
            self.id
        );
        pr.become_probe();
        pr.next_index = next;
        self.send_append(from, Send::Entries);
    }

    /// Sends the next append to `to` if its window allows, as `how` says.
    fn send_append(&mut self, to: NodeId, how: Send) {
        let last = self.log.last_index();
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        let pr = &self.progress[&to];
        if pr.is_paused(messages_max, bytes_max) {
            return;
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.start_snapshot_transfer(to, prev_index);
            return;
        };
        // In replicate state the batch must also fit what is left of the byte window, so
        // the bytes in flight never pass `inflight_bytes_max`.
        let budget = match pr.state {
            ProgressState::Replicate => self
                .config
                .append_bytes_max
                .min(bytes_max.saturating_sub(pr.inflight_bytes())),
            ProgressState::Probe | ProgressState::Snapshot => self.config.append_bytes_max,
        };
        let window_in_use = pr.inflight_messages() > 0;
        let entries = if next <= last {
            match self.log.entries(next, last + 1, budget) {
                Ok(entries) => entries,
                Err(e) => {
                    log::error!(
                        "n{} cannot read entries {next}..={last} for n{to}: {e}",
                        self.id
                    );
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let pr = &self.progress[&to];
        if entries.is_empty() && !how.even_empty() && pr.state == ProgressState::Replicate {
            return;
        }
        // Batching: while small appends are unanswered, entries that do not fill an
        // append wait for the answer, and then go together.
        let fills = entries.len() as u64 <= last - next && next <= last;
        if how.batched()
            && pr.state == ProgressState::Replicate
            && pr.inflight_messages() >= self.config.inflight_small_appends_max as usize
            && !fills
        {
            return;
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        if bytes > budget && window_in_use {
            return; // the next entry does not fit the window: wait for acknowledgements
        }
        let last_sent = prev_index + entries.len() as u64;
        let pr = self.progress.get_mut(&to).expect("peer exists");
        pr.sent(last_sent, bytes);
        pr.commit_sent = self.log.committed;
        log::trace!(
            "n{} -> n{to}: append {} entries after {prev_index}@{prev_term}, commit {}",
            self.id,
            entries.len(),
            self.log.committed
        );
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit: self.log.committed,
            },
        );
    }

    /// The follower needs entry `needed` or earlier, which is compacted: send the stored
    /// snapshot instead.
    fn start_snapshot_transfer(&mut self, to: NodeId, needed: LogIndex) {
        let snapshot = match self.log.log.snapshot() {
            Ok(Some(s)) if s.meta.last_index >= needed => s,
            Ok(other) => {
                log::error!(
                    "n{} cannot catch n{to} up: entry {needed} is compacted and the stored \
                     snapshot ({:?}) does not cover it",
                    self.id,
                    other.map(|s| s.meta)
                );
                return;
            }
            Err(e) => {
                log::error!("n{} cannot read the snapshot for n{to}: {e}", self.id);
                return;
            }
        };
        log::info!(
            "n{} sending n{to} a snapshot up to {}@{} ({} bytes)",
            self.id,
            snapshot.meta.last_index,
            snapshot.meta.last_term,
            snapshot.data.len()
        );
        self.progress
            .get_mut(&to)
            .expect("peer exists")
            .become_snapshot(snapshot);
        self.send_snapshot_chunks(to);
    }

    /// Sends snapshot chunks to `to` while the in-flight byte window allows. Not one
    /// more: every chunk is answered, so sending on a full window would keep the chunks
    /// in flight from ever decreasing. Lost chunks are resent when a heartbeat answer
    /// shows no progress (that rewinds `sent` to `acked`, which opens the window).
    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let chunk_max = self
            .config
            .snapshot_chunk_bytes
            .min(self.config.append_bytes_max);
        let window = self.config.inflight_bytes_max;
        let mut chunks = Vec::new();
        if let Some(o) = self.progress.get_mut(&to).and_then(|p| p.outgoing.as_mut()) {
            let len = o.snapshot.data.len() as u64;
            let mut empty_sent = false;
            while (o.sent < len || (len == 0 && !empty_sent)) && o.sent - o.acked < window {
                let end = (o.sent + chunk_max).min(len);
                let data = o.snapshot.data.slice(o.sent as usize..end as usize);
                let done = (end == len).then_some(o.checksum);
                chunks.push((o.snapshot.meta, o.sent, data, done));
                o.sent = end;
                empty_sent = true;
            }
        }
        for (meta, offset, data, done) in chunks {
            self.send(
                to,
                MessageBody::InstallSnapshot {
                    meta,
                    offset,
                    data,
                    done,
                },
            );
        }
    }

    fn broadcast_append(&mut self) {
        for peer in self.peers().collect::<Vec<_>>() {
            self.send_append(peer, Send::Batched);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        self.read_round += 1;
        self.round_sent_ticks.push_back(self.now_ticks);
        if self.round_sent_ticks.len() > READ_ROUNDS_REMEMBERED_MAX {
            self.round_sent_ticks.pop_front();
        }
        let round = self.read_round;
        for peer in self.peers().collect::<Vec<_>>() {
            let commit = self.progress[&peer].match_index.min(self.log.committed);
            self.send(
                peer,
                MessageBody::Heartbeat {
                    commit,
                    read_round: round,
                },
            );
        }
        // A single-node cluster confirms its rounds by itself.
        self.release_confirmed_reads();
    }

    /// Advances the commit index to what a majority has, but only to an entry of the
    /// current term (§5.4.2, Figure 8). Returns whether it moved.
    fn maybe_commit(&mut self) -> bool {
        let mut matched: BTreeMap<NodeId, LogIndex> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        matched.insert(self.id, self.log.persisted);
        let candidate = quorum::committed_index(&self.voters, &matched);
        if candidate <= self.log.committed {
            return false;
        }
        #[cfg(feature = "fault-injection")]
        let any_term = self.broken(BrokenVariant::CommitOlderTerms);
        #[cfg(not(feature = "fault-injection"))]
        let any_term = false;
        if !any_term && self.log.term(candidate) != Some(self.term) {
            return false;
        }
        let first_in_term = !self.committed_in_current_term();
        self.log.commit_to(candidate);
        log::trace!("n{} committed up to {candidate}", self.id);
        if first_in_term && self.committed_in_current_term() {
            for (from, request_id) in std::mem::take(&mut self.reads_before_first_commit) {
                self.leader_read(from, request_id);
            }
        }
        true
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.timeout_now_sent = true;
        self.send(to, MessageBody::TimeoutNow);
    }

    fn leader_read(&mut self, from: NodeId, request_id: u64) {
        if !self.committed_in_current_term() {
            // Until an entry of its term commits, a new leader does not know the
            // commit index of its predecessor (thesis §6.4 step 1).
            self.reads_before_first_commit.push((from, request_id));
            return;
        }
        let index = self.log.committed;
        if self.voters.len() == 1
            || (self.config.read_mode == ReadMode::Lease
                && !self.timeout_now_sent
                && self.lease_valid())
        {
            self.answer_read(from, request_id, Some(index));
            return;
        }
        self.pending_reads.push_back(PendingRead {
            from,
            request_id,
            index,
            round: self.read_round + 1,
        });
        self.read_round_needed = true;
    }

    fn answer_read(&mut self, from: NodeId, request_id: u64, index: Option<LogIndex>) {
        if from == self.id {
            self.read_states.push(ReadState { request_id, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { request_id, index });
        }
    }

    /// The newest heartbeat round a majority (the leader included) acknowledged.
    fn confirmed_round(&self) -> u64 {
        let mut acked: BTreeMap<NodeId, u64> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.read_round_acked))
            .collect();
        acked.insert(self.id, self.read_round);
        quorum::committed_index(&self.voters, &acked)
    }

    fn release_confirmed_reads(&mut self) {
        let confirmed = self.confirmed_round();
        while let Some(read) = self.pending_reads.front().copied() {
            if read.round > confirmed {
                break;
            }
            self.pending_reads.pop_front();
            self.answer_read(read.from, read.request_id, Some(read.index));
        }
    }

    /// Whether the leader's lease holds: a majority acknowledged a heartbeat sent less
    /// than `election_timeout - lease_drift` ticks ago, so no other leader can have been
    /// elected since (followers ignore votes for an election timeout after hearing from
    /// us, and we count from when we sent, not when they answered).
    ///
    /// `now_ticks` is only as good as the driver: it must deliver every tick that came
    /// due before it steps a message, asks for a read or advances (the runtime's
    /// `WaitLoop::keep_time`; the simulator's resume). A driver that handles input queued
    /// during a stall before the missed ticks makes a run-out lease look fresh (issue 19).
    fn lease_valid(&self) -> bool {
        let oldest_round = self.read_round + 1 - self.round_sent_ticks.len() as u64;
        let sent_tick = |round: u64| -> u64 {
            if round < oldest_round || round == 0 {
                0
            } else {
                self.round_sent_ticks[(round - oldest_round) as usize]
            }
        };
        let mut acked: BTreeMap<NodeId, u64> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, sent_tick(p.read_round_acked)))
            .collect();
        acked.insert(self.id, self.now_ticks);
        let quorum_tick = quorum::committed_index(&self.voters, &acked);
        let lease_ticks =
            u64::from(self.config.election_timeout_ticks - self.config.lease_drift_ticks);
        quorum_tick > 0 && self.now_ticks < quorum_tick + lease_ticks
    }

    fn fail_pending_reads(&mut self) {
        let pending: Vec<(NodeId, u64)> = self
            .pending_reads
            .drain(..)
            .map(|r| (r.from, r.request_id))
            .chain(self.reads_before_first_commit.drain(..))
            .collect();
        for (from, request_id) in pending {
            self.answer_read(from, request_id, None);
        }
    }

    // ----- output ----------------------------------------------------------------------

    fn flush_leader_sends(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.broadcast_needed {
            self.broadcast_needed = false;
            self.broadcast_append();
        }
        if self.read_round_needed {
            self.read_round_needed = false;
            self.broadcast_heartbeat();
        }
    }

    /// Whether [`Raft::ready`] would return work.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.prev_soft
            || self.pending_snapshot.is_some()
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
        let soft = self.soft_state();
        let hard = self.hard_state();
        let ready = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            snapshot: self.pending_snapshot.take(),
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
            snapshot: ready.snapshot.as_ref().map(|s| s.meta),
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
    }
}

/// How [`Raft::send_append`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Send {
    /// Only if there are entries to send.
    Entries,
    /// Only if there are entries to send, and held back while
    /// `inflight_small_appends_max` appends are unanswered unless they fill an append.
    EntriesBatched,
    /// Even an empty one (to carry the commit index), but held back as `EntriesBatched`.
    Batched,
    /// Even an empty one, at once (a probe, loss recovery, a leadership transfer).
    Forced,
}

impl Send {
    fn even_empty(self) -> bool {
        matches!(self, Send::Batched | Send::Forced)
    }

    fn batched(self) -> bool {
        matches!(self, Send::Batched | Send::EntriesBatched)
    }
}

/// Whether an append's entries follow `prev_index` contiguously with non-decreasing terms.
fn entries_are_well_formed(prev_index: LogIndex, prev_term: Term, entries: &[Entry]) -> bool {
    let mut term = prev_term;
    for (expected, e) in (prev_index + 1..).zip(entries) {
        if e.index != expected || e.term < term {
            return false;
        }
        term = e.term;
    }
    true
}
