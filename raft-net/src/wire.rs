//! The datagram header and the size arithmetic of the wire format (version 2).
//!
//! docs/protocol.md describes the format byte by byte; this file is its source of truth.
//!
//! ```text
//! offset size field
//!  0     4    magic "RNET"                 } never change: every version starts so,
//!  4     1    protocol version (2)         } so a node can name a version it lacks
//!  5     1    flags: bit 0 lz4, bit 1 encrypted, others 0
//!  6     2    reserved, 0
//!  8     8    cluster id, u64 little-endian
//! 16     8    sender node id, u64 LE
//! 24     8    sender epoch (µs since the Unix epoch when its transport started), u64 LE
//! 32     8    sequence number within the epoch, from 1, u64 LE
//! 40          body: postcard Message, lz4 block (u32 LE length first) if flagged;
//!             encrypted: IV[16] ‖ AES-256-CBC(body, PKCS#7) ‖ HMAC-SHA256[32]
//! ```
//!
//! A message whose body does not fit one datagram travels as fragments (flag bit 2):
//! the body (postcard, then lz4 if flagged: compression covers the whole message) is
//! cut into `count` pieces and each piece is sent as its own datagram, with its own
//! header, sequence number, IV and MAC, its plaintext being a [`FragmentHeader`] and
//! the piece. A receiver missing pieces asks for them with a [`FragmentRequest`]
//! (flag bit 3), which the sender answers from a bounded cache of what it recently
//! fragmented.

use raft_core::NodeId;
use sha2::{Digest, Sha256};

/// The first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"RNET";
/// The protocol version this build sends.
///
/// 2: membership changes (issue 14) added the `Membership` entry kind and the
/// configuration in `InstallSnapshot`'s `SnapshotMeta`, which version-1 nodes cannot
/// decode. Mixed with them, a cluster would drop each other's messages as undecodable
/// (`bad_body`) with no hint why; as distinct versions they refuse each other at the
/// header, counted as `wrong_version` and logged with both versions.
pub const PROTOCOL_VERSION: u8 = 2;
/// The protocol versions this build accepts. Not 1: its `InstallSnapshot` has no
/// configuration, and its nodes cannot take part in membership changes.
pub const SUPPORTED_VERSIONS: &[u8] = &[2];

/// The fixed header's length.
pub const HEADER_BYTES: usize = 40;
/// Magic plus version: the part every version shares, and what a receiver needs to
/// name the version it got.
pub const PREFIX_BYTES: usize = 5;
/// Flag: the body is an lz4 block, preceded by its decompressed length (u32 LE).
pub const FLAG_COMPRESSED: u8 = 0b0000_0001;
/// Flag: the body is `IV ‖ ciphertext ‖ MAC`.
pub const FLAG_ENCRYPTED: u8 = 0b0000_0010;
/// Flag: the body is a [`FragmentHeader`] and one piece of a larger message body
/// ([`FLAG_COMPRESSED`] then says whether the whole assembled body is compressed).
pub const FLAG_FRAGMENT: u8 = 0b0000_0100;
/// Flag: the body is a [`FragmentRequest`].
pub const FLAG_FRAGMENT_REQUEST: u8 = 0b0000_1000;
/// Every flag this version knows; any other bit set makes the datagram invalid.
pub const KNOWN_FLAGS: u8 =
    FLAG_COMPRESSED | FLAG_ENCRYPTED | FLAG_FRAGMENT | FLAG_FRAGMENT_REQUEST;

/// Length of a [`FragmentHeader`].
pub const FRAGMENT_HEADER_BYTES: usize = 20;
/// A fragmented message may have at most one fragment per this many bytes of body
/// (rounded up): senders' pieces are far larger (at least 388 bytes with the smallest
/// datagrams), so a larger count is hostile and would only inflate bookkeeping.
pub const FRAGMENT_BYTES_MIN: usize = 256;
/// The fixed part of a [`FragmentRequest`].
pub const FRAGMENT_REQUEST_HEADER_BYTES: usize = 26;
/// One `(first, count)` range in a [`FragmentRequest`].
pub const FRAGMENT_RANGE_BYTES: usize = 8;

/// AES-CBC initialisation vector.
pub const IV_BYTES: usize = 16;
/// AES block; PKCS#7 pads the plaintext with 1 to 16 bytes.
pub const BLOCK_BYTES: usize = 16;
/// HMAC-SHA256 tag (not truncated).
pub const MAC_BYTES: usize = 32;
/// The most encryption adds to a body: IV, a full block of padding, MAC.
pub const ENCRYPTION_OVERHEAD_BYTES: usize = IV_BYTES + BLOCK_BYTES + MAC_BYTES;
/// The smallest encrypted datagram: header, IV, one block, MAC.
pub const MIN_ENCRYPTED_BYTES: usize = HEADER_BYTES + IV_BYTES + BLOCK_BYTES + MAC_BYTES;
/// The largest UDP payload over IPv4 (65,535 - 20 IP - 8 UDP header bytes).
pub const MAX_UDP_PAYLOAD_BYTES: usize = 65_507;

/// Postcard bytes of an Append message besides its entries, an upper bound: from, to,
/// term (varint u64, at most 10 bytes each), the variant tag (varint u32, at most 5),
/// prev_index, prev_term, the entries' count and commit (10 each) = 75, rounded up.
/// Each entry itself is bounded by [`raft_core::Entry::size_bytes`] (at most 31
/// bytes of framing against its 40-byte allowance).
pub const APPEND_OVERHEAD_BYTES: usize = 80;

/// The largest total of [`raft_core::Entry::size_bytes`] an Append may carry so that it
/// always fits in one datagram of `datagram_bytes_max`, whatever its numbers, with or
/// without encryption. Compression never makes a body longer (it is used only when it
/// is shorter), so it does not count.
///
/// ```
/// assert_eq!(raft_net::wire::max_append_bytes(1_400, true), 1_400 - 40 - 64 - 80);
/// ```
pub const fn max_append_bytes(datagram_bytes_max: usize, encrypted: bool) -> u64 {
    let crypto = if encrypted {
        ENCRYPTION_OVERHEAD_BYTES
    } else {
        0
    };
    datagram_bytes_max.saturating_sub(HEADER_BYTES + crypto + APPEND_OVERHEAD_BYTES) as u64
}

/// The largest piece of message body one fragment datagram of `datagram_bytes_max`
/// carries, with or without encryption.
///
/// ```
/// assert_eq!(raft_net::wire::fragment_piece_bytes_max(1_400, true), 1_400 - 40 - 64 - 20);
/// ```
pub const fn fragment_piece_bytes_max(datagram_bytes_max: usize, encrypted: bool) -> usize {
    let crypto = if encrypted {
        ENCRYPTION_OVERHEAD_BYTES
    } else {
        0
    };
    datagram_bytes_max.saturating_sub(HEADER_BYTES + crypto + FRAGMENT_HEADER_BYTES)
}

/// How many fragments a body of `total_bytes` needs with pieces of at most
/// `piece_bytes_max` (at least 1).
pub fn fragment_count(total_bytes: usize, piece_bytes_max: usize) -> usize {
    total_bytes.div_ceil(piece_bytes_max.max(1)).max(1)
}

/// The bytes of the body fragment `index` of `count` carries: the body is split into
/// `count` pieces whose lengths differ by at most one (`[i·total/count,
/// (i+1)·total/count)`), so every piece is non-empty when `total >= count` and no piece
/// is longer than `total.div_ceil(count)`. Sender and receiver both compute it, so a
/// fragment's length is fully determined by its header.
///
/// ```
/// use raft_net::wire::fragment_range;
/// assert_eq!(fragment_range(0, 3, 10), 0..3);
/// assert_eq!(fragment_range(2, 3, 10), 6..10);
/// ```
pub fn fragment_range(index: u32, count: u32, total_bytes: u32) -> std::ops::Range<usize> {
    let at = |i: u64| (i * u64::from(total_bytes) / u64::from(count.max(1))) as usize;
    at(u64::from(index))..at(u64::from(index) + 1)
}

/// What precedes the piece in a fragment datagram's (decrypted) body. Little-endian.
///
/// ```text
/// offset size field
///  0     8    message id: per sender epoch, from 1
///  8     4    fragment index, from 0
/// 12     4    fragment count (2 or more)
/// 16     4    total length of the assembled body
/// 20          the piece: fragment_range(index, count, total) of the body
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Which message of the sender's epoch this piece belongs to.
    pub message_id: u64,
    /// The piece's index, `0..count`.
    pub index: u32,
    /// How many pieces the message has.
    pub count: u32,
    /// The assembled body's length in bytes.
    pub total_bytes: u32,
}

impl FragmentHeader {
    /// Appends the 20 bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.message_id.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.total_bytes.to_le_bytes());
    }

    /// Splits a fragment body into its header and piece; `None` if too short.
    pub fn read(body: &[u8]) -> Option<(FragmentHeader, &[u8])> {
        let (head, piece) = body.split_first_chunk::<FRAGMENT_HEADER_BYTES>()?;
        let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
        Some((
            FragmentHeader {
                message_id: u64::from_le_bytes(head[..8].try_into().expect("8 bytes")),
                index: u32_at(8),
                count: u32_at(12),
                total_bytes: u32_at(16),
            },
            piece,
        ))
    }
}

/// A receiver's request for the fragments it misses of one message, sent to the
/// message's sender. Little-endian.
///
/// ```text
/// offset size field
///  0     8    the node asked (the message's sender)
///  8     8    the message's epoch (the asked node's epoch when it sent it)
/// 16     8    message id
/// 24     2    number of ranges n (at least 1)
/// 26     8n   n × (first fragment index u32, number of fragments u32)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentRequest {
    /// The node asked for the fragments.
    pub to: NodeId,
    /// The epoch the message was sent in.
    pub epoch: u64,
    /// The message.
    pub message_id: u64,
    /// Missing fragments as `(first index, count)` runs.
    pub ranges: Vec<(u32, u32)>,
}

impl FragmentRequest {
    /// How many ranges fit in a request body of at most `body_bytes_max`.
    pub const fn ranges_max(body_bytes_max: usize) -> usize {
        body_bytes_max.saturating_sub(FRAGMENT_REQUEST_HEADER_BYTES) / FRAGMENT_RANGE_BYTES
    }

    /// Appends the encoding to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.message_id.to_le_bytes());
        out.extend_from_slice(&(self.ranges.len() as u16).to_le_bytes());
        for (first, count) in &self.ranges {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
    }

    /// Decodes a request body; `None` unless it is exactly a header and 1 or more ranges.
    pub fn read(body: &[u8]) -> Option<FragmentRequest> {
        let (head, rest) = body.split_first_chunk::<FRAGMENT_REQUEST_HEADER_BYTES>()?;
        let u64_at = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
        let n = usize::from(u16::from_le_bytes([head[24], head[25]]));
        if n == 0 || rest.len() != n * FRAGMENT_RANGE_BYTES {
            return None;
        }
        let ranges = rest
            .chunks_exact(FRAGMENT_RANGE_BYTES)
            .map(|r| {
                (
                    u32::from_le_bytes(r[..4].try_into().expect("4 bytes")),
                    u32::from_le_bytes(r[4..].try_into().expect("4 bytes")),
                )
            })
            .collect();
        Some(FragmentRequest {
            to: u64_at(0),
            epoch: u64_at(8),
            message_id: u64_at(16),
            ranges,
        })
    }
}

/// The cluster id for a cluster name: the first 8 bytes (little-endian) of
/// `SHA-256("raft-net cluster id\0" ‖ name)`.
///
/// ```
/// let a = raft_net::wire::cluster_id("prod");
/// assert_eq!(a, raft_net::wire::cluster_id("prod"));
/// assert_ne!(a, raft_net::wire::cluster_id("staging"));
/// ```
pub fn cluster_id(cluster_name: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"raft-net cluster id\0")
        .chain_update(cluster_name.as_bytes())
        .finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("sha-256 is 32 bytes"))
}

/// The fixed header of a version-1 datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version.
    pub version: u8,
    /// [`FLAG_COMPRESSED`], [`FLAG_ENCRYPTED`].
    pub flags: u8,
    /// [`cluster_id`] of the sender's cluster name.
    pub cluster_id: u64,
    /// The sending node.
    pub sender: NodeId,
    /// The sender transport's start time in microseconds since the Unix epoch; a
    /// restarted sender has a larger epoch (unless its clock went back).
    pub epoch: u64,
    /// Per-epoch datagram counter, from 1.
    pub seq: u64,
}

impl Header {
    /// Appends the 40 header bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(self.flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
    }

    /// Reads the header fields from the first [`HEADER_BYTES`] of a datagram whose
    /// magic and version were already checked. Reserved bytes are not checked here.
    pub fn read(bytes: &[u8; HEADER_BYTES]) -> Header {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Header {
            version: bytes[4],
            flags: bytes[5],
            cluster_id: u64_at(8),
            sender: u64_at(16),
            epoch: u64_at(24),
            seq: u64_at(32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_at_the_documented_offsets() {
        let h = Header {
            version: 1,
            flags: FLAG_ENCRYPTED,
            cluster_id: 0x1122_3344_5566_7788,
            sender: 3,
            epoch: 0xAABB,
            seq: 9,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), HEADER_BYTES);
        assert_eq!(&out[..4], b"RNET");
        assert_eq!(out[4], 1);
        assert_eq!(out[5], 0b10);
        assert_eq!(&out[6..8], &[0, 0]);
        assert_eq!(out[8], 0x88, "cluster id is little-endian");
        assert_eq!(out[16], 3);
        assert_eq!(out[24], 0xBB);
        assert_eq!(out[32], 9);
        assert_eq!(Header::read(out[..HEADER_BYTES].try_into().unwrap()), h);
    }

    #[test]
    fn fragment_ranges_tile_the_body_with_non_empty_pieces() {
        for total in [2u32, 3, 10, 1_000, 1_048_576 + 77] {
            for count in [2u32, 3, 7, 64, 811] {
                if count > total {
                    continue;
                }
                let mut next = 0;
                for i in 0..count {
                    let r = fragment_range(i, count, total);
                    assert_eq!(r.start, next);
                    assert!(!r.is_empty() && r.len() <= (total.div_ceil(count)) as usize);
                    next = r.end;
                }
                assert_eq!(next, total as usize);
            }
        }
        // What a sender picks never exceeds its piece size.
        let total = 1_048_700;
        let piece = fragment_piece_bytes_max(1_400, true);
        let count = fragment_count(total, piece) as u32;
        assert!(fragment_range(0, count, total as u32).len() <= piece);
    }

    #[test]
    fn fragment_header_and_request_round_trip() {
        let h = FragmentHeader {
            message_id: 7,
            index: 3,
            count: 9,
            total_bytes: 10_000,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        out.extend_from_slice(b"piece");
        assert_eq!(FragmentHeader::read(&out), Some((h, &b"piece"[..])));
        assert_eq!(FragmentHeader::read(&out[..19]), None);

        let r = FragmentRequest {
            to: 2,
            epoch: 99,
            message_id: 7,
            ranges: vec![(0, 1), (5, 3)],
        };
        let mut out = Vec::new();
        r.write(&mut out);
        assert_eq!(
            out.len(),
            FRAGMENT_REQUEST_HEADER_BYTES + 2 * FRAGMENT_RANGE_BYTES
        );
        assert_eq!(FragmentRequest::read(&out), Some(r));
        assert_eq!(FragmentRequest::read(&out[..out.len() - 1]), None);
        let mut empty = out[..FRAGMENT_REQUEST_HEADER_BYTES].to_vec();
        empty[24] = 0;
        assert_eq!(FragmentRequest::read(&empty), None);
    }
}

#[cfg(test)]
mod doc_tests {
    //! Pins the worked example and the variant table of docs/protocol.md: if raft-core
    //! reorders `MessageBody`, this fails and the protocol version must change.
    use raft_core::{Message, MessageBody};

    #[test]
    fn worked_example_of_protocol_md() {
        assert_eq!(super::cluster_id("my first cluster"), 0xCAEC_8AFB_9A17_CE7C);
        let hb = Message {
            from: 1,
            to: 2,
            term: 7,
            body: MessageBody::Heartbeat {
                commit: 9,
                read_round: 3,
            },
        };
        assert_eq!(postcard::to_allocvec(&hb).unwrap(), [1, 2, 7, 6, 9, 3]);
    }

    /// The configuration entry's example in docs/protocol.md (version 2): voters {1, 2,
    /// 3}, no outgoing voters, learner 4.
    #[test]
    fn membership_example_of_protocol_md() {
        let m = raft_core::Membership::new([1, 2, 3], [4]);
        let data = raft_core::protocol::membership::encode_entry(&m);
        assert_eq!(&data[..], [3, 1, 2, 3, 0, 1, 4]);
    }

    #[test]
    fn variant_indexes_of_protocol_md() {
        let tag = |body: MessageBody| {
            postcard::to_allocvec(&Message {
                from: 0,
                to: 0,
                term: 0,
                body,
            })
            .unwrap()[3]
        };
        assert_eq!(tag(MessageBody::PreVoteResponse { granted: true }), 1);
        assert_eq!(
            tag(MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![],
                commit: 0
            }),
            4
        );
        assert_eq!(
            tag(MessageBody::Propose {
                request_id: 0,
                data: Default::default()
            }),
            10
        );
        assert_eq!(tag(MessageBody::TimeoutNow), 12);
    }
}
