//! The apply thread: applies committed entries to the state machine in order, answers
//! each proposer, and publishes `Applied` events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::dedup::Dedup;
use super::envelope;
use super::error::NodeError;
use super::events::Event;
use super::queue::QueueReceiver;
use super::reply::{Completion, CompletionQueue};
use super::shared::{ProposalWaiter, Shared};
use super::snapshot;
use super::state_machine::StateMachine;
use crate::types::{Entry, EntryKind, LogIndex, Term};

/// This node's proposal `request_id`, placed by the leader of `term` at `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) request_id: u64,
    pub(crate) index: LogIndex,
    pub(crate) term: Term,
}

/// Work for the apply thread, in log order.
pub(crate) enum ApplyTask {
    /// Committed entries, in order.
    Entries(Vec<Entry>),
    /// Placements, in the order the protocol reported them (one task per `Ready`, not
    /// one per proposal): the leader of `term` placed this node's proposal `request_id`
    /// at `index`. If a different entry ends up applied there, or an entry of a later
    /// term is applied at or below `index`, the proposal was dropped.
    Placed(Vec<Placement>),
    /// Replace the state with a snapshot received from the leader, now the log's stored
    /// one, read as a stream from storage (a file for a log that keeps them in files).
    Restore(Arc<dyn crate::SnapshotChunks>),
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

/// One submitter's completions from the batch being applied.
type BatchCompletions<R> = (Arc<CompletionQueue<R>>, Vec<Completion<R>>);

pub(crate) struct Applier<S: StateMachine> {
    shared: Arc<Shared<S>>,
    tasks: QueueReceiver<ApplyTask>,
    applied: LogIndex,
    /// Entries up to here were committed before this start: applying them is a replay.
    replay_to: LogIndex,
    /// Term of the entry at `applied` (0 before the first).
    applied_term: Term,
    /// Placed proposals not yet applied: index -> (request id, term it was placed in).
    ///
    /// Invariant: every placement here has index > `applied` and term >= `applied_term`.
    /// A placement (p, t) that would break it can never be applied: the entry at p in
    /// the committed log is another one when p <= `applied`; when p > `applied` and
    /// t < `applied_term`, terms never decrease along a log, so the entry at p has a term
    /// at least `applied_term`, above t, and is not the one placed in t. Such a proposal
    /// is answered `Dropped` at once. Without the second half, a proposal that a dying
    /// leader placed beyond the next leader's log waited until the log grew that far,
    /// which with no more writes was never.
    placed: BTreeMap<LogIndex, (u64, Term)>,
    dedup: Dedup,
    /// Submitters' completions of the batch being applied, per queue: pushed together
    /// once the batch is done, so a submitter wakes once per batch, not once per entry.
    /// Empty between batches.
    completions: Vec<BatchCompletions<S::Response>>,
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
            applied_term: 0,
            replay_to,
            placed: BTreeMap::new(),
            dedup,
            completions: Vec::new(),
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
            self.push_completions();
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
            ApplyTask::Entries(entries) => {
                let (count, started) = (entries.len(), Instant::now());
                self.apply(entries);
                self.shared.metrics.applied(count, started.elapsed());
            }
            ApplyTask::Restore(chunks) => self.restore(chunks),
            ApplyTask::TakeSnapshot => self.maybe_snapshot(true),
            ApplyTask::SnapshotStored { size_bytes } => self.stored_snapshot_bytes = size_bytes,
            ApplyTask::Placed(placements) => {
                for Placement {
                    request_id,
                    index,
                    term,
                } in placements
                {
                    if index <= self.applied || term < self.applied_term {
                        // Applied there was another entry, or will be (see `placed`).
                        self.answer(request_id, Err(NodeError::Dropped));
                    } else {
                        self.placed.insert(index, (request_id, term));
                    }
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
            let new_term = entry.term > self.applied_term;
            self.applied_term = self.applied_term.max(entry.term);
            let answered = if entry.kind == EntryKind::Command {
                self.apply_command(&mut sm, &entry, publish)
            } else {
                None
            };
            if let Some((request_id, _)) = self.placed.remove(&entry.index) {
                if answered != Some(request_id) {
                    self.answer(request_id, Err(NodeError::Dropped));
                }
            }
            if new_term {
                self.drop_placed_before_term();
            }
        }
    }

    /// Answers `Dropped` every placement from a term before `applied_term`: keeps the
    /// invariant of `placed` after the applied term rose. Runs once per new term.
    fn drop_placed_before_term(&mut self) {
        let applied_term = self.applied_term;
        let stale: Vec<(LogIndex, u64)> = self
            .placed
            .iter()
            .filter(|(_, (_, t))| *t < applied_term)
            .map(|(i, (r, _))| (*i, *r))
            .collect();
        for (index, request_id) in stale {
            self.placed.remove(&index);
            self.answer(request_id, Err(NodeError::Dropped));
        }
        debug_assert!(self
            .placed
            .iter()
            .all(|(&i, &(_, t))| i > self.applied && t >= self.applied_term));
    }

    fn restore(&mut self, chunks: Arc<dyn crate::SnapshotChunks>) {
        let info = chunks.info();
        let meta = info.meta;
        if meta.last_index <= self.applied {
            return;
        }
        let mut sm = self.shared.state_machine.lock();
        let mut input = crate::ChunksReader::new(chunks);
        match snapshot::restore_from(&mut *sm, &mut input) {
            Ok(dedup) => self.dedup = dedup,
            Err(e) => {
                // A snapshot that passed its checksum but does not restore: this node
                // cannot be trusted to go on; it stops applying and says so.
                log::error!(
                    "n{} cannot restore the snapshot up to {}: {e}; this node stops applying",
                    self.shared.id,
                    meta.last_index
                );
                self.shared.fail_all_waiters(|| NodeError::Stopped);
                return;
            }
        }
        drop(sm);
        log::info!(
            "n{} restored its state from a snapshot up to {}",
            self.shared.id,
            meta.last_index
        );
        self.applied = meta.last_index;
        self.applied_term = self.applied_term.max(meta.last_term);
        self.last_snapshot = meta.last_index;
        self.bytes_since_snapshot = 0;
        self.stored_snapshot_bytes = info.len_bytes;
        // Our proposals placed at or below the snapshot: the snapshot's table says
        // whether they took effect; their responses are gone either way.
        let covered: Vec<(LogIndex, u64)> = self
            .placed
            .range(..=meta.last_index)
            .map(|(i, (r, _))| (*i, *r))
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
        // The snapshot may have raised the applied term: placements of earlier terms
        // beyond it can no longer be applied either (see `placed`).
        self.drop_placed_before_term();
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
                self.deliver(w, Ok(response));
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

    fn answer(&mut self, request_id: u64, result: Result<S::Response, NodeError>) {
        let waiter = self.shared.waiters.lock().remove(&request_id);
        if let Some(w) = waiter {
            self.deliver(w, result);
        }
    }

    /// Answers a blocked proposer at once; keeps a submitter's completion for
    /// [`Applier::push_completions`] at the end of the batch.
    fn deliver(
        &mut self,
        waiter: ProposalWaiter<S::Response>,
        result: Result<S::Response, NodeError>,
    ) {
        match waiter {
            ProposalWaiter::Slot(slot) => slot.send(result),
            ProposalWaiter::Queue(q) => {
                let (queue, ticket) = q.into_parts();
                match self
                    .completions
                    .iter_mut()
                    .find(|(q, _)| Arc::ptr_eq(q, &queue))
                {
                    Some((_, list)) => list.push((ticket, result)),
                    None => self.completions.push((queue, vec![(ticket, result)])),
                }
            }
        }
    }

    /// Hands each submitter the completions of the batch just applied, in one push.
    fn push_completions(&mut self) {
        for (queue, list) in self.completions.drain(..) {
            queue.push_all(list);
        }
    }
}

/// A stretch in `0..SNAPSHOT_STRETCH_PERCENT_MAX` (see the constant).
fn draw_stretch_percent() -> u64 {
    rand::random::<u64>() % SNAPSHOT_STRETCH_PERCENT_MAX
}

#[cfg(test)]
mod tests {
    //! The placement rules of [`Applier::placed`], driven task by task on this thread.
    use super::*;
    use crate::node::kv::{KvCommand, KvResponse, KvStore};
    use crate::node::queue::queue;
    use crate::node::reply::{reply_slot, ReplyReceiver};
    use crate::node::status::NodeStatus;
    use crate::types::{Snapshot, SnapshotMeta};
    use std::time::Duration;

    type Kv = KvStore<String, u32>;
    const ORIGIN: u64 = 77;

    fn applier() -> Applier<Kv> {
        let shared = Arc::new(Shared::new(1, ORIGIN, Kv::new(), NodeStatus::initial(1)));
        let (_tasks_tx, tasks) = queue();
        let (snapshots, _) = crossbeam_channel::bounded(1);
        let policy = SnapshotPolicy {
            after_entries: 0,
            after_bytes: 0,
        };
        Applier::new(shared, tasks, 0, 0, Dedup::default(), policy, snapshots)
    }

    /// Registers a blocked proposer for `request_id`.
    fn waiter(a: &Applier<Kv>, request_id: u64) -> ReplyReceiver<KvResponse<u32>> {
        let (tx, rx) = reply_slot();
        a.shared
            .waiters
            .lock()
            .insert(request_id, ProposalWaiter::Slot(tx));
        rx
    }

    fn entry(index: LogIndex, term: Term, origin: u64, request_id: u64) -> Entry {
        let put = KvCommand::Put {
            key: format!("k{index}"),
            value: 1u32,
        };
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: envelope::wrap(origin, request_id, &put.encode()),
        }
    }

    fn placed(request_id: u64, index: LogIndex, term: Term) -> ApplyTask {
        ApplyTask::Placed(vec![Placement {
            request_id,
            index,
            term,
        }])
    }

    fn answered(rx: &ReplyReceiver<KvResponse<u32>>) -> Option<Result<KvResponse<u32>, NodeError>> {
        rx.wait(Duration::ZERO)
    }

    #[test]
    fn a_placement_is_answered_by_its_entry_or_dropped_by_another() {
        let mut a = applier();
        let ours = waiter(&a, 1);
        let lost = waiter(&a, 2);
        a.handle(placed(1, 1, 1));
        a.handle(placed(2, 2, 1));
        // Index 2 holds another node's entry: request 2 was overwritten.
        a.handle(ApplyTask::Entries(vec![
            entry(1, 1, ORIGIN, 1),
            entry(2, 1, 5, 9),
        ]));
        assert!(matches!(
            answered(&ours),
            Some(Ok(KvResponse::Previous(None)))
        ));
        assert!(matches!(answered(&lost), Some(Err(NodeError::Dropped))));
        // Placed at or below what was applied: another entry is there.
        let late = waiter(&a, 3);
        a.handle(placed(3, 2, 1));
        assert!(matches!(answered(&late), Some(Err(NodeError::Dropped))));
        assert!(a.placed.is_empty());
    }

    #[test]
    fn a_later_terms_entry_drops_placements_of_earlier_terms_beyond_it() {
        let mut a = applier();
        // A dying leader of term 1 placed request 1 at 5; the next leader's log ends at 3.
        let stranded = waiter(&a, 1);
        let current = waiter(&a, 2);
        a.handle(placed(1, 5, 1));
        a.handle(placed(2, 6, 2));
        a.handle(ApplyTask::Entries(vec![
            entry(1, 1, 5, 1),
            entry(2, 1, 5, 2),
        ]));
        assert!(answered(&stranded).is_none(), "index 5 may still hold it");
        a.handle(ApplyTask::Entries(vec![entry(3, 2, 5, 3)]));
        assert!(matches!(answered(&stranded), Some(Err(NodeError::Dropped))));
        assert!(
            answered(&current).is_none(),
            "term 2's placement can still apply"
        );
        // Placed in an earlier term than what was applied: answered at once.
        let old = waiter(&a, 3);
        a.handle(placed(3, 9, 1));
        assert!(matches!(answered(&old), Some(Err(NodeError::Dropped))));
        a.handle(ApplyTask::Entries(vec![
            entry(4, 2, 5, 4),
            entry(5, 2, 5, 5),
            entry(6, 2, ORIGIN, 2),
        ]));
        assert!(matches!(
            answered(&current),
            Some(Ok(KvResponse::Previous(None)))
        ));
        assert!(a.placed.is_empty());
    }

    #[test]
    fn a_restore_of_a_later_term_drops_earlier_placements_beyond_it() {
        let mut a = applier();
        let covered = waiter(&a, 1);
        let beyond_old = waiter(&a, 2);
        let beyond_new = waiter(&a, 3);
        a.handle(placed(1, 2, 1));
        a.handle(placed(2, 8, 1));
        a.handle(placed(3, 9, 3));
        let state = Kv::new().snapshot_source().expect("KvStore snapshots");
        let data = snapshot::PackedSource::new(&Dedup::default(), state)
            .into_bytes()
            .expect("a KvStore view serializes");
        a.handle(ApplyTask::Restore(Arc::new(crate::InMemoryChunks::new(
            Snapshot {
                meta: SnapshotMeta::at(4, 3),
                data,
            },
        ))));
        assert_eq!(a.applied, 4);
        // At 2, under the snapshot and not in its table: it did not take effect.
        assert!(matches!(answered(&covered), Some(Err(NodeError::Dropped))));
        // At 8 but placed in term 1, below the snapshot's term 3: never applies.
        assert!(matches!(
            answered(&beyond_old),
            Some(Err(NodeError::Dropped))
        ));
        assert!(answered(&beyond_new).is_none());
        assert_eq!(a.placed.len(), 1);
    }
}
