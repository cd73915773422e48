//! Issue 18, item 1 (streaming snapshots): the apply thread only takes a frozen view of the
//! state machine (`StateMachine::snapshot_source`); the storer thread serializes it. A
//! state machine whose serialization blocks until the test releases it must therefore
//! not stall the writers: proposals keep committing on every node while every node's
//! serialization is held, and the snapshots are stored once released.
//!
//! Issue 18, item 4: a node does not write its state again before it wrote at least as
//! many bytes of log as the stored snapshot has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use raft_core::node::{
    ChannelNetwork, Node, NodeConfig, RestoreError, SnapshotSource, StateMachine,
};
use raft_core::MemLog;

const T: Duration = Duration::from_secs(30);

/// Counts serializations of one node, and holds them until the test releases them.
struct Gate {
    started: AtomicU64,
    finished: AtomicU64,
    /// Closed (its sender dropped) when the test releases the serializations.
    release: Receiver<()>,
}

/// Sums the commands' lengths; its serialization waits at the gate.
struct Gated {
    applied: u64,
    sum: u64,
    gate: Arc<Gate>,
}

struct GatedView {
    applied: u64,
    sum: u64,
    gate: Arc<Gate>,
}

impl SnapshotSource for GatedView {
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.gate.started.fetch_add(1, Ordering::SeqCst);
        // Blocks until the test drops the sender (also when it panics).
        let _ = self.gate.release.recv();
        out.write_all(&self.applied.to_le_bytes())?;
        out.write_all(&self.sum.to_le_bytes())?;
        self.gate.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl StateMachine for Gated {
    type Response = u64;
    fn apply(&mut self, _index: u64, command: &[u8]) -> u64 {
        self.applied += 1;
        self.sum += command.len() as u64;
        self.applied
    }
    fn snapshot_source(&self) -> Option<Box<dyn SnapshotSource>> {
        Some(Box::new(GatedView {
            applied: self.applied,
            sum: self.sum,
            gate: self.gate.clone(),
        }))
    }
    fn restore_from(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
        let mut word = [0u8; 8];
        input
            .read_exact(&mut word)
            .map_err(|e| RestoreError(e.to_string()))?;
        self.applied = u64::from_le_bytes(word);
        input
            .read_exact(&mut word)
            .map_err(|e| RestoreError(e.to_string()))?;
        self.sum = u64::from_le_bytes(word);
        Ok(())
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_held_serialization_does_not_stall_the_writers() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (release, released) = crossbeam_channel::bounded::<()>(0);
    let release: Option<Sender<()>> = Some(release);
    let net = ChannelNetwork::new();
    let mut nodes = Vec::new();
    let mut gates = Vec::new();
    for id in 1..=3 {
        let mut config = NodeConfig::new(id, 1..=3);
        config.snapshot_after_entries = 50;
        config.snapshot_trailing_entries = 10;
        let gate = Arc::new(Gate {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            release: released.clone(),
        });
        nodes.push(
            Node::builder(config)
                .log(MemLog::new())
                .transport(net.transport(id))
                .state_machine(Gated {
                    applied: 0,
                    sum: 0,
                    gate: gate.clone(),
                })
                .start()
                .expect("node starts"),
        );
        gates.push(gate);
    }
    let mut written = 0u64;
    let write = |nodes: &[Node<Gated>], written: &mut u64| {
        let node = &nodes[(*written % 3) as usize];
        node.propose_with_retry(vec![1u8; 10], T).expect("write");
        *written += 1;
    };
    // Until every node holds a serialization (each takes its first snapshot after
    // 50-75 entries).
    let deadline = Instant::now() + T;
    while gates.iter().any(|g| g.started.load(Ordering::SeqCst) == 0) {
        assert!(Instant::now() < deadline, "no node started a snapshot");
        write(&nodes, &mut written);
    }
    // Every node's serialization is held: the writers must not notice.
    let before = written;
    for _ in 0..300 {
        write(&nodes, &mut written);
    }
    for (i, g) in gates.iter().enumerate() {
        assert_eq!(
            g.finished.load(Ordering::SeqCst),
            0,
            "n{}: a serialization finished before the release",
            i + 1
        );
    }
    let held_commits = written - before;
    // Released: the snapshots are stored and the logs compacted behind them.
    drop(release);
    for (i, n) in nodes.iter().enumerate() {
        wait_for(&format!("n{} to store a snapshot", i + 1), || {
            n.status().snapshot_index > 0 && n.status().first_index > 1
        });
    }
    // The stored snapshot holds the view as it was taken, not the live state: a node
    // whose state machine applied `written` commands stored a snapshot at an index below.
    let st = nodes[0].status();
    assert!(st.snapshot_index < st.commit_index, "{st:?}");
    println!("{held_commits} writes committed while every node's serialization was held");
    for n in &nodes {
        n.stop();
    }
}

/// Counts its snapshots; each is `SNAPSHOT_BYTES` long, far more than the log bytes that
/// the byte threshold asks for.
struct Padded {
    applied: u64,
    taken: Arc<AtomicU64>,
}

const SNAPSHOT_BYTES: usize = 200_000;

struct PaddedView(u64);

impl SnapshotSource for PaddedView {
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.0.to_le_bytes())?;
        out.write_all(&vec![0u8; SNAPSHOT_BYTES - 8])
    }
}

impl StateMachine for Padded {
    type Response = ();
    fn apply(&mut self, _index: u64, _command: &[u8]) {
        self.applied += 1;
    }
    fn snapshot_source(&self) -> Option<Box<dyn SnapshotSource>> {
        self.taken.fetch_add(1, Ordering::SeqCst);
        Some(Box::new(PaddedView(self.applied)))
    }
    fn restore_from(&mut self, input: &mut dyn std::io::Read) -> Result<(), RestoreError> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| RestoreError(e.to_string()))?;
        let word: [u8; 8] = data
            .get(..8)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| RestoreError("short".into()))?;
        self.applied = u64::from_le_bytes(word);
        Ok(())
    }
}

#[test]
fn a_big_snapshot_waits_for_as_many_bytes_of_log() {
    let _ = env_logger::builder().is_test(true).try_init();
    let net = ChannelNetwork::new();
    let mut config = NodeConfig::new(1, 1..=1);
    config.snapshot_after_entries = 0;
    config.snapshot_after_log_bytes = 2_000;
    config.snapshot_trailing_entries = 0;
    let taken = Arc::new(AtomicU64::new(0));
    let node = Node::builder(config)
        .log(MemLog::new())
        .transport(net.transport(1))
        .state_machine(Padded {
            applied: 0,
            taken: taken.clone(),
        })
        .start()
        .expect("node starts");
    let command = vec![7u8; 100];
    // The first snapshot comes after 2,000-3,000 bytes of commands.
    let deadline = Instant::now() + T;
    while node.status().snapshot_index == 0 {
        assert!(Instant::now() < deadline, "no snapshot was stored");
        node.propose_with_retry(command.clone(), T).expect("write");
    }
    let first = taken.load(Ordering::SeqCst);
    // 1,000 commands of ~100 bytes: 50 times the configured threshold, half the stored
    // snapshot. Without the floor this took ~40 more snapshots.
    for _ in 0..1_000 {
        node.propose_with_retry(command.clone(), T).expect("write");
    }
    assert_eq!(
        taken.load(Ordering::SeqCst),
        first,
        "a snapshot of {SNAPSHOT_BYTES} bytes was taken again after ~100,000 bytes of log"
    );
    // Past the stored snapshot's size (stretched at most by 50 % of 2,000 bytes, less
    // than the size): the next one is due.
    let deadline = Instant::now() + T;
    while taken.load(Ordering::SeqCst) == first {
        assert!(Instant::now() < deadline, "no second snapshot");
        node.propose_with_retry(command.clone(), T).expect("write");
    }
    node.stop();
}
