//! The fault-injecting UDP proxy (raft-testkit/src/proxy.rs), alone and between the nodes
//! of a real loopback cluster: loss, duplication, jittered delay and partitions, ending
//! with a linearizability check of a real client history.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_linearizable_and_checker_bites, init_log, wait_for_leader_without, wait_until, Recorder,
    SetOnDrop, T,
};
use raft_core::{NodeId, Role};
use raft_net::wire;
use raft_testkit::cluster::{ClusterOptions, LocalCluster};
use raft_testkit::proxy::{Faults, ProxyHandle, UdpProxy};

/// A datagram with a valid header from `sender`, then `payload`.
fn datagram(sender: NodeId, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    wire::Header {
        version: wire::PROTOCOL_VERSION,
        flags: 0,
        cluster_id: wire::cluster_id("proxy test"),
        sender,
        epoch: 1,
        seq: 1,
    }
    .write(&mut d);
    d.extend_from_slice(payload);
    d
}

/// Two fake nodes (plain sockets) behind a proxy.
struct Pair {
    a: UdpSocket,
    b: UdpSocket,
    proxy: UdpProxy,
    h: ProxyHandle,
}

impl Pair {
    fn new() -> Pair {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(T)).unwrap();
        }
        let proxy = UdpProxy::start(
            &[(1, a.local_addr().unwrap()), (2, b.local_addr().unwrap())],
            7,
        )
        .unwrap();
        let h = proxy.handle();
        Pair { a, b, proxy, h }
    }

    /// Sends `payload` from node 1 to node 2 through the proxy, and waits until the
    /// proxy has taken it in (its fate is decided by the rules in force then).
    fn send_1_to_2(&self, payload: &[u8]) {
        let to = self.h.addr(2).unwrap();
        let received = self.h.counters().received;
        self.a.send_to(&datagram(1, payload), to).unwrap();
        wait_until("the proxy received the datagram", T, || {
            self.h.counters().received > received
        });
    }

    /// The payload of the next datagram node 2 receives.
    fn recv_at_2(&self) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let (n, _) = self.b.recv_from(&mut buf).unwrap();
        assert!(n >= wire::HEADER_BYTES, "got a {n}-byte datagram");
        buf[wire::HEADER_BYTES..n].to_vec()
    }
}

#[test]
fn proxy_forwards_drops_garbage_and_counts() {
    let p = Pair::new();
    // Garbage first, then a valid datagram: the first thing node 2 sees is the valid one.
    p.a.send_to(b"not a raft datagram", p.h.addr(2).unwrap())
        .unwrap();
    p.a.send_to(&[], p.h.addr(2).unwrap()).unwrap();
    p.send_1_to_2(b"hello");
    assert_eq!(p.recv_at_2(), b"hello");
    // Counted just after the send, so possibly just after it arrived.
    wait_until(
        "the counters show 3 received, 2 malformed, 1 forwarded",
        T,
        || {
            let c = p.h.counters();
            (c.received, c.malformed, c.forwarded) == (3, 2, 1)
        },
    );
    // The other direction: node 2's datagram to the proxy socket of node 1.
    p.b.send_to(&datagram(2, b"back"), p.h.addr(1).unwrap())
        .unwrap();
    let mut buf = [0u8; 100];
    let (n, _) = p.a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[wire::HEADER_BYTES..n], b"back");
}

#[test]
fn proxy_cuts_one_way_isolates_partitions_and_heals() {
    let p = Pair::new();
    p.h.cut(1, 2);
    assert!(p.h.is_cut(1, 2) && !p.h.is_cut(2, 1));
    p.send_1_to_2(b"lost");
    // The reverse direction still works.
    p.b.send_to(&datagram(2, b"reverse"), p.h.addr(1).unwrap())
        .unwrap();
    let mut buf = [0u8; 100];
    let (n, _) = p.a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[wire::HEADER_BYTES..n], b"reverse");
    p.h.uncut(1, 2);
    p.h.isolate(2);
    assert!(p.h.is_cut(1, 2) && p.h.is_cut(2, 1));
    p.send_1_to_2(b"lost too");
    p.h.heal();
    p.h.partition(&[1], &[2]);
    p.send_1_to_2(b"lost as well");
    p.h.heal();
    p.send_1_to_2(b"after heal");
    assert_eq!(p.recv_at_2(), b"after heal");
    wait_until("the counters show 3 cut, 2 forwarded", T, || {
        let c = p.h.counters();
        (c.cut, c.forwarded) == (3, 2)
    });
}

#[test]
fn proxy_delays_drops_and_duplicates() {
    let p = Pair::new();
    // Delay: the datagram takes at least the delay.
    p.h.set_link(
        1,
        2,
        Faults {
            delay: Duration::from_millis(150),
            jitter: Duration::from_millis(50),
            ..Faults::none()
        },
    );
    let sent = Instant::now();
    p.send_1_to_2(b"slow");
    assert_eq!(p.recv_at_2(), b"slow");
    assert!(
        sent.elapsed() >= Duration::from_millis(150),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(p.h.counters().delayed, 1);
    // Certain loss.
    p.h.clear_faults();
    p.h.set_node(1, Faults::lossy(1.0));
    p.send_1_to_2(b"dropped");
    // Certain duplication.
    p.h.clear_faults();
    p.h.set_default(Faults {
        duplicate: 1.0,
        ..Faults::none()
    });
    p.send_1_to_2(b"twice");
    assert_eq!(p.recv_at_2(), b"twice");
    assert_eq!(p.recv_at_2(), b"twice");
    wait_until(
        "the counters show 1 dropped, 1 duplicated, 3 forwarded",
        T,
        || {
            let c = p.h.counters();
            (c.dropped, c.duplicated, c.forwarded) == (1, 1, 3)
        },
    );
    // Stopping joins the threads promptly; the handle still reads the counters.
    let mut proxy = p.proxy;
    let stopping = Instant::now();
    proxy.stop();
    assert!(stopping.elapsed() < Duration::from_secs(5));
    assert_eq!(p.h.counters().forwarded, 3);
}

/// 10% loss, 5% duplication, 1-5 ms of delay on every link.
fn lossy_jittery() -> Faults {
    Faults {
        drop: 0.10,
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(4),
        duplicate: 0.05,
    }
}

#[test]
fn cluster_through_a_lossy_duplicating_jittery_proxy_commits_and_restarts() {
    init_log();
    // Encrypted: the proxy reads only the plaintext header.
    let mut c = LocalCluster::start(ClusterOptions {
        proxy: true,
        sled: true,
        password: Some("proxy test password".into()),
        ..Default::default()
    })
    .unwrap();
    let h = c.proxy().unwrap();
    h.set_default(lossy_jittery());
    c.wait_for_leader(T).unwrap();
    for i in 0..30 {
        c.node(i % 3 + 1)
            .unwrap()
            .put_with_retry(format!("k{i}"), format!("v{i}"), T)
            .unwrap();
    }
    c.wait_all("all applied 30 keys", T, |n| {
        n.read_stale(|kv| kv.len()) == 30
    })
    .unwrap();
    // A restarted node finds its peers through the proxy again.
    c.stop_node(3);
    c.node(1)
        .unwrap()
        .put_with_retry("while 3 is down".into(), "x".into(), T)
        .unwrap();
    c.start_node(3).unwrap();
    c.wait_all("all applied 31 keys", T, |n| {
        n.read_stale(|kv| kv.len()) == 31
    })
    .unwrap();
    let counters = h.counters();
    assert!(
        counters.dropped > 0 && counters.duplicated > 0 && counters.delayed > 0,
        "{counters:?}"
    );
    assert_eq!(counters.malformed, 0, "{counters:?}");
}

#[test]
fn isolated_leader_is_replaced_and_rejoins_as_follower_after_heal() {
    init_log();
    let c = LocalCluster::start(ClusterOptions {
        proxy: true,
        sled: false,
        ..Default::default()
    })
    .unwrap();
    let h = c.proxy().unwrap();
    let old = c.wait_for_leader(T).unwrap();
    c.node(old)
        .unwrap()
        .put_with_retry("before".into(), "1".into(), T)
        .unwrap();
    h.isolate(old);
    let new = wait_for_leader_without(&c, old);
    assert_ne!(new, old);
    c.node(new)
        .unwrap()
        .put_with_retry("during".into(), "2".into(), T)
        .unwrap();
    // The isolated node cannot serve a linearizable read.
    assert!(c
        .node(old)
        .unwrap()
        .get(&"during".to_string(), Duration::from_millis(300))
        .is_err());
    h.heal();
    let after = c.wait_for_leader(T).unwrap();
    assert_ne!(
        after, old,
        "pre-vote keeps the returning node from deposing the leader"
    );
    c.wait_all(
        "every node applied the write made during the isolation",
        T,
        |n| n.get_stale(&"during".to_string()).as_deref() == Some("2"),
    )
    .unwrap();
    assert_eq!(c.node(old).unwrap().status().role, Role::Follower);
    assert_eq!(
        c.node(old).unwrap().get(&"during".to_string(), T).unwrap(),
        Some("2".into())
    );
    assert!(h.counters().cut > 0);
}

#[test]
fn linearizable_history_through_loss_jitter_and_leader_isolation() {
    init_log();
    let c = LocalCluster::start(ClusterOptions {
        proxy: true,
        sled: false,
        ..Default::default()
    })
    .unwrap();
    let h = c.proxy().unwrap();
    h.set_default(lossy_jittery());
    c.wait_for_leader(T).unwrap();
    let nodes: Vec<_> = c.running().into_iter().cloned().collect();
    let op_timeout = Duration::from_millis(1_500);
    let rec = Recorder::new(3, op_timeout);
    let done = Arc::new(AtomicBool::new(false));
    const CLIENTS: u64 = 5;
    let seed = h.seed();
    let isolated = std::thread::scope(|s| {
        // Clients stop however the driver below ends, panics included.
        let _stop_clients = SetOnDrop(done.clone());
        for client in 0..CLIENTS {
            let (nodes, rec, done) = (&nodes, &rec, &done);
            s.spawn(move || {
                rec.client(client, seed, nodes.len(), |i| Some(nodes[i].clone()), done)
            });
        }
        // The driver: some traffic, isolate the leader, more traffic, heal, more traffic.
        // Each phase lasts for some operations and for some time: the isolation outlasts
        // the operation timeout, so clients of the old leader see their operations fail.
        rec.phase("operations before the isolation", 200, Duration::ZERO);
        let old = c.wait_for_leader(T).unwrap();
        h.isolate(old);
        let new = wait_for_leader_without(&c, old);
        rec.phase("operations during the isolation", 200, op_timeout * 2);
        h.heal();
        c.wait_for_leader(T).unwrap();
        rec.phase("operations after the heal", 200, Duration::from_secs(1));
        done.store(true, Ordering::SeqCst);
        (old, new)
    });
    let history = rec.ops.into_inner().unwrap();
    let returned = history.iter().filter(|o| o.ret.is_some()).count();
    let counters = h.counters();
    eprintln!(
        "{} operations ({returned} returned), leader n{} isolated, n{} took over; proxy {counters:?}",
        history.len(),
        isolated.0,
        isolated.1
    );
    assert!(counters.dropped > 0 && counters.cut > 0, "{counters:?}");
    assert_linearizable_and_checker_bites(&history, seed);
}
