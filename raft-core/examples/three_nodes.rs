//! Three replicas of a key/value map in one process, over the in-process transport.
//! Run: `cargo run -p raft-core --example three_nodes`
use std::time::Duration;

use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig};
use raft_core::MemLog;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = ChannelNetwork::new();
    let nodes = (1..=3)
        .map(|id| {
            Node::builder(NodeConfig::new(id, [1, 2, 3]))
                .log(MemLog::new())
                .transport(net.transport(id))
                .state_machine(KvStore::<String, String>::new())
                .start()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let t = Duration::from_secs(5);
    let leader = nodes[0].wait_for_leader(t)?;
    println!("n{leader} leads");
    // Write through any node: followers forward to the leader.
    nodes[2].put_with_retry("hello".into(), "world".into(), t)?;
    // Kill the leader; the others elect a new one and keep the data.
    nodes[(leader - 1) as usize].stop();
    let survivor = nodes.iter().find(|n| n.id() != leader).unwrap();
    survivor.put_with_retry("after".into(), "failover".into(), t)?;
    println!("hello = {:?}", survivor.get(&"hello".to_string(), t)?);
    println!("new leader: n{}", survivor.wait_for_leader(t)?);
    for n in &nodes {
        n.stop();
    }
    Ok(())
}
