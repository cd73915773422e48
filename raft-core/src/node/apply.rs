//! The apply thread: applies committed entries to the state machine in order, answers
//! each proposer, and publishes `Applied` events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::dedup::Dedup;
use super::envelope;
use super::error::NodeError;
use super::events::Event;
use super::queue::QueueReceiver;
use super::shared::Shared;
use super::snapshot;
use super::state_machine::StateMachine;
use crate::types::{Entry, EntryKind, LogIndex, Snapshot};

/// Work for the apply thread, in log order.
pub(crate) enum ApplyTask {
    /// Committed entries, in order.
    Entries(Vec<Entry>),
    /// The leader placed this node's proposal `request_id` at `index`: if a different
    /// entry ends up applied there, the proposal was dropped.
    Placed { request_id: u64, index: LogIndex },
    /// Replace the state with a snapshot received from the leader.
    Restore(Snapshot),
    /// Take a snapshot now (a manual trigger).
    TakeSnapshot,
    /// The log now stores a snapshot of `size_bytes` (the last one this node took, or the
    /// one it started from): the next one waits for at least as many bytes of log.
    SnapshotStored { size_bytes: u64 },
}

/// When the apply thread takes snapshots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotPolicy {
    pub(crate) after_entries: u64,
    pub(crate) after_bytes: u64,
}

/// Each node stretches its snapshot thresholds by a random 0 to this many percent, drawn
/// again after every snapshot. The nodes of a cluster apply the same entries, so with the
/// same thresholds they all serialize and write their state at the same moment; on shared
/// disks or a busy CPU that stalled every node at once, and a leader whose followers all
/// stalled lost its quorum (issue 18: 150 MB snapshots, 3 nodes on one disk).
pub const SNAPSHOT_STRETCH_PERCENT_MAX: u64 = 50;

/// A snapshot the apply thread took: (index, its unserialized view), for the WaitLoop
/// to hand to the storer thread.
pub(crate) type TakenSnapshot = (LogIndex, snapshot::PackedSource);

pub(crate) struct Applier<S: StateMachine> {
    shared: Arc<Shared<S>>,
    tasks: QueueReceiver<ApplyTask>,
    applied: LogIndex,
    /// Entries up to here were committed before this start: applying them is a replay.
    replay_to: LogIndex,
    /// Placed proposals not yet applied: index -> request id.
    placed: BTreeMap<LogIndex, u64>,
    dedup: Dedup,
    policy: SnapshotPolicy,
    snapshots: Sender<TakenSnapshot>,
    last_snapshot: LogIndex,
    bytes_since_snapshot: u64,
    /// The size of the snapshot the log stores: the least `bytes_since_snapshot` before
    /// the byte threshold calls for the next one (see `maybe_snapshot`).
    stored_snapshot_bytes: u64,
    /// Whether the state machine produced a snapshot when asked (false: never ask again).
    snapshots_supported: bool,
    /// This round's stretch of the policy's thresholds, in percent
    /// (< [`SNAPSHOT_STRETCH_PERCENT_MAX`]).
    stretch_percent: u64,
}

impl<S: StateMachine> Applier<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared<S>>,
        tasks: QueueReceiver<ApplyTask>,
        applied: LogIndex,
        replay_to: LogIndex,
        dedup: Dedup,
        policy: SnapshotPolicy,
        snapshots: Sender<TakenSnapshot>,
    ) -> Self {
        Self {
            shared,
            tasks,
            applied,
            replay_to,
            placed: BTreeMap::new(),
            dedup,
            policy,
            snapshots,
            last_snapshot: applied,
            bytes_since_snapshot: 0,
            stored_snapshot_bytes: 0,
            snapshots_supported: true,
            stretch_percent: draw_stretch_percent(),
        }
    }

    /// Restores the state machine and the runtime state from stored snapshot bytes.
    pub(crate) fn restore_state(sm: &mut S, data: &[u8]) -> Result<Dedup, super::RestoreError> {
        snapshot::restore_from(sm, &mut &data[..])
    }

    /// Runs until the task channel closes (the WaitLoop ended).
    pub(crate) fn run(mut self) {
        let mut batch = VecDeque::new();
        // Everything queued at once, so the applied index is published once per burst.
        while self.tasks.recv_all(&mut batch) {
            while let Some(task) = batch.pop_front() {
                self.handle(task);
            }
            self.shared.set_applied(self.applied);
            self.maybe_snapshot(false);
        }
        log::debug!(
            "n{} apply thread stopped at index {}",
            self.shared.id,
            self.applied
        );
    }

    fn handle(&mut self, task: ApplyTask) {
        match task {
            ApplyTask::Entries(entries) => self.apply(entries),
            ApplyTask::Restore(snap) => self.restore(snap),
            ApplyTask::TakeSnapshot => self.maybe_snapshot(true),
            ApplyTask::SnapshotStored { size_bytes } => self.stored_snapshot_bytes = size_bytes,
            ApplyTask::Placed { request_id, index } => {
                if index <= self.applied {
                    // Already applied and not answered: what was applied there was not ours.
                    self.answer(request_id, Err(NodeError::Dropped));
                } else {
                    self.placed.insert(index, request_id);
                }
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let publish = self.shared.events.has_subscribers();
        let shared = self.shared.clone();
        let mut sm = shared.state_machine.lock();
        for entry in entries {
            if entry.index <= self.applied {
                continue; // already applied
            }
            assert_eq!(
                entry.index,
                self.applied + 1,
                "entries must be applied in order without gaps"
            );
            self.applied = entry.index;
            let answered = if entry.kind == EntryKind::Command {
                self.apply_command(&mut sm, &entry, publish)
            } else {
                None
            };
            if let Some(request_id) = self.placed.remove(&entry.index) {
                if answered != Some(request_id) {
                    self.answer(request_id, Err(NodeError::Dropped));
                }
            }
        }
    }

    fn restore(&mut self, snap: Snapshot) {
        if snap.meta.last_index <= self.applied {
            return;
        }
        let mut sm = self.shared.state_machine.lock();
        match Self::restore_state(&mut sm, &snap.data) {
            Ok(dedup) => self.dedup = dedup,
            Err(e) => {
                // A snapshot that passed its checksum but does not restore: this node
                // cannot be trusted to go on; it stops applying and says so.
                log::error!(
                    "n{} cannot restore the snapshot up to {}: {e}; this node stops applying",
                    self.shared.id,
                    snap.meta.last_index
                );
                self.shared.fail_all_waiters(|| NodeError::Stopped);
                return;
            }
        }
        drop(sm);
        log::info!(
            "n{} restored its state from a snapshot up to {}",
            self.shared.id,
            snap.meta.last_index
        );
        self.applied = snap.meta.last_index;
        self.last_snapshot = snap.meta.last_index;
        self.bytes_since_snapshot = 0;
        self.stored_snapshot_bytes = snap.data.len() as u64;
        // Our proposals placed at or below the snapshot: the snapshot's table says
        // whether they took effect; their responses are gone either way.
        let covered: Vec<(LogIndex, u64)> = self
            .placed
            .range(..=snap.meta.last_index)
            .map(|(i, r)| (*i, *r))
            .collect();
        for (index, request_id) in covered {
            self.placed.remove(&index);
            let err = if self.dedup.was_applied(self.shared.origin, request_id) {
                NodeError::ResponseLost
            } else {
                NodeError::Dropped
            };
            self.answer(request_id, Err(err));
        }
    }

    /// Takes a snapshot if the policy says so (or `force`), and hands it to the WaitLoop.
    ///
    /// The byte threshold is at least the size of the stored snapshot: a node writes a
    /// snapshot only after at least as many bytes of log, so snapshots cost at most as
    /// many bytes written as the log itself, however big the state (issue 18: with
    /// 150 MB of state and a 64 MiB threshold every node wrote 150 MB per 1,300 values
    /// of 50 KB). The entry threshold stays as configured.
    fn maybe_snapshot(&mut self, force: bool) {
        if !self.snapshots_supported || self.applied <= self.last_snapshot {
            return;
        }
        let stretched = |threshold: u64| threshold.saturating_mul(100 + self.stretch_percent) / 100;
        let bytes_threshold = stretched(self.policy.after_bytes).max(self.stored_snapshot_bytes);
        let due = (self.policy.after_entries > 0
            && self.applied - self.last_snapshot >= stretched(self.policy.after_entries))
            || (self.policy.after_bytes > 0 && self.bytes_since_snapshot >= bytes_threshold);
        if !due && !force {
            return;
        }
        // Cheap by contract (a frozen view): the writers wait only for this; the storer
        // thread serializes the view into the snapshot file.
        let taken = std::time::Instant::now();
        let state = self.shared.state_machine.lock().snapshot_source();
        let Some(state) = state else {
            log::info!(
                "n{} state machine does not snapshot; the log will not be compacted",
                self.shared.id
            );
            self.snapshots_supported = false;
            return;
        };
        let packed = snapshot::PackedSource::new(&self.dedup, state);
        log::debug!(
            "n{} took a snapshot at {} (the apply thread held the state machine {:?})",
            self.shared.id,
            self.applied,
            taken.elapsed()
        );
        // A full channel means the WaitLoop has not stored the previous one yet: try
        // again after the next batch.
        if self.snapshots.try_send((self.applied, packed)).is_ok() {
            self.last_snapshot = self.applied;
            self.bytes_since_snapshot = 0;
            self.stretch_percent = draw_stretch_percent();
        }
    }

    /// Applies one command entry; returns the request id if it was this node's proposal.
    fn apply_command(&mut self, sm: &mut S, entry: &Entry, publish: bool) -> Option<u64> {
        let Some((origin, request_id, command)) = envelope::unwrap(&entry.data) else {
            log::warn!(
                "n{} entry {} has no runtime envelope; applying its bytes as they are",
                self.shared.id,
                entry.index
            );
            sm.apply(entry.index, &entry.data);
            return None;
        };
        self.bytes_since_snapshot += entry.data.len() as u64;
        let ours = (origin == self.shared.origin).then_some(request_id);
        if !self.dedup.first_time(origin, request_id, entry.index) {
            log::debug!(
                "n{} skipping entry {}: a second copy of request {request_id}",
                self.shared.id,
                entry.index
            );
            return ours;
        }
        let response = sm.apply(entry.index, command);
        if let Some(request_id) = ours {
            let waiter = self.shared.waiters.lock().remove(&request_id);
            if let Some(w) = waiter {
                w.send(Ok(response));
            }
        }
        if publish {
            self.shared.events.publish(Event::Applied {
                index: entry.index,
                term: entry.term,
                command: entry.data.slice(envelope::ENVELOPE_BYTES..),
                replayed: entry.index <= self.replay_to,
            });
        }
        ours
    }

    fn answer(&self, request_id: u64, result: Result<S::Response, NodeError>) {
        let waiter = self.shared.waiters.lock().remove(&request_id);
        if let Some(w) = waiter {
            w.send(result);
        }
    }
}

/// A stretch in `0..SNAPSHOT_STRETCH_PERCENT_MAX` (see the constant).
fn draw_stretch_percent() -> u64 {
    rand::random::<u64>() % SNAPSHOT_STRETCH_PERCENT_MAX
}
