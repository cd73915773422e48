//! Running one node of a configured cluster: where the transport (raft-net's UDP) and
//! the storage (MemLog or raft-store's SledLog) are built, and the [`NodeHost`] that
//! stops and starts a node in place, as the original's Stop and Start buttons did.
//!
//! A stopped node with ephemeral storage comes back empty and is rebuilt by the leader;
//! with persistent storage it reopens its log and replays its committed entries at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;
use raft_core::node::{ClusterState, Node, NodeStatus};
use raft_core::{Log, MemLog, NodeId, Role};
use raft_net::{DropKind, NetConfig, NetStats, NetStatsSnapshot, PeerConfig, UdpTransport};
use raft_store::SledLog;
use serde::{Deserialize, Serialize};

use crate::auth::ClientKey;
use crate::config::{ClusterConfig, NodeEntry};
use crate::store::{CommittedEntry, KvLog};

/// A running raft-kv node.
pub type KvNode = Node<KvLog>;

/// One node of a cluster that can be stopped and started again in place.
/// Cheap to share: wrap it in an `Arc`.
pub struct NodeHost {
    config: ClusterConfig,
    entry: NodeEntry,
    password: Option<String>,
    /// The client port's key, derived on first use (the KDF is slow on purpose).
    client_key: std::sync::OnceLock<Option<ClientKey>>,
    state: Mutex<HostState>,
    /// The client port serving this node, once one is attached (for its counters).
    client_port: Mutex<Option<Arc<crate::server::PortState>>>,
}

#[derive(Default)]
struct HostState {
    node: Option<KvNode>,
    /// The running node's transport counters (`Some` exactly when `node` is).
    net_stats: Option<Arc<NetStats>>,
    /// When the current run started.
    started_at: Option<Instant>,
    /// How many times the node was started.
    starts: u32,
    /// Why the last start failed, if it did.
    last_error: Option<String>,
}

impl std::fmt::Debug for NodeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHost")
            .field("node", &self.entry.name)
            .field("encrypted", &self.password.is_some())
            .finish()
    }
}

impl NodeHost {
    /// A host for the node called `name_or_id` in `config` (not started yet). Reads the
    /// cluster password now, so a missing one is reported before anything runs.
    ///
    /// # Errors
    /// No such node, a node removed from the cluster (`removed` in the config), or the
    /// password cannot be read.
    pub fn new(config: &ClusterConfig, name_or_id: &str) -> Result<Self> {
        let entry = config.node(name_or_id)?.clone();
        if entry.removed {
            log::error!(
                "{} (n{}) refuses to start: it was removed from the cluster",
                entry.name,
                entry.id
            );
            anyhow::bail!(
                "{} (n{}) was removed from cluster {:?} by `raft-kv remove-node`; it cannot \
                 rejoin under this name and id: add a new node with `raft-kv add-node`",
                entry.name,
                entry.id,
                config.cluster_name
            );
        }
        let password = config.password()?;
        Ok(Self {
            config: config.clone(),
            entry,
            password,
            client_key: std::sync::OnceLock::new(),
            state: Mutex::new(HostState::default()),
            client_port: Mutex::new(None),
        })
    }

    /// The node's entry in the config.
    pub fn entry(&self) -> &NodeEntry {
        &self.entry
    }

    /// The cluster config.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The key clients must prove they know, on an encrypted cluster.
    pub fn client_key(&self) -> Option<&ClientKey> {
        self.client_key
            .get_or_init(|| self.password.as_deref().map(|p| self.config.client_key(p)))
            .as_ref()
    }

    /// Shows the counters of the client port serving this node in its status.
    pub(crate) fn attach_client_port(&self, port: Arc<crate::server::PortState>) {
        *self.client_port.lock() = Some(port);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.entry.id
    }

    /// Starts the node (no-op if it runs): opens its log, binds its UDP port, starts the
    /// runtime.
    ///
    /// # Errors
    /// The log cannot be opened (another process holds it, corruption, wrong owner) or
    /// the port cannot be bound.
    pub fn start(&self) -> Result<()> {
        let mut state = self.state.lock();
        if state.node.is_some() {
            return Ok(());
        }
        match self.build() {
            Ok((node, net_stats)) => {
                state.node = Some(node);
                state.net_stats = Some(net_stats);
                state.started_at = Some(Instant::now());
                state.starts += 1;
                state.last_error = None;
                Ok(())
            }
            Err(e) => {
                state.last_error = Some(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// Stops the node (no-op if stopped): its threads end, its port closes, its log is
    /// closed (and, if ephemeral, lost).
    pub fn stop(&self) {
        let node = {
            let mut state = self.state.lock();
            state.net_stats = None;
            state.node.take()
        };
        if let Some(node) = node {
            node.stop();
            drop(node.take_log());
            log::info!("{} stopped by the user", self.entry.name);
        }
    }

    /// The running node, if any.
    pub fn node(&self) -> Option<KvNode> {
        self.state.lock().node.clone()
    }

    /// Whether the node runs.
    pub fn is_running(&self) -> bool {
        self.state.lock().node.is_some()
    }

    /// Everything a UI or a status request shows, with the last `entries_max`
    /// committed entries.
    pub fn view(&self, entries_max: usize) -> HostView {
        let (node, net_stats, started_at, starts, last_error) = {
            let s = self.state.lock();
            (
                s.node.clone(),
                s.net_stats.clone(),
                s.started_at,
                s.starts,
                s.last_error.clone(),
            )
        };
        let mut view = HostView {
            name: self.entry.name.clone(),
            id: self.entry.id,
            cluster_name: self.config.cluster_name.clone(),
            raft_addr: self.entry.raft_addr.clone(),
            client_addr: self.entry.client_addr.clone(),
            encrypted: self.password.is_some(),
            persistent: self.config.storage.persistent,
            running: false,
            role: "stopped".to_string(),
            term: 0,
            leader: None,
            leader_name: None,
            is_leader: false,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            snapshot_index: 0,
            cluster: "-".to_string(),
            peers: Vec::new(),
            membership: MembershipView::default(),
            entries: Vec::new(),
            entries_total: 0,
            uptime_ms: 0,
            starts,
            last_error,
            log_level: crate::logger::level().to_string().to_lowercase(),
            client_port: self.client_port.lock().as_ref().map(|p| p.view()),
            transport: net_stats.map(|s| TransportView::from(&s.snapshot())),
        };
        let Some(node) = node else {
            return view;
        };
        let st: NodeStatus = node.status();
        view.running = st.running;
        view.role = role_name(st.role).to_string();
        view.term = st.term;
        view.leader = st.leader;
        view.leader_name = st.leader.map(|l| self.config.name_of(l));
        view.is_leader = st.is_leader();
        view.commit_index = st.commit_index;
        view.applied_index = st.applied_index;
        view.last_index = st.last_index;
        view.snapshot_index = st.snapshot_index;
        view.cluster = match st.cluster {
            ClusterState::Searching { attempt } => format!(
                "searching (attempt {attempt} of {})",
                self.config.timing.join_attempts
            ),
            ClusterState::Found => "found".to_string(),
            ClusterState::NotFound => "not found (still listening)".to_string(),
        };
        view.peers = st
            .peers
            .iter()
            .filter(|p| p.progress.id != self.entry.id)
            .map(|p| PeerView {
                name: self.config.name_of(p.progress.id),
                match_index: p.progress.match_index,
                lag: p.lag,
            })
            .collect();
        let names = |ids: &std::collections::BTreeSet<NodeId>| -> Vec<String> {
            ids.iter().map(|id| self.config.name_of(*id)).collect()
        };
        view.membership = MembershipView {
            voters: names(&st.membership.voters),
            learners: names(&st.membership.learners),
            outgoing_voters: names(&st.membership.outgoing_voters),
            index: st.membership.index,
            pending: st.membership.pending,
        };
        let (entries, total) =
            node.read_stale(|sm| (sm.last_entries(entries_max), sm.entries_total()));
        view.entries = entries;
        view.entries_total = total;
        view.uptime_ms = started_at.map_or(0, |t| t.elapsed().as_millis() as u64);
        view
    }

    fn build(&self) -> Result<(KvNode, Arc<NetStats>)> {
        let id = self.entry.id;
        let log: Box<dyn Log> = if self.config.storage.persistent {
            let dir = self.config.storage_dir(&self.entry);
            let log = SledLog::open(&dir, &self.config.cluster_name, id).with_context(|| {
                format!(
                    "cannot open {}'s persistent log in {}",
                    self.entry.name,
                    dir.display()
                )
            })?;
            Box::new(log)
        } else {
            Box::new(MemLog::new())
        };
        let replay_to = log.hard_state().commit;
        let transport = UdpTransport::bind(self.net_config()).with_context(|| {
            format!(
                "cannot start {}'s Raft transport on {}",
                self.entry.name, self.entry.raft_addr
            )
        })?;
        let net_stats = transport.stats_handle();
        log::info!(
            "{} (n{id}) starting on {}: {} storage, {}, {} reads",
            self.entry.name,
            transport.local_addr(),
            if self.config.storage.persistent {
                "persistent"
            } else {
                "ephemeral"
            },
            if self.password.is_some() {
                "encrypted"
            } else {
                "unencrypted"
            },
            self.config.protocol.read_mode
        );
        let node = Node::builder(self.config.node_config(id))
            .boxed_log(log)
            .transport(transport)
            .state_machine(KvLog::new(replay_to))
            .start()
            .with_context(|| format!("cannot start {}", self.entry.name))?;
        Ok((node, net_stats))
    }

    /// The UDP transport's config: this node's address, every peer, the password.
    pub fn net_config(&self) -> NetConfig {
        let mut net = NetConfig::new(
            self.entry.id,
            self.config.cluster_name.clone(),
            self.entry.raft_addr.clone(),
        );
        net.peers = self
            .config
            .nodes
            .iter()
            .filter(|n| n.id != self.entry.id && !n.removed)
            .map(|n| PeerConfig::new(n.id, n.name.clone(), n.raft_addr.clone()))
            .collect();
        net.password = self.password.clone();
        if let Some(k) = self.config.encryption.kdf_iterations {
            net.kdf_iterations = k;
        }
        net
    }

    /// Waits until the node runs and knows a leader.
    ///
    /// # Errors
    /// Not within `timeout`.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.node().and_then(|n| n.status().leader) {
                return Ok(leader);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} knows no leader after {timeout:?}",
                self.entry.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NodeHost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A short name for a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// What a node shows about itself: the UI's header and `raft-kv status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// The node's name.
    pub name: String,
    /// Its Raft id.
    pub id: NodeId,
    /// The cluster's name.
    pub cluster_name: String,
    /// Its Raft (UDP) address.
    pub raft_addr: String,
    /// Its client (TCP) address.
    pub client_addr: String,
    /// Whether Raft traffic is encrypted.
    pub encrypted: bool,
    /// Whether the log is on disk.
    pub persistent: bool,
    /// Whether the node runs (false after Stop).
    pub running: bool,
    /// `follower`, `pre-candidate`, `candidate`, `leader` or `stopped`.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// That leader's name.
    pub leader_name: Option<String>,
    /// Whether this node is the active leader (the original's "UAS running").
    pub is_leader: bool,
    /// Highest committed index.
    pub commit_index: u64,
    /// Highest applied index.
    pub applied_index: u64,
    /// Last index in its log.
    pub last_index: u64,
    /// Index of the last entry its latest snapshot covers (0: no snapshot yet).
    pub snapshot_index: u64,
    /// Whether it found its cluster.
    pub cluster: String,
    /// On a leader: each follower's progress.
    pub peers: Vec<PeerView>,
    /// The configuration in force on this node.
    pub membership: MembershipView,
    /// The latest committed entries, oldest first.
    pub entries: Vec<CommittedEntry>,
    /// Committed commands applied since start.
    pub entries_total: u64,
    /// Milliseconds since the node (re)started.
    pub uptime_ms: u64,
    /// How many times it was started.
    pub starts: u32,
    /// Why the last start failed.
    pub last_error: Option<String>,
    /// The process's log level.
    pub log_level: String,
    /// The client port's connections and counters (`None` when no port serves the
    /// node, as in the demo).
    pub client_port: Option<crate::server::ClientPortView>,
    /// The Raft (UDP) transport's counters since the node last started (`None` while
    /// the node is stopped).
    pub transport: Option<TransportView>,
}

/// A node's UDP transport counters, as `raft-kv status` shows them (raft-net's
/// [`NetStatsSnapshot`] in a form the client protocol and `--json` carry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportView {
    /// Datagrams handed to the socket.
    pub sent_datagrams: u64,
    /// Bytes handed to the socket.
    pub sent_bytes: u64,
    /// Datagrams read from the socket, good or bad.
    pub received_datagrams: u64,
    /// Bytes read from the socket, good or bad.
    pub received_bytes: u64,
    /// Messages delivered to the node.
    pub delivered_messages: u64,
    /// Datagrams or messages dropped, every reason added up.
    pub dropped_total: u64,
    /// Drops by reason (raft-net's `DropKind::name`), only reasons with at least one
    /// drop, in `DropKind::ALL` order.
    pub dropped: Vec<(String, u64)>,
}

impl From<&NetStatsSnapshot> for TransportView {
    fn from(s: &NetStatsSnapshot) -> Self {
        TransportView {
            sent_datagrams: s.sent_datagrams,
            sent_bytes: s.sent_bytes,
            received_datagrams: s.received_datagrams,
            received_bytes: s.received_bytes,
            delivered_messages: s.delivered_messages,
            dropped_total: s.dropped_total(),
            dropped: DropKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), s.dropped(*k)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// The configuration in force on a node, by node name (`n{id}` for a node the config
/// file does not list).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// The voters (during a joint change: the incoming ones).
    pub voters: Vec<String>,
    /// The learners: they receive the log but do not vote yet.
    pub learners: Vec<String>,
    /// During a joint change, the voters being left; empty otherwise.
    pub outgoing_voters: Vec<String>,
    /// Index of the configuration's entry in the log.
    pub index: u64,
    /// Whether a change is pending (not committed yet, or joint).
    pub pending: bool,
}

/// A follower's replication progress, as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// The follower's name.
    pub name: String,
    /// The highest index known replicated on it.
    pub match_index: u64,
    /// How far behind the leader's last index it is.
    pub lag: u64,
}

impl HostView {
    /// "node2 (n2)".
    pub fn title(&self) -> String {
        format!("{} (n{})", self.name, self.id)
    }

    /// The leader as text: its name, or "none".
    pub fn leader_text(&self) -> String {
        self.leader_name.clone().unwrap_or_else(|| "none".into())
    }
}

/// Ports [`free_ports`] picks from: below Linux's default ephemeral range (32768..61000),
/// so a port picked here is not handed out meanwhile to some socket bound to port 0.
pub const FREE_PORTS_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Finds `n` distinct loopback ports that are free for UDP and TCP alike, at random in
/// [`FREE_PORTS_RANGE`]. They are held together while picking (so they differ), then
/// released: a later bind may still race another process that picks the same port,
/// which is unlikely enough for demos and tests.
///
/// # Errors
/// No free ports found after many tries.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut held = Vec::with_capacity(n);
    let mut tries = 0;
    while held.len() < n {
        tries += 1;
        if tries > 10_000 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("no {n} free ports in {FREE_PORTS_RANGE:?}"),
            ));
        }
        let port = rng.gen_range(FREE_PORTS_RANGE);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (Ok(udp), Ok(tcp)) = (
            std::net::UdpSocket::bind(addr),
            std::net::TcpListener::bind(addr),
        ) else {
            continue;
        };
        held.push((udp, tcp, port));
    }
    Ok(held.into_iter().map(|(_, _, p)| p).collect())
}
