//! What the tests that run real nodes on threads share: starting a key/value node on the
//! in-process transport, reading its contents, and waiting on a condition with a deadline
//! (never a fixed sleep: they must pass on a loaded machine).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig, NodeError};
use raft_core::Log;

/// The replicated map these tests run.
pub type Kv = KvStore<String, String>;

/// Starts node `config.id` with `log` on `net`, running a [`Kv`].
pub fn start_kv(
    net: &ChannelNetwork,
    config: NodeConfig,
    log: Box<dyn Log>,
) -> Result<Node<Kv>, NodeError> {
    let _ = env_logger::builder().is_test(true).try_init();
    let id = config.protocol.id;
    Node::builder(config)
        .boxed_log(log)
        .transport(net.transport(id))
        .state_machine(Kv::new())
        .start()
}

/// Every key and value of `node`'s map, from its own copy.
pub fn contents(node: &Node<Kv>) -> Vec<(String, String)> {
    node.read_stale(|kv| kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Polls `cond` every 5 ms until it holds; panics naming `what` if `timeout` passes first.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
