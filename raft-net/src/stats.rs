//! Counters of what the transport sent, received and dropped, by kind.
//!
//! Every datagram or message the transport gives up on is counted under exactly one
//! [`DropKind`], so an operator can tell a wrong password from a full queue at a glance.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raft_core::TransportCounters;

/// Why a datagram (receive side) or a message (send side) was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropKind {
    /// Receive: shorter than the fixed header, or than the encryption framing needs.
    Truncated,
    /// Receive: longer than the largest UDP payload (65,507 bytes).
    Oversized,
    /// Receive: does not start with the magic bytes: not ours at all.
    WrongMagic,
    /// Receive: a protocol version this node does not speak.
    WrongVersion,
    /// Receive: from another cluster (cluster id mismatch).
    WrongCluster,
    /// Receive: plaintext where this node requires encryption, or encrypted where this
    /// node has no password.
    SecurityMismatch,
    /// Receive: the HMAC did not verify: wrong password, tampering or forgery.
    BadMac,
    /// Receive: an authenticated datagram seen before, or older than the replay window.
    Replayed,
    /// Receive: header flags, decompression, padding or postcard decoding failed, or the
    /// body's sender disagrees with the header's.
    DecodeError,
    /// Receive: the sender id is not in the peer directory.
    UnknownPeer,
    /// Receive: addressed to another node id.
    WrongRecipient,
    /// Receive: the listener's queue to the processor was full.
    ReceiveQueueFull,
    /// Receive: the node's inbox was full or gone.
    InboxFull,
    /// Send: the queue to the sender thread was full.
    SendQueueFull,
    /// Send: the encoded message does not fit in one datagram of the configured maximum.
    TooLarge,
    /// Send: no address for the destination node in the peer directory.
    NoAddress,
    /// Send: the socket refused the datagram.
    SendFailed,
    /// Send: the transport is not running (before `start` or after `stop`).
    NotRunning,
    /// Receive: a fragment whose index, count or length is out of range or disagrees
    /// with the other fragments of its message, or whose message would be larger than
    /// `message_bytes_max`; or a fragment request that is malformed.
    FragmentInvalid,
    /// Receive: a fragment already received, or of a message already assembled.
    FragmentDuplicate,
    /// Receive: a fragment dropped, or an incomplete message evicted, because the
    /// reassembly memory of its peer or of all peers was full.
    ReassemblyFull,
    /// Receive: an incomplete message dropped after `reassembly_timeout_ms`.
    ReassemblyTimeout,
}

impl DropKind {
    /// Every kind, in counter order.
    pub const ALL: [DropKind; 22] = [
        DropKind::Truncated,
        DropKind::Oversized,
        DropKind::WrongMagic,
        DropKind::WrongVersion,
        DropKind::WrongCluster,
        DropKind::SecurityMismatch,
        DropKind::BadMac,
        DropKind::Replayed,
        DropKind::DecodeError,
        DropKind::UnknownPeer,
        DropKind::WrongRecipient,
        DropKind::ReceiveQueueFull,
        DropKind::InboxFull,
        DropKind::SendQueueFull,
        DropKind::TooLarge,
        DropKind::NoAddress,
        DropKind::SendFailed,
        DropKind::NotRunning,
        DropKind::FragmentInvalid,
        DropKind::FragmentDuplicate,
        DropKind::ReassemblyFull,
        DropKind::ReassemblyTimeout,
    ];

    const COUNT: usize = Self::ALL.len();

    /// A short snake_case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropKind::Truncated => "truncated",
            DropKind::Oversized => "oversized",
            DropKind::WrongMagic => "wrong_magic",
            DropKind::WrongVersion => "wrong_version",
            DropKind::WrongCluster => "wrong_cluster",
            DropKind::SecurityMismatch => "security_mismatch",
            DropKind::BadMac => "bad_mac",
            DropKind::Replayed => "replayed",
            DropKind::DecodeError => "decode_error",
            DropKind::UnknownPeer => "unknown_peer",
            DropKind::WrongRecipient => "wrong_recipient",
            DropKind::ReceiveQueueFull => "receive_queue_full",
            DropKind::InboxFull => "inbox_full",
            DropKind::SendQueueFull => "send_queue_full",
            DropKind::TooLarge => "too_large",
            DropKind::NoAddress => "no_address",
            DropKind::SendFailed => "send_failed",
            DropKind::NotRunning => "not_running",
            DropKind::FragmentInvalid => "fragment_invalid",
            DropKind::FragmentDuplicate => "fragment_duplicate",
            DropKind::ReassemblyFull => "reassembly_full",
            DropKind::ReassemblyTimeout => "reassembly_timeout",
        }
    }

    fn index(self) -> usize {
        // ALL is in declaration order, so the discriminant is the index.
        self as usize
    }
}

impl fmt::Display for DropKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Live counters, shared by the transport's threads. Cheap to update (relaxed atomics).
#[derive(Debug, Default)]
pub struct NetStats {
    sent_datagrams: AtomicU64,
    sent_bytes: AtomicU64,
    received_datagrams: AtomicU64,
    received_bytes: AtomicU64,
    delivered_messages: AtomicU64,
    dropped: [AtomicU64; DropKind::COUNT],
    fragmented_messages_sent: AtomicU64,
    fragments_sent: AtomicU64,
    fragments_resent: AtomicU64,
    repeats_suppressed: AtomicU64,
    fragment_requests_sent: AtomicU64,
    fragment_requests_received: AtomicU64,
    messages_reassembled: AtomicU64,
    reassembly_bytes: AtomicU64,
    reassembly_bytes_peak: AtomicU64,
}

impl NetStats {
    /// New zeroed counters behind an `Arc`, ready to share between threads.
    pub fn new_shared() -> Arc<NetStats> {
        Arc::new(NetStats::default())
    }

    /// Counts one datagram of `bytes` handed to the socket.
    pub fn record_sent(&self, bytes: usize) {
        self.sent_datagrams.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one datagram of `bytes` read from the socket.
    pub fn record_received(&self, bytes: usize) {
        self.received_datagrams.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one message delivered into the node's inbox.
    pub fn record_delivered(&self) {
        self.delivered_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one drop of `kind`.
    pub fn record_drop(&self, kind: DropKind) {
        self.dropped[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message sent as `fragments` fragment datagrams (also counted as sent
    /// datagrams, one by one).
    pub fn record_fragmented(&self, fragments: usize) {
        self.fragmented_messages_sent
            .fetch_add(1, Ordering::Relaxed);
        self.fragments_sent
            .fetch_add(fragments as u64, Ordering::Relaxed);
    }

    /// Counts `fragments` sent again on a peer's request.
    pub fn record_resent(&self, fragments: usize) {
        self.fragments_resent
            .fetch_add(fragments as u64, Ordering::Relaxed);
    }

    /// Counts one fragmented append not sent because the same entries went to the same
    /// peer moments ago and are still being assembled there.
    pub fn record_repeat_suppressed(&self) {
        self.repeats_suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request for missing fragments sent to a peer.
    pub fn record_fragment_request_sent(&self) {
        self.fragment_requests_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request for missing fragments received from a peer.
    pub fn record_fragment_request_received(&self) {
        self.fragment_requests_received
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message assembled from its fragments.
    pub fn record_reassembled(&self) {
        self.messages_reassembled.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the bytes now reserved by incomplete messages (and raises the peak).
    pub fn set_reassembly_bytes(&self, bytes: usize) {
        self.reassembly_bytes.store(bytes as u64, Ordering::Relaxed);
        self.reassembly_bytes_peak
            .fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// A consistent-enough copy of every counter (each read is atomic; the set is not).
    pub fn snapshot(&self) -> NetStatsSnapshot {
        let mut dropped = [0; DropKind::COUNT];
        for (slot, counter) in dropped.iter_mut().zip(&self.dropped) {
            *slot = counter.load(Ordering::Relaxed);
        }
        NetStatsSnapshot {
            sent_datagrams: self.sent_datagrams.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_datagrams: self.received_datagrams.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            delivered_messages: self.delivered_messages.load(Ordering::Relaxed),
            dropped,
            fragmented_messages_sent: self.fragmented_messages_sent.load(Ordering::Relaxed),
            fragments_sent: self.fragments_sent.load(Ordering::Relaxed),
            fragments_resent: self.fragments_resent.load(Ordering::Relaxed),
            repeats_suppressed: self.repeats_suppressed.load(Ordering::Relaxed),
            fragment_requests_sent: self.fragment_requests_sent.load(Ordering::Relaxed),
            fragment_requests_received: self.fragment_requests_received.load(Ordering::Relaxed),
            messages_reassembled: self.messages_reassembled.load(Ordering::Relaxed),
            reassembly_bytes: self.reassembly_bytes.load(Ordering::Relaxed),
            reassembly_bytes_peak: self.reassembly_bytes_peak.load(Ordering::Relaxed),
        }
    }
}

/// A copy of [`NetStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStatsSnapshot {
    /// Datagrams handed to the socket.
    pub sent_datagrams: u64,
    /// Bytes handed to the socket.
    pub sent_bytes: u64,
    /// Datagrams read from the socket, good or bad.
    pub received_datagrams: u64,
    /// Bytes read from the socket, good or bad.
    pub received_bytes: u64,
    /// Messages delivered into the node's inbox.
    pub delivered_messages: u64,
    dropped: [u64; DropKind::COUNT],
    /// Messages too large for one datagram, sent as fragments.
    pub fragmented_messages_sent: u64,
    /// Fragment datagrams sent (first sending; also in `sent_datagrams`).
    pub fragments_sent: u64,
    /// Fragment datagrams sent again on a peer's request.
    pub fragments_resent: u64,
    /// Fragmented appends not sent again because the peer was still assembling the
    /// same entries (see `crate::transport`).
    pub repeats_suppressed: u64,
    /// Requests for missing fragments sent to peers.
    pub fragment_requests_sent: u64,
    /// Requests for missing fragments received from peers.
    pub fragment_requests_received: u64,
    /// Messages assembled from fragments (also in `delivered_messages` once delivered).
    pub messages_reassembled: u64,
    /// Bytes reserved by incomplete messages now (bounded by
    /// `reassembly_bytes_total_max`).
    pub reassembly_bytes: u64,
    /// The most `reassembly_bytes` has been.
    pub reassembly_bytes_peak: u64,
}

impl NetStatsSnapshot {
    /// Drops of one kind.
    pub fn dropped(&self, kind: DropKind) -> u64 {
        self.dropped[kind.index()]
    }

    /// Drops of every kind added up.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Every kind with a non-zero count.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropKind, u64)> + '_ {
        DropKind::ALL
            .iter()
            .map(|&kind| (kind, self.dropped(kind)))
            .filter(|&(_, n)| n > 0)
    }

    /// The summary raft-core's runtime shows.
    pub fn counters(&self) -> TransportCounters {
        TransportCounters {
            sent: self.sent_datagrams,
            received: self.delivered_messages,
            dropped: self.dropped_total(),
        }
    }
}

impl fmt::Display for NetStatsSnapshot {
    /// One line: `sent 10 (1200 B) received 9 (1100 B) delivered 8 dropped 1 [bad_mac 1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} ({} B) received {} ({} B) delivered {} dropped {}",
            self.sent_datagrams,
            self.sent_bytes,
            self.received_datagrams,
            self.received_bytes,
            self.delivered_messages,
            self.dropped_total()
        )?;
        let mut first = true;
        for (kind, n) in self.nonzero_drops() {
            f.write_str(if first { " [" } else { ", " })?;
            write!(f, "{kind} {n}")?;
            first = false;
        }
        if !first {
            f.write_str("]")?;
        }
        if self.fragmented_messages_sent + self.messages_reassembled + self.reassembly_bytes_peak
            > 0
        {
            write!(
                f,
                " fragments: {} messages in {} sent, {} resent, {} repeats suppressed, {} requests sent, \
                 {} received, {} messages reassembled, reassembly {} B (peak {} B)",
                self.fragmented_messages_sent,
                self.fragments_sent,
                self.fragments_resent,
                self.repeats_suppressed,
                self.fragment_requests_sent,
                self.fragment_requests_received,
                self.messages_reassembled,
                self.reassembly_bytes,
                self.reassembly_bytes_peak
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, kind) in DropKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind}");
        }
    }

    #[test]
    fn snapshot_counts_by_kind_and_summarises() {
        let stats = NetStats::default();
        stats.record_sent(100);
        stats.record_received(90);
        stats.record_delivered();
        stats.record_drop(DropKind::BadMac);
        stats.record_drop(DropKind::BadMac);
        stats.record_drop(DropKind::Replayed);
        let snap = stats.snapshot();
        assert_eq!(snap.dropped(DropKind::BadMac), 2);
        assert_eq!(snap.dropped_total(), 3);
        assert_eq!(
            snap.counters(),
            TransportCounters {
                sent: 1,
                received: 1,
                dropped: 3
            }
        );
        assert_eq!(
            snap.to_string(),
            "sent 1 (100 B) received 1 (90 B) delivered 1 dropped 3 [bad_mac 2, replayed 1]"
        );
    }
}
