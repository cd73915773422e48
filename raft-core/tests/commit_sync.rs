//! The runtime syncs for entries, terms and votes, not for a new commit index alone
//! (`Ready::must_sync_after`), and still leaves the commit index durable when idle and
//! at a clean stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft_core::node::{ChannelNetwork, KvCommand, KvStore, Node, NodeConfig};
use raft_core::{
    Entry, HardState, Log, LogIndex, MemLog, Snapshot, SnapshotMeta, StorageError, Term,
};

/// What each sync made durable: the hard state written by then.
#[derive(Default)]
struct Synced {
    hard_states: Vec<HardState>,
}

/// A `MemLog` that records every sync.
struct Recording {
    log: MemLog,
    synced: Arc<Mutex<Synced>>,
}

impl Log for Recording {
    fn hard_state(&self) -> HardState {
        self.log.hard_state()
    }
    fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.log.set_hard_state(hs)
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.log.snapshot_meta()
    }
    fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.log.term(index)
    }
    fn entries(&self, low: LogIndex, high: LogIndex, max: u64) -> Result<Vec<Entry>, StorageError> {
        self.log.entries(low, high, max)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.log.append(entries)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.synced.lock().hard_states.push(self.log.hard_state());
        self.log.sync()
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.log.snapshot()
    }
    fn save_snapshot(&mut self, s: &Snapshot) -> Result<(), StorageError> {
        self.log.save_snapshot(s)
    }
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.log.compact(meta)
    }
}

#[test]
fn commits_cost_no_sync_of_their_own_and_become_durable_when_idle_and_at_stop() {
    let _ = env_logger::builder().is_test(true).try_init();
    let synced = Arc::new(Mutex::new(Synced::default()));
    let net = ChannelNetwork::new();
    // Long ticks, so that no idle-time sync falls between the writes however slow the
    // machine; the election is started by hand.
    let mut config = NodeConfig::new(1, [1]);
    config.tick_interval_ms = 1_000;
    let node: Node<KvStore<String, String>> = Node::builder(config)
        .log(Recording {
            log: MemLog::new(),
            synced: synced.clone(),
        })
        .transport(net.transport(1))
        .state_machine(KvStore::new())
        .start()
        .unwrap();
    let t = Duration::from_secs(20);
    node.campaign();
    node.wait_for_leader(t).unwrap();
    const WRITES: usize = 20;
    for i in 0..WRITES {
        let put = KvCommand::Put {
            key: format!("k{i}"),
            value: "v".to_string(),
        };
        node.propose_with_retry(put.encode(), t).unwrap();
    }
    let syncs_after_writes = synced.lock().hard_states.len();
    // One sync per write (its entry) plus the election's and the no-op's; a sync per
    // commit as well would be about twice as many.
    assert!(
        syncs_after_writes <= WRITES + 6,
        "{syncs_after_writes} syncs for {WRITES} writes"
    );
    // Idle: the last commit index becomes durable within two ticks. (The status is
    // published once per tick: wait for it to show the last write.)
    let deadline = Instant::now() + t;
    while node.status().commit_index < WRITES as u64 {
        assert!(Instant::now() < deadline, "status never caught up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let commit = node.status().commit_index;
    while synced.lock().hard_states.last().map_or(0, |h| h.commit) < commit {
        assert!(
            Instant::now() < deadline,
            "the commit index never became durable"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A write, then a stop at once: the stop makes its commit durable.
    node.propose_with_retry(
        KvCommand::<String, String>::Delete { key: "k0".into() }.encode(),
        t,
    )
    .unwrap();
    node.stop();
    // After a stop the status is final.
    assert_eq!(
        synced.lock().hard_states.last().map(|h| h.commit),
        Some(node.status().commit_index)
    );
}
