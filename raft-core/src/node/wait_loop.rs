//! The WaitLoop: one thread that owns the protocol, waits on a single
//! `crossbeam_channel::select!` for peer messages, requests, the next tick or shutdown,
//! and handles each `Ready` in order: persist and sync once per batch, then send, then
//! hand committed entries to the apply thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{never, select, Receiver, Sender};

use super::apply::{ApplyTask, Placement, TakenSnapshot};
use super::config::NodeConfig;
use super::envelope;
use super::error::NodeError;
use super::events::Event;
use super::queue::QueueSender;
use super::shared::Shared;
use super::snapshot_store::{ReceivedResult, Receiving, SnapshotStorer, Stored, Written};
use super::state_machine::StateMachine;
use super::status::{ClusterState, NodeCounters, PeerLag};
use crate::message::Message;
use crate::protocol::{ProposeError, Raft, Ready, Role, SoftState};
use crate::storage::Log;
use crate::transport::Transport;
use crate::types::{HardState, LogIndex, NodeId, SnapshotMeta};

/// A request from the node's handle to its WaitLoop.
pub(crate) enum Request {
    /// Propose a command; the waiter is already registered under `request_id`.
    Propose { request_id: u64, command: Bytes },
    /// Propose several commands, in order; each waiter is already registered.
    ProposeBatch { commands: Vec<(u64, Bytes)> },
    /// Ask for a read index.
    Read {
        reply: Sender<Result<LogIndex, NodeError>>,
        deadline: Instant,
    },
    /// Start an election now.
    Campaign,
    /// Hand leadership to another node.
    Transfer {
        to: NodeId,
        reply: Sender<Result<(), NodeError>>,
    },
    /// Take a snapshot now.
    Snapshot,
    /// How far member `id` is behind the leader's last index, in entries (leader only).
    Lag {
        id: NodeId,
        reply: Sender<Result<LogIndex, NodeError>>,
    },
    /// Propose a membership change (leader only); answered once it commits.
    ChangeMembership {
        change: crate::protocol::membership::MembershipChange,
        addresses: BTreeMap<NodeId, String>,
        reply: Sender<Result<LogIndex, NodeError>>,
    },
}

pub(crate) struct WaitLoop<S: StateMachine> {
    pub(crate) raft: Raft<Box<dyn Log>>,
    pub(crate) transport: Box<dyn Transport>,
    pub(crate) inbox: Receiver<Message>,
    pub(crate) requests: Receiver<Request>,
    pub(crate) shutdown: Receiver<()>,
    /// Snapshots the apply thread took, to store and compact behind.
    pub(crate) snapshots: Receiver<TakenSnapshot>,
    pub(crate) apply: QueueSender<ApplyTask>,
    pub(crate) shared: Arc<Shared<S>>,
    pub(crate) config: NodeConfig,
    /// Proposals not yet placed by a leader, by request id: the enveloped command and
    /// when it was last sent. Re-sent on a leader change and on a timer, since a
    /// forwarded proposal or its answer can be lost; the apply thread skips copies.
    pub(crate) unplaced: BTreeMap<u64, (Bytes, Option<Instant>)>,
    /// Reads waiting for their read index, by request id.
    pub(crate) reads: HashMap<u64, (Sender<Result<LogIndex, NodeError>>, Instant)>,
    pub(crate) next_read_id: u64,
    pub(crate) counters: NodeCounters,
    pub(crate) join: JoinSearch,
    pub(crate) soft: SoftState,
    /// Last index covered by the stored snapshot.
    pub(crate) snapshot_index: LogIndex,
    /// The hard state as of the last sync (term and vote are what must be durable).
    pub(crate) durable: HardState,
    /// Whether a sync ran since the last tick.
    pub(crate) synced_since_tick: bool,
    /// When the next tick is due. Every tick before it has been delivered to `raft`.
    pub(crate) next_tick: Instant,
    /// The thread that serializes and writes snapshots (started by `run`).
    pub(crate) storer: Option<SnapshotStorer>,
    /// Follower: where the snapshot being received is written (`Ready::snapshot_chunks`).
    pub(crate) receiving: Option<(SnapshotMeta, Receiving)>,
    /// Follower: a received snapshot, durable, that the protocol accepted: stored in the
    /// log with the ready that carries it (`Ready::snapshot`).
    pub(crate) received: Option<(SnapshotMeta, Stored)>,
    /// Follower: a received snapshot collected in memory, to tell the protocol about
    /// once the ready that completed it is advanced.
    pub(crate) received_in_memory: Option<ReceivedResult>,
    /// Follower: the installed snapshot, opened, for the apply thread to restore from.
    pub(crate) restore_from: Option<Arc<dyn crate::SnapshotChunks>>,
    /// Follower: `InstallSnapshot` messages held back, unstepped (so unacknowledged),
    /// while the receive buffer was full, in arrival order; stepped as it drains (see
    /// `WaitLoop::defer_chunk`). Invariant: `held_chunk_bytes` is the sum of their data
    /// lengths and stays at most `protocol.inflight_bytes_max`.
    pub(crate) held_chunks: std::collections::VecDeque<Message>,
    pub(crate) held_chunk_bytes: u64,
    /// Membership changes proposed here, waiting to commit.
    pub(crate) change_waiters: Vec<super::members::ChangeWaiter>,
    /// The configuration last published (events, transport).
    pub(crate) seen_config: super::members::SeenConfig,
}

/// What woke the WaitLoop for a turn.
enum Turn {
    Message(Message),
    Request(Request),
    Snapshot(TakenSnapshot),
    /// The storer thread wrote a snapshot (or failed to).
    Written(Written),
    /// The next tick came due, or a queue closed.
    Idle,
}

/// Looking for the cluster at start (the original's join retry attempts).
pub(crate) struct JoinSearch {
    pub(crate) attempt: u32,
    pub(crate) attempt_deadline: Instant,
    pub(crate) heard: BTreeSet<NodeId>,
    pub(crate) found: bool,
    pub(crate) gave_up: bool,
}

impl<S: StateMachine> WaitLoop<S> {
    /// Runs until shutdown or a fatal storage error; returns the log for reuse.
    ///
    /// Architecture invariant: the protocol's clock is current whenever the protocol
    /// decides anything. Every call into `Raft` that can act on time (a message, a
    /// request, `advance`) is preceded by [`WaitLoop::keep_time`], which delivers the
    /// ticks that came due since the last call: a turn that starts after a stall (a long
    /// sync, a snapshot stored on this thread, a paused process) first catches up on the
    /// time that passed, then reads its queues. Otherwise a leader would answer a lease
    /// read queued during the stall with a lease that ran out long ago (issue 19).
    pub(crate) fn run(mut self) -> Box<dyn Log> {
        let id = self.shared.id;
        let mut requests = self.requests.clone();
        let mut inbox = self.inbox.clone();
        let mut snapshots = self.snapshots.clone();
        // A received snapshot whose chunks stop coming for this long is dropped (the
        // leader restarts the transfer), so it cannot hold the storer thread forever.
        let idle_max = self.config.tick() * self.config.protocol.election_timeout_ticks * 10;
        self.storer = SnapshotStorer::start(id, &**self.raft.log(), idle_max);
        match self.raft.log().snapshot_info() {
            Ok(Some(info)) => self.apply.send(ApplyTask::SnapshotStored {
                size_bytes: info.len_bytes,
            }),
            Ok(None) => {}
            Err(e) => log::warn!("n{id} cannot read its stored snapshot's size: {e}"),
        }
        let mut written = self
            .storer
            .as_ref()
            .map_or_else(never, |s| s.written.clone());
        // Wakes the loop when received snapshot data it holds back may now go on.
        let drained = self
            .storer
            .as_ref()
            .map_or_else(never, |s| s.buffer.drained_rx.clone());
        let held_back = never();
        // Members added after this node's transport was configured (found in the stored
        // log or snapshot) are reachable from the start.
        self.update_transport_peers();
        loop {
            let timeout = self.next_tick.saturating_duration_since(Instant::now());
            // While the leader's appends are held back (see `Raft::replication_held`),
            // proposals stay queued, without waking this thread, until an answer arrives
            // (or the next tick): then they are proposed, written and sent together.
            let listened = if self.raft.replication_held() {
                &held_back
            } else {
                &requests
            };
            let turn = select! {
                recv(self.shutdown) -> _ => break,
                recv(inbox) -> m => match m {
                    Ok(m) => Turn::Message(m),
                    Err(_) => {
                        inbox = never();
                        Turn::Idle
                    }
                },
                recv(listened) -> r => match r {
                    Ok(r) => Turn::Request(r),
                    Err(_) => {
                        requests = never();
                        Turn::Idle
                    }
                },
                recv(snapshots) -> s => match s {
                    Ok(s) => Turn::Snapshot(s),
                    Err(_) => {
                        snapshots = never();
                        Turn::Idle
                    }
                },
                recv(written) -> w => match w {
                    Ok(w) => Turn::Written(w),
                    Err(_) => {
                        written = never();
                        Turn::Idle
                    }
                },
                recv(drained) -> _ => Turn::Idle,
                default(timeout) => Turn::Idle,
            };
            if let Err(e) = self.turn(turn) {
                log::error!("n{id} stopping: storage failed: {e}");
                self.shared.fail_all_waiters(|| NodeError::Stopped);
                break;
            }
        }
        self.transport.stop();
        if let Some(storer) = self.storer.as_mut() {
            storer.stop();
        }
        // A clean stop leaves the latest commit index durable, so a restart replays every
        // committed entry at once (beta test 15).
        if let Err(e) = self.sync_commit_index() {
            log::error!("n{id} could not make its commit index durable at stop: {e}");
        }
        for (_, (reply, _)) in self.reads.drain() {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        self.publish_status();
        self.shared.status.lock().running = false;
        log::info!("n{id} stopped");
        let Self { raft, .. } = self;
        raft.into_log()
    }

    /// One turn: the clock first, then the event that woke the loop, then bursts of
    /// messages and requests (so one sync serves a whole batch), then every Ready.
    /// Returns a storage error, which is fatal.
    fn turn(&mut self, turn: Turn) -> Result<(), crate::StorageError> {
        let mut ticked = self.keep_time()?;
        self.release_held_chunks();
        match turn {
            Turn::Message(m) => self.on_message(m),
            Turn::Request(r) => self.on_request(r),
            Turn::Snapshot((index, source)) => self.store_snapshot(index, source),
            Turn::Written((false, meta, result)) => self.adopt_snapshot(meta, result),
            Turn::Written((true, meta, result)) => self.on_received_stored(meta, result),
            Turn::Idle => {}
        }
        for _ in 0..self.config.batch_messages_max {
            match self.inbox.try_recv() {
                Ok(m) => {
                    ticked |= self.keep_time()?;
                    self.on_message(m);
                }
                Err(_) => break,
            }
        }
        if ticked || !self.raft.replication_held() {
            for _ in 0..self.config.batch_messages_max {
                match self.requests.try_recv() {
                    Ok(r) => {
                        self.keep_time()?;
                        self.on_request(r);
                    }
                    Err(_) => break,
                }
            }
        }
        self.handle_readies()?;
        self.check_membership();
        Ok(())
    }

    /// Delivers every tick that came due by now, so the protocol's clock never lags real
    /// time when it decides (see [`WaitLoop::run`]). Ticks missed while the loop was
    /// blocked (a long sync, a paused process) are caught up, up to four election
    /// timeouts: past that more ticks change nothing. Returns whether any tick was due.
    /// Cheap when none is: one clock read.
    fn keep_time(&mut self) -> Result<bool, crate::StorageError> {
        let now = Instant::now();
        if now < self.next_tick {
            return Ok(false);
        }
        self.sync_commit_index_if_idle()?;
        let tick = self.config.tick();
        let missed = 1 + (now - self.next_tick).as_nanos() / tick.as_nanos().max(1);
        let cap = 4 * u128::from(self.config.protocol.election_timeout_ticks);
        for _ in 0..missed.min(cap) {
            self.raft.tick();
        }
        self.next_tick += tick * u32::try_from(missed).unwrap_or(u32::MAX);
        self.on_tick(now);
        Ok(true)
    }

    fn on_message(&mut self, m: Message) {
        let Some(m) = self.defer_chunk(m) else {
            return;
        };
        self.step_message(m);
    }

    pub(super) fn step_message(&mut self, m: Message) {
        self.counters.messages_received += 1;
        self.shared.metrics.received(&m);
        if !self.join.found {
            self.join.heard.insert(m.from);
        }
        log::trace!(
            "n{} <- n{}: {} at term {}",
            self.shared.id,
            m.from,
            m.body.kind(),
            m.term
        );
        self.raft.step(m);
    }

    fn on_request(&mut self, r: Request) {
        match r {
            Request::Propose {
                request_id,
                command,
            } => self.on_propose(request_id, &command, Instant::now()),
            Request::ProposeBatch { commands } => {
                let now = Instant::now();
                let wrapped = envelope::wrap_batch(self.shared.origin, &commands);
                for ((request_id, _), data) in commands.iter().zip(wrapped) {
                    self.on_propose_wrapped(*request_id, data, now);
                }
            }
            Request::Read { reply, deadline } => {
                self.next_read_id += 1;
                let read_id = self.next_read_id;
                match self.raft.read_index(read_id) {
                    Ok(()) => {
                        self.reads.insert(read_id, (reply, deadline));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(NodeError::NoLeader));
                    }
                }
            }
            Request::Campaign => self.raft.campaign(),
            Request::Transfer { to, reply } => {
                let _ = reply.send(
                    self.raft
                        .transfer_leadership(to)
                        .map_err(NodeError::Rejected),
                );
            }
            Request::Snapshot => {
                self.apply.send(ApplyTask::TakeSnapshot);
            }
            Request::Lag { id, reply } => {
                let _ = reply.send(self.lag_of(id));
            }
            Request::ChangeMembership {
                change,
                addresses,
                reply,
            } => self.on_change_membership(change, addresses, reply),
        }
    }

    /// A new proposal from a handle: queue it as unplaced and send it.
    fn on_propose(&mut self, request_id: u64, command: &[u8], now: Instant) {
        let data = envelope::wrap(self.shared.origin, request_id, command);
        self.on_propose_wrapped(request_id, data, now);
    }

    /// [`WaitLoop::on_propose`] of a command already wrapped in its envelope.
    fn on_propose_wrapped(&mut self, request_id: u64, data: Bytes, now: Instant) {
        self.counters.proposals += 1;
        self.unplaced.insert(request_id, (data, None));
        self.send_proposal(request_id, now);
    }

    /// Proposes (on the leader) or forwards (to the leader) an unplaced proposal. A new
    /// proposal with no leader known fails at once with `NoLeader` (retry later); one sent
    /// before stays queued, since it may yet be placed, until a leader is known again.
    fn send_proposal(&mut self, request_id: u64, now: Instant) {
        let Some((data, sent)) = self.unplaced.get_mut(&request_id) else {
            return;
        };
        if self.raft.leader().is_none() {
            if sent.is_none() {
                self.unplaced.remove(&request_id);
                self.counters.proposals_failed += 1;
                self.shared.metrics.proposal_failed_no_leader();
                let waiter = self.shared.waiters.lock().remove(&request_id);
                if let Some(w) = waiter {
                    w.send(Err(NodeError::NoLeader));
                }
            }
            return;
        }
        *sent = Some(now);
        let data = data.clone();
        match self.raft.propose_or_forward(request_id, data) {
            Ok(()) => {}
            Err(ProposeError::NotLeader { .. }) => {}
            Err(e) => {
                // Too large, too many uncommitted, or a transfer under way: tell the caller.
                self.counters.proposals_failed += 1;
                self.shared.metrics.proposal_rejected(&e);
                self.unplaced.remove(&request_id);
                let waiter = self.shared.waiters.lock().remove(&request_id);
                if let Some(w) = waiter {
                    w.send(Err(NodeError::Rejected(e)));
                }
            }
        }
    }

    /// Re-sends unplaced proposals last sent before `older_than` (all, if `None`), and
    /// forgets those whose proposer stopped waiting.
    fn resend_unplaced(&mut self, now: Instant, older_than: Option<Instant>) {
        {
            let waiters = self.shared.waiters.lock();
            self.unplaced.retain(|id, _| waiters.contains_key(id));
        }
        let due: Vec<u64> = self
            .unplaced
            .iter()
            .filter(|(_, (_, sent))| match (older_than, sent) {
                (None, _) | (_, None) => true,
                (Some(t), Some(sent)) => *sent < t,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send_proposal(id, now);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let resend_after = self.config.tick() * self.config.protocol.election_timeout_ticks;
        if let Some(t) = now.checked_sub(resend_after) {
            self.resend_unplaced(now, Some(t));
        }
        self.reads.retain(|_, (reply, deadline)| {
            if now < *deadline {
                return true;
            }
            let _ = reply.send(Err(NodeError::Timeout(Duration::ZERO)));
            false
        });
        self.check_join(now);
        self.publish_status();
    }

    fn check_join(&mut self, now: Instant) {
        if self.join.found {
            return;
        }
        let majority = self.raft.config().voters.len() / 2 + 1;
        let leader_known = self.raft.leader().is_some();
        if leader_known || self.join.heard.len() + 1 >= majority {
            self.join.found = true;
            log::info!(
                "n{} found the cluster (leader {:?}, term {}, heard from {:?})",
                self.shared.id,
                self.raft.leader(),
                self.raft.term(),
                self.join.heard
            );
            self.shared.set_cluster(ClusterState::Found);
            self.shared.events.publish(Event::ClusterFound);
            return;
        }
        if self.join.gave_up || now < self.join.attempt_deadline {
            return;
        }
        if self.join.attempt >= self.config.join_attempts {
            self.join.gave_up = true;
            log::warn!(
                "n{} did not find the cluster after {} attempts ({:?}); still listening",
                self.shared.id,
                self.join.attempt,
                self.config.join_retry_time()
            );
            self.shared.set_cluster(ClusterState::NotFound);
            self.shared.events.publish(Event::ClusterNotFound {
                attempts: self.join.attempt,
            });
            return;
        }
        self.join.attempt += 1;
        self.join.attempt_deadline = now + self.config.join_attempt_duration(self.join.attempt - 1);
        log::info!(
            "n{} looking for the cluster: attempt {} of {}",
            self.shared.id,
            self.join.attempt,
            self.config.join_attempts
        );
        self.shared.set_cluster(ClusterState::Searching {
            attempt: self.join.attempt,
        });
    }

    /// Handles every pending Ready, in order. Returns a storage error, which is fatal.
    fn handle_readies(&mut self) -> Result<(), crate::StorageError> {
        while self.raft.has_ready() {
            let mut ready = self.raft.ready();
            // The leader's appends go out before its own write, which then overlaps the
            // followers' (thesis §10.2.1); acknowledgements and votes wait for the sync.
            let early = ready.take_messages_before_sync();
            if !early.is_empty() {
                self.counters.messages_sent += early.len() as u64;
                self.shared.metrics.sent(&early);
                self.transport.send(early);
            }
            self.persist(&ready)?;
            // The sync may have taken long (a slow disk, a paused process): what follows
            // (advance releases reads that waited for a commit) decides on a fresh clock.
            self.keep_time()?;
            if !ready.messages.is_empty() {
                self.counters.messages_sent += ready.messages.len() as u64;
                self.shared.metrics.sent(&ready.messages);
                self.transport.send(std::mem::take(&mut ready.messages));
            }
            self.dispatch(&mut ready);
            self.raft.advance(ready);
            if let Some((meta, result)) = self.received_in_memory.take() {
                self.received_stored(meta, result);
            }
        }
        Ok(())
    }

    /// `Log::sync`, with a warning when it blocked the WaitLoop for longer than half an
    /// election timeout: a disk that slow costs heartbeats and, past an election timeout,
    /// leadership (docs/operations.md: a leader's disk must keep its syncs well under T).
    fn timed_sync(&mut self, what: &str) -> Result<(), crate::StorageError> {
        let started = Instant::now();
        self.raft.log_mut().sync()?;
        if let Some(storer) = self.storer.as_mut() {
            storer.unsynced = false;
        }
        let took = started.elapsed();
        self.shared.metrics.log_synced(what, took);
        let half_election = self.config.tick() * self.config.protocol.election_timeout_ticks / 2;
        if took > half_election {
            log::warn!(
                "n{} WaitLoop blocked {took:?} in a {what} sync (half the election timeout is {half_election:?}): \
                 the disk is too slow for this timeout",
                self.shared.id
            );
        }
        Ok(())
    }

    /// At a tick: if no sync ran since the previous tick (the node is idle) and a commit
    /// index was written without one, makes it durable. Under load the syncs that entries
    /// need carry it, at no extra cost; idle, it is durable within two ticks.
    fn sync_commit_index_if_idle(&mut self) -> Result<(), crate::StorageError> {
        if std::mem::take(&mut self.synced_since_tick) {
            return Ok(());
        }
        if self.storer.as_ref().is_some_and(|s| s.unsynced) {
            // Idle: a snapshot adopted since the last sync becomes durable now.
            self.timed_sync("snapshot")?;
            self.counters.syncs += 1;
            self.durable = self.raft.log().hard_state();
            return Ok(());
        }
        self.sync_commit_index()
    }

    /// Makes a commit index that was written without a sync durable.
    fn sync_commit_index(&mut self) -> Result<(), crate::StorageError> {
        let written = self.raft.log().hard_state();
        if written == self.durable {
            return Ok(());
        }
        self.timed_sync("ready")?;
        self.counters.syncs += 1;
        self.durable = written;
        Ok(())
    }

    /// Step 1 of a Ready: make its snapshot, entries, term and vote durable, with one sync.
    fn persist(&mut self, ready: &Ready) -> Result<(), crate::StorageError> {
        self.write_received(ready);
        if let Some(meta) = &ready.snapshot {
            let stored = match self.received.take() {
                Some((m, stored)) if m == *meta => stored,
                other => {
                    return Err(crate::StorageError::Io(format!(
                        "the protocol installs the snapshot up to {} but the one stored is {:?}",
                        meta.last_index,
                        other.map(|(m, _)| m)
                    )))
                }
            };
            let log = self.raft.log_mut();
            let adopted = match &stored {
                Stored::Written(w) => log.adopt_snapshot(w),
                Stored::InMemory(s) => log.save_snapshot(s),
            };
            if let (Stored::Written(_), Some(storer)) = (&stored, self.storer.as_mut()) {
                storer.finished();
            }
            adopted?;
            self.raft.log_mut().compact(meta.clone())?;
        }
        if !ready.entries.is_empty() {
            let started = Instant::now();
            self.raft.log_mut().append(&ready.entries)?;
            self.shared.metrics.log_appended(started.elapsed());
        }
        if let Some(hs) = ready.hard_state {
            self.raft.log_mut().set_hard_state(hs)?;
        }
        // A new commit index alone is written but not synced: see `Ready::must_sync_after`.
        if ready.must_sync_after(&self.durable) {
            self.timed_sync("ready")?;
            self.counters.syncs += 1;
            self.durable = self.raft.log().hard_state();
            self.synced_since_tick = true;
        }
        if let Some(meta) = &ready.snapshot {
            // Installed and durable: the apply thread restores from the stored snapshot,
            // read as a stream (`dispatch`).
            match self.raft.log().open_snapshot()? {
                Some(chunks) if chunks.info().meta == *meta => self.restore_from = Some(chunks),
                other => {
                    return Err(crate::StorageError::Io(format!(
                        "the snapshot up to {} was installed but the log stores {:?}",
                        meta.last_index,
                        other.map(|c| c.info().meta)
                    )))
                }
            }
        }
        Ok(())
    }

    /// Steps 3 and on: role events, committed entries, read and proposal outcomes.
    fn dispatch(&mut self, ready: &mut Ready) {
        if let Some(soft) = ready.soft_state {
            self.on_soft_state(soft);
        }
        if let Some(meta) = ready.snapshot.take() {
            self.snapshot_index = meta.last_index;
            if let Some(chunks) = self.restore_from.take() {
                self.shared
                    .metrics
                    .snapshot_installed(chunks.info().len_bytes as usize);
                self.apply.send(ApplyTask::Restore(chunks));
            }
        }
        // One task for all of this ready's placements (a leader places each of its own
        // proposals: one per entry), ahead of the entries that may apply them.
        let mut placements = Vec::new();
        for placed in ready.forwarded.drain(..) {
            // A refusal (the node we forwarded to no longer leads) leaves the proposal
            // unplaced: it is sent again when a leader is known.
            if let Some((index, term)) = placed.placed {
                if self.unplaced.remove(&placed.request_id).is_some() {
                    placements.push(Placement {
                        request_id: placed.request_id,
                        index,
                        term,
                    });
                }
            }
        }
        if !placements.is_empty() {
            self.apply.send(ApplyTask::Placed(placements));
        }
        if !ready.committed.is_empty() {
            self.apply
                .send(ApplyTask::Entries(std::mem::take(&mut ready.committed)));
        }
        for rs in ready.read_states.drain(..) {
            if let Some((reply, _)) = self.reads.remove(&rs.request_id) {
                let _ = reply.send(rs.index.ok_or(NodeError::NoLeader));
            }
        }
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        let old = self.soft;
        self.soft = soft;
        let events = &self.shared.events;
        if old.role != Role::Leader && soft.role == Role::Leader {
            events.publish(Event::BecameLeader { term: soft.term });
        }
        if old.role == Role::Leader && soft.role != Role::Leader {
            events.publish(Event::LostLeadership { term: old.term });
        }
        if old.leader != soft.leader || (soft.leader.is_some() && old.term != soft.term) {
            self.shared.metrics.leader_changed();
            if let Some(leader) = soft.leader {
                log::info!(
                    "n{} follows leader n{leader} at term {}",
                    self.shared.id,
                    soft.term
                );
            }
            events.publish(Event::LeaderChanged {
                leader: soft.leader,
                term: soft.term,
            });
            // Forwarded reads went to the old leader: fail them so callers retry.
            if old.leader.is_some() && old.leader != Some(self.shared.id) {
                for (_, (reply, _)) in self.reads.drain() {
                    let _ = reply.send(Err(NodeError::NoLeader));
                }
            }
            if soft.leader.is_some() {
                self.resend_unplaced(Instant::now(), None);
            }
        }
        self.publish_status();
        // A leader change may settle the search for the cluster at once.
        self.check_join(Instant::now());
    }

    pub(crate) fn publish_status(&mut self) {
        let st = self.raft.status();
        let applied = *self.shared.applied.lock();
        let mut counters = self.counters;
        counters.transport = self.transport.counters();
        counters.protocol = st.counters;
        counters.events_dropped = self
            .shared
            .events
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        let buffered_bytes = self.storer.as_ref().map_or(0, |s| s.buffer.bytes());
        counters.snapshot_receive_buffer_high_water_bytes = self
            .storer
            .as_ref()
            .map_or(0, |s| s.buffer.high_water_bytes());
        self.shared
            .metrics
            .snapshot_receive_buffered(buffered_bytes);
        let mut status = self.shared.status.lock();
        status.role = st.soft.role;
        status.term = st.soft.term;
        status.leader = st.soft.leader;
        status.commit_index = st.commit_index;
        status.applied_index = applied;
        status.last_index = st.last_index;
        status.ticks = st.ticks;
        status.first_index = self.raft.log().first_index();
        status.snapshot_index = self.snapshot_index;
        status.peers = st
            .peers
            .iter()
            .map(|p| PeerLag {
                progress: *p,
                lag: st.last_index.saturating_sub(p.match_index),
            })
            .collect();
        status.counters = counters;
        status.membership = super::members::MembershipStatus::new(
            self.raft.membership(),
            self.raft.membership_since(st.last_index),
            st.commit_index,
        );
        self.shared.metrics.publish(&status);
        drop(status);
        self.transport.publish_metrics();
    }
}
