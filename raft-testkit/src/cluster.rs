//! Real clusters for tests: N nodes in this process, each with its own loopback UDP
//! transport and, optionally, its own sled log in a temporary directory.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig, NodeError, StateMachine};
use raft_core::{MemLog, NodeId, Role};
use raft_net::{NetConfig, PeerConfig, UdpTransport};
use raft_store::SledLog;

use crate::proxy::{ProxyHandle, UdpProxy};

/// The replicated map the test clusters run.
pub type Kv = KvStore<String, String>;

/// How to build a [`LocalCluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (ids 1..=nodes).
    pub nodes: u64,
    /// Durable sled logs in temporary directories; otherwise `MemLog`.
    pub sled: bool,
    /// A cluster password turns encryption on.
    pub password: Option<String>,
    /// PBKDF2 iterations (kept low in tests; production uses the default).
    pub kdf_iterations: u32,
    /// Cluster name.
    pub name: String,
    /// Join attempts and attempt length.
    pub join_attempts: u32,
    /// Length of one join attempt.
    pub join_attempt_interval_ms: u64,
    /// Snapshot after this many applied entries (see `NodeConfig`).
    pub snapshot_after_entries: u64,
    /// Entries kept behind a snapshot.
    pub snapshot_trailing_entries: u64,
    /// Route every node-to-node datagram through a [`UdpProxy`] (see
    /// [`LocalCluster::proxy`]) that can drop, delay, duplicate or cut it.
    pub proxy: bool,
    /// Seed of the proxy's random choices; `None`: the `RAFT_PROXY_SEED` environment
    /// variable if set, else drawn from the clock. The seed used is printed.
    pub proxy_seed: Option<u64>,
    /// Nodes talk over an in-process `raft_core::node::ChannelNetwork` instead of UDP
    /// (no sockets, no serialization; `password` and `proxy` do not apply).
    pub channel: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            sled: true,
            password: None,
            kdf_iterations: 1_000,
            name: "test cluster".into(),
            join_attempts: 5,
            join_attempt_interval_ms: 2_000,
            snapshot_after_entries: NodeConfig::default().snapshot_after_entries,
            snapshot_trailing_entries: NodeConfig::default().snapshot_trailing_entries,
            proxy: false,
            proxy_seed: None,
            channel: false,
        }
    }
}

/// Makes each node's state machine (given the node's id).
type MakeStateMachine<S> = Box<dyn Fn(NodeId) -> S + Send + Sync>;
/// Adjusts each node's config after the cluster's defaults are applied.
type TuneConfig = Box<dyn Fn(&mut NodeConfig) + Send + Sync>;

/// A cluster of real nodes on 127.0.0.1. Nodes can be stopped and started again on the
/// same address and the same storage directory. The nodes replicate a [`Kv`] unless
/// started with [`LocalCluster::start_with`].
pub struct LocalCluster<S: StateMachine = Kv> {
    options: ClusterOptions,
    addrs: Vec<SocketAddr>,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Node<S>>>,
    make_state_machine: MakeStateMachine<S>,
    tune: TuneConfig,
    /// The in-process network, when [`ClusterOptions::channel`].
    channel: Option<ChannelNetwork>,
    /// Declared last: dropped after the nodes are stopped.
    proxy: Option<UdpProxy>,
}

impl LocalCluster<Kv> {
    /// Starts every node, each with an empty [`Kv`].
    ///
    /// # Errors
    /// A node that cannot start (ports, storage).
    pub fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        Self::start_with(options, |_| Kv::new())
    }
}

impl<S: StateMachine> LocalCluster<S> {
    /// Starts every node, each with the state machine `make` returns for its id (also
    /// called again when a node is restarted).
    ///
    /// # Errors
    /// A node that cannot start (ports, storage).
    pub fn start_with(
        options: ClusterOptions,
        make: impl Fn(NodeId) -> S + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::start_tuned(options, make, |_| {})
    }

    /// As [`LocalCluster::start_with`], and `tune` adjusts every node's config (timeouts,
    /// limits) before the node starts.
    ///
    /// # Errors
    /// A node that cannot start (ports, storage).
    pub fn start_tuned(
        options: ClusterOptions,
        make: impl Fn(NodeId) -> S + Send + Sync + 'static,
        tune: impl Fn(&mut NodeConfig) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let mut addrs = Vec::new();
        // Reserve one free port per node; each node rebinds its own port at start.
        for _ in 0..options.nodes {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            addrs.push(s.local_addr()?);
        }
        let dirs = (0..options.nodes)
            .map(|_| tempfile::tempdir())
            .collect::<Result<Vec<_>, _>>()?;
        let proxy = if options.proxy {
            let targets: Vec<_> = (1..=options.nodes).zip(addrs.iter().copied()).collect();
            Some(UdpProxy::start(&targets, proxy_seed(options.proxy_seed))?)
        } else {
            None
        };
        let mut cluster = Self {
            proxy,
            channel: options.channel.then(ChannelNetwork::new),
            nodes: (0..options.nodes).map(|_| None).collect(),
            options,
            addrs,
            dirs,
            make_state_machine: Box::new(make),
            tune: Box::new(tune),
        };
        for id in 1..=cluster.options.nodes {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// Prepares one more node (id `n + 1`, a free loopback port and a storage
    /// directory) and starts it as a non-member: it is not in the cluster's
    /// configuration, so it waits, without campaigning, until a leader adds it
    /// (`Node::add_learner` with [`LocalCluster::addr`]). Its transport knows every
    /// other node; they learn its address from the configuration.
    ///
    /// # Errors
    /// With a proxy (not supported for added nodes), or when the node cannot start.
    pub fn add_node(&mut self) -> anyhow::Result<Node<S>> {
        anyhow::ensure!(
            self.proxy.is_none(),
            "add_node does not support the proxy: its sockets are made at start"
        );
        let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
        self.addrs.push(s.local_addr()?);
        drop(s);
        self.dirs.push(tempfile::tempdir()?);
        self.nodes.push(None);
        let id = self.nodes.len() as NodeId;
        self.start_node(id)
    }

    /// Node `id`'s storage directory.
    pub fn dir(&self, id: NodeId) -> &std::path::Path {
        self.dirs[(id - 1) as usize].path()
    }

    /// The handle of the proxy every datagram between nodes goes through, if the cluster
    /// was started with [`ClusterOptions::proxy`].
    pub fn proxy(&self) -> Option<ProxyHandle> {
        self.proxy.as_ref().map(UdpProxy::handle)
    }

    /// The address node `id` listens on (its real one, not the proxy's).
    pub fn addr(&self, id: NodeId) -> SocketAddr {
        self.addrs[(id - 1) as usize]
    }

    /// The network config node `id` uses. With a proxy, its peers' addresses are the
    /// proxy's sockets for them.
    pub fn net_config(&self, id: NodeId) -> NetConfig {
        let mut c = NetConfig::new(
            id,
            self.options.name.clone(),
            self.addrs[(id - 1) as usize].to_string(),
        );
        c.password = self.options.password.clone();
        c.kdf_iterations = self.options.kdf_iterations;
        for (i, addr) in self.addrs.iter().enumerate() {
            let peer = i as u64 + 1;
            if peer != id {
                let addr = match &self.proxy {
                    Some(p) => p.handle().addr(peer).unwrap_or(*addr),
                    None => *addr,
                };
                c.peers.push(PeerConfig::new(
                    peer,
                    format!("node{peer}"),
                    addr.to_string(),
                ));
            }
        }
        c
    }

    /// The node config node `id` uses. Its initial voters are the cluster's first
    /// `options.nodes` nodes; a node added later learns the configuration from the log.
    pub fn node_config(&self, id: NodeId) -> NodeConfig {
        let mut c = NodeConfig::new(id, 1..=self.options.nodes);
        c.join_attempts = self.options.join_attempts;
        c.join_attempt_interval_ms = self.options.join_attempt_interval_ms;
        c.snapshot_after_entries = self.options.snapshot_after_entries;
        c.snapshot_trailing_entries = self.options.snapshot_trailing_entries;
        (self.tune)(&mut c);
        c
    }

    /// Starts (or restarts) node `id` on its address and storage.
    ///
    /// # Errors
    /// The node cannot start.
    pub fn start_node(&mut self, id: NodeId) -> anyhow::Result<Node<S>> {
        anyhow::ensure!(self.node(id).is_none(), "node {id} is already running");
        let builder = Node::builder(self.node_config(id));
        let builder = match &self.channel {
            Some(net) => builder.transport(net.transport(id)),
            None => builder.transport(bind_retrying(self.net_config(id))?),
        };
        let builder = builder.state_machine((self.make_state_machine)(id));
        let builder = if self.options.sled {
            builder.log(SledLog::open(self.dir(id), &self.options.name, id)?)
        } else {
            builder.log(MemLog::new())
        };
        let node = builder.start()?;
        self.nodes[(id - 1) as usize] = Some(node.clone());
        Ok(node)
    }

    /// Stops node `id` (its threads, transport and storage are released).
    pub fn stop_node(&mut self, id: NodeId) {
        if let Some(n) = self.nodes[(id - 1) as usize].take() {
            n.stop();
        }
    }

    /// Node `id` if running.
    pub fn node(&self, id: NodeId) -> Option<&Node<S>> {
        self.nodes[(id - 1) as usize].as_ref()
    }

    /// Every running node.
    pub fn running(&self) -> Vec<&Node<S>> {
        self.nodes.iter().flatten().collect()
    }

    /// Waits until every running node agrees on one leader, and exactly one node
    /// considers itself leader; returns it.
    ///
    /// # Errors
    /// No agreement before `timeout`.
    pub fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<_> = self.running().iter().map(|n| n.status()).collect();
            let leaders: BTreeSet<_> = statuses.iter().map(|s| s.leader).collect();
            let claiming = statuses.iter().filter(|s| s.role == Role::Leader).count();
            if let (1, Some(Some(l)), 1) = (leaders.len(), leaders.iter().next(), claiming) {
                return Ok(*l);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no agreed leader after {timeout:?}: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `cond` holds for every running node.
    ///
    /// # Errors
    /// Not every node satisfied it before `timeout`.
    pub fn wait_all(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Node<S>) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.running().iter().all(|n| cond(n)) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops every node.
    pub fn stop_all(&mut self) {
        for id in 1..=self.nodes.len() as NodeId {
            self.stop_node(id);
        }
    }
}

impl<S: StateMachine> Drop for LocalCluster<S> {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The proxy seed: the option, else `RAFT_PROXY_SEED`, else the clock.
fn proxy_seed(option: Option<u64>) -> u64 {
    option
        .or_else(|| std::env::var("RAFT_PROXY_SEED").ok()?.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// Binds, retrying briefly: a restarted node's port may still be held for a moment by
/// the transport being stopped.
fn bind_retrying(config: NetConfig) -> Result<UdpTransport, NodeError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UdpTransport::bind(config.clone()) {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() < deadline => {
                log::debug!("bind of n{} failed, retrying: {e}", config.node_id);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(NodeError::Transport(e)),
        }
    }
}
