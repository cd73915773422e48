//! The node runtime: the threads that drive the protocol, and the public handle.
//!
//! A node runs two threads of its own plus its transport's:
//! - the **WaitLoop** (`raft-loop-n{id}`) owns the protocol and the log. It waits on one
//!   `select!` for peer messages, requests from handles, the next tick and shutdown,
//!   drains bursts, then handles each `Ready`: append and sync once per batch, send, and
//!   hand committed entries to the apply thread;
//! - the **apply thread** (`raft-apply-n{id}`) applies committed entries to the
//!   [`StateMachine`] in order and answers each proposer.
//!
//! ```
//! use std::time::Duration;
//! use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig};
//! use raft_core::MemLog;
//!
//! let net = ChannelNetwork::new();
//! let nodes: Vec<Node<KvStore<String, String>>> = (1..=3)
//!     .map(|id| {
//!         Node::builder(NodeConfig::new(id, [1, 2, 3]))
//!             .log(MemLog::new())
//!             .transport(net.transport(id))
//!             .state_machine(KvStore::new())
//!             .start()
//!             .unwrap()
//!     })
//!     .collect();
//! // Any node accepts writes: followers forward them to the leader.
//! let t = Duration::from_secs(10);
//! nodes[0].put_with_retry("hello".to_string(), "world".to_string(), t).unwrap();
//! assert_eq!(nodes[2].get(&"hello".to_string(), t).unwrap(), Some("world".to_string()));
//! for n in &nodes { n.stop(); }
//! ```
//!
//! ## Writing
//!
//! - [`Node::propose`] (or `propose_wait`, `propose_with_retry`): one command, one
//!   [`Proposal`] to wait on. Simple, but each write in flight costs a blocked thread.
//! - [`Node::propose_batch`]: several commands with one request, one `Proposal` each.
//! - [`Node::submitter`]: a [`Submitter`] keeps up to `in_flight_max` commands in flight
//!   from one thread. `submit` never blocks (it fails fast with [`NodeError::Busy`] at
//!   the limit); outcomes come back as `(Ticket, Result)` [`Completion`]s on one queue
//!   that the caller drains in bulk, e.g. once per frame of a game loop
//!   (`raft-core/examples/game_loop.rs`). The apply thread pushes a whole batch's
//!   completions at once, so a burst of results costs one wake-up.
//!
//! Every proposal is answered exactly once, including across leader changes: a
//! proposal placed by a leader that lost its place in the log is answered
//! [`NodeError::Dropped`] as soon as an entry of a later term is applied (see the
//! apply thread's `placed` invariant).

mod apply;
pub use apply::SNAPSHOT_STRETCH_PERCENT_MAX;
mod channel;
mod config;
mod dedup;
mod envelope;
mod error;
mod events;
mod kv;
mod members;
pub mod metrics;
mod queue;
mod reply;
mod shared;
mod snapshot;
mod snapshot_reader;
mod snapshot_store;
mod state_machine;
mod status;
mod submitter;
mod wait_loop;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

pub use channel::{ChannelNetwork, ChannelTransport};
pub use config::{NodeConfig, SNAPSHOT_RECEIVE_BUFFER_BYTES_DEFAULT};
pub use envelope::ENVELOPE_BYTES;
pub use error::NodeError;
pub use events::{Event, EVENTS_QUEUED_MAX};
pub use kv::{KvCommand, KvResponse, KvStore};
pub use members::MembershipStatus;
pub use reply::{Completion, Ticket};
pub use snapshot_reader::SnapshotReader;
pub use state_machine::{RestoreError, SnapshotSource, StateMachine};
pub use status::{ClusterState, NodeCounters, NodeStatus, PeerLag};
pub use submitter::{Submitter, SUBMITTER_IN_FLIGHT_MAX_DEFAULT};

use apply::Applier;
use reply::ReplyReceiver;
use shared::{ForgetWaiter, Shared};
use wait_loop::{JoinSearch, Request, WaitLoop};

use crate::protocol::{ProposeError, Raft, Role, SoftState};
use crate::storage::Log;
use crate::transport::Transport;
use crate::types::{LogIndex, NodeId};

/// Builds a [`Node`]: give it a config, a log, a transport and a state machine.
#[must_use]
pub struct NodeBuilder<S: StateMachine> {
    config: NodeConfig,
    log: Option<Box<dyn Log>>,
    transport: Option<Box<dyn Transport>>,
    state_machine: Option<S>,
}

impl<S: StateMachine> NodeBuilder<S> {
    /// The storage: `MemLog` (ephemeral) or raft-store's `SledLog` (durable). A log that
    /// holds state from an earlier run resumes it.
    pub fn log(mut self, log: impl Log) -> Self {
        self.log = Some(Box::new(log));
        self
    }

    /// The storage, already boxed (for a log taken back from a stopped node).
    pub fn boxed_log(mut self, log: Box<dyn Log>) -> Self {
        self.log = Some(log);
        self
    }

    /// The network: raft-net's `UdpTransport`, or a [`ChannelTransport`] in-process.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Box::new(transport));
        self
    }

    /// The state machine to replicate.
    pub fn state_machine(mut self, sm: S) -> Self {
        self.state_machine = Some(sm);
        self
    }

    /// Starts the node's threads and its transport.
    ///
    /// # Errors
    /// A missing part, an invalid config, or a transport that cannot start.
    pub fn start(self) -> Result<Node<S>, NodeError> {
        let mut config = self.config;
        let log = self.log.ok_or(NodeError::Missing("log"))?;
        let mut transport = self.transport.ok_or(NodeError::Missing("transport"))?;
        let sm = self
            .state_machine
            .ok_or(NodeError::Missing("state machine"))?;
        // Batches of entries stay within one unit of the transport (a datagram); a single
        // larger entry goes alone, which the transport carries up to max_entry_bytes.
        let transport_max = transport.max_append_bytes();
        if transport_max < config.protocol.append_bytes_max {
            config.protocol.append_bytes_max = transport_max;
            config.protocol.snapshot_chunk_bytes =
                config.protocol.snapshot_chunk_bytes.min(transport_max);
            config.protocol.inflight_bytes_max =
                config.protocol.inflight_bytes_max.max(transport_max);
        }
        let transport_entry_max = transport.max_entry_bytes();
        if transport_entry_max < config.protocol.entry_bytes_max {
            log::warn!(
                "n{}: entry_bytes_max lowered from {} to {} bytes, the most the transport carries in one message",
                config.protocol.id,
                config.protocol.entry_bytes_max,
                transport_entry_max
            );
            config.protocol.entry_bytes_max = transport_entry_max;
        }
        config.validate()?;
        let id = config.protocol.id;
        let seed = config.seed.unwrap_or_else(rand::random); // Resume from the stored snapshot, if any: restore the state machine first.
        let mut sm = sm;
        let (dedup, snapshot_index) = match log.snapshot()? {
            Some(snap) => {
                let dedup = Applier::restore_state(&mut sm, &snap.data)
                    .map_err(|e| NodeError::StateMachine(e.to_string()))?;
                log::info!(
                    "n{id} restored its state from the stored snapshot at {}",
                    snap.meta.last_index
                );
                (dedup, snap.meta.last_index)
            }
            None => (Default::default(), 0),
        };
        let durable = log.hard_state();
        let raft = Raft::new(config.protocol.clone(), log, seed)?;
        if members::was_removed(&raft, id) {
            log::error!(
                "n{id} refuses to start: it was removed from the cluster (configuration {:?})",
                raft.membership()
            );
            return Err(NodeError::Removed(id));
        }
        let replay_to = raft.commit_index();
        let applied_from = raft.applied_index();
        debug_assert!(applied_from >= snapshot_index);

        let shared = Arc::new(Shared::new(id, rand::random(), sm, NodeStatus::initial(id)));
        shared.set_applied(applied_from);
        let (inbox_tx, inbox_rx) = crossbeam_channel::unbounded();
        transport.start(inbox_tx)?;
        let (req_tx, req_rx) = crossbeam_channel::bounded(config.proposal_queue_max);
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded(1);
        let (apply_tx, apply_rx) = queue::queue();
        let (snapshots_tx, snapshots_rx) = crossbeam_channel::bounded(1);

        let now = Instant::now();
        let soft = SoftState {
            role: Role::Follower,
            term: raft.term(),
            leader: None,
        };
        let wait_loop = WaitLoop {
            raft,
            transport,
            inbox: inbox_rx,
            requests: req_rx,
            shutdown: shutdown_rx,
            snapshots: snapshots_rx,
            apply: apply_tx,
            shared: shared.clone(),
            unplaced: std::collections::BTreeMap::new(),
            reads: HashMap::new(),
            next_read_id: 0,
            counters: NodeCounters::default(),
            join: JoinSearch {
                attempt: 1,
                attempt_deadline: now + config.join_attempt_duration(0),
                heard: BTreeSet::new(),
                found: config.protocol.voters.len() == 1,
                gave_up: false,
            },
            soft,
            snapshot_index,
            durable,
            synced_since_tick: false,
            next_tick: now + config.tick(),
            storer: None,
            receiving: None,
            received: None,
            restore_from: None,
            received_in_memory: None,
            held_chunks: std::collections::VecDeque::new(),
            held_chunk_bytes: 0,
            change_waiters: Vec::new(),
            seen_config: Default::default(),
            config: config.clone(),
        };
        if config.protocol.voters.len() == 1 {
            shared.set_cluster(ClusterState::Found);
        }
        let policy = apply::SnapshotPolicy {
            after_entries: config.snapshot_after_entries,
            after_bytes: config.snapshot_after_log_bytes,
        };
        let applier = Applier::new(
            shared.clone(),
            apply_rx,
            applied_from,
            replay_to,
            dedup,
            policy,
            snapshots_tx,
        );
        let apply_thread = std::thread::Builder::new()
            .name(format!("raft-apply-n{id}"))
            .spawn(move || applier.run())
            .map_err(NodeError::Spawn)?;
        let loop_thread = std::thread::Builder::new()
            .name(format!("raft-loop-n{id}"))
            .spawn(move || wait_loop.run())
            .map_err(NodeError::Spawn)?;
        log::info!(
            "n{id} started: voters {:?}, tick {} ms, election timeout {} ticks",
            config.protocol.voters,
            config.tick_interval_ms,
            config.protocol.election_timeout_ticks
        );
        Ok(Node {
            shared,
            requests: req_tx,
            control: Arc::new(Mutex::new(Control {
                shutdown: Some(shutdown_tx),
                loop_thread: Some(loop_thread),
                apply_thread: Some(apply_thread),
                log: None,
            })),
            config: Arc::new(config),
        })
    }
}

struct Control {
    shutdown: Option<Sender<()>>,
    loop_thread: Option<JoinHandle<Box<dyn Log>>>,
    apply_thread: Option<JoinHandle<()>>,
    log: Option<Box<dyn Log>>,
}

/// A running node. Cheap to clone; every clone drives the same node, from any thread.
pub struct Node<S: StateMachine> {
    shared: Arc<Shared<S>>,
    requests: Sender<Request>,
    control: Arc<Mutex<Control>>,
    config: Arc<NodeConfig>,
}

impl<S: StateMachine> Clone for Node<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            requests: self.requests.clone(),
            control: self.control.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.shared.id).finish()
    }
}

/// A proposal on its way: wait for the state machine's response.
#[must_use = "wait for the response, or the proposal's outcome is unknown"]
pub struct Proposal<R> {
    rx: ReplyReceiver<R>,
    request_id: u64,
    waiters: Arc<dyn ForgetWaiter>,
}

impl<R> Proposal<R> {
    /// Waits up to `timeout` for the response of the state machine.
    ///
    /// # Errors
    /// [`NodeError::Timeout`] (the command may still take effect later),
    /// [`NodeError::NoLeader`], [`NodeError::Rejected`] or [`NodeError::Dropped`] (it did
    /// not take effect; retry), [`NodeError::Stopped`].
    pub fn wait(self, timeout: Duration) -> Result<R, NodeError> {
        self.rx
            .wait(timeout)
            .unwrap_or(Err(NodeError::Timeout(timeout)))
    }
}

impl<R> Drop for Proposal<R> {
    fn drop(&mut self) {
        self.waiters.forget(self.request_id);
    }
}

impl<S: StateMachine> Node<S> {
    /// A builder for a node with `config`.
    pub fn builder(config: NodeConfig) -> NodeBuilder<S> {
        NodeBuilder {
            config,
            log: None,
            transport: None,
            state_machine: None,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Proposes a command. On a follower it is forwarded to the leader. Wait on the
    /// returned [`Proposal`] for the state machine's response.
    ///
    /// # Errors
    /// [`NodeError::Stopped`], [`NodeError::Busy`] when the queue is full.
    pub fn propose(&self, command: impl Into<Bytes>) -> Result<Proposal<S::Response>, NodeError> {
        self.submit(self.shared.request_id(), command.into())
    }

    /// Proposes and waits for the response: [`Node::propose`] then [`Proposal::wait`].
    ///
    /// # Errors
    /// As both.
    pub fn propose_wait(
        &self,
        command: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<S::Response, NodeError> {
        self.propose(command)?.wait(timeout)
    }

    /// Proposes and waits, retrying on errors that mean the command did not take effect
    /// (dropped by a leader change, refused while busy) until `timeout`. Every attempt
    /// carries the same request id, so the command takes effect at most once even when
    /// copies reach the log.
    ///
    /// # Errors
    /// [`NodeError::Timeout`] when time runs out (the command may still take effect),
    /// [`NodeError::Stopped`], or a refusal that retrying cannot fix (too large).
    pub fn propose_with_retry(
        &self,
        command: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<S::Response, NodeError> {
        let command = command.into();
        let deadline = Instant::now() + timeout;
        let request_id = self.shared.request_id();
        let mut backoff = Duration::from_millis(5);
        loop {
            let proposal = self.submit(request_id, command.clone())?;
            let left = deadline.saturating_duration_since(Instant::now());
            match proposal.wait(left) {
                Ok(r) => return Ok(r),
                Err(NodeError::Timeout(_)) => return Err(NodeError::Timeout(timeout)),
                Err(
                    NodeError::Dropped
                    | NodeError::Busy
                    | NodeError::NoLeader
                    | NodeError::Rejected(
                        ProposeError::Busy(_)
                        | ProposeError::Transferring
                        | ProposeError::NotLeader { .. },
                    ),
                ) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(NodeError::Timeout(timeout));
                    }
                    std::thread::sleep(backoff.min(left));
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Proposes several commands at once, in order, with one request to the WaitLoop;
    /// returns one [`Proposal`] per command, in the same order. Each is answered on its
    /// own, as after [`Node::propose`].
    ///
    /// # Errors
    /// [`NodeError::Stopped`], [`NodeError::Busy`] when the queue is full (then none of
    /// the commands was proposed).
    pub fn propose_batch<C: Into<Bytes>>(
        &self,
        commands: Vec<C>,
    ) -> Result<Vec<Proposal<S::Response>>, NodeError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(NodeError::Stopped);
        }
        let mut proposals = Vec::with_capacity(commands.len());
        let mut batch = Vec::with_capacity(commands.len());
        {
            let mut waiters = self.shared.waiters.lock();
            for command in commands {
                let request_id = self.shared.request_id();
                let (tx, rx) = reply::reply_slot();
                waiters.insert(request_id, shared::ProposalWaiter::Slot(tx));
                proposals.push(Proposal {
                    rx,
                    request_id,
                    waiters: self.shared.clone(),
                });
                batch.push((request_id, command.into()));
            }
        }
        // On an error the proposals are dropped, which forgets their waiters.
        self.send_batch(batch)?;
        Ok(proposals)
    }

    /// A handle that keeps many commands in flight without blocking: see [`Submitter`].
    /// Each call makes a new one with its own completion queue and
    /// [`SUBMITTER_IN_FLIGHT_MAX_DEFAULT`] commands in flight at most.
    pub fn submitter(&self) -> Submitter<S> {
        Submitter::new(self.clone())
    }

    /// Queues an already registered batch of proposals for the WaitLoop.
    fn send_batch(&self, commands: Vec<(u64, Bytes)>) -> Result<(), NodeError> {
        if commands.is_empty() {
            return Ok(());
        }
        match self.requests.try_send(Request::ProposeBatch { commands }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NodeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(NodeError::Stopped),
        }
    }

    /// Registers a waiter for `request_id` and queues the proposal.
    fn submit(&self, request_id: u64, command: Bytes) -> Result<Proposal<S::Response>, NodeError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(NodeError::Stopped);
        }
        let (tx, rx) = reply::reply_slot();
        // A retry under the same id replaces the earlier waiter, which is answered
        // `Stopped` as it is dropped: nobody waits on it any more.
        let replaced = self
            .shared
            .waiters
            .lock()
            .insert(request_id, shared::ProposalWaiter::Slot(tx));
        drop(replaced);
        let proposal = Proposal {
            rx,
            request_id,
            waiters: self.shared.clone(),
        };
        match self.requests.try_send(Request::Propose {
            request_id,
            command,
        }) {
            Ok(()) => Ok(proposal),
            Err(TrySendError::Full(_)) => Err(NodeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(NodeError::Stopped),
        }
    }

    /// A linearizable read index: once this node has applied it, the state machine
    /// reflects every write acknowledged before this call. ReadIndex by default; lease
    /// reads when configured (`ReadMode::Lease`).
    ///
    /// # Errors
    /// [`NodeError::NoLeader`], [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub fn read_index(&self, timeout: Duration) -> Result<LogIndex, NodeError> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.requests
            .try_send(Request::Read {
                reply: tx,
                deadline,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => NodeError::Busy,
                TrySendError::Disconnected(_) => NodeError::Stopped,
            })?;
        let index = match rx.recv_timeout(timeout) {
            Ok(r) => r?,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                return Err(NodeError::Timeout(timeout))
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(NodeError::Stopped)
            }
        };
        self.shared
            .wait_applied(index, deadline)
            .map_err(|e| match e {
                NodeError::Timeout(_) => NodeError::Timeout(timeout),
                e => e,
            })?;
        Ok(index)
    }

    /// A linearizable read: runs `f` on the state machine once it reflects every write
    /// acknowledged before this call.
    ///
    /// # Errors
    /// As [`Node::read_index`].
    pub fn read<T>(&self, timeout: Duration, f: impl FnOnce(&S) -> T) -> Result<T, NodeError> {
        self.read_index(timeout)?;
        Ok(f(&self.shared.state_machine.lock()))
    }

    /// A stale read: runs `f` on this node's state machine as it is now, which may lag
    /// the cluster (or, on a partitioned node, be arbitrarily old).
    pub fn read_stale<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        f(&self.shared.state_machine.lock())
    }

    /// Subscribes to this node's [`Event`]s from now on.
    pub fn events(&self) -> Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The node's current state: protocol fields as of the last tick at most, the applied
    /// index live (see [`NodeStatus`] for the ordering it keeps).
    pub fn status(&self) -> NodeStatus {
        let mut status = self.shared.status.lock().clone();
        status.applied_index = *self.shared.applied.lock();
        // An applied entry is committed and in the log, even when the published commit
        // and last index are a tick old.
        status.commit_index = status.commit_index.max(status.applied_index);
        status.last_index = status.last_index.max(status.commit_index);
        debug_assert!(status.applied_index <= status.commit_index);
        debug_assert!(status.commit_index <= status.last_index);
        status
    }

    /// Waits until the node found its cluster, or gave up looking.
    ///
    /// # Errors
    /// [`NodeError::ClusterNotFound`] after the last join attempt;
    /// [`NodeError::Timeout`] if `timeout` passes first.
    pub fn wait_for_cluster(&self, timeout: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.cluster.lock();
        loop {
            match *state {
                ClusterState::Found => return Ok(()),
                ClusterState::NotFound => {
                    return Err(NodeError::ClusterNotFound {
                        attempts: self.config.join_attempts,
                        heard: Vec::new(),
                    })
                }
                ClusterState::Searching { .. } => {}
            }
            if self
                .shared
                .cluster_changed
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                return Err(NodeError::Timeout(timeout));
            }
        }
    }

    /// Waits until this node knows a leader; returns it.
    ///
    /// # Errors
    /// [`NodeError::Timeout`].
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.status().leader {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    /// Takes a snapshot now (if the state machine supports them), then compacts the log
    /// behind it, keeping `snapshot_trailing_entries`. Returns at once; the snapshot is
    /// taken on the apply thread.
    ///
    /// # Errors
    /// [`NodeError::Stopped`], [`NodeError::Busy`].
    pub fn snapshot_now(&self) -> Result<(), NodeError> {
        self.requests
            .try_send(Request::Snapshot)
            .map_err(|e| match e {
                TrySendError::Full(_) => NodeError::Busy,
                TrySendError::Disconnected(_) => NodeError::Stopped,
            })
    }

    /// Starts an election (this node asks to lead). Under lease reads
    /// (`ReadMode::Lease`) a follower that heard from the leader within the last election
    /// timeout first waits that lease out (it stops answering the leader), so the old
    /// leader's lease reads stay correct; see `Raft::campaign`. To hand leadership over at
    /// once, call [`Node::transfer_leadership`] on the leader.
    pub fn campaign(&self) {
        let _ = self.requests.try_send(Request::Campaign);
    }

    /// Asks the leader (this node) to hand leadership to `to`.
    ///
    /// # Errors
    /// [`NodeError::Rejected`] if this node is not the leader or `to` is not a voter.
    pub fn transfer_leadership(&self, to: NodeId) -> Result<(), NodeError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.requests
            .send(Request::Transfer { to, reply: tx })
            .map_err(|_| NodeError::Stopped)?;
        rx.recv().map_err(|_| NodeError::Stopped)?
    }

    /// Stops the node: ends its threads and its transport and joins them. Idempotent.
    /// The log can be taken back with [`Node::take_log`] to start again where it left off.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        let mut control = self.control.lock();
        if let Some(tx) = control.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = control.loop_thread.take() {
            match t.join() {
                Ok(log) => control.log = Some(log),
                Err(_) => log::error!("n{} WaitLoop thread panicked", self.shared.id),
            }
        }
        if let Some(t) = control.apply_thread.take() {
            if t.join().is_err() {
                log::error!("n{} apply thread panicked", self.shared.id);
            }
        }
        self.shared.fail_all_waiters(|| NodeError::Stopped);
        self.shared.applied_changed.notify_all();
    }

    /// After [`Node::stop`], gives back the log so a new node can resume from it.
    pub fn take_log(&self) -> Option<Box<dyn Log>> {
        self.control.lock().log.take()
    }

    /// Whether the node's threads are running.
    pub fn is_running(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }
}
