//! Replacing a dead machine in a real 3-node cluster over UDP while clients write
//! (issue 14): kill a node, start a fresh one that is in no configuration, add it as a
//! learner (its address travels in the configuration, so every node's transport learns
//! it), promote it once caught up, remove the dead node. The recorded multi-client
//! history must be linearizable, and every acknowledged write must be in the final
//! state.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{assert_linearizable_and_checker_bites, init_log, Recorder, SetOnDrop, T};
use raft_core::node::Node;
use raft_core::NodeId;
use raft_testkit::cluster::{ClusterOptions, Kv, LocalCluster};
use raft_testkit::linearizability::{KvInput, Operation};

const CLIENTS: u64 = 4;
const KEYS: u64 = 3;

/// The leader among the running nodes, once one claims it.
fn leader(nodes: &[Node<Kv>]) -> Node<Kv> {
    let deadline = Instant::now() + T;
    loop {
        if let Some(n) = nodes
            .iter()
            .find(|n| n.is_running() && n.status().is_leader())
        {
            return n.clone();
        }
        assert!(Instant::now() < deadline, "no leader after {T:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a membership call on whichever node leads, again while leadership moves.
fn on_leader<R>(
    nodes: &[Node<Kv>],
    what: &str,
    f: impl Fn(&Node<Kv>) -> Result<R, raft_core::node::NodeError>,
) -> R {
    let deadline = Instant::now() + T;
    loop {
        let l = leader(nodes);
        match f(&l) {
            Ok(r) => return r,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what} failed: {e}");
                log::info!("{what} on n{} failed, retrying: {e}", l.id());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn replace_a_dead_node_while_clients_write() {
    init_log();
    let mut c = LocalCluster::start(ClusterOptions {
        sled: false,
        ..Default::default()
    })
    .unwrap();
    c.wait_for_leader(T).unwrap();
    let started = Instant::now();
    // Slot i holds node i+1's handle; `None` while it is down. The new node takes
    // slot 3 once it joined.
    let slots: Arc<RwLock<Vec<Option<Node<Kv>>>>> = Arc::new(RwLock::new(
        c.running()
            .into_iter()
            .cloned()
            .map(Some)
            .chain([None])
            .collect(),
    ));
    let rec = Recorder::new(KEYS, Duration::from_millis(2_000));
    let done = Arc::new(AtomicBool::new(false));
    let seed = 14;
    let (dead, new_id) = std::thread::scope(|s| {
        let _stop_clients = SetOnDrop(done.clone());
        for client in 0..CLIENTS {
            let (slots, rec, done) = (&slots, &rec, &done);
            s.spawn(move || {
                rec.client(client, seed, 4, |i| slots.read().unwrap()[i].clone(), done)
            });
        }
        rec.phase("writes before the failure", 100, Duration::ZERO);
        // A follower dies for good.
        let nodes: Vec<Node<Kv>> = c.running().into_iter().cloned().collect();
        let l = leader(&nodes);
        let dead = nodes.iter().find(|n| n.id() != l.id()).unwrap().id();
        slots.write().unwrap()[(dead - 1) as usize] = None;
        c.stop_node(dead);
        rec.phase("writes with one node down", 100, Duration::ZERO);
        // A fresh machine: not in any configuration, it waits to be added.
        let fresh = c.add_node().unwrap();
        let new_id = fresh.id();
        let addr = c.addr(new_id).to_string();
        let nodes: Vec<Node<Kv>> = c.running().into_iter().cloned().collect();
        on_leader(&nodes, "add_learner", |l| {
            match l.add_learner(new_id, addr.clone(), T) {
                // A retry after a lost answer: the first attempt took effect.
                Err(raft_core::node::NodeError::Rejected(raft_core::ProposeError::Membership(
                    raft_core::protocol::membership::MembershipError::AlreadyMember(_),
                ))) => Ok(0),
                r => r,
            }
        });
        on_leader(&nodes, "promote", |l| l.promote_caught_up(new_id, 20, T));
        slots.write().unwrap()[(new_id - 1) as usize] = Some(fresh.clone());
        rec.phase("writes with the new voter", 100, Duration::ZERO);
        on_leader(&nodes, "remove the dead node", |l| l.remove(dead, T));
        rec.phase("writes after the removal", 100, Duration::ZERO);
        (dead, new_id)
    });
    let nodes: Vec<Node<Kv>> = c.running().into_iter().cloned().collect();
    // Every running node ends with the new configuration, committed.
    let voters: std::collections::BTreeSet<NodeId> = nodes.iter().map(|n| n.id()).collect();
    assert!(voters.contains(&new_id) && !voters.contains(&dead));
    common::wait_until("every node has the final configuration", T, || {
        nodes.iter().all(|n| {
            let m = n.membership();
            m.voters == voters && m.learners.is_empty() && !m.pending
        })
    });
    let history: Vec<Operation> = rec.ops.lock().unwrap().clone();
    // No acknowledged write is lost: each key's final value (read through the new node)
    // is one that was written, and the linearizability check below orders it last.
    let mut finals = BTreeMap::new();
    for key in 0..KEYS {
        let v = nodes
            .iter()
            .find(|n| n.id() == new_id)
            .unwrap()
            .get(&format!("k{key}"), T)
            .unwrap()
            .map(|v| v.parse::<u64>().unwrap());
        finals.insert(key, v);
    }
    let mut full = history.clone();
    let mut clock = history
        .iter()
        .flat_map(|o| [o.call, o.ret.unwrap_or(0)])
        .max()
        .unwrap_or(0);
    for (key, v) in &finals {
        clock += 1;
        full.push(Operation {
            client: 1_000,
            input: KvInput::Get { key: *key },
            output: Some(*v),
            call: clock,
            ret: Some(clock + 1),
        });
        clock += 1;
    }
    let acked_puts = history
        .iter()
        .filter(|o| matches!(o.input, KvInput::Put { .. }) && o.ret.is_some())
        .count();
    assert!(acked_puts >= 100, "only {acked_puts} acknowledged writes");
    assert_linearizable_and_checker_bites(&full, seed);
    eprintln!(
        "replaced n{dead} by n{new_id} under {} operations ({acked_puts} acknowledged writes) in {:?}",
        history.len(),
        started.elapsed()
    );
}
