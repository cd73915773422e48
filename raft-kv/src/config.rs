//! The cluster config file (TOML): what `raft-kv init` writes and every other command
//! reads.
//!
//! ```
//! use raft_kv::config::{ClusterConfig, NodeEntry};
//!
//! let mut config = ClusterConfig::new("My first cluster");
//! config.nodes = (1..=3).map(|i| NodeEntry::local(i, 7000 + i as u16, 7100 + i as u16)).collect();
//! config.validate().unwrap();
//! let text = config.to_toml();
//! assert_eq!(ClusterConfig::from_toml(&text).unwrap(), config);
//! // Like the original, the join retry time follows from the attempts: 5 x 5 s.
//! assert_eq!(config.join_retry_time().as_secs(), 25);
//! ```
//!
//! Secrets need not sit in the file: `[encryption]` says whether traffic is encrypted and
//! where the password comes from (`password_env`, a variable such as `RAFT_KV_PASSWORD`,
//! or `password_file`), and holds the password itself only if the user insists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use raft_core::node::NodeConfig;
use raft_core::{NodeId, ReadMode};
use serde::{Deserialize, Serialize};

/// The environment variable `raft-kv init` suggests for the cluster password.
pub const DEFAULT_PASSWORD_ENV: &str = "RAFT_KV_PASSWORD";
/// The shortest password accepted.
pub const PASSWORD_CHARS_MIN: usize = 8;
/// The most nodes a config may list (a demo store, not a fleet).
pub const NODES_MAX: usize = 15;

/// A config that makes no sense, naming the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The offending field, as it is written in the file (`nodes[2].client_addr`).
    pub field: String,
    /// Why it is wrong, and what would be right.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A whole cluster: its name, its nodes, and how they run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name. Nodes of differently named clusters ignore each other; it also
    /// salts the password's key derivation.
    pub cluster_name: String,
    /// Join retries and timeouts.
    #[serde(default)]
    pub timing: Timing,
    /// Whether traffic between nodes is encrypted, and where the password comes from.
    #[serde(default)]
    pub encryption: Encryption,
    /// Ephemeral (memory) or persistent (sled) storage of each node's log.
    #[serde(default)]
    pub storage: Storage,
    /// Protocol choices: how linearizable reads are confirmed.
    #[serde(default)]
    pub protocol: Protocol,
    /// Limits of each node's client port: connections, handshake and idle timeouts.
    #[serde(default)]
    pub client_port: ClientPort,
    /// Every node of the cluster.
    pub nodes: Vec<NodeEntry>,
    /// The directory relative paths are resolved against (the config file's own); not
    /// written to the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Join retries and timeouts, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// How many times a starting node looks for its cluster before reporting it was not
    /// found (the original's "join retry attempts"). It keeps listening after that.
    pub join_attempts: u32,
    /// How long one attempt lasts; attempts x this = the join retry time.
    pub join_attempt_interval_ms: u64,
    /// How often the protocol ticks.
    pub tick_interval_ms: u64,
    /// A follower that hears no leader for this long (randomized up to twice as long)
    /// starts an election.
    pub election_timeout_ms: u64,
    /// How often a leader sends heartbeats; well under the election timeout.
    pub heartbeat_interval_ms: u64,
    /// How long a client request may take before it fails.
    pub request_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            join_attempts: 5,
            join_attempt_interval_ms: 5_000,
            tick_interval_ms: 10,
            election_timeout_ms: 300,
            heartbeat_interval_ms: 50,
            request_timeout_ms: 5_000,
        }
    }
}

/// Whether traffic between nodes is encrypted, and where the password comes from.
/// With `enabled`, exactly one source is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Encryption {
    /// Encrypt and authenticate every datagram (AES-256-CBC + HMAC-SHA256).
    pub enabled: bool,
    /// Read the password from this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Read the password from this file (its first line). Relative to the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The password itself, in the clear: only if the user insisted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PBKDF2 iterations for the key derivation; every node must agree. `None`: the
    /// transport's default (600,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdf_iterations: Option<u32>,
}

/// Where each node keeps its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Keep the log on disk (sled), so a restarted node resumes with its entries.
    /// Off: in memory, so a stopped node comes back empty and is rebuilt by the leader.
    pub persistent: bool,
    /// The directory holding one sub-directory per node. Relative to the config file.
    pub dir: PathBuf,
    /// Snapshot the store and compact the log after this many entries (0: never). A
    /// node that fell further behind is brought up to date with the snapshot.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so a follower that is only a little
    /// behind catches up from the log.
    pub snapshot_trailing_entries: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            persistent: false,
            dir: PathBuf::from("raft-kv-data"),
            snapshot_after_entries: 10_000,
            snapshot_trailing_entries: 1_000,
        }
    }
}

/// How linearizable reads (`raft-kv get` without `--stale`) are confirmed; the file's
/// spelling of [`raft_core::ReadMode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadModeName {
    /// `read_index`: the leader confirms it still leads with a heartbeat round before it
    /// answers (one round trip to a majority per batch of reads; no clock assumption).
    #[default]
    ReadIndex,
    /// `lease`: the leader answers at once while its lease lasts (the election timeout
    /// minus a drift margin after a majority last acknowledged it), assuming the nodes'
    /// clocks run at nearly the same rate. Needs check-quorum, which raft-kv always
    /// turns on.
    Lease,
}

impl From<ReadModeName> for ReadMode {
    fn from(mode: ReadModeName) -> Self {
        match mode {
            ReadModeName::ReadIndex => ReadMode::ReadIndex,
            ReadModeName::Lease => ReadMode::Lease,
        }
    }
}

impl std::str::FromStr for ReadModeName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read_index" => Ok(Self::ReadIndex),
            "lease" => Ok(Self::Lease),
            other => Err(format!(
                "{other:?} is not a read mode: use read_index or lease"
            )),
        }
    }
}

impl std::fmt::Display for ReadModeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ReadIndex => "read_index",
            Self::Lease => "lease",
        })
    }
}

/// Protocol choices beyond timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protocol {
    /// `read_index` (the default) or `lease`: see [`ReadModeName`].
    pub read_mode: ReadModeName,
    /// The largest value a `put` may carry with its key, in bytes of the encoded command
    /// (the node's `entry_bytes_max`); a larger one is refused with an error naming the
    /// limit. At most [`MAX_ENTRY_BYTES_LIMIT`] (what one client frame carries).
    pub max_entry_bytes: u64,
}

/// The default of [`Protocol::max_entry_bytes`]: 1 MiB minus room for the command's
/// framing, so that a command at the limit still fits one client frame.
pub const MAX_ENTRY_BYTES_DEFAULT: u64 = 1 << 20;
/// The largest [`Protocol::max_entry_bytes`] accepted: what one client frame carries.
pub const MAX_ENTRY_BYTES_LIMIT: u64 = 1 << 20;
/// The smallest [`Protocol::max_entry_bytes`] accepted.
pub const MAX_ENTRY_BYTES_MIN: u64 = 1024;

impl Default for Protocol {
    fn default() -> Self {
        Self {
            read_mode: ReadModeName::default(),
            max_entry_bytes: MAX_ENTRY_BYTES_DEFAULT,
        }
    }
}

impl Protocol {
    /// Checks the entry limit.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `protocol.max_entry_bytes`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MAX_ENTRY_BYTES_MIN..=MAX_ENTRY_BYTES_LIMIT).contains(&self.max_entry_bytes) {
            return Err(ConfigError::new(
                "protocol.max_entry_bytes",
                format!(
                    "{} is outside {MAX_ENTRY_BYTES_MIN}..={MAX_ENTRY_BYTES_LIMIT}",
                    self.max_entry_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// The smallest handshake or idle timeout accepted, in ms.
pub const CLIENT_TIMEOUT_MS_MIN: u64 = 50;
/// The most client connections a node may be configured to serve at once (each is a
/// thread and a socket).
pub const CLIENT_CONNECTIONS_MAX_LIMIT: usize = 65_536;

/// Limits of a node's client port (TCP): how many connections it serves, how many of
/// them may still be in the handshake, and how long a connection may stay silent.
/// See docs/operations.md ("Client port limits") for what an operator sees at each.
///
/// Invariant (checked by [`ClientPort::validate`]):
/// `max_unauthenticated_per_ip <= max_unauthenticated_connections <= max_client_connections`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientPort {
    /// Connections served at once, authenticated or not. Beyond it, when every slot is
    /// held by an authenticated client, a new connection is refused ("retry").
    pub max_client_connections: usize,
    /// Connections still in the handshake (on an unencrypted cluster: that have not
    /// sent their first request) held at once. A new connection beyond it takes the
    /// slot of the oldest one still in the handshake, which is closed ("evicted"), so
    /// idle sockets can never lock clients out.
    pub max_unauthenticated_connections: usize,
    /// Connections still in the handshake held at once from one source IP address;
    /// beyond it a new one from that address evicts that address's oldest.
    pub max_unauthenticated_per_ip: usize,
    /// A connection must complete the handshake (or, unencrypted, send its first
    /// request) within this many ms of being accepted, however it trickles its bytes.
    pub client_handshake_timeout_ms: u64,
    /// An authenticated connection is closed when its next request has not fully
    /// arrived this many ms after the previous answer.
    pub client_idle_timeout_ms: u64,
}

impl Default for ClientPort {
    fn default() -> Self {
        Self {
            max_client_connections: 1_024,
            max_unauthenticated_connections: 512,
            max_unauthenticated_per_ip: 256,
            client_handshake_timeout_ms: 2_000,
            client_idle_timeout_ms: 300_000,
        }
    }
}

impl ClientPort {
    /// Checks the limits and their order.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first wrong field and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = |name: &str| format!("client_port.{name}");
        if !(1..=CLIENT_CONNECTIONS_MAX_LIMIT).contains(&self.max_client_connections) {
            return Err(ConfigError::new(
                f("max_client_connections"),
                format!(
                    "{} is outside 1..={CLIENT_CONNECTIONS_MAX_LIMIT}",
                    self.max_client_connections
                ),
            ));
        }
        if !(1..=self.max_client_connections).contains(&self.max_unauthenticated_connections) {
            return Err(ConfigError::new(
                f("max_unauthenticated_connections"),
                format!(
                    "{} is outside 1..=max_client_connections ({})",
                    self.max_unauthenticated_connections, self.max_client_connections
                ),
            ));
        }
        if !(1..=self.max_unauthenticated_connections).contains(&self.max_unauthenticated_per_ip) {
            return Err(ConfigError::new(
                f("max_unauthenticated_per_ip"),
                format!(
                    "{} is outside 1..=max_unauthenticated_connections ({})",
                    self.max_unauthenticated_per_ip, self.max_unauthenticated_connections
                ),
            ));
        }
        for (name, ms, max) in [
            (
                "client_handshake_timeout_ms",
                self.client_handshake_timeout_ms,
                600_000,
            ),
            (
                "client_idle_timeout_ms",
                self.client_idle_timeout_ms,
                86_400_000,
            ),
        ] {
            if !(CLIENT_TIMEOUT_MS_MIN..=max).contains(&ms) {
                return Err(ConfigError::new(
                    f(name),
                    format!("{ms} is outside {CLIENT_TIMEOUT_MS_MIN}..={max}"),
                ));
            }
        }
        Ok(())
    }

    /// [`ClientPort::client_handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.client_handshake_timeout_ms)
    }

    /// [`ClientPort::client_idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.client_idle_timeout_ms)
    }
}

/// One node: its name, id and the two ports it listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// A human name, unique in the cluster ("node1").
    pub name: String,
    /// The node's Raft id, unique and non-zero.
    pub id: NodeId,
    /// `host:port` of the node's Raft traffic (UDP).
    pub raft_addr: String,
    /// `host:port` of the node's client protocol (TCP): `raft-kv put/get` talk to it.
    pub client_addr: String,
    /// `host:port` where `raft-kv node` serves Prometheus metrics (`GET /metrics`);
    /// `None`: off (`--metrics-addr` overrides it). See [`crate::metrics`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// Added to the running cluster by `raft-kv add-node`: not one of the cluster's
    /// initial voters. Started with `raft-kv node`, it is a non-member that waits for the
    /// leader to add it (it never campaigns before that).
    #[serde(default, skip_serializing_if = "is_false")]
    pub added: bool,
    /// Removed from the cluster by `raft-kv remove-node`: `raft-kv node` refuses to run
    /// it. Its name and id are never reused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub removed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl NodeEntry {
    /// Node `id` named `node{id}` on 127.0.0.1 with the given ports.
    pub fn local(id: NodeId, raft_port: u16, client_port: u16) -> Self {
        Self {
            name: format!("node{id}"),
            id,
            raft_addr: format!("127.0.0.1:{raft_port}"),
            client_addr: format!("127.0.0.1:{client_port}"),
            metrics_addr: None,
            added: false,
            removed: false,
        }
    }
}

impl ClusterConfig {
    /// A config named `cluster_name` with defaults and no nodes yet.
    pub fn new(cluster_name: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            timing: Timing::default(),
            encryption: Encryption::default(),
            storage: Storage::default(),
            protocol: Protocol::default(),
            client_port: ClientPort::default(),
            nodes: Vec::new(),
            base_dir: PathBuf::from("."),
        }
    }

    /// Parses and validates a config from TOML text (relative paths stay relative to the
    /// current directory).
    ///
    /// # Errors
    /// A TOML error (with line and column), or a [`ConfigError`] naming the bad field.
    pub fn from_toml(text: &str) -> Result<Self, LoadError> {
        let mut config: ClusterConfig =
            toml::from_str(text).map_err(|e| LoadError::toml(text, &e))?;
        config.base_dir = PathBuf::from(".");
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the config file at `path`; relative paths in it are
    /// then resolved against the file's directory.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML, or a field is wrong.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|error| LoadError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let mut config = Self::from_toml(&text)?;
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(config)
    }

    /// The config as TOML text, with a header comment.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("a config always serializes to TOML");
        format!(
            "# raft-kv cluster config, written by `raft-kv init`.\n\
             # Start a node with: raft-kv node --config THIS_FILE --id NODE_NAME\n\
             # Join retry time: {} s ({} attempts x {} ms).\n\n{body}",
            self.join_retry_time().as_secs_f64(),
            self.timing.join_attempts,
            self.timing.join_attempt_interval_ms
        )
    }

    /// Checks every field.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first wrong field and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = self.cluster_name.trim();
        if name.is_empty() {
            return Err(ConfigError::new("cluster_name", "must not be empty"));
        }
        if name.len() > 64 {
            return Err(ConfigError::new(
                "cluster_name",
                "must be at most 64 characters",
            ));
        }
        self.timing.validate()?;
        self.encryption.validate()?;
        self.client_port.validate()?;
        self.protocol.validate()?;
        if self.storage.persistent && self.storage.dir.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "storage.dir",
                "must name a directory when storage is persistent",
            ));
        }
        if self.nodes.is_empty() {
            return Err(ConfigError::new("nodes", "list at least one node"));
        }
        if self.nodes.iter().all(|n| n.added) {
            return Err(ConfigError::new(
                "nodes",
                "at least one node must be an initial voter (not `added`)",
            ));
        }
        if self.nodes.len() > NODES_MAX {
            return Err(ConfigError::new(
                "nodes",
                format!("at most {NODES_MAX} nodes, not {}", self.nodes.len()),
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let field = |f: &str| format!("nodes[{i}].{f}");
            if node.name.trim().is_empty() || node.name.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    field("name"),
                    format!("{:?} must be a non-empty name without spaces", node.name),
                ));
            }
            if node.id == 0 {
                return Err(ConfigError::new(field("id"), "must not be 0"));
            }
            check_addr(&node.raft_addr).map_err(|r| ConfigError::new(field("raft_addr"), r))?;
            check_addr(&node.client_addr).map_err(|r| ConfigError::new(field("client_addr"), r))?;
            if let Some(addr) = &node.metrics_addr {
                check_addr(addr).map_err(|r| ConfigError::new(field("metrics_addr"), r))?;
            }
            if node.raft_addr == node.client_addr {
                return Err(ConfigError::new(
                    field("client_addr"),
                    "must differ from raft_addr",
                ));
            }
            for (j, other) in self.nodes[..i].iter().enumerate() {
                if other.name == node.name {
                    return Err(ConfigError::new(
                        field("name"),
                        format!("{:?} is also the name of nodes[{j}]", node.name),
                    ));
                }
                if other.id == node.id {
                    return Err(ConfigError::new(
                        field("id"),
                        format!("{} is also the id of nodes[{j}]", node.id),
                    ));
                }
                for (what, addr) in [
                    ("raft_addr", &node.raft_addr),
                    ("client_addr", &node.client_addr),
                ] {
                    if !addr.ends_with(":0")
                        && (addr == &other.raft_addr || addr == &other.client_addr)
                    {
                        return Err(ConfigError::new(
                            field(what),
                            format!("{addr} is also used by nodes[{j}]"),
                        ));
                    }
                }
            }
        }
        // Whatever the runtime would refuse at start, refuse now, in the file's terms.
        self.node_config(self.nodes[0].id).validate().map_err(|e| {
            ConfigError::new(
                "timing",
                format!(
                    "the timeouts give the protocol an invalid {}: {} (lengthen election_timeout_ms or shorten tick_interval_ms)",
                    e.field, e.reason
                ),
            )
        })?;
        Ok(())
    }

    /// The total time a starting node looks for its cluster (the original's "retry
    /// time": join attempts x 5 s by default).
    pub fn join_retry_time(&self) -> Duration {
        Duration::from_millis(
            self.timing
                .join_attempt_interval_ms
                .saturating_mul(u64::from(self.timing.join_attempts)),
        )
    }

    /// The node called `name_or_id`: its name ("node2"), or its id ("2").
    ///
    /// # Errors
    /// No such node; the message lists the nodes there are.
    pub fn node(&self, name_or_id: &str) -> Result<&NodeEntry, ConfigError> {
        let by_id = name_or_id.parse::<NodeId>().ok();
        self.nodes
            .iter()
            .find(|n| n.name == name_or_id || Some(n.id) == by_id)
            .ok_or_else(|| {
                let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                ConfigError::new(
                    "id",
                    format!(
                        "no node {name_or_id:?} in cluster {:?}; its nodes are {}",
                        self.cluster_name,
                        names.join(", ")
                    ),
                )
            })
    }

    /// The node with Raft id `id`.
    pub fn node_by_id(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The display name of node `id` (`n{id}` if it is not listed).
    pub fn name_of(&self, id: NodeId) -> String {
        self.node_by_id(id)
            .map_or_else(|| format!("n{id}"), |n| n.name.clone())
    }

    /// The runtime config for node `id`: voters, ticks and join attempts from `timing`,
    /// the read mode from `protocol`. The voters are the cluster's initial ones (nodes
    /// not `added`); the configuration in the log supersedes them as soon as there is one.
    pub fn node_config(&self, id: NodeId) -> NodeConfig {
        let t = &self.timing;
        let mut c = NodeConfig::new(id, self.nodes.iter().filter(|n| !n.added).map(|n| n.id));
        c.tick_interval_ms = t.tick_interval_ms;
        c.protocol.election_timeout_ticks = ticks(t.election_timeout_ms, t.tick_interval_ms);
        c.protocol.heartbeat_interval_ticks = ticks(t.heartbeat_interval_ms, t.tick_interval_ms);
        c.join_attempts = t.join_attempts;
        c.join_attempt_interval_ms = t.join_attempt_interval_ms;
        c.snapshot_after_entries = self.storage.snapshot_after_entries;
        c.snapshot_trailing_entries = self.storage.snapshot_trailing_entries;
        // Lease reads rely on check-quorum (a deposed leader must step down before its
        // lease could outlive it); raft-kv never turns it off.
        c.protocol.check_quorum = true;
        c.protocol.read_mode = self.protocol.read_mode.into();
        c.protocol.entry_bytes_max = self.protocol.max_entry_bytes;
        c
    }

    /// Where node `id` keeps its persistent log.
    pub fn storage_dir(&self, node: &NodeEntry) -> PathBuf {
        self.resolve(&self.storage.dir).join(&node.name)
    }

    /// `path` resolved against the config file's directory (absolute paths unchanged).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The PBKDF2 iteration count for keys derived from the password.
    pub fn kdf_iterations(&self) -> u32 {
        self.encryption
            .kdf_iterations
            .unwrap_or(raft_net::NetConfig::DEFAULT_KDF_ITERATIONS)
    }

    /// The client port's key for `password` (see [`crate::auth`]).
    pub fn client_key(&self, password: &str) -> crate::auth::ClientKey {
        crate::auth::ClientKey::derive(password, &self.cluster_name, self.kdf_iterations())
    }

    /// The key a client of this cluster proves the password with; `None` when encryption
    /// is off.
    ///
    /// # Errors
    /// As [`ClusterConfig::password`].
    pub fn client_key_from_source(&self) -> Result<Option<crate::auth::ClientKey>, ConfigError> {
        Ok(self.password()?.map(|p| self.client_key(&p)))
    }

    /// The cluster password, from wherever the config says it comes from; `None` when
    /// encryption is off.
    ///
    /// # Errors
    /// The variable is unset, the file cannot be read, or the password is empty.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        let e = &self.encryption;
        if !e.enabled {
            return Ok(None);
        }
        let password = if let Some(var) = &e.password_env {
            std::env::var(var).map_err(|_| {
                ConfigError::new(
                    "encryption.password_env",
                    format!("encryption is on but the environment variable {var} is not set"),
                )
            })?
        } else if let Some(file) = &e.password_file {
            let path = self.resolve(file);
            let text = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError::new(
                    "encryption.password_file",
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            text.lines().next().unwrap_or("").to_string()
        } else if let Some(p) = &e.password {
            p.clone()
        } else {
            return Err(ConfigError::new(
                "encryption",
                "enabled but no password_env, password_file or password is set",
            ));
        };
        let password = password.trim_end_matches(['\r', '\n']).to_string();
        check_password(&password).map_err(|r| ConfigError::new("password", r))?;
        Ok(Some(password))
    }
}

impl Timing {
    fn validate(&self) -> Result<(), ConfigError> {
        let f = |name: &str| format!("timing.{name}");
        if !(1..=100).contains(&self.join_attempts) {
            return Err(ConfigError::new(
                f("join_attempts"),
                format!("{} is outside 1..=100", self.join_attempts),
            ));
        }
        if !(10..=600_000).contains(&self.join_attempt_interval_ms) {
            return Err(ConfigError::new(
                f("join_attempt_interval_ms"),
                format!("{} is outside 10..=600000", self.join_attempt_interval_ms),
            ));
        }
        if !(1..=1_000).contains(&self.tick_interval_ms) {
            return Err(ConfigError::new(
                f("tick_interval_ms"),
                format!("{} is outside 1..=1000", self.tick_interval_ms),
            ));
        }
        if self.heartbeat_interval_ms < self.tick_interval_ms {
            return Err(ConfigError::new(
                f("heartbeat_interval_ms"),
                format!(
                    "{} is shorter than one tick ({} ms)",
                    self.heartbeat_interval_ms, self.tick_interval_ms
                ),
            ));
        }
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(ConfigError::new(
                f("election_timeout_ms"),
                format!(
                    "{} must be at least twice heartbeat_interval_ms ({})",
                    self.election_timeout_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        if self.election_timeout_ms > 60_000 {
            return Err(ConfigError::new(
                f("election_timeout_ms"),
                "must be at most 60000",
            ));
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return Err(ConfigError::new(
                f("request_timeout_ms"),
                format!("{} is outside 100..=600000", self.request_timeout_ms),
            ));
        }
        Ok(())
    }
}

impl Encryption {
    fn validate(&self) -> Result<(), ConfigError> {
        let sources = [
            self.password_env.is_some(),
            self.password_file.is_some(),
            self.password.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if self.enabled && sources == 0 {
            return Err(ConfigError::new(
                "encryption",
                "enabled, so set one of password_env, password_file or password",
            ));
        }
        if sources > 1 {
            return Err(ConfigError::new(
                "encryption",
                "set only one of password_env, password_file and password",
            ));
        }
        if let Some(var) = &self.password_env {
            if var.is_empty() || var.contains(['=', '\0']) {
                return Err(ConfigError::new(
                    "encryption.password_env",
                    format!("{var:?} is not a valid environment variable name"),
                ));
            }
        }
        if let Some(p) = &self.password {
            check_password(p).map_err(|r| ConfigError::new("encryption.password", r))?;
        }
        if self.kdf_iterations == Some(0) {
            return Err(ConfigError::new(
                "encryption.kdf_iterations",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// Checks a password: at least [`PASSWORD_CHARS_MIN`] characters, one line.
///
/// # Errors
/// Why it is not acceptable.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(format!(
            "the password must be at least {PASSWORD_CHARS_MIN} characters long"
        ));
    }
    if password.contains(['\n', '\r']) {
        return Err("the password must be a single line".to_string());
    }
    Ok(())
}

/// Checks a `host:port` address (the host may be a name; port 0 means any free port).
fn check_addr(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    if host.is_empty() {
        return Err(format!("{addr:?} has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{addr:?} has no valid port (0..=65535)"))?;
    Ok(())
}

/// Milliseconds to whole ticks, at least one.
fn ticks(ms: u64, tick_ms: u64) -> u32 {
    u32::try_from((ms / tick_ms.max(1)).max(1)).unwrap_or(u32::MAX)
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Not valid TOML, or an unknown or mistyped field: where (1-based; 0 when the
    /// parser gave no position) and what, on one line.
    #[error("{}", toml_error_text(*line, *column, source_line, message))]
    Toml {
        /// The line of the error.
        line: usize,
        /// Its column, in characters.
        column: usize,
        /// That line of the file, trimmed and shortened (empty when there is no position),
        /// so the message names the key even when the parser's message does not.
        source_line: String,
        /// What is wrong, on one line.
        message: String,
    },
    /// A field has a wrong value.
    #[error("invalid config: {0}")]
    Invalid(#[from] ConfigError),
}

impl LoadError {
    /// A TOML error on one line, with the line and column of `text` it points at.
    fn toml(text: &str, e: &toml::de::Error) -> Self {
        let (line, column) = e.span().map_or((0, 0), |span| {
            let before = text.get(..span.start.min(text.len())).unwrap_or("");
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        });
        let source_line = match line {
            0 => String::new(),
            n => {
                let l = text.lines().nth(n - 1).unwrap_or("").trim();
                if l.chars().count() > SOURCE_LINE_CHARS_MAX {
                    let cut: String = l.chars().take(SOURCE_LINE_CHARS_MAX).collect();
                    format!("{cut}...")
                } else {
                    l.to_string()
                }
            }
        };
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        LoadError::Toml {
            line,
            column,
            source_line,
            message,
        }
    }

    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, LoadError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The most characters of the offending line quoted in a TOML error.
const SOURCE_LINE_CHARS_MAX: usize = 80;

fn toml_error_text(line: usize, column: usize, source_line: &str, message: &str) -> String {
    match (line, source_line.is_empty()) {
        (0, _) => format!("not a valid config: {message}"),
        (_, true) => format!("not a valid config at line {line}, column {column}: {message}"),
        (_, false) => format!(
            "not a valid config at line {line}, column {column} (`{source_line}`): {message}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ClusterConfig {
        let mut c = ClusterConfig::new("c");
        c.nodes = (1..=3)
            .map(|i| NodeEntry::local(i, 7000 + i as u16, 7100 + i as u16))
            .collect();
        c
    }

    #[test]
    fn validate_names_the_bad_field() {
        // One row per rule: a mutation and the field the error must name.
        type Mutation = fn(&mut ClusterConfig);
        let cases: Vec<(Mutation, &str)> = vec![
            (|c| c.cluster_name = " ".into(), "cluster_name"),
            (|c| c.timing.join_attempts = 0, "timing.join_attempts"),
            (|c| c.timing.tick_interval_ms = 0, "timing.tick_interval_ms"),
            (
                |c| c.timing.election_timeout_ms = 20,
                "timing.election_timeout_ms",
            ),
            (|c| c.encryption.enabled = true, "encryption"),
            (
                |c| c.encryption.password = Some("short".into()),
                "encryption.password",
            ),
            (|c| c.nodes.clear(), "nodes"),
            (|c| c.nodes[1].id = 1, "nodes[1].id"),
            (|c| c.nodes[2].name = "node1".into(), "nodes[2].name"),
            (
                |c| c.nodes[0].raft_addr = "nowhere".into(),
                "nodes[0].raft_addr",
            ),
            (
                |c| c.nodes[1].client_addr = "127.0.0.1:7001".into(),
                "nodes[1].client_addr",
            ),
            (|c| c.nodes[0].id = 0, "nodes[0].id"),
            (
                |c| c.client_port.max_client_connections = 0,
                "client_port.max_client_connections",
            ),
            (
                |c| c.client_port.max_client_connections = CLIENT_CONNECTIONS_MAX_LIMIT + 1,
                "client_port.max_client_connections",
            ),
            (
                |c| c.client_port.max_client_connections = 100,
                "client_port.max_unauthenticated_connections",
            ),
            (
                |c| c.client_port.max_unauthenticated_connections = 0,
                "client_port.max_unauthenticated_connections",
            ),
            (
                |c| c.client_port.max_unauthenticated_per_ip = 513,
                "client_port.max_unauthenticated_per_ip",
            ),
            (
                |c| c.client_port.client_handshake_timeout_ms = 10,
                "client_port.client_handshake_timeout_ms",
            ),
            (
                |c| c.client_port.client_idle_timeout_ms = 0,
                "client_port.client_idle_timeout_ms",
            ),
            // Valid by the file's own rules, but 2 ticks leave no room for lease drift.
            (
                |c| {
                    c.timing.heartbeat_interval_ms = 10;
                    c.timing.election_timeout_ms = 20;
                },
                "timing",
            ),
        ];
        for (mutate, field) in cases {
            let mut c = valid();
            mutate(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        valid().validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = valid().to_toml().replace("cluster_name", "clustr_name");
        let err = ClusterConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("clustr_name"), "{err}");
    }

    #[test]
    fn read_mode_maps_to_the_protocol_and_refuses_unknown_names() {
        let mut c = valid();
        assert_eq!(c.node_config(1).protocol.read_mode, ReadMode::ReadIndex);
        c.protocol.read_mode = ReadModeName::Lease;
        let text = c.to_toml();
        assert!(text.contains("read_mode = \"lease\""), "{text}");
        let back = ClusterConfig::from_toml(&text).unwrap();
        assert_eq!(back, c);
        let n = back.node_config(1);
        assert_eq!(n.protocol.read_mode, ReadMode::Lease);
        assert!(n.protocol.check_quorum, "lease reads need check-quorum");
        n.validate().unwrap();
        // An unknown mode is a TOML error naming the value, the choices and the line.
        let bad = text.replace("read_mode = \"lease\"", "read_mode = \"leases\"");
        let err = ClusterConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(
            err.contains("leases") && err.contains("read_index") && err.contains("lease"),
            "{err}"
        );
        assert_eq!("lease".parse::<ReadModeName>(), Ok(ReadModeName::Lease));
        assert!("fast"
            .parse::<ReadModeName>()
            .unwrap_err()
            .contains("read_index"));
    }

    #[test]
    fn client_port_limits_have_defaults_and_round_trip() {
        let d = ClientPort::default();
        assert_eq!(d.max_client_connections, 1_024);
        assert_eq!(d.max_unauthenticated_connections, 512);
        assert_eq!(d.client_handshake_timeout_ms, 2_000);
        assert_eq!(d.client_idle_timeout_ms, 300_000);
        d.validate().unwrap();
        // A file without the section gets the defaults.
        let text = valid().to_toml();
        let start = text.find("[client_port]").unwrap();
        let end = text[start..].find("\n\n").map_or(text.len(), |e| start + e);
        let without = format!("{}{}", &text[..start], &text[end..]);
        assert!(!without.contains("max_client_connections"), "{without}");
        assert_eq!(ClusterConfig::from_toml(&without).unwrap().client_port, d);
        let mut c = valid();
        c.client_port.max_client_connections = 8;
        c.client_port.max_unauthenticated_connections = 4;
        c.client_port.max_unauthenticated_per_ip = 2;
        c.client_port.client_handshake_timeout_ms = 300;
        assert_eq!(ClusterConfig::from_toml(&c.to_toml()).unwrap(), c);
        let typo = c
            .to_toml()
            .replace("client_idle_timeout_ms", "client_idle_timeout");
        assert!(ClusterConfig::from_toml(&typo)
            .unwrap_err()
            .to_string()
            .contains("client_idle_timeout"));
    }

    #[test]
    fn round_trips_with_encryption_and_storage() {
        let mut c = valid();
        c.encryption.enabled = true;
        c.encryption.password_env = Some(DEFAULT_PASSWORD_ENV.into());
        c.storage.persistent = true;
        let back = ClusterConfig::from_toml(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn password_comes_from_its_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "sesame-sesame\n").unwrap();
        let mut c = valid();
        c.base_dir = dir.path().to_path_buf();
        c.encryption.enabled = true;
        c.encryption.password_file = Some("pw".into());
        assert_eq!(c.password().unwrap().as_deref(), Some("sesame-sesame"));
        c.encryption.password_file = Some("missing".into());
        assert_eq!(c.password().unwrap_err().field, "encryption.password_file");
        c.encryption.password_file = None;
        c.encryption.password_env = Some("RAFT_KV_TEST_SURELY_UNSET".into());
        assert_eq!(c.password().unwrap_err().field, "encryption.password_env");
    }

    #[test]
    fn node_config_maps_milliseconds_to_ticks() {
        let c = valid();
        let n = c.node_config(2);
        assert_eq!(n.protocol.election_timeout_ticks, 30);
        assert_eq!(n.protocol.heartbeat_interval_ticks, 5);
        n.validate().unwrap();
        assert_eq!(c.node("node2").unwrap().id, 2);
        assert_eq!(c.node("3").unwrap().name, "node3");
        assert!(c
            .node("node9")
            .unwrap_err()
            .reason
            .contains("node1, node2, node3"));
    }
}
