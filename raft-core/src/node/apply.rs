//! The apply thread: applies committed entries to the state machine in order, answers
//! each proposer, and publishes `Applied` events.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::dedup::Dedup;
use super::envelope;
use super::error::NodeError;
use super::events::Event;
use super::shared::Shared;
use super::state_machine::StateMachine;
use crate::types::{Entry, EntryKind, LogIndex};

/// Work for the apply thread, in log order.
pub(crate) enum ApplyTask {
    /// Committed entries, in order.
    Entries(Vec<Entry>),
    /// The leader placed this node's proposal `request_id` at `index`: if a different
    /// entry ends up applied there, the proposal was dropped.
    Placed { request_id: u64, index: LogIndex },
}

pub(crate) struct Applier<S: StateMachine> {
    shared: Arc<Shared<S>>,
    tasks: Receiver<ApplyTask>,
    applied: LogIndex,
    /// Entries up to here were committed before this start: applying them is a replay.
    replay_to: LogIndex,
    /// Placed proposals not yet applied: index -> request id.
    placed: BTreeMap<LogIndex, u64>,
    dedup: Dedup,
}

impl<S: StateMachine> Applier<S> {
    pub(crate) fn new(
        shared: Arc<Shared<S>>,
        tasks: Receiver<ApplyTask>,
        applied: LogIndex,
        replay_to: LogIndex,
    ) -> Self {
        Self {
            shared,
            tasks,
            applied,
            replay_to,
            placed: BTreeMap::new(),
            dedup: Dedup::default(),
        }
    }

    /// Runs until the task channel closes (the WaitLoop ended).
    pub(crate) fn run(mut self) {
        while let Ok(task) = self.tasks.recv() {
            self.handle(task);
            // Drain a burst before publishing the applied index once.
            while let Ok(task) = self.tasks.try_recv() {
                self.handle(task);
            }
            self.shared.set_applied(self.applied);
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
            if let Some(w) = self.shared.waiters.lock().remove(&request_id) {
                let _ = w.send(Ok(response));
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
        if let Some(w) = self.shared.waiters.lock().remove(&request_id) {
            let _ = w.send(result);
        }
    }
}
