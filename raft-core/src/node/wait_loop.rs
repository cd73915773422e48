//! The WaitLoop: one thread that owns the protocol, waits on a single
//! `crossbeam_channel::select!` for peer messages, requests, the next tick or shutdown,
//! and handles each `Ready` in order: persist and sync once per batch, then send, then
//! hand committed entries to the apply thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
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
use super::snapshot::PackedSource;
use super::state_machine::StateMachine;
use super::status::{ClusterState, NodeCounters, PeerLag};
use crate::message::{Message, MessageBody};
use crate::protocol::{ProposeError, Raft, Ready, Role, SoftState};
use crate::storage::Log;
use crate::transport::Transport;
use crate::types::{HardState, LogIndex, NodeId, Snapshot, SnapshotMeta};
use crate::WrittenSnapshot;

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

/// A received snapshot made durable (or not).
pub(crate) type ReceivedResult = (SnapshotMeta, Result<Stored, crate::StorageError>);

/// Where a follower writes a snapshot it receives.
pub(crate) enum Receiving {
    /// Into memory, for a log without a snapshot writer (or without a storer thread).
    InMemory(crate::ReceivedInMemory),
    /// Streamed to the storer thread, which writes it through the log's
    /// [`crate::SnapshotWriter`] (a temporary file, synced and renamed at the end).
    Streamed(Sender<ReceivedPiece>),
}

/// A piece of a received snapshot on its way to the storer thread.
pub(crate) enum ReceivedPiece {
    /// The next bytes, counted in the receive buffer until dropped.
    Data(HeldBytes),
    /// That was all: `len_bytes` in total. The storer makes it durable.
    End { len_bytes: u64 },
}

/// The received snapshot data handed to the storer thread and not yet written (or
/// dropped), in bytes, shared by the WaitLoop (which adds) and whoever drops the data
/// (which subtracts, see [`HeldBytes`]).
///
/// Invariant: `bytes` is the sum of the lengths of the live [`HeldBytes`] of this buffer;
/// `high_water_bytes >= bytes` at every moment it is read by the WaitLoop.
#[derive(Debug)]
pub(crate) struct ReceiveBuffer {
    bytes: AtomicU64,
    high_water_bytes: AtomicU64,
    /// Set by the WaitLoop while it holds chunks back: the next piece written (or
    /// dropped) wakes it through `drained`.
    waiting: std::sync::atomic::AtomicBool,
    drained: Sender<()>,
    /// The WaitLoop's end of `drained` (capacity 1: one wake-up is enough).
    pub(crate) drained_rx: Receiver<()>,
}

impl Default for ReceiveBuffer {
    fn default() -> Self {
        let (drained, drained_rx) = crossbeam_channel::bounded(1);
        Self {
            bytes: AtomicU64::new(0),
            high_water_bytes: AtomicU64::new(0),
            waiting: std::sync::atomic::AtomicBool::new(false),
            drained,
            drained_rx,
        }
    }
}

impl ReceiveBuffer {
    /// Whether a chunk of `len_bytes` may be taken with `limit_bytes` at most waiting:
    /// when it fits, or when nothing waits (so a chunk larger than the limit passes).
    fn admits(&self, len_bytes: u64, limit_bytes: u64) -> bool {
        self.admits_more(0, len_bytes, limit_bytes)
    }

    /// [`ReceiveBuffer::admits`], counting `pending_bytes` taken but not yet handed over.
    fn admits_more(&self, pending_bytes: u64, len_bytes: u64, limit_bytes: u64) -> bool {
        let held = self.bytes.load(Ordering::Acquire) + pending_bytes;
        held == 0 || held.saturating_add(len_bytes) <= limit_bytes
    }

    /// Counts `data` as waiting until the returned value is dropped.
    fn hold(self: &Arc<Self>, data: Bytes) -> HeldBytes {
        let len = data.len() as u64;
        let now = self.bytes.fetch_add(len, Ordering::AcqRel) + len;
        self.high_water_bytes.fetch_max(now, Ordering::AcqRel);
        HeldBytes {
            data,
            buffer: Arc::clone(self),
        }
    }

    /// Bytes waiting now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// The most bytes that waited at once.
    fn high_water_bytes(&self) -> u64 {
        self.high_water_bytes.load(Ordering::Acquire)
    }
}

/// Received snapshot data counted in a [`ReceiveBuffer`] while it lives: written by the
/// storer thread, or dropped with a transfer that was abandoned, it leaves the count.
pub(crate) struct HeldBytes {
    data: Bytes,
    buffer: Arc<ReceiveBuffer>,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        let len = self.data.len() as u64;
        let before = self.buffer.bytes.fetch_sub(len, Ordering::AcqRel);
        debug_assert!(before >= len, "receive buffer count went below zero");
        if self.buffer.waiting.swap(false, Ordering::AcqRel) {
            let _ = self.buffer.drained.try_send(());
        }
    }
}

/// A snapshot the storer thread stored (whether it was received from the leader, what it
/// covers), or why it did not.
type Written = (bool, SnapshotMeta, Result<Stored, crate::StorageError>);

/// What the storer thread made of a snapshot.
pub(crate) enum Stored {
    /// Written durably by the log's [`crate::SnapshotWriter`]: to adopt.
    Written(WrittenSnapshot),
    /// Serialized into memory, for a log without a writer ([`crate::MemLog`]): to save
    /// with `Log::save_snapshot`.
    InMemory(Snapshot),
}

/// Work for the storer thread.
enum Job {
    /// A snapshot this node took: what it covers, and its unserialized data.
    Take(SnapshotMeta, PackedSource),
    /// A snapshot received from the leader, its data arriving on the channel.
    Receive(SnapshotMeta, Receiver<ReceivedPiece>),
}

/// The snapshot storer: a thread that serializes each snapshot the apply thread took
/// (the state machine's frozen view, see `StateMachine::snapshot_source`) straight into
/// the log's [`crate::SnapshotWriter`], one at a time, so that a snapshot of any size
/// stalls neither the WaitLoop nor the writers. A log without a writer gets the bytes in
/// memory. The WaitLoop adopts (or saves) each result and compacts behind it.
pub(crate) struct SnapshotStorer {
    to_write: Option<Sender<Job>>,
    written: Receiver<Written>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether a write is in progress (at most one at a time).
    writing: bool,
    /// A snapshot was adopted and the log compacted behind it since the last sync: the
    /// next regular sync makes both durable, or an idle tick's (see
    /// `WaitLoop::adopt_written`).
    unsynced: bool,
    /// The newest snapshot taken while a write was in progress: written next; an older
    /// one waiting here is superseded.
    next: Option<Job>,
    /// A received snapshot whose transfer started while a write was in progress: written
    /// before `next` (its chunks queue meanwhile).
    next_receive: Option<Job>,
    /// Whether the log has a snapshot writer (else snapshots are serialized to memory).
    has_writer: bool,
    /// Received snapshot data on its way to the writer: bounded by
    /// `NodeConfig::snapshot_receive_buffer_bytes` (see `WaitLoop::defer_chunk`).
    buffer: Arc<ReceiveBuffer>,
}

impl SnapshotStorer {
    /// Starts the storer thread of node `id`.
    fn start(id: NodeId, log: &dyn Log, idle_max: Duration) -> Option<Self> {
        let mut writer = log.snapshot_writer();
        let has_writer = writer.is_some();
        let (to_write, jobs) = crossbeam_channel::bounded::<Job>(1);
        let (done, written) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name(format!("raft-snap-n{id}"))
            .spawn(move || {
                for job in jobs {
                    let (meta, source) = match job {
                        Job::Take(meta, source) => (meta, source),
                        Job::Receive(meta, pieces) => {
                            let result =
                                receive(writer.as_deref_mut(), meta.clone(), &pieces, idle_max);
                            if done.send((true, meta, result)).is_err() {
                                break;
                            }
                            continue;
                        }
                    };
                    let started = Instant::now();
                    let result = store(writer.as_deref_mut(), meta.clone(), source);
                    if let Ok(stored) = &result {
                        let bytes = match stored {
                            Stored::Written(w) => w.size_bytes,
                            Stored::InMemory(s) => s.data.len() as u64,
                        };
                        log::debug!(
                            "n{id} serialized the snapshot at {} ({bytes} bytes) in {:?}",
                            meta.last_index,
                            started.elapsed()
                        );
                    }
                    if done.send((false, meta, result)).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(thread) => Some(Self {
                to_write: Some(to_write),
                written,
                thread: Some(thread),
                writing: false,
                unsynced: false,
                next: None,
                next_receive: None,
                has_writer,
                buffer: Arc::default(),
            }),
            Err(e) => {
                log::warn!("n{id} cannot start the snapshot storer ({e}); storing snapshots on the WaitLoop");
                None
            }
        }
    }

    /// Queues a snapshot for writing: now if the thread is idle, else after the write
    /// in progress (replacing an older one waiting).
    fn submit(&mut self, job: Job) {
        if self.writing {
            match job {
                Job::Take(..) => self.next = Some(job),
                Job::Receive(..) => self.next_receive = Some(job),
            }
            return;
        }
        if let Some(tx) = &self.to_write {
            self.writing = tx.send(job).is_ok();
        }
    }

    /// A write finished: start the next one, if any.
    fn finished(&mut self) {
        self.writing = false;
        if let Some(next) = self.next_receive.take().or_else(|| self.next.take()) {
            self.submit(next);
        }
    }

    /// Lets a write in progress finish and stops the thread.
    fn stop(&mut self) {
        self.to_write = None;
        self.next = None;
        self.next_receive = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serializes `source` through `writer` (durably, streamed), or into memory without one.
fn store(
    writer: Option<&mut dyn crate::SnapshotWriter>,
    meta: SnapshotMeta,
    source: PackedSource,
) -> Result<Stored, crate::StorageError> {
    let serialize_err =
        |e: std::io::Error| crate::StorageError::Io(format!("cannot serialize the snapshot: {e}"));
    match writer {
        Some(writer) => {
            let mut source = Some(source);
            let mut fill = |out: &mut dyn std::io::Write| match source.take() {
                Some(source) => source.write_to(out),
                None => Err(std::io::Error::other(
                    "a snapshot's data can be written once",
                )),
            };
            writer.write(meta, &mut fill).map(Stored::Written)
        }
        None => {
            let data = source.into_bytes().map_err(serialize_err)?;
            Ok(Stored::InMemory(Snapshot { meta, data }))
        }
    }
}

/// Writes a snapshot received from the leader through `writer` as its pieces arrive,
/// durably once the last one is in (the writer syncs and renames its file). Fails if the
/// transfer is abandoned (the sender dropped) or stalls for `idle_max`, or if the pieces
/// do not add up to the announced length; the writer then removes what it wrote.
fn receive(
    writer: Option<&mut dyn crate::SnapshotWriter>,
    meta: SnapshotMeta,
    pieces: &Receiver<ReceivedPiece>,
    idle_max: Duration,
) -> Result<Stored, crate::StorageError> {
    let Some(writer) = writer else {
        return Err(crate::StorageError::Io(
            "no snapshot writer to receive a snapshot with".into(),
        ));
    };
    let mut fill = |out: &mut dyn std::io::Write| {
        let mut written_bytes = 0u64;
        loop {
            match pieces.recv_timeout(idle_max) {
                Ok(ReceivedPiece::Data(held)) => {
                    out.write_all(&held.data)?;
                    written_bytes += held.data.len() as u64;
                    // Written: it leaves the receive buffer (`held` drops here).
                }
                Ok(ReceivedPiece::End { len_bytes }) if len_bytes == written_bytes => {
                    return Ok(());
                }
                Ok(ReceivedPiece::End { len_bytes }) => {
                    return Err(std::io::Error::other(format!(
                        "received {written_bytes} bytes of a snapshot of {len_bytes}"
                    )))
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::other(format!(
                        "no snapshot data for {idle_max:?}: transfer abandoned"
                    )))
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other("transfer abandoned"))
                }
            }
        }
    };
    writer.write(meta, &mut fill).map(Stored::Written)
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

    fn step_message(&mut self, m: Message) {
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

    /// Holds snapshot chunk `m` back (returns `None`) while the received snapshot data
    /// waiting for the disk is at `NodeConfig::snapshot_receive_buffer_bytes`, or while
    /// earlier chunks are held (they keep their order); returns it to step otherwise.
    /// Never blocks. A held chunk is not stepped, so not acknowledged: the leader, whose
    /// chunks in flight are bounded by `inflight_bytes_max`, stops sending, and resumes
    /// as soon as the chunks are stepped ([`WaitLoop::release_held_chunks`], woken when
    /// the storer thread has written some). Held chunks are bounded by the same window:
    /// past it (the leader resending at a heartbeat) they are dropped, which to the
    /// protocol is loss. Heartbeats, appends and votes are never held, so a slow disk
    /// slows the transfer, not the cluster.
    fn defer_chunk(&mut self, m: Message) -> Option<Message> {
        let MessageBody::InstallSnapshot { data, .. } = &m.body else {
            return Some(m);
        };
        let Some(storer) = self.storer.as_ref() else {
            return Some(m);
        };
        let len = data.len() as u64;
        let limit = self.config.snapshot_receive_buffer_bytes;
        if self.held_chunks.is_empty() && storer.buffer.admits(len, limit) {
            return Some(m);
        }
        self.counters.snapshot_chunks_deferred += 1;
        if self.held_chunks.is_empty() {
            log::debug!(
                "n{} holds snapshot chunks from n{}: {} bytes wait for the disk (limit {limit})",
                self.shared.id,
                m.from,
                storer.buffer.bytes()
            );
        }
        if self.held_chunk_bytes + len <= self.config.protocol.inflight_bytes_max {
            storer.buffer.waiting.store(true, Ordering::Release);
            self.held_chunk_bytes += len;
            self.held_chunks.push_back(m);
        }
        // A wake-up may have been missed between the check and `waiting`: look again.
        self.release_held_chunks();
        None
    }

    /// Steps the held snapshot chunks, in order, while the receive buffer admits them
    /// (counting those stepped here, which reach the buffer with the turn's readies).
    fn release_held_chunks(&mut self) {
        let limit = self.config.snapshot_receive_buffer_bytes;
        let mut stepped_bytes = 0u64;
        while let Some(m) = self.held_chunks.front() {
            let len = match &m.body {
                MessageBody::InstallSnapshot { data, .. } => data.len() as u64,
                _ => 0,
            };
            let Some(buffer) = self.storer.as_ref().map(|s| Arc::clone(&s.buffer)) else {
                return;
            };
            if !buffer.admits_more(stepped_bytes, len, limit) {
                buffer.waiting.store(true, Ordering::Release);
                // Drained between the check and `waiting`: no wake-up will come.
                if !buffer.admits_more(stepped_bytes, len, limit) {
                    return;
                }
            }
            let m = self.held_chunks.pop_front().expect("front exists");
            self.held_chunk_bytes -= len;
            stepped_bytes += len;
            self.step_message(m);
        }
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
    /// Hands a snapshot the apply thread took at `index` to the storer thread, which
    /// serializes and writes it; `adopt_snapshot` then compacts the log behind it. Only
    /// when the storer thread could not be started is it stored here, on the WaitLoop.
    fn store_snapshot(&mut self, index: LogIndex, source: PackedSource) {
        // With the configuration in force at `index` (see `Raft::snapshot_meta_at`).
        let Some(meta) = self.raft.snapshot_meta_at(index) else {
            return; // already compacted past it (a newer snapshot was installed)
        };
        if let Some(storer) = self.storer.as_mut() {
            storer.submit(Job::Take(meta, source));
            return;
        }
        let result = store(None, meta.clone(), source);
        self.adopt_written(meta, result);
    }

    /// Adopts a snapshot the storer thread wrote and compacts the log behind it: fast
    /// (metadata), so the WaitLoop is never held up by a snapshot's size. A failure is
    /// logged, not fatal: the log simply stays longer.
    fn adopt_snapshot(&mut self, meta: SnapshotMeta, result: Result<Stored, crate::StorageError>) {
        self.adopt_written(meta, result);
        // The next write starts only now: the log's clean-up at adoption removes files
        // no one adopted, and must not race a write in progress.
        if let Some(storer) = self.storer.as_mut() {
            storer.finished();
        }
    }

    fn adopt_written(&mut self, meta: SnapshotMeta, result: Result<Stored, crate::StorageError>) {
        let id = self.shared.id;
        let stored = match result {
            Ok(w) => w,
            Err(e) => {
                log::error!(
                    "n{id} could not write the snapshot at {}: {e}",
                    meta.last_index
                );
                return;
            }
        };
        // A snapshot installed from the leader meanwhile may already cover it.
        if meta.last_index <= self.snapshot_index
            || self.raft.term_at(meta.last_index) != Some(meta.last_term)
        {
            log::debug!(
                "n{id} drops the snapshot it wrote at {}: the log moved past it",
                meta.last_index
            );
            return;
        }
        let (size_bytes, how) = match &stored {
            Stored::Written(w) => (w.size_bytes, "written off the WaitLoop"),
            Stored::InMemory(s) => (s.data.len() as u64, "in memory"),
        };
        let result = (|| {
            // No sync here: a sync that waits for a disk busy with snapshot files cost
            // the WaitLoop 150-320 ms per snapshot (issue 18). Adoption and compaction
            // become durable with the next regular sync, or an idle tick's. Crash-safe:
            // the log is written in order and a crash keeps a prefix of what came after
            // the last sync (the `Log` contract; for `SledLog`, one atomic batch per
            // sync), so the compaction is never durable without the snapshot adopted
            // before it; losing both leaves the previous snapshot and every entry after
            // it, which is where the node was. Nothing sent depends on them being durable.
            let log = self.raft.log_mut();
            match &stored {
                Stored::Written(w) => log.adopt_snapshot(w)?,
                Stored::InMemory(s) => log.save_snapshot(s)?,
            }
            self.compact_behind(meta.last_index)
        })();
        if let Some(storer) = self.storer.as_mut() {
            storer.unsynced = true;
        }
        match result {
            Ok(()) => {
                self.shared.metrics.snapshot_taken(size_bytes);
                self.apply.send(ApplyTask::SnapshotStored { size_bytes });
                self.snapshot_index = meta.last_index;
                log::info!(
                    "n{id} stored a snapshot at {} ({size_bytes} bytes, {how}); log now starts at {}",
                    meta.last_index,
                    self.raft.log().first_index()
                );
                self.publish_status();
            }
            Err(e) => log::error!(
                "n{id} could not adopt the snapshot at {}: {e}",
                meta.last_index
            ),
        }
    }

    /// Compacts the log behind a snapshot at `index` that the log stores (written before
    /// this compaction, so never durable after it), keeping `snapshot_trailing_entries`.
    fn compact_behind(&mut self, index: LogIndex) -> Result<(), crate::StorageError> {
        let keep = self.config.snapshot_trailing_entries;
        if let Some(meta) = self.raft.compaction_meta(index.saturating_sub(keep)) {
            self.raft.log_mut().compact(meta.clone())?;
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

    /// The storer thread made a received snapshot durable (or failed to): tell the
    /// protocol, which installs it with its next ready if it still needs it.
    fn on_received_stored(
        &mut self,
        meta: SnapshotMeta,
        result: Result<Stored, crate::StorageError>,
    ) {
        self.received_stored(meta, result);
        // The next write starts once this one is adopted (`persist`), if it is: adoption
        // removes the files no one adopted, and must not race a write in progress.
        if self.received.is_none() {
            if let Some(storer) = self.storer.as_mut() {
                storer.finished();
            }
        }
    }

    fn received_stored(&mut self, meta: SnapshotMeta, result: Result<Stored, crate::StorageError>) {
        if let Err(e) = &result {
            log::warn!(
                "n{} could not store the snapshot up to {} it received: {e}",
                self.shared.id,
                meta.last_index
            );
        }
        if self.raft.snapshot_received(meta.clone(), result.is_ok()) {
            if let Ok(stored) = result {
                self.received = Some((meta, stored));
            }
        }
    }

    /// Writes the received snapshot data of a ready, and hands a complete snapshot on to
    /// be made durable (off the WaitLoop when the log has a writer).
    fn write_received(&mut self, ready: &Ready) {
        for chunk in &ready.snapshot_chunks {
            if chunk.offset == 0 {
                let to = match self.storer.as_mut() {
                    Some(storer) if storer.has_writer => {
                        let (tx, rx) = crossbeam_channel::unbounded();
                        storer.submit(Job::Receive(chunk.meta.clone(), rx));
                        Receiving::Streamed(tx)
                    }
                    _ => Receiving::InMemory(crate::ReceivedInMemory::default()),
                };
                self.receiving = Some((chunk.meta.clone(), to));
            }
            let written = match &mut self.receiving {
                Some((meta, to)) if *meta == chunk.meta => match to {
                    Receiving::InMemory(m) => m.write(chunk).map_err(|e| e.to_string()),
                    Receiving::Streamed(tx) => {
                        let buffer = self.storer.as_ref().map(|s| Arc::clone(&s.buffer));
                        let buffer = buffer.unwrap_or_default();
                        tx.send(ReceivedPiece::Data(buffer.hold(chunk.data.clone())))
                            .map_err(|_| "the storer thread dropped it".to_string())
                    }
                },
                _ => Err("its start was not written".to_string()),
            };
            if let Err(e) = written {
                log::warn!(
                    "n{} cannot write the snapshot up to {} it receives ({e}); the leader will send it again",
                    self.shared.id,
                    chunk.meta.last_index
                );
                self.receiving = None;
                self.raft.snapshot_received(chunk.meta.clone(), false);
                break;
            }
        }
        if let Some(info) = &ready.received_snapshot {
            match self.receiving.take() {
                Some((meta, Receiving::InMemory(mut m))) if meta == info.meta => {
                    // Told to the protocol once this ready is advanced (`handle_readies`).
                    self.received_in_memory = Some((meta, m.finish(info).map(Stored::InMemory)));
                }
                Some((meta, Receiving::Streamed(tx))) if meta == info.meta => {
                    // The storer answers with the durable file (`on_received_stored`).
                    if tx
                        .send(ReceivedPiece::End {
                            len_bytes: info.len_bytes,
                        })
                        .is_err()
                    {
                        self.raft.snapshot_received(meta, false);
                    }
                }
                _ => {
                    self.raft.snapshot_received(info.meta.clone(), false);
                }
            }
        }
        // A transfer the protocol gave up (a newer one, or entries that overtook it):
        // dropping the sender makes the storer remove its partial file.
        if self
            .receiving
            .as_ref()
            .is_some_and(|(meta, _)| self.raft.receiving_snapshot().as_ref() != Some(meta))
        {
            self.receiving = None;
        }
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
