//! [`NetConfig`]: everything [`crate::UdpTransport::bind`] needs.

use std::fmt;

use raft_core::{NodeId, TransportError};
use serde::{Deserialize, Serialize};

use crate::wire;

/// One peer in the configuration: id, human name, and `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id (never 0).
    pub id: NodeId,
    /// A human name ("node-a"), unique in the cluster; used in logs and look-ups.
    pub name: String,
    /// `host:port`; a host name is resolved once, when the transport binds.
    pub addr: String,
}

impl PeerConfig {
    /// A peer entry.
    pub fn new(id: NodeId, name: impl Into<String>, addr: impl Into<String>) -> Self {
        PeerConfig {
            id,
            name: name.into(),
            addr: addr.into(),
        }
    }
}

/// Configuration of one node's UDP transport.
///
/// Every node of a cluster must agree on `cluster_name`, `password` and
/// `kdf_iterations`; the other fields are local.
///
/// ```
/// use raft_net::{NetConfig, PeerConfig};
/// let mut config = NetConfig::new(1, "my first cluster", "127.0.0.1:0");
/// config.peers.push(PeerConfig::new(2, "n2", "127.0.0.1:7002"));
/// config.password = Some("correct horse battery staple".into());
/// config.validate().unwrap();
/// assert!(!format!("{config:?}").contains("horse"), "Debug never shows the password");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// This node's id (never 0). Written into every datagram's header.
    pub node_id: NodeId,
    /// The cluster's name. Its hash is the cluster id in every header, and it salts the
    /// password's key derivation.
    pub cluster_name: String,
    /// Local `host:port` to bind; port 0 picks a free port (see
    /// [`crate::UdpTransport::local_addr`]).
    pub bind_addr: String,
    /// The other nodes (this node may be listed too; it is harmless).
    pub peers: Vec<PeerConfig>,
    /// The cluster password. `Some` turns on encryption and authentication; every node
    /// must then have the same password.
    pub password: Option<String>,
    /// PBKDF2-HMAC-SHA256 iterations for the password (computed once, at bind).
    pub kdf_iterations: u32,
    /// The largest datagram this node sends, in bytes, headers and all. The default
    /// suits loopback and LANs; over the internet use
    /// [`NetConfig::INTERNET_SAFE_DATAGRAM_BYTES`]. Receivers accept any size up to the
    /// UDP limit, so nodes with different values interoperate.
    pub datagram_bytes_max: usize,
    /// Bodies at least this long are lz4-compressed (and sent compressed only if that is
    /// shorter). `None` turns compression off.
    pub compress_bytes_min: Option<usize>,
    /// Datagrams the listener may queue for the processor before dropping. Worst-case
    /// memory is this many times the largest datagram received (64 KiB).
    pub receive_queue_len_max: usize,
    /// Messages `send` may queue for the sender thread before dropping.
    pub send_queue_len_max: usize,
    /// Socket receive and send buffer sizes to ask the kernel for (it may grant less:
    /// the granted size is logged at bind).
    pub socket_buffer_bytes: usize,
    /// The largest message body (postcard, before compression) this node sends or
    /// accepts. A message whose body does not fit one datagram is split into fragments;
    /// this bounds what one message may make a receiver buffer. It decides the largest
    /// entry the transport carries (see [`crate::UdpTransport`]'s `max_entry_bytes`):
    /// the default carries raft-core's default 1 MiB `entry_bytes_max`. Give every node
    /// the same value.
    pub message_bytes_max: usize,
    /// Bytes of incomplete fragmented messages buffered for one peer. When a new message
    /// would pass it, that peer's oldest incomplete messages are dropped (counted as
    /// `reassembly_full`). At least `message_bytes_max`.
    pub reassembly_bytes_per_peer_max: usize,
    /// Bytes of incomplete fragmented messages buffered for all peers together. A
    /// fragment starting a message that would pass it is dropped (`reassembly_full`).
    /// At least `reassembly_bytes_per_peer_max`.
    pub reassembly_bytes_total_max: usize,
    /// An incomplete fragmented message is dropped this long after its first fragment
    /// arrived (counted as `reassembly_timeout`); Raft sends it again.
    pub reassembly_timeout_ms: u64,
    /// Bytes of recently fragmented messages kept by the sender to answer receivers'
    /// requests for lost fragments. 0 turns such repairs off: a message with a lost
    /// fragment then waits for Raft to send it again, whole.
    pub resend_cache_bytes_max: usize,
}

impl NetConfig {
    /// The default ceiling: 60 KiB, for loopback and LANs (UDP allows 65,507 bytes).
    pub const LAN_DATAGRAM_BYTES: usize = 60 * 1024;
    /// A ceiling that crosses the internet without IP fragmentation: 1,400 bytes fits
    /// a 1,500-byte Ethernet MTU with room for IPv6, UDP and a tunnel header or two.
    pub const INTERNET_SAFE_DATAGRAM_BYTES: usize = 1_400;
    /// The smallest ceiling accepted: room for the headers, crypto and one small entry.
    pub const MIN_DATAGRAM_BYTES: usize = 512;
    /// The default [`NetConfig::message_bytes_max`]: 1 MiB plus 64 KiB for the envelope,
    /// so a 1 MiB entry (raft-core's default `entry_bytes_max`) fits.
    pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 1024 * 1024 + 64 * 1024;
    /// The largest [`NetConfig::message_bytes_max`] accepted (lengths are 32-bit on the
    /// wire, and one message should not need a gigabyte of buffer).
    pub const MESSAGE_BYTES_MAX_LIMIT: usize = 1 << 30;
    /// The default PBKDF2 iteration count (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
    pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;

    /// A config with defaults for everything but the node id, cluster name and bind
    /// address.
    pub fn new(
        node_id: NodeId,
        cluster_name: impl Into<String>,
        bind_addr: impl Into<String>,
    ) -> Self {
        NetConfig {
            node_id,
            cluster_name: cluster_name.into(),
            bind_addr: bind_addr.into(),
            ..NetConfig::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`TransportError::Config`] naming the first bad field and why.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |field: &str, why: String| Err(TransportError::Config(format!("{field}: {why}")));
        if self.node_id == 0 {
            return bad("node_id", "must not be 0 (0 means nobody)".into());
        }
        if self.cluster_name.is_empty() {
            return bad("cluster_name", "must not be empty".into());
        }
        if self.bind_addr.is_empty() {
            return bad(
                "bind_addr",
                "must not be empty (use 0.0.0.0:PORT for all interfaces)".into(),
            );
        }
        if let Some(password) = &self.password {
            if password.is_empty() {
                return bad(
                    "password",
                    "must not be empty: use None for no encryption".into(),
                );
            }
        }
        if self.password.is_some() && self.kdf_iterations == 0 {
            return bad("kdf_iterations", "must be positive".into());
        }
        if !(Self::MIN_DATAGRAM_BYTES..=wire::MAX_UDP_PAYLOAD_BYTES)
            .contains(&self.datagram_bytes_max)
        {
            return bad(
                "datagram_bytes_max",
                format!(
                    "{} is outside {}..={} (UDP's limit)",
                    self.datagram_bytes_max,
                    Self::MIN_DATAGRAM_BYTES,
                    wire::MAX_UDP_PAYLOAD_BYTES
                ),
            );
        }
        if !(wire::MAX_UDP_PAYLOAD_BYTES..=Self::MESSAGE_BYTES_MAX_LIMIT)
            .contains(&self.message_bytes_max)
        {
            return bad(
                "message_bytes_max",
                format!(
                    "{} is outside {}..={}",
                    self.message_bytes_max,
                    wire::MAX_UDP_PAYLOAD_BYTES,
                    Self::MESSAGE_BYTES_MAX_LIMIT
                ),
            );
        }
        if self.reassembly_bytes_per_peer_max < self.message_bytes_max {
            return bad(
                "reassembly_bytes_per_peer_max",
                format!(
                    "{} must hold at least one message of message_bytes_max ({})",
                    self.reassembly_bytes_per_peer_max, self.message_bytes_max
                ),
            );
        }
        if self.reassembly_bytes_total_max < self.reassembly_bytes_per_peer_max {
            return bad(
                "reassembly_bytes_total_max",
                format!(
                    "{} must be at least reassembly_bytes_per_peer_max ({})",
                    self.reassembly_bytes_total_max, self.reassembly_bytes_per_peer_max
                ),
            );
        }
        if self.reassembly_timeout_ms == 0 {
            return bad("reassembly_timeout_ms", "must be positive".into());
        }
        if self.receive_queue_len_max == 0 {
            return bad("receive_queue_len_max", "must be positive".into());
        }
        if self.send_queue_len_max == 0 {
            return bad("send_queue_len_max", "must be positive".into());
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.id == 0 {
                return bad("peers", format!("peer {:?} has id 0", peer.name));
            }
            if peer.addr.is_empty() {
                return bad("peers", format!("peer n{} has no address", peer.id));
            }
            for other in &self.peers[..i] {
                if other.id == peer.id {
                    return bad("peers", format!("id {} is listed twice", peer.id));
                }
                if other.name == peer.name {
                    return bad("peers", format!("name {:?} is listed twice", peer.name));
                }
            }
        }
        Ok(())
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            node_id: 0,
            cluster_name: String::new(),
            bind_addr: String::new(),
            peers: Vec::new(),
            password: None,
            kdf_iterations: Self::DEFAULT_KDF_ITERATIONS,
            datagram_bytes_max: Self::LAN_DATAGRAM_BYTES,
            compress_bytes_min: Some(1024),
            receive_queue_len_max: 1024,
            send_queue_len_max: 1024,
            socket_buffer_bytes: 4 * 1024 * 1024,
            message_bytes_max: Self::MESSAGE_BYTES_MAX_DEFAULT,
            reassembly_bytes_per_peer_max: 4 * Self::MESSAGE_BYTES_MAX_DEFAULT,
            reassembly_bytes_total_max: 16 * Self::MESSAGE_BYTES_MAX_DEFAULT,
            reassembly_timeout_ms: 2_000,
            resend_cache_bytes_max: 8 * Self::MESSAGE_BYTES_MAX_DEFAULT,
        }
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("node_id", &self.node_id)
            .field("cluster_name", &self.cluster_name)
            .field("bind_addr", &self.bind_addr)
            .field("peers", &self.peers)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("kdf_iterations", &self.kdf_iterations)
            .field("datagram_bytes_max", &self.datagram_bytes_max)
            .field("compress_bytes_min", &self.compress_bytes_min)
            .field("receive_queue_len_max", &self.receive_queue_len_max)
            .field("send_queue_len_max", &self.send_queue_len_max)
            .field("socket_buffer_bytes", &self.socket_buffer_bytes)
            .field("message_bytes_max", &self.message_bytes_max)
            .field(
                "reassembly_bytes_per_peer_max",
                &self.reassembly_bytes_per_peer_max,
            )
            .field(
                "reassembly_bytes_total_max",
                &self.reassembly_bytes_total_max,
            )
            .field("reassembly_timeout_ms", &self.reassembly_timeout_ms)
            .field("resend_cache_bytes_max", &self.resend_cache_bytes_max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> NetConfig {
        let mut c = NetConfig::new(1, "c", "127.0.0.1:0");
        c.peers.push(PeerConfig::new(2, "b", "127.0.0.1:1"));
        c
    }

    #[test]
    fn validate_names_the_bad_field() {
        // One row per rule: a mutation and the field the error must name.
        type Mutation = fn(&mut NetConfig);
        let cases: Vec<(Mutation, &str)> = vec![
            (|c| c.node_id = 0, "node_id"),
            (|c| c.cluster_name.clear(), "cluster_name"),
            (|c| c.bind_addr.clear(), "bind_addr"),
            (|c| c.password = Some(String::new()), "password"),
            (
                |c| {
                    c.password = Some("p".into());
                    c.kdf_iterations = 0
                },
                "kdf_iterations",
            ),
            (|c| c.datagram_bytes_max = 100, "datagram_bytes_max"),
            (|c| c.datagram_bytes_max = 70_000, "datagram_bytes_max"),
            (|c| c.receive_queue_len_max = 0, "receive_queue_len_max"),
            (|c| c.send_queue_len_max = 0, "send_queue_len_max"),
            (|c| c.message_bytes_max = 1_000, "message_bytes_max"),
            (|c| c.message_bytes_max = 1 << 31, "message_bytes_max"),
            (
                |c| c.reassembly_bytes_per_peer_max = c.message_bytes_max - 1,
                "reassembly_bytes_per_peer_max",
            ),
            (
                |c| c.reassembly_bytes_total_max = c.reassembly_bytes_per_peer_max - 1,
                "reassembly_bytes_total_max",
            ),
            (|c| c.reassembly_timeout_ms = 0, "reassembly_timeout_ms"),
            (|c| c.peers.push(PeerConfig::new(2, "x", "h:1")), "peers"),
            (|c| c.peers.push(PeerConfig::new(3, "b", "h:1")), "peers"),
            (|c| c.peers.push(PeerConfig::new(0, "z", "h:1")), "peers"),
        ];
        assert!(valid().validate().is_ok());
        for (mutate, field) in cases {
            let mut c = valid();
            mutate(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err:?} should name {field}");
        }
    }

    #[test]
    fn config_round_trips_through_serde() {
        let c = valid();
        let json = postcard::to_allocvec(&c).unwrap();
        let back: NetConfig = postcard::from_bytes(&json).unwrap();
        assert_eq!(back, c);
    }
}
