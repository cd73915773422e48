//! Events a node publishes: leadership changes and applied entries.

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::types::{LogIndex, Membership, NodeId, Term};

/// Something that happened on a node. Subscribe with [`crate::node::Node::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// This node became leader (the original's `StartUAS`): start leader-only work.
    BecameLeader {
        /// The term it leads.
        term: Term,
    },
    /// This node stopped being leader (the original's `StopUAS`): stop leader-only work.
    LostLeadership {
        /// The term it led.
        term: Term,
    },
    /// The leader this node knows of changed (`None`: an election is under way).
    LeaderChanged {
        /// The new leader.
        leader: Option<NodeId>,
        /// Its term.
        term: Term,
    },
    /// A command was committed and applied (the original's `OnNewCommitedEntry`).
    /// Entries replayed from storage at start come with `replayed: true`.
    Applied {
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// The command's bytes (without the runtime's envelope).
        command: Bytes,
        /// Whether it was applied while replaying storage at start.
        replayed: bool,
    },
    /// The configuration in force on this node changed (a configuration entry was
    /// appended, or one was overwritten by a new leader), or the one in force was
    /// committed. A configuration is in force from the moment it is appended (thesis
    /// §4.1), so expect each one twice: `committed: false`, then `committed: true`.
    MembershipChanged {
        /// Index of its configuration entry (0, or a snapshot's last index, for the
        /// configuration the node started with).
        index: LogIndex,
        /// The configuration.
        membership: Membership,
        /// Whether it is committed.
        committed: bool,
    },
    /// The node found its cluster: it heard from a leader or a majority.
    ClusterFound,
    /// The node did not find its cluster in its join attempts; it keeps listening.
    ClusterNotFound {
        /// Attempts made.
        attempts: u32,
    },
}

/// Most events queued per subscriber; a subscriber that falls further behind loses
/// events (counted) rather than growing memory without bound.
pub const EVENTS_QUEUED_MAX: usize = 65_536;

/// The set of subscribers.
#[derive(Default)]
pub(crate) struct EventBus {
    subscribers: Mutex<Vec<Sender<Event>>>,
    pub(crate) dropped: std::sync::atomic::AtomicU64,
}

impl EventBus {
    pub(crate) fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(EVENTS_QUEUED_MAX);
        self.subscribers.lock().push(tx);
        rx
    }

    pub(crate) fn has_subscribers(&self) -> bool {
        !self.subscribers.lock().is_empty()
    }

    pub(crate) fn publish(&self, event: Event) {
        let mut subs = self.subscribers.lock();
        subs.retain(|s| match s.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}
