//! The peer directory: node id and name to socket address (the original's
//! NodeIPDictionary). Shared by the sender and processor threads and updatable at run
//! time, for membership changes or a peer that moved.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use parking_lot::RwLock;
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

    #[test]
    fn unresolvable_names_are_errors() {
        let d = PeerDirectory::new();
        assert!(d.resolve_and_insert(1, "x", "no port here").is_err());
        assert!(d.peers().is_empty());
    }
}
