//! Pipelined writes for a synchronous program: submit without blocking, collect the
//! outcomes in bulk.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::TrySendError;

use super::error::NodeError;
use super::reply::{Completion, CompletionQueue, QueueWaiter, Ticket};
use super::shared::ProposalWaiter;
use super::state_machine::StateMachine;
use super::wait_loop::Request;
use super::Node;

/// Commands a [`Submitter`] keeps in flight at most, unless told otherwise
/// ([`Submitter::with_in_flight_max`]).
pub const SUBMITTER_IN_FLIGHT_MAX_DEFAULT: usize = 1024;

/// Keeps many commands in flight from one thread: [`Submitter::submit`] never blocks,
/// and every submitted command's outcome arrives as a [`Completion`] on this submitter's
/// one queue, which the caller drains in bulk ([`Submitter::try_drain`],
/// [`Submitter::drain_timeout`]). The node wakes a parked submitter once per batch of
/// applied entries, not once per command.
///
/// Works on any node: a follower forwards to the leader, as [`Node::propose`] does.
/// Outcomes are as for [`super::Proposal::wait`]: the state machine's response, or
/// [`NodeError::Dropped`], [`NodeError::NoLeader`], [`NodeError::Rejected`] (did not take
/// effect; submit again), [`NodeError::ResponseLost`], [`NodeError::Stopped`].
///
/// Invariants: every ticket [`Submitter::submit`] returned is answered exactly once;
/// `in_flight()` counts the tickets not yet drained and never exceeds
/// `in_flight_max()`. Completions carry their ticket; they come in apply order, which
/// is submission order for commands that took effect, while a refused command may be
/// answered before an earlier one. There is no per-command timeout: a command stays in
/// flight while the cluster has no leader, as a [`super::Proposal`] does.
///
/// Not `Clone`: each thread that submits takes its own ([`Node::submitter`]).
///
/// ```
/// use std::time::Duration;
/// use raft_core::node::{ChannelNetwork, KvCommand, KvStore, Node, NodeConfig};
/// use raft_core::MemLog;
///
/// let net = ChannelNetwork::new();
/// let nodes: Vec<Node<KvStore<String, u32>>> = (1..=3)
///     .map(|id| {
///         Node::builder(NodeConfig::new(id, [1, 2, 3]))
///             .log(MemLog::new())
///             .transport(net.transport(id))
///             .state_machine(KvStore::new())
///             .start()
///             .unwrap()
///     })
///     .collect();
/// nodes[0].wait_for_leader(Duration::from_secs(10)).unwrap();
/// let mut submitter = nodes[0].submitter();
/// let put = |i: u32| KvCommand::Put { key: format!("k{i}"), value: i }.encode();
/// let mut tickets = Vec::new();
/// for i in 0..100 {
///     tickets.push(submitter.submit(put(i)).unwrap());
/// }
/// let mut done = Vec::new();
/// while submitter.in_flight() > 0 {
///     submitter.drain_timeout(&mut done, Duration::from_secs(10));
/// }
/// assert_eq!(done.len(), 100);
/// // A retry loop would submit again what came back Dropped or NoLeader.
/// assert!(done.iter().all(|(_, result)| result.is_ok()));
/// for n in &nodes { n.stop(); }
/// ```
pub struct Submitter<S: StateMachine> {
    node: Node<S>,
    queue: Arc<CompletionQueue<S::Response>>,
    /// Tickets handed out and not yet drained (<= `in_flight_max`).
    in_flight: usize,
    in_flight_max: usize,
}

impl<S: StateMachine> std::fmt::Debug for Submitter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("node", &self.node.id())
            .field("in_flight", &self.in_flight)
            .field("in_flight_max", &self.in_flight_max)
            .finish()
    }
}

impl<S: StateMachine> Submitter<S> {
    pub(crate) fn new(node: Node<S>) -> Self {
        Self {
            node,
            queue: Arc::new(CompletionQueue::new()),
            in_flight: 0,
            in_flight_max: SUBMITTER_IN_FLIGHT_MAX_DEFAULT,
        }
    }

    /// The same submitter, keeping at most `in_flight_max` commands in flight (at least 1).
    pub fn with_in_flight_max(mut self, in_flight_max: usize) -> Self {
        self.in_flight_max = in_flight_max.max(1);
        self
    }

    /// Commands submitted whose completion was not drained yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The most commands this submitter keeps in flight.
    pub fn in_flight_max(&self) -> usize {
        self.in_flight_max
    }

    /// Submits a command without blocking; its outcome comes later as a completion with
    /// the returned ticket.
    ///
    /// # Errors
    /// [`NodeError::Busy`] when `in_flight_max` commands are in flight or the node's
    /// queue is full (drain, then submit again), [`NodeError::Stopped`]. The command was
    /// not submitted and no completion will come for it.
    pub fn submit(&mut self, command: impl Into<Bytes>) -> Result<Ticket, NodeError> {
        self.check_room(1)?;
        let request_id = self.node.shared.request_id();
        let ticket = Ticket(request_id);
        self.register(ticket);
        let request = Request::Propose {
            request_id,
            command: command.into(),
        };
        match self.node.requests.try_send(request) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(ticket)
            }
            Err(e) => {
                if !self.unregister(ticket) {
                    // A stopping node answered it already: count it, it will be drained.
                    self.in_flight += 1;
                    return Ok(ticket);
                }
                Err(match e {
                    TrySendError::Full(_) => NodeError::Busy,
                    TrySendError::Disconnected(_) => NodeError::Stopped,
                })
            }
        }
    }

    /// Submits several commands in order with one request to the node; returns their
    /// tickets, in the same order.
    ///
    /// # Errors
    /// As [`Submitter::submit`], for the whole batch: either all were submitted or none
    /// (`Busy` when they do not all fit under `in_flight_max`).
    pub fn submit_batch<C: Into<Bytes>>(
        &mut self,
        commands: Vec<C>,
    ) -> Result<Vec<Ticket>, NodeError> {
        self.check_room(commands.len())?;
        let mut tickets = Vec::with_capacity(commands.len());
        let mut batch = Vec::with_capacity(commands.len());
        for command in commands {
            let ticket = Ticket(self.node.shared.request_id());
            tickets.push(ticket);
            batch.push((ticket.0, command.into()));
        }
        {
            let mut waiters = self.node.shared.waiters.lock();
            for &ticket in &tickets {
                let waiter = QueueWaiter::new(self.queue.clone(), ticket);
                waiters.insert(ticket.0, ProposalWaiter::Queue(waiter));
            }
        }
        match self.node.send_batch(batch) {
            Ok(()) => {
                self.in_flight += tickets.len();
                Ok(tickets)
            }
            Err(e) => {
                let cancelled: Vec<Ticket> = tickets
                    .iter()
                    .copied()
                    .filter(|&t| self.unregister(t))
                    .collect();
                if cancelled.len() == tickets.len() {
                    return Err(e);
                }
                // A stopping node answered some already: answer the rest the same way,
                // so the batch is in flight as a whole and each ticket answered once.
                self.queue
                    .push_all(cancelled.into_iter().map(|t| (t, Err(NodeError::Stopped))));
                self.in_flight += tickets.len();
                Ok(tickets)
            }
        }
    }

    /// Moves every completion that arrived to the end of `out`, without waiting.
    /// Returns how many.
    pub fn try_drain(&mut self, out: &mut Vec<Completion<S::Response>>) -> usize {
        self.take(out, None)
    }

    /// Waits up to `timeout` for at least one completion (not at all if some are already
    /// there), then moves every one that arrived to the end of `out`. Returns how many
    /// (0: none came in time).
    pub fn drain_timeout(
        &mut self,
        out: &mut Vec<Completion<S::Response>>,
        timeout: Duration,
    ) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        self.take(out, Some(deadline.unwrap_or(far)))
    }

    /// As [`Submitter::drain_timeout`], waiting until `deadline` (a frame's end).
    pub fn drain_until(
        &mut self,
        out: &mut Vec<Completion<S::Response>>,
        deadline: Instant,
    ) -> usize {
        self.take(out, Some(deadline))
    }

    fn take(&mut self, out: &mut Vec<Completion<S::Response>>, deadline: Option<Instant>) -> usize {
        // Nothing in flight: nothing can come, so do not wait.
        let deadline = deadline.filter(|_| self.in_flight > 0);
        let n = self.queue.take_all(out, deadline);
        assert!(
            n <= self.in_flight,
            "a submitter got {n} completions for {} tickets in flight",
            self.in_flight
        );
        self.in_flight -= n;
        n
    }

    fn check_room(&self, commands: usize) -> Result<(), NodeError> {
        if self.node.shared.stopped.load(Ordering::Acquire) {
            return Err(NodeError::Stopped);
        }
        if self.in_flight.saturating_add(commands) > self.in_flight_max {
            return Err(NodeError::Busy);
        }
        Ok(())
    }

    fn register(&self, ticket: Ticket) {
        let waiter = QueueWaiter::new(self.queue.clone(), ticket);
        self.node
            .shared
            .waiters
            .lock()
            .insert(ticket.0, ProposalWaiter::Queue(waiter));
    }

    /// Takes back the waiter of a command that was not submitted, unanswered. `false`
    /// if it was gone: a stopping node took it and answers it `Stopped`.
    fn unregister(&self, ticket: Ticket) -> bool {
        let waiter = self.node.shared.waiters.lock().remove(&ticket.0);
        match waiter {
            Some(ProposalWaiter::Queue(w)) => {
                w.cancel();
                true
            }
            Some(other) => {
                // Not ours (cannot happen: request ids are unique); answer it as it was.
                other.send(Err(NodeError::Stopped));
                true
            }
            None => false,
        }
    }
}
