//! An in-process [`Transport`] over crossbeam channels, so runtime tests (and programs
//! that run several nodes in one process) need no sockets. Links can be cut and healed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::message::Message;
use crate::transport::{Transport, TransportCounters, TransportError};
use crate::types::NodeId;

#[derive(Default)]
struct Hub {
    inboxes: BTreeMap<NodeId, Sender<Message>>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// A set of in-process nodes that can reach each other.
///
/// ```
/// use raft_core::node::ChannelNetwork;
/// let net = ChannelNetwork::new();
/// let t1 = net.transport(1);
/// let t2 = net.transport(2);
/// net.isolate(2); // cut every link of node 2
/// net.heal();
/// # drop((t1, t2));
/// ```
#[derive(Clone, Default)]
pub struct ChannelNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl ChannelNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for node `id` on this network.
    pub fn transport(&self, id: NodeId) -> ChannelTransport {
        ChannelTransport {
            id,
            hub: self.hub.clone(),
            counters: TransportCounters::default(),
            max_append_bytes: 1024 * 1024,
        }
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: NodeId) {
        let mut hub = self.hub.lock();
        let ids: Vec<NodeId> = hub.inboxes.keys().copied().collect();
        for other in ids {
            hub.cut.insert((id, other));
            hub.cut.insert((other, id));
        }
    }

    /// Cuts the directed link `from -> to`.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.hub.lock().cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.hub.lock().cut.clear();
    }
}

/// One node's end of a [`ChannelNetwork`].
pub struct ChannelTransport {
    id: NodeId,
    hub: Arc<Mutex<Hub>>,
    counters: TransportCounters,
    max_append_bytes: u64,
}

impl Transport for ChannelTransport {
    fn start(&mut self, inbox: Sender<Message>) -> Result<(), TransportError> {
        self.hub.lock().inboxes.insert(self.id, inbox);
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        let hub = self.hub.lock();
        for m in messages {
            let delivered = !hub.cut.contains(&(m.from, m.to))
                && hub.inboxes.get(&m.to).is_some_and(|tx| tx.send(m).is_ok());
            if delivered {
                self.counters.sent += 1;
            } else {
                self.counters.dropped += 1;
            }
        }
    }

    fn max_append_bytes(&self) -> u64 {
        self.max_append_bytes
    }

    /// Channels carry messages of any size.
    fn max_entry_bytes(&self) -> u64 {
        u64::MAX
    }

    fn counters(&self) -> TransportCounters {
        self.counters
    }

    fn stop(&mut self) {
        self.hub.lock().inboxes.remove(&self.id);
    }
}
