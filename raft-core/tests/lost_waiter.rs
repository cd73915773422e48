//! Regression test: a proposal that a leader placed at an index beyond the log of the
//! next leader must be answered (`Dropped`), not wait forever.
//!
//! Real threads over a `ChannelNetwork`, every wait bounded by a deadline. A follower F
//! forwards writes to the leader L while L's messages to the other three nodes are cut:
//! L places them (F gets the placements and the entries) but cannot commit them. The
//! other three elect a leader with a shorter log, whose first entry of its term replaces
//! F's copies. Before the fix only the placement at that one index was answered; the
//! ones beyond it waited until the log grew that far, which with no more writes was
//! never.

use std::time::{Duration, Instant};

use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig, NodeError};
use raft_core::MemLog;

type KvNode = Node<KvStore<String, String>>;

fn start(net: &ChannelNetwork, ids: &[u64]) -> Vec<KvNode> {
    ids.iter()
        .map(|&id| {
            Node::builder(NodeConfig::new(id, ids.iter().copied()))
                .log(MemLog::new())
                .transport(net.transport(id))
                .state_machine(KvStore::new())
                .start()
                .unwrap()
        })
        .collect()
}

fn command(i: usize) -> Vec<u8> {
    raft_core::node::KvCommand::Put {
        key: format!("k{i}"),
        value: format!("v{i}"),
    }
    .encode()
}

#[test]
fn proposals_placed_beyond_the_next_leaders_log_are_answered() {
    let _ = env_logger::builder().is_test(true).try_init();
    let ids = [1, 2, 3, 4, 5];
    let net = ChannelNetwork::new();
    let nodes = start(&net, &ids);
    let t = Duration::from_secs(30);
    let leader = nodes[0].wait_for_leader(t).unwrap();
    // One committed write, so everyone is in the leader's term.
    nodes[0].propose_with_retry(command(0), t).unwrap();
    let follower = ids.iter().copied().find(|&id| id != leader).unwrap();
    let others: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| id != leader && id != follower)
        .collect();
    for &o in &others {
        net.cut(leader, o);
    }
    let f = &nodes[follower as usize - 1];
    let before = f.status().last_index;
    let proposals: Vec<_> = (1..=50).map(|i| f.propose(command(i)).unwrap()).collect();
    // Wait until F holds L's copies of (most of) them: they were placed.
    let deadline = Instant::now() + t;
    while f.status().last_index < before + 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    nodes[leader as usize - 1].stop();
    let mut outcomes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in proposals {
        // Every proposal is answered well within the deadline: applied (F's copies won),
        // or dropped.
        match p.wait(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => outcomes.push("ok"),
            Err(NodeError::Dropped) => outcomes.push("dropped"),
            Err(NodeError::Timeout(_)) => panic!("a proposal was never answered: {outcomes:?}"),
            Err(e) => outcomes.push(Box::leak(e.to_string().into_boxed_str())),
        }
    }
    for n in &nodes {
        n.stop();
    }
}
