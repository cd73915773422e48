//! Big entries over real UDP (issue 18, item 4): a 3-node encrypted cluster whose nodes
//! send datagrams of at most 1,400 bytes, every datagram between them through the
//! fault-injecting proxy (1% loss, 1% duplication, jitter that reorders). A 1 MiB entry
//! travels as ~800 fragments per follower, lost ones are asked for again, and it is
//! applied on every node; a proposal over `entry_bytes_max` gets a clear error.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{init_log, wait_until, T};
use raft_core::node::{Node, NodeConfig, NodeError};
use raft_core::{MemLog, NodeId, ProposeError, Role};
use raft_net::{NetConfig, NetStats, PeerConfig, UdpTransport};
use raft_testkit::cluster::Kv;
use raft_testkit::proxy::{Faults, UdpProxy};
use rand::{Rng, SeedableRng};

const NODES: u64 = 3;

struct Cluster {
    nodes: Vec<Node<Kv>>,
    stats: Vec<Arc<NetStats>>,
    proxy: UdpProxy,
}

impl Cluster {
    /// Three MemLog nodes whose datagrams all go through one proxy.
    fn start(datagram_bytes_max: usize, seed: u64) -> Cluster {
        let sockets: Vec<_> = (0..NODES)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        drop(sockets);
        let targets: Vec<_> = (1..=NODES).zip(addrs.iter().copied()).collect();
        let proxy = UdpProxy::start(&targets, seed).unwrap();
        let h = proxy.handle();
        let mut nodes = Vec::new();
        let mut stats = Vec::new();
        for id in 1..=NODES {
            let mut net = NetConfig::new(id, "big entries", addrs[(id - 1) as usize].to_string());
            net.password = Some("big entries password".into());
            net.kdf_iterations = 1_000;
            net.datagram_bytes_max = datagram_bytes_max;
            for peer in (1..=NODES).filter(|&p| p != id) {
                let addr = h.addr(peer).unwrap().to_string();
                net.peers
                    .push(PeerConfig::new(peer, format!("node{peer}"), addr));
            }
            let transport = UdpTransport::bind(net).unwrap();
            stats.push(transport.stats_handle());
            let node = Node::builder(NodeConfig::new(id, 1..=NODES))
                .transport(transport)
                .log(MemLog::new())
                .state_machine(Kv::new())
                .start()
                .unwrap();
            nodes.push(node);
        }
        Cluster {
            nodes,
            stats,
            proxy,
        }
    }

    fn node(&self, id: NodeId) -> &Node<Kv> {
        &self.nodes[(id - 1) as usize]
    }

    fn leader(&self) -> NodeId {
        let mut leader = 0;
        wait_until("one agreed leader", T, || {
            let statuses: Vec<_> = self.nodes.iter().map(|n| n.status()).collect();
            let claiming: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).collect();
            match claiming[..] {
                [l] if statuses.iter().all(|s| s.leader == Some(l.id)) => {
                    leader = l.id;
                    true
                }
                _ => false,
            }
        });
        leader
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.stop();
        }
        self.proxy.stop();
    }
}

/// `len` characters that lz4 cannot shrink much (no repeats to find).
fn incompressible(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[test]
fn a_one_mib_entry_replicates_over_1400_byte_datagrams_with_loss_duplication_and_reordering() {
    init_log();
    let c = Cluster::start(NetConfig::INTERNET_SAFE_DATAGRAM_BYTES, 18);
    let leader = c.leader();
    let limit = raft_core::Config::ENTRY_BYTES_MAX_DEFAULT;
    c.proxy.handle().set_default(Faults {
        drop: 0.01,
        duplicate: 0.01,
        delay: Duration::ZERO,
        jitter: Duration::from_millis(2),
    });

    // A small write, then the big one: an entry of 1 MiB (value, key and envelope).
    c.node(leader)
        .put_with_retry("small".into(), "before".into(), T)
        .unwrap();
    let big = incompressible(1024 * 1024 - 512, 1);
    c.node(leader)
        .put_with_retry("big".into(), big.clone(), T)
        .unwrap();
    c.node(leader)
        .put_with_retry("small".into(), "after".into(), T)
        .unwrap();
    for id in 1..=NODES {
        wait_until(&format!("n{id} applied the big entry"), T, || {
            c.node(id).read_stale(|kv| {
                kv.get(&"big".to_string()) == Some(&big)
                    && kv.get(&"small".to_string()).map(String::as_str) == Some("after")
            })
        });
    }
    let proxy = c.proxy.handle().counters();
    eprintln!("proxy: {proxy:?}");
    for (i, s) in c.stats.iter().enumerate() {
        eprintln!("n{}: {}", i + 1, s.snapshot());
    }
    let leader_stats = c.stats[(leader - 1) as usize].snapshot();
    assert!(leader_stats.fragmented_messages_sent >= 2, "{leader_stats}");
    assert!(
        leader_stats.sent_bytes / leader_stats.sent_datagrams.max(1) <= 1_400,
        "{leader_stats}"
    );
    let reassembled: u64 = c
        .stats
        .iter()
        .map(|s| s.snapshot().messages_reassembled)
        .sum();
    assert!(reassembled >= 2, "both followers assembled the entry");
    assert!(proxy.dropped > 0 && proxy.duplicated > 0, "{proxy:?}");
    for s in &c.stats {
        let s = s.snapshot();
        assert!(
            s.reassembly_bytes_peak <= NetConfig::default().reassembly_bytes_total_max as u64,
            "{s}"
        );
    }

    // One byte over the limit: refused with the limit named, on the leader and when
    // forwarded from a follower; nothing is replicated.
    let follower = (1..=NODES).find(|&id| id != leader).unwrap();
    for id in [leader, follower] {
        let huge = vec![b'x'; limit as usize + 1];
        let err = c.node(id).propose_wait(huge, T).unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::Rejected(ProposeError::TooLarge {
                    limit_bytes: 1_048_576,
                    ..
                })
            ),
            "n{id}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("1048576") && text.contains("entry_bytes_max"),
            "{text}"
        );
    }
}
