//! Multi-client histories against real 3-node loopback clusters behind the
//! fault-injecting UDP proxy, checked for linearizability: the gaps the history test of
//! proxy_udp.rs leaves, lease reads under one-way cuts, and crashes and restarts with
//! durable logs.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{
    assert_linearizable_and_checker_bites, init_log, wait_for_leader_without, Recorder, SetOnDrop,
    T,
};
use raft_core::{NodeId, ReadMode};
use raft_testkit::cluster::{ClusterOptions, Kv, LocalCluster};
use raft_testkit::linearizability::{KvInput, Operation};
use raft_testkit::proxy::{Faults, ProxyHandle};

const CLIENTS: u64 = 5;
const KEYS: u64 = 3;
/// The client id of the driver's own reads.
const PROBE: u64 = CLIENTS;

/// 3% loss and 1-3 ms of delay on every link.
fn light_loss() -> Faults {
    Faults {
        drop: 0.03,
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(2),
        duplicate: 0.01,
    }
}

/// The leader can send but not receive (`inbound`) or receive but not send.
fn cut_one_way(h: &ProxyHandle, leader: NodeId, inbound: bool) {
    for peer in (1..=3).filter(|&p| p != leader) {
        if inbound {
            h.cut(peer, leader);
        } else {
            h.cut(leader, peer);
        }
    }
}

#[test]
fn lease_reads_stay_linearizable_through_isolation_and_one_way_cuts() {
    init_log();
    let c = LocalCluster::start_tuned(
        ClusterOptions {
            proxy: true,
            sled: false,
            ..Default::default()
        },
        |_| Kv::new(),
        |n| {
            n.protocol.read_mode = ReadMode::Lease;
            n.protocol.check_quorum = true;
        },
    )
    .unwrap();
    for n in c.running() {
        let config = c.node_config(n.id());
        assert_eq!(config.protocol.read_mode, ReadMode::Lease);
    }
    let h = c.proxy().unwrap();
    h.set_default(light_loss());
    c.wait_for_leader(T).unwrap();
    let nodes: Vec<_> = c.running().into_iter().cloned().collect();
    let op_timeout = Duration::from_millis(1_000);
    let rec = Recorder::new(KEYS, op_timeout);
    let done = Arc::new(AtomicBool::new(false));
    let seed = h.seed();
    let faults = std::thread::scope(|s| {
        let _stop_clients = SetOnDrop(done.clone());
        for client in 0..CLIENTS {
            let (nodes, rec, done) = (&nodes, &rec, &done);
            s.spawn(move || {
                rec.client(client, seed, nodes.len(), |i| Some(nodes[i].clone()), done)
            });
        }
        // Each fault lasts past twice the operation timeout, so operations through the
        // cut-off node fail and clients move on; each heal is followed by traffic.
        let mut faults = Vec::new();
        rec.phase("operations before the faults", 150, Duration::ZERO);
        for (what, fault) in [("isolated", 0), ("cannot receive", 1), ("cannot send", 2)] {
            let leader = c.wait_for_leader(T).unwrap();
            match fault {
                0 => h.isolate(leader),
                1 => cut_one_way(&h, leader, true),
                _ => cut_one_way(&h, leader, false),
            }
            // The cut-off leader may go on serving reads from its lease for a while
            // (at most the lease, shorter than an election timeout); these are the
            // reads a broken lease would get wrong, so they go into the history.
            let old = c.node(leader).unwrap();
            let mut lease_reads = 0;
            let probing = Instant::now();
            while !rec.get(PROBE, old, lease_reads % KEYS, Duration::from_millis(200)) {
                lease_reads += 1;
                assert!(probing.elapsed() < T, "n{leader} {what} still serves reads");
            }
            let new = wait_for_leader_without(&c, leader);
            faults.push(format!(
                "n{leader} {what} ({lease_reads} reads served after the cut), n{new} took over"
            ));
            rec.phase(
                &format!("operations while leader n{leader} {what}"),
                100,
                op_timeout * 2,
            );
            h.heal();
            c.wait_for_leader(T).unwrap();
            rec.phase(
                &format!("operations after n{leader} {what} healed"),
                100,
                Duration::from_millis(500),
            );
        }
        done.store(true, Ordering::SeqCst);
        faults
    });
    let history = rec.ops.into_inner().unwrap();
    let returned = history.iter().filter(|o| o.ret.is_some()).count();
    let counters = h.counters();
    eprintln!(
        "{} operations ({returned} returned); {}; proxy {counters:?}",
        history.len(),
        faults.join("; ")
    );
    assert!(counters.cut > 0, "{counters:?}");
    assert_linearizable_and_checker_bites(&history, seed);
}

#[test]
fn linearizable_across_crashes_and_restarts() {
    init_log();
    let mut c = LocalCluster::start(ClusterOptions {
        proxy: true,
        sled: true,
        ..Default::default()
    })
    .unwrap();
    let h = c.proxy().unwrap();
    h.set_default(light_loss());
    c.wait_for_leader(T).unwrap();
    // The clients' view of the nodes: `None` while a node is down.
    let nodes: RwLock<Vec<Option<_>>> =
        RwLock::new(c.running().into_iter().cloned().map(Some).collect());
    let op_timeout = Duration::from_millis(1_000);
    let rec = Recorder::new(KEYS, op_timeout);
    let done = Arc::new(AtomicBool::new(false));
    let seed = h.seed();
    let crashes = std::thread::scope(|s| {
        let _stop_clients = SetOnDrop(done.clone());
        for client in 0..CLIENTS {
            let (nodes, rec, done) = (&nodes, &rec, &done);
            s.spawn(move || {
                rec.client(client, seed, 3, |i| nodes.read().unwrap()[i].clone(), done)
            });
        }
        let c = &mut c;
        let stop = |c: &mut LocalCluster, id: NodeId| {
            nodes.write().unwrap()[(id - 1) as usize] = None;
            c.stop_node(id);
        };
        let start = |c: &mut LocalCluster, id: NodeId| {
            let n = c.start_node(id).unwrap();
            nodes.write().unwrap()[(id - 1) as usize] = Some(n);
        };
        let mut crashes = Vec::new();
        rec.phase("operations before the crashes", 150, Duration::ZERO);
        // A follower, then the leader, then the leader and a follower together (no
        // quorum: nothing commits until one of them is back).
        for round in 0..3 {
            let leader = c.wait_for_leader(T).unwrap();
            let follower = (1..=3).find(|&i| i != leader).unwrap();
            let down = match round {
                0 => vec![follower],
                1 => vec![leader],
                _ => vec![leader, follower],
            };
            for &id in &down {
                stop(c, id);
            }
            if down.len() == 1 {
                let new = wait_for_leader_without(c, down[0]);
                crashes.push(format!("n{} down (leader n{leader}, then n{new})", down[0]));
                rec.phase(
                    &format!("operations while n{} is down", down[0]),
                    50,
                    op_timeout * 2,
                );
            } else {
                crashes.push(format!("n{leader} and n{follower} down"));
                let at = Instant::now();
                while at.elapsed() < op_timeout * 2 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            for &id in &down {
                start(c, id);
            }
            c.wait_for_leader(T).unwrap();
            rec.phase(
                "operations after the restart",
                100,
                Duration::from_millis(500),
            );
        }
        done.store(true, Ordering::SeqCst);
        crashes
    });
    // Every write acknowledged must still be there: a final linearizable read of each
    // key, recorded as an operation after everything else, must agree with the history.
    let mut history = rec.ops.into_inner().unwrap();
    let clock = rec.clock;
    for key in 0..KEYS {
        let deadline = Instant::now() + T;
        let (call, value, ret) = loop {
            let leader = c.wait_for_leader(T).unwrap();
            let call = clock.now();
            match c.node(leader).unwrap().get(&format!("k{key}"), T) {
                Ok(v) => break (call, v, clock.now()),
                Err(e) => assert!(Instant::now() < deadline, "final read of k{key}: {e}"),
            }
        };
        let value = value.map(|v| v.parse::<u64>().unwrap());
        let acked = history
            .iter()
            .any(|o| o.ret.is_some() && matches!(o.input, KvInput::Put { key: k, .. } if k == key));
        assert!(
            !acked || value.is_some(),
            "k{key} was written and acknowledged but reads as absent"
        );
        history.push(Operation {
            client: CLIENTS,
            input: KvInput::Get { key },
            output: Some(value),
            call,
            ret: Some(ret),
        });
    }
    let returned = history.iter().filter(|o| o.ret.is_some()).count();
    let counters = h.counters();
    eprintln!(
        "{} operations ({returned} returned); {}; proxy {counters:?}",
        history.len(),
        crashes.join("; ")
    );
    assert!(counters.dropped > 0, "{counters:?}");
    assert_linearizable_and_checker_bites(&history, seed);
}
