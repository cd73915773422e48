//! The receive path after the socket: open the datagram ([`crate::codec::Opener`]),
//! check the sender is a known peer and the message is for us, count and log what is
//! dropped. The processor thread runs one [`Processor`]; the fuzz target drives one
//! directly.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};

use crate::codec::{Codec, Opener, Rejected, Unsealed};
use crate::fragment::{Reassembler, ReassemblyLimits};
use crate::peers::PeerDirectory;
use crate::replay::Replay;
use crate::stats::{DropKind, NetStats};
use crate::wire::{self, FragmentRequest};

/// Work for the sender thread that the receive path produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Ask `request.to` for the fragments this node misses.
    Request(FragmentRequest),
    /// Peer `from` asked this node to send fragments again.
    Resend {
        /// The peer that asked (and gets them).
        from: NodeId,
        /// What it asked for.
        request: FragmentRequest,
    },
}

/// A warning of one kind is logged at most this often; the rest are counted.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Addresses remembered for the once-per-peer version warning.
const VERSION_WARNED_MAX: usize = 1024;

/// Opens datagrams and decides whether they reach the node.
#[derive(Debug)]
pub struct Processor {
    node_id: NodeId,
    opener: Opener,
    directory: PeerDirectory,
    stats: Arc<NetStats>,
    /// Addresses already told about (once per peer) for a version mismatch.
    version_warned: HashSet<SocketAddr>,
    /// Per kind: when the last warning was logged, and drops since.
    warned: [Option<(Instant, u64)>; DropKind::ALL.len()],
    reassembler: Reassembler,
    /// Ranges one fragment request may carry.
    request_ranges_max: usize,
    control: Vec<Control>,
}

impl Processor {
    /// A processor for node `node_id`, with the default reassembly limits but the
    /// codec's `message_bytes_max` (see [`Processor::with_limits`]).
    pub fn new(
        node_id: NodeId,
        codec: &Codec,
        directory: PeerDirectory,
        stats: Arc<NetStats>,
    ) -> Processor {
        Processor {
            node_id,
            opener: codec.opener(),
            directory,
            stats,
            version_warned: HashSet::new(),
            warned: [None; DropKind::ALL.len()],
            reassembler: Reassembler::new(ReassemblyLimits {
                message_bytes_max: codec.message_bytes_max(),
                ..ReassemblyLimits::of(&crate::NetConfig::default())
            }),
            request_ranges_max: codec.request_ranges_max(),
            control: Vec::new(),
        }
    }

    /// The same processor with other reassembly limits (drops anything in reassembly).
    pub fn with_limits(mut self, limits: ReassemblyLimits) -> Processor {
        self.reassembler = Reassembler::new(limits);
        self
    }

    /// Bytes reserved by incomplete fragmented messages.
    pub fn reassembly_bytes(&self) -> usize {
        self.reassembler.reserved_bytes()
    }

    /// Fragmented messages not yet whole.
    pub fn incomplete_messages(&self) -> usize {
        self.reassembler.incomplete()
    }

    /// When [`Processor::poll`] next has work (a request to send, a message to expire),
    /// if any fragmented message is incomplete.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.reassembler.next_deadline()
    }

    /// Drops incomplete messages past their timeout and queues requests for missing
    /// fragments (see [`Processor::take_control`]).
    pub fn poll(&mut self, now: Instant) {
        let me = self.node_id;
        for a in self.reassembler.expire(now) {
            self.stats.record_drop(a.kind);
            log::debug!(
                "n{me}: dropped message {} from n{}: {} of {} fragments arrived before the reassembly timeout",
                a.message_id,
                a.sender,
                a.received,
                a.count
            );
        }
        for request in self.reassembler.requests_due(now, self.request_ranges_max) {
            log::trace!(
                "n{me}: asking n{} for {} runs of fragments of message {}",
                request.to,
                request.ranges.len(),
                request.message_id
            );
            self.control.push(Control::Request(request));
        }
        self.stats
            .set_reassembly_bytes(self.reassembler.reserved_bytes());
    }

    /// Requests to send and resends asked for, queued since the last call.
    pub fn take_control(&mut self) -> Vec<Control> {
        std::mem::take(&mut self.control)
    }

    /// Runs every check on one datagram from `from`; returns the message if it should be
    /// delivered, else counts (and maybe logs) why not. Never panics, whatever the bytes.
    /// Fragments are kept until their message is whole, which this returns with the
    /// last one; requests for fragments from peers are queued for
    /// [`Processor::take_control`].
    pub fn process(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) -> Option<Message> {
        let unsealed = match self.opener.open_any(datagram, now) {
            Ok(unsealed) => unsealed,
            Err(rejected) => {
                self.drop_datagram(rejected, from, now);
                return None;
            }
        };
        let (header, msg, new_epoch) = match unsealed {
            Unsealed::Message(opened) => (opened.header, opened.message, opened.new_epoch),
            Unsealed::Fragment {
                header,
                new_epoch,
                compressed,
                fragment,
                piece,
            } => {
                let known = self.directory.contains(header.sender);
                let inserted = if known {
                    self.reassembler.insert(
                        header.sender,
                        header.epoch,
                        compressed,
                        fragment,
                        piece,
                        now,
                    )
                } else {
                    Err(DropKind::UnknownPeer)
                };
                for _ in 0..self.reassembler.take_evicted() {
                    self.stats.record_drop(DropKind::ReassemblyFull);
                }
                self.stats
                    .set_reassembly_bytes(self.reassembler.reserved_bytes());
                let assembled = match inserted {
                    Ok(Some(assembled)) => assembled,
                    Ok(None) => return None,
                    Err(kind) => {
                        if kind != DropKind::UnknownPeer {
                            log::debug!(
                                "n{}: dropped fragment {}/{} of message {} ({} B) from n{}: {kind}",
                                self.node_id,
                                fragment.index,
                                fragment.count,
                                fragment.message_id,
                                fragment.total_bytes,
                                header.sender
                            );
                        }
                        let rejected = Rejected {
                            sender: Some(header.sender),
                            ..rejected(kind)
                        };
                        self.drop_datagram(rejected, from, now);
                        return None;
                    }
                };
                self.stats.record_reassembled();
                match self
                    .opener
                    .decode_assembled(&header, assembled.compressed, &assembled.body)
                {
                    Ok(msg) => (header, msg, new_epoch),
                    Err(rejected) => {
                        self.drop_datagram(rejected, from, now);
                        return None;
                    }
                }
            }
            Unsealed::Request { header, request } => {
                let kind = if !self.directory.contains(header.sender) {
                    DropKind::UnknownPeer
                } else if request.to != self.node_id {
                    DropKind::WrongRecipient
                } else {
                    self.stats.record_fragment_request_received();
                    self.control.push(Control::Resend {
                        from: header.sender,
                        request,
                    });
                    return None;
                };
                let rejected = Rejected {
                    sender: Some(header.sender),
                    ..rejected(kind)
                };
                self.drop_datagram(rejected, from, now);
                return None;
            }
        };
        if !self.directory.contains(msg.from) {
            let rejected = Rejected {
                sender: Some(msg.from),
                ..rejected(DropKind::UnknownPeer)
            };
            self.drop_datagram(rejected, from, now);
            return None;
        }
        if msg.to != self.node_id {
            let rejected = Rejected {
                sender: Some(msg.from),
                ..rejected(DropKind::WrongRecipient)
            };
            self.drop_datagram(rejected, from, now);
            return None;
        }
        if new_epoch {
            log::info!(
                "n{}: n{} restarted (new epoch {}); its replay window starts afresh",
                self.node_id,
                msg.from,
                header.epoch
            );
        }
        log::trace!(
            "n{}: received {} from n{} at term {}",
            self.node_id,
            msg.body.kind(),
            msg.from,
            msg.term
        );
        Some(msg)
    }

    fn drop_datagram(&mut self, r: Rejected, from: SocketAddr, now: Instant) {
        self.stats.record_drop(r.kind);
        let me = self.node_id;
        let claims = r
            .sender
            .map_or(String::new(), |id| format!(" claiming n{id}"));
        if r.kind == DropKind::WrongVersion {
            // Once per address, naming both versions: the operator's cue to upgrade.
            if self.version_warned.len() < VERSION_WARNED_MAX && self.version_warned.insert(from) {
                log::warn!(
                    "n{me}: dropping datagrams from {from}: it speaks raft-net protocol version {}, \
                     this node speaks version {} (accepts {:?}); upgrade the older node \
                     (logged once per address, counted as wrong_version)",
                    r.version.unwrap_or(0),
                    wire::PROTOCOL_VERSION,
                    wire::SUPPORTED_VERSIONS,
                );
            }
            return;
        }
        let advice = match r.kind {
            DropKind::BadMac => "failing authentication: that node has another cluster password, or traffic is forged",
            DropKind::SecurityMismatch if self.opener_is_encrypted() => {
                "in plaintext: this cluster requires encryption; does that node lack the password?"
            }
            DropKind::SecurityMismatch => {
                "encrypted: this node has no cluster password; set the same password on every node"
            }
            DropKind::WrongCluster => "from another cluster (cluster name differs)",
            DropKind::UnknownPeer => "from a node not in the peer directory",
            DropKind::WrongRecipient => "addressed to another node id",
            DropKind::Replayed if r.replay == Some(Replay::OlderEpoch) => {
                "replayed from an earlier run of that node (or its clock went back: accepted after 10 s of silence)"
            }
            DropKind::WrongMagic | DropKind::Truncated | DropKind::Oversized | DropKind::DecodeError => {
                "that are not valid raft-net datagrams"
            }
            _ => {
                log::debug!("n{me}: dropped datagram from {from}{claims}: {}", r.kind);
                return;
            }
        };
        let slot = &mut self.warned[DropKind::ALL.iter().position(|&k| k == r.kind).unwrap_or(0)];
        match slot {
            Some((last, suppressed)) if now.saturating_duration_since(*last) < LOG_INTERVAL => {
                *suppressed += 1;
            }
            _ => {
                let earlier = slot.map_or(0, |(_, n)| n);
                let also = if earlier > 0 {
                    format!(" (and {earlier} more since the last such line)")
                } else {
                    String::new()
                };
                log::warn!(
                    "n{me}: dropped datagram from {from}{claims} {advice}{also}; counted as {}, logged at most every {}s",
                    r.kind,
                    LOG_INTERVAL.as_secs()
                );
                *slot = Some((now, 0));
            }
        }
    }

    fn opener_is_encrypted(&self) -> bool {
        self.opener.is_encrypted()
    }
}

fn rejected(kind: DropKind) -> Rejected {
    Rejected {
        kind,
        version: None,
        sender: None,
        cluster_id: None,
        replay: None,
    }
}
