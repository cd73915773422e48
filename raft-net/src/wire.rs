//! The datagram header and the size arithmetic of the wire format (version 1).
//!
//! docs/protocol.md describes the format byte by byte; this file is its source of truth.
//!
//! ```text
//! offset size field
//!  0     4    magic "RNET"                 } never change: every version starts so,
//!  4     1    protocol version (1)         } so a node can name a version it lacks
//!  5     1    flags: bit 0 lz4, bit 1 encrypted, others 0
//!  6     2    reserved, 0
//!  8     8    cluster id, u64 little-endian
//! 16     8    sender node id, u64 LE
//! 24     8    sender epoch (µs since the Unix epoch when its transport started), u64 LE
//! 32     8    sequence number within the epoch, from 1, u64 LE
//! 40          body: postcard Message, lz4 block (u32 LE length first) if flagged;
//!             encrypted: IV[16] ‖ AES-256-CBC(body, PKCS#7) ‖ HMAC-SHA256[32]
//! ```

use raft_core::NodeId;
use sha2::{Digest, Sha256};

/// The first four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"RNET";
/// The protocol version this build sends.
pub const PROTOCOL_VERSION: u8 = 1;
/// The protocol versions this build accepts.
pub const SUPPORTED_VERSIONS: &[u8] = &[1];

/// The fixed header's length.
pub const HEADER_BYTES: usize = 40;
/// Magic plus version: the part every version shares, and what a receiver needs to
/// name the version it got.
pub const PREFIX_BYTES: usize = 5;
/// Flag: the body is an lz4 block, preceded by its decompressed length (u32 LE).
pub const FLAG_COMPRESSED: u8 = 0b0000_0001;
/// Flag: the body is `IV ‖ ciphertext ‖ MAC`.
pub const FLAG_ENCRYPTED: u8 = 0b0000_0010;
/// Every flag this version knows; any other bit set makes the datagram invalid.
pub const KNOWN_FLAGS: u8 = FLAG_COMPRESSED | FLAG_ENCRYPTED;

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
