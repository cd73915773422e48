//! The peer directory: node id and name to socket address (the original's
//! NodeIPDictionary). Shared by the sender and processor threads and updatable at run
//! time, for membership changes or a peer that moved.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use raft_core::NodeId;

/// One known peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub id: NodeId,
    /// Its human name.
    pub name: String,
    /// Where its datagrams go.
    pub addr: SocketAddr,
}

/// Node id / name -> address. A handle: clones share one table.
///
/// ```
/// use raft_net::PeerDirectory;
/// let dir = PeerDirectory::new();
/// dir.insert(2, "node-b", "127.0.0.1:7002".parse().unwrap());
/// assert_eq!(dir.addr(2), Some("127.0.0.1:7002".parse().unwrap()));
/// assert_eq!(dir.id_of("node-b"), Some(2));
/// dir.resolve_and_insert(3, "node-c", "localhost:7003").unwrap();
/// assert!(dir.contains(3));
/// ```
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory {
    inner: Arc<RwLock<HashMap<NodeId, Peer>>>,
}

impl PeerDirectory {
    /// An empty directory.
    pub fn new() -> PeerDirectory {
        PeerDirectory::default()
    }

    /// Adds or replaces a peer; returns the entry it replaced.
    pub fn insert(&self, id: NodeId, name: impl Into<String>, addr: SocketAddr) -> Option<Peer> {
        let peer = Peer {
            id,
            name: name.into(),
            addr,
        };
        self.inner.write().insert(id, peer)
    }

    /// Resolves `host_port` (`"db1.example:7000"`, `"10.0.0.1:7000"`) and adds the
    /// peer under its first address. Resolution may block on DNS: do it at start or
    /// from an admin thread, not from a hot path.
    ///
    /// # Errors
    /// The name did not resolve, or resolved to no address.
    pub fn resolve_and_insert(
        &self,
        id: NodeId,
        name: impl Into<String>,
        host_port: &str,
    ) -> io::Result<SocketAddr> {
        let addr = resolve(host_port)?;
        self.insert(id, name, addr);
        Ok(addr)
    }

    /// Removes a peer; returns its entry.
    pub fn remove(&self, id: NodeId) -> Option<Peer> {
        self.inner.write().remove(&id)
    }

    /// The address for `id`.
    pub fn addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.inner.read().get(&id).map(|p| p.addr)
    }

    /// Whether `id` is known.
    pub fn contains(&self, id: NodeId) -> bool {
        self.inner.read().contains_key(&id)
    }

    /// The id of the peer called `name`.
    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        self.inner
            .read()
            .values()
            .find(|p| p.name == name)
            .map(|p| p.id)
    }

    /// The name of peer `id`.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        self.inner.read().get(&id).map(|p| p.name.clone())
    }

    /// Every peer, sorted by id.
    pub fn peers(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self.inner.read().values().cloned().collect();
        peers.sort_by_key(|p| p.id);
        peers
    }
}

/// How a host name becomes an address: [`resolve`], or a stand-in in tests.
pub(crate) type ResolveFn = Arc<dyn Fn(&str) -> io::Result<SocketAddr> + Send + Sync>;

/// Applies the members' addresses of each configuration in force to a [`PeerDirectory`]
/// without making the caller (the node's WaitLoop) wait for DNS.
///
/// An address that is an IP literal (`10.0.0.2:7000`) is applied at once. A host name is
/// resolved on a short-lived thread `raft-resolve-n<id>` (one per update that has names
/// to resolve; configurations change rarely), and its result applied only if it is still
/// the newest address asked for that peer: an update that comes later always wins over a
/// slow resolution of an earlier one. A peer whose address did not change since it was
/// applied is not resolved again.
pub(crate) struct PeerUpdater {
    node_id: NodeId,
    directory: PeerDirectory,
    resolve: ResolveFn,
    /// Per peer: the newest address asked for, and whether it has been applied.
    wanted: Arc<Mutex<HashMap<NodeId, (String, bool)>>>,
}

impl std::fmt::Debug for PeerUpdater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerUpdater")
            .field("node_id", &self.node_id)
            .field("wanted", &self.wanted)
            .finish_non_exhaustive()
    }
}

impl PeerUpdater {
    /// Updates `directory` for node `node_id`, resolving host names with `resolve`.
    pub(crate) fn new(node_id: NodeId, directory: PeerDirectory, resolve: ResolveFn) -> Self {
        PeerUpdater {
            node_id,
            directory,
            resolve,
            wanted: Arc::default(),
        }
    }

    /// Adds or updates `peers` (`(id, "host:port")`, this node's own entry ignored).
    /// Never blocks on DNS: see the type's documentation.
    pub(crate) fn update(&self, peers: &[(NodeId, String)]) {
        let me = self.node_id;
        let mut names = Vec::new();
        {
            let mut wanted = self.wanted.lock();
            for (id, host_port) in peers {
                if *id == me
                    || wanted
                        .get(id)
                        .is_some_and(|(w, applied)| w == host_port && *applied)
                {
                    continue;
                }
                match host_port.parse::<SocketAddr>() {
                    Ok(addr) => {
                        wanted.insert(*id, (host_port.clone(), true));
                        apply(me, &self.directory, *id, addr);
                    }
                    Err(_) => {
                        wanted.insert(*id, (host_port.clone(), false));
                        names.push((*id, host_port.clone()));
                    }
                }
            }
        }
        if names.is_empty() {
            return;
        }
        let directory = self.directory.clone();
        let resolve = self.resolve.clone();
        let wanted = self.wanted.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("raft-resolve-n{me}"))
            .spawn(move || resolve_all(me, &directory, &*resolve, &wanted, names));
        if let Err(e) = spawned {
            log::error!(
                "n{me}: cannot start a thread to resolve new members' addresses ({e}); \
                 they stay unreachable until the next configuration change"
            );
        }
    }
}

/// Resolves `names` one after the other and applies each result that is still wanted.
fn resolve_all(
    me: NodeId,
    directory: &PeerDirectory,
    resolve: &(dyn Fn(&str) -> io::Result<SocketAddr> + Send + Sync),
    wanted: &Mutex<HashMap<NodeId, (String, bool)>>,
    names: Vec<(NodeId, String)>,
) {
    for (id, host_port) in names {
        let result = resolve(&host_port);
        let mut wanted = wanted.lock();
        match wanted.get_mut(&id) {
            Some((w, applied)) if *w == host_port => match result {
                Ok(addr) => {
                    *applied = true;
                    apply(me, directory, id, addr);
                }
                Err(e) => log::error!(
                    "n{me}: cannot reach member n{id}: its address {host_port:?} does not \
                     resolve ({e}); keeping {:?}",
                    directory.addr(id)
                ),
            },
            // A newer update asked for another address meanwhile: it wins.
            _ => {
                log::debug!("n{me}: dropping the resolution of {host_port:?} for n{id}: superseded")
            }
        }
    }
}

/// Points peer `id` at `addr`, keeping its name (or naming it `n<id>`).
fn apply(me: NodeId, directory: &PeerDirectory, id: NodeId, addr: SocketAddr) {
    if directory.addr(id) == Some(addr) {
        return;
    }
    let name = directory.name_of(id).unwrap_or_else(|| format!("n{id}"));
    log::info!("n{me}: member n{id} ({name}) is at {addr}");
    directory.insert(id, name, addr);
}

/// Resolves `host:port` to its first address.
pub(crate) fn resolve(host_port: &str) -> io::Result<SocketAddr> {
    host_port.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host_port} resolved to no address"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_seen_by_every_clone() {
        let a = PeerDirectory::new();
        let b = a.clone();
        a.insert(1, "one", "127.0.0.1:1".parse().unwrap());
        assert_eq!(b.addr(1), Some("127.0.0.1:1".parse().unwrap()));
        let old = b.insert(1, "one", "127.0.0.1:2".parse().unwrap()).unwrap();
        assert_eq!(old.addr.port(), 1);
        assert_eq!(a.addr(1).unwrap().port(), 2);
        assert_eq!(a.name_of(1).as_deref(), Some("one"));
        assert!(a.remove(1).is_some());
        assert!(!b.contains(1));
    }

    use crossbeam_channel::{bounded, Receiver};
    use std::time::{Duration, Instant};

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A resolver that answers `name -> 127.0.0.1:<port in the name>` only when the test
    /// releases it (or, so that a caller that waits for it cannot hang the test, after a
    /// minute), and reports each call and each answer.
    fn held_resolver(
        release: Receiver<()>,
        calls: crossbeam_channel::Sender<String>,
        answered: Arc<std::sync::atomic::AtomicUsize>,
    ) -> ResolveFn {
        Arc::new(move |host_port: &str| {
            let _ = calls.send(host_port.to_string());
            let _ = release.recv_timeout(Duration::from_secs(60));
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let port = host_port.rsplit(':').next().unwrap().parse().unwrap();
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        })
    }

    /// The WaitLoop calls `Transport::update_peers` when a configuration comes into
    /// force; resolving a host name there stalled it for as long as DNS took. Names are
    /// resolved on another thread now; IP literals apply at once.
    #[test]
    fn host_names_are_resolved_off_the_callers_thread() {
        let dir = PeerDirectory::new();
        let (release_tx, release_rx) = bounded(0);
        let (calls_tx, calls_rx) = bounded(16);
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let resolver = held_resolver(release_rx, calls_tx, answered.clone());
        let updater = PeerUpdater::new(1, dir.clone(), resolver);
        updater.update(&[
            (1, "me.example:1".into()),
            (2, "127.0.0.1:7002".into()),
            (3, "node-c.example:7003".into()),
        ]);
        // Returned while the resolver is held: the literal is in, the name is not yet.
        assert_eq!(
            answered.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "update_peers waited for the resolver"
        );
        assert_eq!(dir.addr(2), Some("127.0.0.1:7002".parse().unwrap()));
        assert_eq!(dir.name_of(2).as_deref(), Some("n2"));
        assert_eq!(
            calls_rx.recv_timeout(Duration::from_secs(20)).unwrap(),
            "node-c.example:7003"
        );
        assert!(!dir.contains(3) && !dir.contains(1));
        release_tx
            .send_timeout((), Duration::from_secs(20))
            .unwrap();
        wait_until("n3 in the directory", || dir.contains(3));
        assert_eq!(dir.addr(3), Some("127.0.0.1:7003".parse().unwrap()));
        // The same addresses again: nothing to resolve.
        updater.update(&[(3, "node-c.example:7003".into())]);
        assert!(calls_rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    /// A slow resolution of an older address never overwrites a newer one.
    #[test]
    fn a_later_update_wins_over_a_slow_resolution() {
        let dir = PeerDirectory::new();
        let (release_tx, release_rx) = bounded(0);
        let (calls_tx, calls_rx) = bounded(16);
        let answered = Arc::default();
        let updater = PeerUpdater::new(
            1,
            dir.clone(),
            held_resolver(release_rx, calls_tx, answered),
        );
        // One thread resolves both, in order: n4 is the sign that n2's result was handled.
        updater.update(&[
            (2, "old.example:7100".into()),
            (4, "sentinel.example:7400".into()),
        ]);
        let next_call = || calls_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(next_call(), "old.example:7100");
        updater.update(&[(2, "127.0.0.1:7200".into())]);
        assert_eq!(dir.addr(2).unwrap().port(), 7200);
        release_tx
            .send_timeout((), Duration::from_secs(20))
            .unwrap();
        assert_eq!(next_call(), "sentinel.example:7400");
        release_tx
            .send_timeout((), Duration::from_secs(20))
            .unwrap();
        wait_until("n4 in the directory", || dir.contains(4));
        assert_eq!(
            dir.addr(2).unwrap().port(),
            7200,
            "the stale resolution won"
        );
    }

    #[test]
    fn unresolvable_names_are_errors() {
        let d = PeerDirectory::new();
        assert!(d.resolve_and_insert(1, "x", "no port here").is_err());
        assert!(d.peers().is_empty());
    }
}
