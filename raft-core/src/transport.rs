//! The `Transport` trait: how messages travel between nodes.

use crossbeam_channel::Sender;

use crate::message::Message;

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Binding or configuring the socket failed.
    #[error("transport i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The transport's configuration is unusable.
    #[error("transport config: {0}")]
    Config(String),
}

/// Counters a transport keeps; shown in the node's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered to the inbox.
    pub received: u64,
    /// Messages dropped for any reason (full queue, bad input, unknown peer, ...).
    pub dropped: u64,
}

/// Carries messages between nodes. Fire and forget: Raft tolerates loss, duplication
/// and reordering, so a transport may drop a message it cannot deliver (and count it).
pub trait Transport: Send + 'static {
    /// Starts delivering received messages into `inbox`. Called once by the runtime.
    ///
    /// # Errors
    /// The transport could not start (socket, threads).
    fn start(&mut self, inbox: Sender<Message>) -> Result<(), TransportError>;

    /// Sends messages to their `to` nodes. Must not block for long.
    fn send(&mut self, messages: Vec<Message>);

    /// The largest total of [`crate::Entry::size_bytes`] one append should carry so it
    /// travels as one unit of the network (a datagram); the runtime caps the protocol's
    /// batching limit ([`crate::Config::append_bytes_max`]) with it. An entry larger than
    /// this is still sent, alone, if it is within [`Transport::max_entry_bytes`].
    fn max_append_bytes(&self) -> u64;

    /// The largest command (bytes of [`crate::Entry::data`]) the transport can carry in
    /// one message, alone in an append; the runtime lowers
    /// [`crate::Config::entry_bytes_max`] to it. By default, what fits in one append of
    /// [`Transport::max_append_bytes`]; a transport that splits messages across
    /// datagrams returns more.
    fn max_entry_bytes(&self) -> u64 {
        self.max_append_bytes()
            .saturating_sub(crate::Entry::OVERHEAD_BYTES)
    }

    /// Counters so far.
    fn counters(&self) -> TransportCounters;

    /// Publishes the transport's own metrics through the `metrics` facade (see
    /// [`crate::node::metrics`]). The WaitLoop calls it with every status publication
    /// (each tick), so a transport that keeps counters can publish them here instead of
    /// counting twice. Must be cheap. By default nothing.
    fn publish_metrics(&self) {}

    /// The members of the configuration in force and their addresses (`host:port`, as
    /// given to `Node::add_learner`), this node excluded. The WaitLoop calls it when the
    /// node starts and whenever a new configuration comes into force, so a member added
    /// after this node started can be reached. A transport that addresses peers by id
    /// alone (like [`crate::node::ChannelTransport`]) ignores it, which is the default.
    /// Must not panic on a bad address: log it and keep the old one; must not block for
    /// long (the WaitLoop waits for it): resolve host names elsewhere, as raft-net's
    /// `UdpTransport` does on a thread of its own. Peers are only
    /// added or updated, never dropped, so a message to a removed member still goes out
    /// (and is ignored there) until the transport is restarted.
    fn update_peers(&mut self, peers: &[(crate::NodeId, String)]) {
        let _ = peers;
    }

    /// Stops and joins every thread of the transport. Idempotent.
    fn stop(&mut self);
}
