//! Issue 18, item 2: storing a snapshot of any size never stalls the WaitLoop. With a log
//! that offers a [`raft_core::SnapshotWriter`], the runtime writes each snapshot on a
//! thread of its own and only adopts the result on the WaitLoop, so the leader keeps
//! heartbeating and committing while a snapshot that takes a second to store (a file of
//! hundreds of MB and its fsync) is written. The control: the same log without a writer
//! stores the snapshot on the WaitLoop, and the followers elect another leader.

use std::time::{Duration, Instant};

use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig};
use raft_core::{MemLog, NodeId, Role};
use raft_testkit::faulty_log::{FaultyLog, FaultyLogControl};

type Kv = KvStore<String, String>;

const T: Duration = Duration::from_secs(30);
/// How long the leader takes to store one snapshot: several election timeouts.
const STORE: Duration = Duration::from_millis(1_000);

struct Cluster {
    nodes: Vec<Node<Kv>>,
    logs: Vec<FaultyLogControl>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.stop();
        }
    }
}

fn start(with_writer: bool) -> Cluster {
    let _ = env_logger::builder().is_test(true).try_init();
    let net = ChannelNetwork::new();
    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for id in 1..=3 {
        let mut config = NodeConfig::new(id, 1..=3);
        config.snapshot_after_entries = 200;
        config.snapshot_trailing_entries = 20;
        let (log, control) = if with_writer {
            FaultyLog::with_snapshot_writer(MemLog::new())
        } else {
            FaultyLog::new(MemLog::new())
        };
        nodes.push(
            Node::builder(config)
                .log(log)
                .transport(net.transport(id))
                .state_machine(Kv::new())
                .start()
                .expect("node starts"),
        );
        logs.push(control);
    }
    Cluster { nodes, logs }
}

fn agreed_leader(c: &Cluster) -> (NodeId, u64) {
    let deadline = Instant::now() + T;
    loop {
        let st: Vec<_> = c.nodes.iter().map(|n| n.status()).collect();
        let leaders = st.iter().filter(|s| s.role == Role::Leader).count();
        if leaders == 1
            && st
                .iter()
                .all(|s| s.leader == st[0].leader && s.term == st[0].term)
        {
            if let Some(l) = st[0].leader {
                return (l, st[0].term);
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {st:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes through the cluster until the first leader has stored two snapshots (each
/// taking [`STORE`]); returns (first leader and term, leader and term at the end,
/// slowest write).
fn write_through_two_snapshot_stores(c: &Cluster) -> ((NodeId, u64), (NodeId, u64), Duration) {
    let (leader, term) = agreed_leader(c);
    let control = &c.logs[(leader - 1) as usize];
    control.set_snapshot_store_time(STORE);
    let deadline = Instant::now() + 2 * T;
    let mut slowest = Duration::ZERO;
    let mut i = 0u64;
    while control.snapshots_stored() < 2 {
        assert!(
            Instant::now() < deadline,
            "the leader stored {} snapshots",
            control.snapshots_stored()
        );
        let node = &c.nodes[(i % 3) as usize];
        let started = Instant::now();
        node.put_with_retry(format!("k{}", i % 50), format!("v{i}"), T)
            .expect("write");
        slowest = slowest.max(started.elapsed());
        i += 1;
    }
    control.set_snapshot_store_time(Duration::ZERO);
    ((leader, term), agreed_leader(c), slowest)
}

#[test]
fn a_slow_snapshot_store_off_the_wait_loop_keeps_the_leader() {
    let c = start(true);
    let (before, after, slowest) = write_through_two_snapshot_stores(&c);
    assert_eq!(
        before, after,
        "the leader (and term) changed while it stored snapshots off its WaitLoop"
    );
    let leader = &c.nodes[(before.0 - 1) as usize];
    let st = leader.status();
    assert!(st.snapshot_index > 0, "no snapshot adopted: {st:?}");
    assert!(st.first_index > 1, "the log was not compacted: {st:?}");
    println!(
        "writer: leader n{} kept term {}; snapshot at {}, slowest write {slowest:?} (a store takes {STORE:?})",
        before.0, before.1, st.snapshot_index
    );
}

#[test]
fn a_slow_snapshot_store_on_the_wait_loop_loses_the_leader() {
    let c = start(false);
    let (before, after, slowest) = write_through_two_snapshot_stores(&c);
    assert!(
        after.1 > before.1,
        "a leader blocked for {STORE:?} per snapshot kept its term: the control does not \
         show the stall ({before:?} -> {after:?})"
    );
    println!("no writer: {before:?} -> {after:?}, slowest write {slowest:?}");
}
