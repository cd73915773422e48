//! The UDP transport's metrics through the [`metrics`] facade: datagrams and bytes in
//! and out, drops by reason (a wrong password shows as `reason="bad_mac"`), fragments
//! and reassembly.
//!
//! They are [`crate::NetStats`]'s counters, published (not counted again) each time the node's
//! WaitLoop publishes its status ([`raft_core::Transport::publish_metrics`], every tick).
//! The handles are registered when the transport is bound ([`crate::UdpTransport::bind`]),
//! with the recorder in force on that thread; with none installed, publishing costs a
//! branch per metric. Every metric carries the label
//! [`raft_core::node::metrics::LABEL_NODE`]; docs/operations.md lists them all.
//!
//! ```
//! use raft_net::metrics::{NetMetrics, DROPPED_TOTAL};
//! use raft_net::{DropKind, NetStats};
//! use metrics_util::debugging::DebuggingRecorder;
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let net = metrics::with_local_recorder(&recorder, || NetMetrics::new(7));
//! let stats = NetStats::default();
//! stats.record_drop(DropKind::BadMac);
//! net.publish(&stats.snapshot());
//! let bad_mac = snapshotter.snapshot().into_vec().into_iter().any(|(key, ..)| {
//!     key.key().name() == DROPPED_TOTAL
//!         && key.key().labels().any(|l| l.key() == "reason" && l.value() == "bad_mac")
//! });
//! assert!(bad_mac);
//! ```

use metrics::{counter, gauge, Counter, Gauge};
use raft_core::node::metrics::LABEL_NODE;
use raft_core::NodeId;

use crate::stats::{DropKind, NetStatsSnapshot};

/// Label of [`DROPPED_TOTAL`]: the [`DropKind`] name (`bad_mac`, `replayed`,
/// `send_queue_full`, `reassembly_timeout`, ...).
pub const LABEL_REASON: &str = "reason";

/// Counter: datagrams handed to the socket.
pub const DATAGRAMS_SENT_TOTAL: &str = "raft_net_datagrams_sent_total";
/// Counter: bytes handed to the socket.
pub const SENT_BYTES_TOTAL: &str = "raft_net_sent_bytes_total";
/// Counter: datagrams read from the socket, good or bad.
pub const DATAGRAMS_RECEIVED_TOTAL: &str = "raft_net_datagrams_received_total";
/// Counter: bytes read from the socket, good or bad.
pub const RECEIVED_BYTES_TOTAL: &str = "raft_net_received_bytes_total";
/// Counter: messages delivered into the node's inbox.
pub const MESSAGES_DELIVERED_TOTAL: &str = "raft_net_messages_delivered_total";
/// Counter, by [`LABEL_REASON`]: datagrams (receive side) or messages (send side)
/// dropped. Authentication failures (wrong password, tampering) are `bad_mac`.
pub const DROPPED_TOTAL: &str = "raft_net_dropped_total";
/// Counter: messages too large for one datagram, sent as fragments.
pub const FRAGMENTED_MESSAGES_SENT_TOTAL: &str = "raft_net_fragmented_messages_sent_total";
/// Counter: fragment datagrams sent (first sending).
pub const FRAGMENTS_SENT_TOTAL: &str = "raft_net_fragments_sent_total";
/// Counter: fragment datagrams sent again on a peer's request.
pub const FRAGMENTS_RESENT_TOTAL: &str = "raft_net_fragments_resent_total";
/// Counter: fragmented appends not sent again because the peer was still assembling
/// the same entries.
pub const REPEATS_SUPPRESSED_TOTAL: &str = "raft_net_repeats_suppressed_total";
/// Counter: requests for missing fragments sent to peers.
pub const FRAGMENT_REQUESTS_SENT_TOTAL: &str = "raft_net_fragment_requests_sent_total";
/// Counter: requests for missing fragments received from peers.
pub const FRAGMENT_REQUESTS_RECEIVED_TOTAL: &str = "raft_net_fragment_requests_received_total";
/// Counter: messages assembled from fragments.
pub const MESSAGES_REASSEMBLED_TOTAL: &str = "raft_net_messages_reassembled_total";
/// Gauge: bytes reserved by incomplete messages now.
pub const REASSEMBLY_BYTES: &str = "raft_net_reassembly_bytes";
/// Gauge: the most [`REASSEMBLY_BYTES`] has been.
pub const REASSEMBLY_BYTES_PEAK: &str = "raft_net_reassembly_bytes_peak";

/// The handles of one transport's metrics. Invariant: every handle carries
/// `node = <id>`, and `dropped` has one handle per [`DropKind::ALL`] entry, in order.
#[derive(Debug)]
pub struct NetMetrics {
    datagrams_sent: Counter,
    sent_bytes: Counter,
    datagrams_received: Counter,
    received_bytes: Counter,
    messages_delivered: Counter,
    dropped: Vec<Counter>,
    fragmented_messages_sent: Counter,
    fragments_sent: Counter,
    fragments_resent: Counter,
    repeats_suppressed: Counter,
    fragment_requests_sent: Counter,
    fragment_requests_received: Counter,
    messages_reassembled: Counter,
    reassembly_bytes: Gauge,
    reassembly_bytes_peak: Gauge,
}

impl NetMetrics {
    /// Registers node `id`'s transport metrics with the recorder in force on this thread.
    pub fn new(id: NodeId) -> Self {
        let node = id.to_string();
        let n = || node.clone();
        Self {
            datagrams_sent: counter!(DATAGRAMS_SENT_TOTAL, LABEL_NODE => n()),
            sent_bytes: counter!(SENT_BYTES_TOTAL, LABEL_NODE => n()),
            datagrams_received: counter!(DATAGRAMS_RECEIVED_TOTAL, LABEL_NODE => n()),
            received_bytes: counter!(RECEIVED_BYTES_TOTAL, LABEL_NODE => n()),
            messages_delivered: counter!(MESSAGES_DELIVERED_TOTAL, LABEL_NODE => n()),
            dropped: DropKind::ALL
                .iter()
                .map(|k| counter!(DROPPED_TOTAL, LABEL_NODE => n(), LABEL_REASON => k.name()))
                .collect(),
            fragmented_messages_sent: counter!(FRAGMENTED_MESSAGES_SENT_TOTAL, LABEL_NODE => n()),
            fragments_sent: counter!(FRAGMENTS_SENT_TOTAL, LABEL_NODE => n()),
            fragments_resent: counter!(FRAGMENTS_RESENT_TOTAL, LABEL_NODE => n()),
            repeats_suppressed: counter!(REPEATS_SUPPRESSED_TOTAL, LABEL_NODE => n()),
            fragment_requests_sent: counter!(FRAGMENT_REQUESTS_SENT_TOTAL, LABEL_NODE => n()),
            fragment_requests_received: counter!(FRAGMENT_REQUESTS_RECEIVED_TOTAL, LABEL_NODE => n()),
            messages_reassembled: counter!(MESSAGES_REASSEMBLED_TOTAL, LABEL_NODE => n()),
            reassembly_bytes: gauge!(REASSEMBLY_BYTES, LABEL_NODE => n()),
            reassembly_bytes_peak: gauge!(REASSEMBLY_BYTES_PEAK, LABEL_NODE => n()),
        }
    }

    /// Publishes `s` (counters only ever grow, so publishing an older copy late is
    /// harmless: a counter keeps the largest value it was given).
    pub fn publish(&self, s: &NetStatsSnapshot) {
        self.datagrams_sent.absolute(s.sent_datagrams);
        self.sent_bytes.absolute(s.sent_bytes);
        self.datagrams_received.absolute(s.received_datagrams);
        self.received_bytes.absolute(s.received_bytes);
        self.messages_delivered.absolute(s.delivered_messages);
        for (kind, c) in DropKind::ALL.iter().zip(&self.dropped) {
            c.absolute(s.dropped(*kind));
        }
        self.fragmented_messages_sent
            .absolute(s.fragmented_messages_sent);
        self.fragments_sent.absolute(s.fragments_sent);
        self.fragments_resent.absolute(s.fragments_resent);
        self.repeats_suppressed.absolute(s.repeats_suppressed);
        self.fragment_requests_sent
            .absolute(s.fragment_requests_sent);
        self.fragment_requests_received
            .absolute(s.fragment_requests_received);
        self.messages_reassembled.absolute(s.messages_reassembled);
        self.reassembly_bytes.set(s.reassembly_bytes as f64);
        self.reassembly_bytes_peak
            .set(s.reassembly_bytes_peak as f64);
    }
}
