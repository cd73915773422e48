//! State shared between a node's handle, its WaitLoop and its apply thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::NodeError;
use super::events::EventBus;
use super::metrics::NodeMetrics;
use super::reply::{QueueWaiter, ReplySender};
use super::state_machine::StateMachine;
use super::status::{ClusterState, NodeStatus};
use crate::types::{LogIndex, NodeId};

/// A proposer waiting for its command's response: one blocked on its own slot
/// ([`super::Proposal`]), or a submitter's command whose outcome goes to its queue.
pub(crate) enum ProposalWaiter<R> {
    Slot(ReplySender<R>),
    Queue(QueueWaiter<R>),
}

impl<R> ProposalWaiter<R> {
    /// Answers the waiter now.
    pub(crate) fn send(self, value: Result<R, NodeError>) {
        match self {
            Self::Slot(s) => s.send(value),
            Self::Queue(q) => {
                let (queue, ticket) = q.into_parts();
                queue.push_all([(ticket, value)]);
            }
        }
    }
}

pub(crate) struct Shared<S: StateMachine> {
    pub(crate) id: NodeId,
    /// Random per start: tags this run's proposals (see `envelope`).
    pub(crate) origin: u64,
    pub(crate) state_machine: Mutex<S>,
    /// Highest index applied to `state_machine`; readers wait on `applied_changed`.
    pub(crate) applied: Mutex<LogIndex>,
    pub(crate) applied_changed: Condvar,
    pub(crate) waiters: Mutex<HashMap<u64, ProposalWaiter<S::Response>>>,
    pub(crate) next_request_id: AtomicU64,
    pub(crate) status: Mutex<NodeStatus>,
    pub(crate) cluster: Mutex<ClusterState>,
    pub(crate) cluster_changed: Condvar,
    pub(crate) events: EventBus,
    pub(crate) stopped: AtomicBool,
    /// The node's metric handles (registered at start, used by the WaitLoop and the
    /// apply thread).
    pub(crate) metrics: NodeMetrics,
}

impl<S: StateMachine> Shared<S> {
    pub(crate) fn new(id: NodeId, origin: u64, sm: S, status: NodeStatus) -> Self {
        Self {
            id,
            origin,
            state_machine: Mutex::new(sm),
            applied: Mutex::new(0),
            applied_changed: Condvar::new(),
            waiters: Mutex::new(HashMap::new()),
            next_request_id: AtomicU64::new(1),
            status: Mutex::new(status),
            cluster: Mutex::new(ClusterState::Searching { attempt: 1 }),
            cluster_changed: Condvar::new(),
            events: EventBus::default(),
            stopped: AtomicBool::new(false),
            metrics: NodeMetrics::new(id),
        }
    }

    pub(crate) fn request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn set_applied(&self, index: LogIndex) {
        let mut applied = self.applied.lock();
        if index > *applied {
            *applied = index;
            self.applied_changed.notify_all();
        }
    }

    /// Waits until `index` is applied.
    pub(crate) fn wait_applied(&self, index: LogIndex, deadline: Instant) -> Result<(), NodeError> {
        let mut applied = self.applied.lock();
        while *applied < index {
            if self.stopped.load(Ordering::Acquire) {
                return Err(NodeError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NodeError::Timeout(Duration::ZERO));
            }
            // Wake at least every 50 ms to notice a stop.
            let wait = (deadline - now).min(Duration::from_millis(50));
            self.applied_changed.wait_for(&mut applied, wait);
        }
        Ok(())
    }

    pub(crate) fn set_cluster(&self, state: ClusterState) {
        *self.cluster.lock() = state;
        self.status.lock().cluster = state;
        self.cluster_changed.notify_all();
    }

    /// Fails every waiting proposer (at stop or on a fatal error).
    pub(crate) fn fail_all_waiters(&self, make: impl Fn() -> NodeError) {
        let waiters: Vec<_> = self.waiters.lock().drain().map(|(_, w)| w).collect();
        for w in waiters {
            w.send(Err(make()));
        }
    }
}

/// Forgets a proposer that stopped waiting; lets a [`super::Proposal`] clean up without
/// knowing the state machine's type.
pub(crate) trait ForgetWaiter: Send + Sync {
    fn forget(&self, request_id: u64);
}

impl<S: StateMachine> ForgetWaiter for Shared<S> {
    fn forget(&self, request_id: u64) {
        self.waiters.lock().remove(&request_id);
    }
}
