//! The fault-injecting UDP proxy (raft-testkit/src/proxy.rs), alone and between the nodes
//! of a real loopback cluster: loss, duplication, jittered delay and partitions, ending
//! with a linearizability check of a real client history.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_core::{NodeId, Role};
use raft_net::wire;
use raft_testkit::cluster::{ClusterOptions, LocalCluster};
use raft_testkit::linearizability::{check_kv, KvInput, LinResult, Operation};
use raft_testkit::proxy::{Faults, ProxyHandle, UdpProxy};
use rand::{Rng, SeedableRng};

const T: Duration = Duration::from_secs(30);

fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Polls `cond` every few milliseconds until it holds; panics after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

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

/// Waits until the nodes other than `excluded` agree on a leader among them.
fn wait_for_leader_without(c: &LocalCluster, excluded: NodeId) -> NodeId {
    let mut found = None;
    wait_until(
        &format!("the nodes other than n{excluded} agree on a leader"),
        T,
        || {
            let statuses: Vec<_> = c
                .running()
                .into_iter()
                .filter(|n| n.id() != excluded)
                .map(|n| n.status())
                .collect();
            let l = statuses[0].leader;
            let agreed = l.is_some()
                && l != Some(excluded)
                && statuses.iter().all(|s| s.leader == l)
                && statuses
                    .iter()
                    .any(|s| Some(s.id) == l && s.role == Role::Leader);
            found = l;
            agreed
        },
    );
    found.unwrap()
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

/// Sets the flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A clock for the history: strictly increasing nanoseconds since `start`, so every
/// event has a unique time and real-time order is kept.
struct HistClock {
    start: Instant,
    last: AtomicU64,
}

impl HistClock {
    fn now(&self) -> u64 {
        let t = self.start.elapsed().as_nanos() as u64;
        let prev = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some((l + 1).max(t)))
            .unwrap();
        (prev + 1).max(t)
    }
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
    let clock = HistClock {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let history = Mutex::new(Vec::<Operation>::new());
    let next_value = AtomicU64::new(1);
    let done = Arc::new(AtomicBool::new(false));
    const KEYS: u64 = 3;
    const CLIENTS: u64 = 5;
    let op_timeout = Duration::from_millis(1_500);
    let seed = h.seed();
    let isolated = std::thread::scope(|s| {
        // Clients stop however the driver below ends, panics included.
        let _stop_clients = SetOnDrop(done.clone());
        for client in 0..CLIENTS {
            let (nodes, clock, history, next_value, done) =
                (&nodes, &clock, &history, &next_value, done.clone());
            s.spawn(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ client);
                let mut at = client as usize % nodes.len();
                while !done.load(Ordering::SeqCst) {
                    let node = &nodes[at];
                    let key = rng.gen_range(0..KEYS);
                    let name = format!("k{key}");
                    let (input, call, result) = if rng.gen_bool(0.5) {
                        let value = next_value.fetch_add(1, Ordering::SeqCst);
                        let call = clock.now();
                        let r = node.put_with_retry(name, value.to_string(), op_timeout);
                        (KvInput::Put { key, value }, call, r.map(|_| None))
                    } else {
                        let call = clock.now();
                        let r = node.get(&name, op_timeout);
                        let r = r.map(|v| Some(v.map(|v| v.parse::<u64>().unwrap())));
                        (KvInput::Get { key }, call, r)
                    };
                    let ret = clock.now();
                    let op = match (input, result) {
                        (_, Ok(output)) => Some(Operation {
                            client,
                            input,
                            output,
                            call,
                            ret: Some(ret),
                        }),
                        // A write that failed may still take effect: it never returned.
                        (KvInput::Put { .. }, Err(_)) => Some(Operation {
                            client,
                            input,
                            output: None,
                            call,
                            ret: None,
                        }),
                        // A read that failed tells nothing.
                        (KvInput::Get { .. }, Err(_)) => None,
                    };
                    if op.as_ref().is_some_and(|o| o.ret.is_none()) {
                        // Try another node next (this one may be cut off).
                        at = (at + 1) % nodes.len();
                    }
                    if let Some(op) = op {
                        history.lock().unwrap().push(op);
                    }
                }
            });
        }
        // The driver: some traffic, isolate the leader, more traffic, heal, more traffic.
        // Each phase lasts for some operations and for some time: the isolation outlasts
        // the operation timeout, so clients of the old leader see their operations fail.
        let ops = || history.lock().unwrap().len();
        let phase = |what: &str, n: usize, at_least: Duration| {
            let (start, before) = (Instant::now(), ops());
            wait_until(what, T, || {
                ops() >= before + n && start.elapsed() >= at_least
            });
        };
        phase("operations before the isolation", 200, Duration::ZERO);
        let old = c.wait_for_leader(T).unwrap();
        h.isolate(old);
        let new = wait_for_leader_without(&c, old);
        phase("operations during the isolation", 200, op_timeout * 2);
        h.heal();
        c.wait_for_leader(T).unwrap();
        phase("operations after the heal", 200, Duration::from_secs(1));
        done.store(true, Ordering::SeqCst);
        (old, new)
    });
    let history = history.into_inner().unwrap();
    let returned = history.iter().filter(|o| o.ret.is_some()).count();
    let counters = h.counters();
    eprintln!(
        "{} operations ({returned} returned), leader n{} isolated, n{} took over; proxy {counters:?}",
        history.len(),
        isolated.0,
        isolated.1
    );
    assert!(counters.dropped > 0 && counters.cut > 0, "{counters:?}");
    let reads_seen = history
        .iter()
        .filter(|o| matches!(o.output, Some(Some(_))))
        .count();
    assert!(reads_seen > 0, "no read saw a value");
    match check_kv(&history, 5_000_000) {
        LinResult::Ok => {}
        other => panic!("not linearizable (proxy seed {}): {other:?}", h.seed()),
    }
    // The checker bites on this history: a read of a value never written is caught.
    let mut broken = history.clone();
    let read = broken
        .iter_mut()
        .find(|o| matches!(o.output, Some(Some(_))))
        .unwrap();
    read.output = Some(Some(u64::MAX));
    assert!(matches!(
        check_kv(&broken, 5_000_000),
        LinResult::Illegal { .. }
    ));
}
