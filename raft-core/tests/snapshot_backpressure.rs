//! Issue 18: a follower receiving a big snapshot onto a slow disk holds a bounded amount
//! of it in memory. The received chunks wait for the snapshot storer thread in a buffer
//! of `NodeConfig::snapshot_receive_buffer_bytes`; when it is full the WaitLoop holds
//! further chunks back unacknowledged (so the leader stops at its window), and never
//! blocks: ticks, heartbeats and votes go on, no election starts, and the snapshot
//! completes once the disk resumes.
//!
//! Real threads, the in-process transport, and a log whose snapshot writer stalls in its
//! writes for as long as the test says.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use support::{contents, start_kv, wait_until, Kv};

use raft_core::node::{ChannelNetwork, Node, NodeConfig};
use raft_core::{
    Entry, HardState, Log, LogIndex, MemLog, NodeId, Role, Snapshot, SnapshotMeta, SnapshotWriter,
    StorageError, Term, WrittenSnapshot,
};

const T: Duration = Duration::from_secs(60);
/// The receive buffer's limit in this test.
const BUFFER_BYTES: u64 = 256 * 1024;
/// The protocol's reordering window in this test (chunks released at once when a gap
/// fills): the buffer may exceed its limit by at most this.
const WINDOW_BYTES: u64 = 512 * 1024;
/// Values written: 120 of 40 KB, about 4.8 MB of state, far above the bound.
const VALUES: usize = 120;
const VALUE_BYTES: usize = 40_000;

/// Whether the snapshot writer's writes are paused, and how many bytes it wrote.
#[derive(Default)]
struct Disk {
    paused: Mutex<bool>,
    resumed: Condvar,
    written_bytes: AtomicU64,
    /// Set once a write found the disk paused.
    stalled: AtomicBool,
}

impl Disk {
    fn set_paused(&self, paused: bool) {
        *self.paused.lock().unwrap() = paused;
        self.resumed.notify_all();
    }

    fn wait_while_paused(&self) {
        let mut paused = self.paused.lock().unwrap();
        while *paused {
            self.stalled.store(true, Ordering::SeqCst);
            paused = self.resumed.wait(paused).unwrap();
        }
    }
}

/// A sink that blocks while the disk is paused.
struct SlowSink<'a> {
    disk: &'a Disk,
    data: Vec<u8>,
}

impl std::io::Write for SlowSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.disk.wait_while_paused();
        self.data.extend_from_slice(buf);
        self.disk
            .written_bytes
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Written snapshots not yet adopted, by id.
type Written = Arc<Mutex<Vec<(u64, Snapshot)>>>;

struct SlowWriter {
    disk: Arc<Disk>,
    written: Written,
    next_id: u64,
}

impl SnapshotWriter for SlowWriter {
    fn write(
        &mut self,
        meta: SnapshotMeta,
        fill: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<WrittenSnapshot, StorageError> {
        let mut sink = SlowSink {
            disk: &self.disk,
            data: Vec::new(),
        };
        fill(&mut sink).map_err(|e| StorageError::Io(format!("snapshot data: {e}")))?;
        self.next_id += 1;
        let size_bytes = sink.data.len() as u64;
        let snapshot = Snapshot {
            meta: meta.clone(),
            data: sink.data.into(),
        };
        self.written.lock().unwrap().push((self.next_id, snapshot));
        Ok(WrittenSnapshot {
            meta,
            id: self.next_id,
            size_bytes,
        })
    }
}

/// A [`MemLog`] with a snapshot writer that writes through a [`Disk`] that can pause.
struct SlowDiskLog {
    inner: MemLog,
    disk: Arc<Disk>,
    written: Written,
}

impl Log for SlowDiskLog {
    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.inner.set_hard_state(hard_state)
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.inner.snapshot_meta()
    }
    fn first_index(&self) -> LogIndex {
        self.inner.first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.inner.last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.inner.term(index)
    }
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(low, high, max_bytes)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.inner.append(entries)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.inner.sync()
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.inner.snapshot()
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.save_snapshot(snapshot)
    }
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.inner.compact(meta)
    }
    fn snapshot_writer(&self) -> Option<Box<dyn SnapshotWriter>> {
        Some(Box::new(SlowWriter {
            disk: Arc::clone(&self.disk),
            written: Arc::clone(&self.written),
            next_id: 1_000_000,
        }))
    }
    fn adopt_snapshot(&mut self, written: &WrittenSnapshot) -> Result<(), StorageError> {
        let snapshot = {
            let mut w = self.written.lock().unwrap();
            let at = w
                .iter()
                .position(|(id, _)| *id == written.id)
                .ok_or_else(|| StorageError::Io(format!("no written snapshot {}", written.id)))?;
            w.remove(at).1
        };
        self.inner.save_snapshot(&snapshot)
    }
}

fn config(id: NodeId) -> NodeConfig {
    let mut c = NodeConfig::new(id, [1, 2, 3]);
    c.snapshot_after_entries = 40;
    c.snapshot_after_log_bytes = 0;
    c.snapshot_trailing_entries = 5;
    c.snapshot_receive_buffer_bytes = BUFFER_BYTES;
    c.protocol.inflight_bytes_max = WINDOW_BYTES;
    c
}

fn start(net: &ChannelNetwork, id: NodeId, log: Box<dyn Log>) -> Node<Kv> {
    start_kv(net, config(id), log).unwrap()
}

#[test]
fn a_stalled_snapshot_writer_bounds_the_received_data_in_memory_and_the_cluster_keeps_its_leader() {
    let net = ChannelNetwork::new();
    let mut nodes: Vec<Node<Kv>> = (1..=2)
        .map(|id| start(&net, id, Box::new(MemLog::new())))
        .collect();
    let value = "x".repeat(VALUE_BYTES);
    for i in 0..VALUES {
        nodes[i % 2]
            .put_with_retry(format!("k{i:04}"), value.clone(), T)
            .unwrap();
    }
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let l = &nodes[(leader - 1) as usize];
    wait_until(T, "the leader's log is compacted", || {
        let s = l.status();
        s.first_index > 10 && s.snapshot_index > 0
    });
    let term = l.status().term;
    let elections_before: Vec<u64> = nodes
        .iter()
        .map(|n| n.status().counters.protocol.elections_started)
        .collect();

    // n3 joins with an empty log, so the leader sends it the snapshot; its disk stalls.
    let disk = Arc::new(Disk::default());
    disk.set_paused(true);
    let n3_log = SlowDiskLog {
        inner: MemLog::new(),
        disk: Arc::clone(&disk),
        written: Arc::default(),
    };
    nodes.push(start(&net, 3, Box::new(n3_log)));
    let n3 = &nodes[2];
    // Without the bound the whole snapshot would pile up in memory instead.
    wait_until(
        T,
        "n3 defers snapshot chunks (or holds more than the bound)",
        || {
            let c = n3.status().counters;
            c.snapshot_chunks_deferred > 0
                || c.snapshot_receive_buffer_high_water_bytes > BUFFER_BYTES + WINDOW_BYTES
        },
    );
    let held = n3
        .status()
        .counters
        .snapshot_receive_buffer_high_water_bytes;
    assert!(
        held <= BUFFER_BYTES + WINDOW_BYTES,
        "{held} bytes waited for the stalled disk, above the bound of {BUFFER_BYTES} + {WINDOW_BYTES}"
    );
    assert!(
        disk.stalled.load(Ordering::SeqCst),
        "the writer never stalled"
    );
    // The disk stays stalled for five election timeouts of n3's clock: its ticks go on,
    // and so do the leader's heartbeats (n3 keeps taking messages).
    let stalled_at = n3.status();
    let election_ticks = u64::from(config(3).protocol.election_timeout_ticks);
    wait_until(T, "five election timeouts pass on n3", || {
        n3.status().ticks >= stalled_at.ticks + 5 * election_ticks
    });
    let during = n3.status();
    assert!(
        during.counters.messages_received > stalled_at.counters.messages_received,
        "n3 took no message while its disk stalled: {during:?}"
    );
    assert!(
        during.counters.snapshot_chunks_deferred > stalled_at.counters.snapshot_chunks_deferred,
        "the leader stopped resending chunks: {during:?}"
    );
    assert_eq!(during.role, Role::Follower);
    assert_eq!((during.term, during.leader), (term, Some(leader)));
    assert_eq!(during.snapshot_index, 0, "installed while its disk stalled");
    let written_during = disk.written_bytes.load(Ordering::SeqCst);
    assert!(
        written_during < (VALUES * VALUE_BYTES) as u64 / 2,
        "the stalled writer wrote {written_during} bytes"
    );

    disk.set_paused(false);
    wait_until(T, "n3 restored the snapshot and caught up", || {
        n3.read_stale(|kv| kv.len()) == VALUES
    });
    nodes[0]
        .put_with_retry("after".into(), "the stall".into(), T)
        .unwrap();
    wait_until(T, "every node applied the last write", || {
        nodes
            .iter()
            .all(|n| n.read_stale(|kv| kv.len()) == VALUES + 1)
    });
    assert_eq!(contents(&nodes[2]), contents(&nodes[0]));

    let after = n3.status();
    let high_water = after.counters.snapshot_receive_buffer_high_water_bytes;
    assert!(high_water > 0, "nothing waited in the buffer: {after:?}");
    assert!(
        high_water <= BUFFER_BYTES + WINDOW_BYTES,
        "{high_water} bytes waited for the disk, above the bound of {BUFFER_BYTES} + {WINDOW_BYTES}"
    );
    assert!(after.snapshot_index > 0, "n3 installed no snapshot");
    for (i, n) in nodes.iter().enumerate() {
        let s = n.status();
        assert_eq!(s.term, term, "a term changed (an election): {s:?}");
        let before = elections_before.get(i).copied().unwrap_or(0);
        assert_eq!(s.counters.protocol.elections_started, before, "{s:?}");
    }
    println!(
        "stalled writer: {} chunks deferred, at most {high_water} bytes waited (bound {}), \
         {written_during} bytes written during the stall",
        after.counters.snapshot_chunks_deferred,
        BUFFER_BYTES + WINDOW_BYTES
    );
    for n in &nodes {
        n.stop();
    }
}
