//! The node driver: starting and crashing nodes, ticks, message delivery, syncs, the
//! ready loop and snapshots.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::{
    Entry, EntryKind, Log, LogIndex, Message, MessageBody, NodeId, Raft, Ready, Role, Snapshot,
    StorageError, Term,
};
use rand::Rng;

use super::checks::Found;
use super::clients::*;
use super::config::*;
use super::workload::Workload;
use super::world::*;
use super::{Simulator, UNITS_PER_TICK};
use crate::checker::{digest, DiskState, LogView, Violation};
use crate::network::Fate;
use crate::sim_log::SimLog;
use crate::trace::TraceEvent;

pub(super) struct SimNode<M> {
    pub(super) id: NodeId,
    pub(super) raft: Option<Raft<SimLog>>,
    /// The disk while crashed.
    pub(super) disk: Option<SimLog>,
    pub(super) life: u32,
    pub(super) paused: Option<u64>,
    pub(super) pause_inbox: Vec<Ev>,
    pub(super) missed_ticks: u64,
    /// The next sync stalls the node for this many ticks (a `Stall` fault).
    pub(super) stall_next_sync_ticks: Option<u64>,
    pub(super) syncing: Option<Ready>,
    pub(super) tick_units: u64,
    /// The replicated state machine.
    pub(super) machine: M,
    /// Proposals waiting for the leader's placement, by request id.
    pub(super) placing: BTreeMap<u64, Waiter>,
    /// Placed proposals waiting to be applied: (waiter, index).
    pub(super) applying: Vec<(Waiter, LogIndex)>,
    /// Reads waiting for a read index, by request id.
    pub(super) reading: BTreeMap<u64, Waiter>,
    /// Reads waiting for the state machine to reach their index: (waiter, index).
    pub(super) read_waiting: Vec<(Waiter, LogIndex)>,
    /// Last role and term and commit reported to the trace.
    pub(super) last_role: Option<(Role, Term)>,
    pub(super) last_commit: LogIndex,
    /// The node got a chunk of a snapshot it has not installed yet (in this life).
    pub(super) receiving_snapshot: bool,
    /// The snapshot being received, as written so far (a temporary file: lost in a
    /// crash). Not checked here: the protocol decides when it is complete.
    pub(super) receive_file: Option<Snapshot>,
    /// A received snapshot whose file is being made durable (`Ev::ReceivedDurable`).
    pub(super) finishing: Option<Snapshot>,
    /// A received snapshot, durable, that the protocol accepted: stored in the log with
    /// the ready that installs it.
    pub(super) accepted: Option<Snapshot>,
    pub(super) snapshots_installed: u64,
    /// A scripted crash waiting for its moment.
    pub(super) crash_trigger: Option<Scripted>,
}

pub(super) struct RaftView<'a>(&'a Raft<SimLog>);

impl LogView for RaftView<'_> {
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.0.term_at(index)
    }

    fn compacted_to(&self) -> LogIndex {
        let stored = self.0.log().snapshot_meta().last_index;
        // A snapshot installed from the leader moves the protocol's log start (and its
        // applied index) before the driver has stored it: the log then holds the
        // snapshot's last index but not the one before.
        let applied = self.0.applied_index();
        let installing = applied > stored
            && self.0.term_at(applied).is_some()
            && self.0.term_at(applied - 1).is_none();
        if installing {
            applied
        } else {
            stored
        }
    }
}

impl<W: Workload> Simulator<W> {
    // ----- node lifecycle ----------------------------------------------------------------

    pub(super) fn start_node(&mut self, i: usize) -> Result<(), Violation> {
        let disk = self.nodes[i]
            .disk
            .take()
            .expect("a stopped node has a disk");
        let durable = disk.hard_state();
        let last_index = disk.last_index();
        let id = self.nodes[i].id;
        let stored = disk.snapshot().map_err(|e| Violation::Storage {
            node: id,
            detail: e.to_string(),
        })?;
        let config = self.cfg.node_config(self.nodes[i].id);
        let seed = self.rng.gen();
        #[allow(unused_mut)]
        let mut raft = Raft::new(config, disk, seed).expect("valid config");
        #[cfg(feature = "broken-variants")]
        if let Some(b) = self.cfg.broken {
            use raft_core::protocol::BrokenVariant;
            raft.set_broken_variant(match b {
                Broken::VoteWithoutLogCheck => Some(BrokenVariant::VoteWithoutLogCheck),
                Broken::CommitOlderTerms => Some(BrokenVariant::CommitOlderTerms),
                Broken::TwoChangesInFlight => Some(BrokenVariant::TwoChangesInFlight),
                Broken::TicksAfterQueue => None, // the driver's bug: see `resume`
                Broken::InstallPartialSnapshot => Some(BrokenVariant::InstallPartialSnapshot),
                Broken::SnapshotWithoutConfig => Some(BrokenVariant::SnapshotWithoutConfig),
                Broken::IgnoreStaleVotes => Some(BrokenVariant::IgnoreStaleVotes),
                Broken::DisruptiveOutsiders => Some(BrokenVariant::DisruptiveOutsiders),
            });
        }
        let snapshot_index = stored.as_ref().map_or(0, |s| s.meta.last_index);
        if self.nodes[i].life > 0 {
            let disk = DiskState {
                hard_state: durable,
                last_index,
                snapshot_index,
            };
            self.checker.observe_restart(
                id,
                disk,
                raft.term(),
                raft.vote(),
                raft.commit_index(),
            )?;
            self.record(TraceEvent::Restart {
                node: id,
                term: raft.term(),
                commit: raft.commit_index(),
                last_index,
            });
        }
        // The state machine starts from the stored snapshot, as `Raft::new` expects.
        let machine = match &stored {
            Some(snapshot) => self.restore_snapshot(id, snapshot)?,
            None => self.workload.fresh(),
        };
        if stored.is_some() && self.nodes[i].life > 0 {
            self.count("snapshot_restored_at_restart");
        }
        let node = &mut self.nodes[i];
        node.raft = Some(raft);
        node.machine = machine;
        node.last_role = None;
        node.last_commit = 0;
        node.receiving_snapshot = false;
        let life = node.life;
        let first_tick = self.rng.gen_range(1..=self.nodes[i].tick_units);
        self.schedule_in(first_tick, Ev::Tick { node: i, life });
        self.after_node_event(i)
    }

    pub(super) fn crash(&mut self, i: usize) -> Result<(), Violation> {
        self.crash_keeping(i, None)
    }

    /// Crashes node `i`, keeping `kept_writes` of its unsynced writes (random if `None`).
    pub(super) fn crash_keeping(
        &mut self,
        i: usize,
        kept_writes: Option<usize>,
    ) -> Result<(), Violation> {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return Ok(());
        };
        let snapshot_unsynced = raft.log().snapshot_pending();
        let (disk, outcome) = match kept_writes {
            Some(k) => raft.log().crash_keeping(k, None),
            None => raft.log().crash(&mut self.rng),
        };
        if snapshot_unsynced {
            self.count("crash_before_snapshot_sync");
        }
        if self.nodes[i].receiving_snapshot {
            self.count("crash_while_receiving_snapshot");
        }
        if outcome.lost_snapshot {
            self.count("crash_lost_unsynced_snapshot");
        }
        if outcome.snapshot_without_compaction {
            self.count("crash_kept_snapshot_not_compaction");
        }
        self.nodes[i].raft = None;
        let node = &mut self.nodes[i];
        node.disk = Some(disk);
        node.life += 1;
        node.paused = None;
        node.pause_inbox.clear();
        node.missed_ticks = 0;
        node.stall_next_sync_ticks = None;
        node.syncing = None;
        node.placing.clear();
        node.applying.clear();
        node.reading.clear();
        node.read_waiting.clear();
        node.receiving_snapshot = false;
        node.receive_file = None;
        node.finishing = None;
        node.accepted = None;
        let id = node.id;
        self.checker.observe_crash(id);
        self.count("crash");
        if outcome.lost_anything() {
            self.count("crash_lost_unsynced_writes");
        }
        if outcome.torn_append {
            self.count("crash_torn_append");
        }
        self.record(TraceEvent::Crash { node: id, outcome });
        Ok(())
    }

    pub(super) fn on_tick(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life || node.raft.is_none() {
            return Ok(());
        }
        let period = node.tick_units;
        self.schedule_in(period, Ev::Tick { node: i, life });
        let node = &mut self.nodes[i];
        if node.paused.is_some() {
            node.missed_ticks += 1;
            return Ok(());
        }
        node.raft.as_mut().expect("up").tick();
        self.trace.record_quiet(self.now, i as u64);
        self.drive(i)?;
        self.after_node_event(i)
    }

    pub(super) fn on_deliver(&mut self, msg: Message, send_seq: u64) -> Result<(), Violation> {
        let i = (msg.to - 1) as usize;
        if !self.net.connected(msg.from, msg.to) {
            self.count("msg_cut_by_partition");
            self.record(TraceEvent::Drop {
                from: msg.from,
                to: msg.to,
                kind: msg.body.kind(),
                cut: true,
            });
            return Ok(());
        }
        if !self.node_is_up(i) {
            return Ok(());
        }
        if self.nodes[i].paused.is_some() {
            self.nodes[i]
                .pause_inbox
                .push(Ev::Deliver { msg, send_seq });
            return Ok(());
        }
        let newest = self.link_delivered.entry((msg.from, msg.to)).or_insert(0);
        let reordered = send_seq < *newest;
        *newest = (*newest).max(send_seq);
        if reordered {
            self.count("msg_reordered");
        }
        self.record(TraceEvent::Deliver {
            from: msg.from,
            to: msg.to,
            term: msg.term,
            kind: msg.body.kind(),
            detail: msg_detail(&msg.body),
        });
        let partial_chunk = match &msg.body {
            MessageBody::InstallSnapshot { done, .. } => {
                if reordered {
                    self.count("snapshot_chunk_reordered");
                }
                self.nodes[i].receiving_snapshot = true;
                done.is_none()
            }
            _ => false,
        };
        self.nodes[i].raft.as_mut().expect("up").step(msg);
        self.drive(i)?;
        if partial_chunk {
            self.fire_trigger(i, 0, |t| {
                matches!(t, Scripted::CrashWhileReceivingSnapshot { .. })
            });
        }
        self.after_node_event(i)
    }

    pub(super) fn on_sync_done(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life || node.raft.is_none() {
            return Ok(());
        }
        if node.paused.is_some() {
            node.pause_inbox.push(Ev::SyncDone { node: i, life });
            return Ok(());
        }
        let raft = node.raft.as_mut().expect("up");
        raft.log_mut().sync().map_err(|e| Violation::Storage {
            node: node.id,
            detail: e.to_string(),
        })?;
        let hs = raft.log().hard_state();
        let id = node.id;
        let ready = node.syncing.take().expect("a sync was in flight");
        self.checker.observe_sync(id, hs);
        self.finish_ready(i, ready)?;
        self.drive(i)?;
        self.after_node_event(i)
    }

    /// A received snapshot's file is durable: the protocol learns it and, if it still
    /// needs the snapshot, installs it with its next ready.
    pub(super) fn on_received_durable(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life || node.raft.is_none() {
            return Ok(());
        }
        if node.paused.is_some() {
            node.pause_inbox.push(Ev::ReceivedDurable { node: i, life });
            return Ok(());
        }
        let Some(snapshot) = node.finishing.take() else {
            return Ok(());
        };
        let raft = node.raft.as_mut().expect("up");
        if raft.snapshot_received(snapshot.meta.clone(), true) {
            node.accepted = Some(snapshot);
            self.count("snapshot_received_durable");
        } else {
            self.count("snapshot_received_not_needed");
        }
        self.drive(i)?;
        self.after_node_event(i)
    }

    pub(super) fn on_snapshot_sync(&mut self, i: usize, life: u32) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        if node.life != life {
            return Ok(());
        }
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        // A paused process does not run its disk syncs either.
        if node.paused.is_some() {
            node.pause_inbox.push(Ev::SnapshotSync { node: i, life });
            return Ok(());
        }
        raft.log_mut().sync().map_err(|e| Violation::Storage {
            node: node.id,
            detail: e.to_string(),
        })?;
        let hs = raft.log().hard_state();
        self.checker.observe_sync(node.id, hs);
        Ok(())
    }

    /// Handles readies until none is left or one waits for its sync.
    pub(super) fn drive(&mut self, i: usize) -> Result<(), Violation> {
        loop {
            let node = &mut self.nodes[i];
            if node.syncing.is_some() || node.paused.is_some() {
                return Ok(());
            }
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                return Ok(());
            }
            let id = node.id;
            let ready = raft.ready();
            // Received snapshot data goes to a temporary file, unsynced; a complete one
            // is synced and renamed off the protocol's thread, which learns it later.
            for chunk in &ready.snapshot_chunks {
                if chunk.offset == 0 {
                    node.receive_file = Some(Snapshot {
                        meta: chunk.meta.clone(),
                        data: Default::default(),
                    });
                }
                match node.receive_file.as_mut() {
                    Some(f) if f.meta == chunk.meta && f.data.len() as u64 == chunk.offset => {
                        let mut data = f.data.to_vec();
                        data.extend_from_slice(&chunk.data);
                        f.data = data.into();
                    }
                    other => {
                        return Err(Violation::Storage {
                            node: id,
                            detail: format!(
                                "snapshot data for {:?} at offset {} after {:?}",
                                chunk.meta,
                                chunk.offset,
                                other.map(|f| (f.meta.clone(), f.data.len()))
                            ),
                        })
                    }
                }
            }
            if let Some(info) = &ready.received_snapshot {
                match node.receive_file.take() {
                    Some(f) if f.meta == info.meta => {
                        node.finishing = Some(f);
                        let life = node.life;
                        // A big file's fsync can take a while: sometimes several ticks.
                        let delay = if self.rng.gen_bool(0.1) {
                            self.rng.gen_range(UNITS_PER_TICK..=4 * UNITS_PER_TICK)
                        } else {
                            self.rng.gen_range(10..=UNITS_PER_TICK / 2)
                        };
                        self.schedule_in(delay, Ev::ReceivedDurable { node: i, life });
                    }
                    other => {
                        return Err(Violation::Storage {
                            node: id,
                            detail: format!(
                                "the snapshot {:?} is complete but {:?} was written",
                                info.meta,
                                other.map(|f| f.meta)
                            ),
                        })
                    }
                }
            }
            let node = &mut self.nodes[i];
            let raft = node.raft.as_mut().expect("up");
            if !ready.must_sync() {
                self.finish_ready(i, ready)?;
                continue;
            }
            let storage = move |e: raft_core::StorageError| Violation::Storage {
                node: id,
                detail: e.to_string(),
            };
            // A ready that moves only the commit index is written but not synced, as the
            // runtime does (`Ready::must_sync_after`): a crash may lose it, and the node
            // must then learn the commit index again from the leader.
            if !ready.must_sync_after(&raft.log().durable_hard_state()) {
                if let Some(hs) = ready.hard_state {
                    raft.log_mut().set_hard_state(hs).map_err(storage)?;
                }
                self.count("commit_written_unsynced");
                // The checker sees the new commit index before anything is applied.
                self.after_node_event(i)?;
                self.finish_ready(i, ready)?;
                continue;
            }
            // 1. Store the snapshot and compact the log to it, before the entries that
            // follow it; then write entries and hard state. All of it is visible now and
            // durable at the sync.
            let writes_before = raft.log().pending_writes();
            if let Some(meta) = &ready.snapshot {
                let snapshot = match node.accepted.take() {
                    Some(s) if s.meta == *meta => s,
                    other => {
                        return Err(Violation::Storage {
                            node: id,
                            detail: format!(
                                "the protocol installs {meta:?} but {:?} was received",
                                other.map(|s| s.meta)
                            ),
                        })
                    }
                };
                let log = raft.log_mut();
                log.save_snapshot(&snapshot).map_err(storage)?;
                log.compact(meta.clone()).map_err(storage)?;
            }
            if raft.role() == Role::Leader {
                for e in ready
                    .entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::Membership && e.term == raft.term())
                {
                    let next = raft.membership_at(e.index);
                    let prev_index = raft.membership_since(e.index - 1);
                    let prev = raft.membership_at(e.index - 1);
                    let commit = raft.commit_index();
                    let commit_term = raft
                        .term_at(commit)
                        .or_else(|| self.checker.committed_term(commit));
                    self.checker.observe_membership_appended(
                        id,
                        e.term,
                        e.index,
                        prev_index,
                        prev,
                        next,
                        commit,
                        commit_term,
                    )?;
                }
            }
            if let Some(first) = ready.entries.first() {
                let prev_term = raft.log().term(first.index - 1).unwrap_or(0);
                raft.log_mut().append(&ready.entries).map_err(storage)?;
                let written: Vec<(LogIndex, Term, u64)> = ready
                    .entries
                    .iter()
                    .map(|e| (e.index, e.term, entry_digest(e)))
                    .collect();
                self.checker.observe_write(id, prev_term, &written)?;
            }
            let node = &mut self.nodes[i];
            let raft = node.raft.as_mut().expect("up");
            if let Some(hs) = ready.hard_state {
                raft.log_mut().set_hard_state(hs).map_err(storage)?;
            }
            // 2. The leader's appends, heartbeats and snapshot chunks go out before its
            // own write is durable, as the runtime sends them (Ready::take_messages_before_sync):
            // a crash before the sync then leaves followers with entries the leader lost.
            let mut ready = ready;
            let early = ready.take_messages_before_sync();
            // 3. The sync completes after a disk delay; a crash before then tears the tail.
            let installs = ready.snapshot.is_some();
            node.syncing = Some(ready);
            if !early.is_empty() {
                self.count("sent_before_sync");
                for msg in early {
                    self.send(msg);
                }
            }
            let node = &mut self.nodes[i];
            let life = node.life;
            if let Some(ticks) = node.stall_next_sync_ticks.take() {
                // The runtime's WaitLoop blocks in its sync: the node misses ticks and
                // its queue fills until the sync returns (see `resume`).
                self.pause_counter += 1;
                let pause = self.pause_counter;
                let node = &mut self.nodes[i];
                node.paused = Some(pause);
                node.missed_ticks = 0;
                let id = node.id;
                self.count("stall");
                self.record(TraceEvent::Stall { node: id, ticks });
                let delay = ticks * UNITS_PER_TICK;
                self.schedule_in(delay, Ev::SyncDone { node: i, life });
                self.schedule_in(delay + 1, Ev::Resume { node: i, pause });
            } else {
                let delay = if self.rng.gen_bool(0.05) {
                    self.rng.gen_range(UNITS_PER_TICK..=3 * UNITS_PER_TICK)
                } else {
                    self.rng.gen_range(10..=UNITS_PER_TICK / 4)
                };
                self.schedule_in(delay, Ev::SyncDone { node: i, life });
            }
            if installs {
                self.fire_trigger(i, writes_before, |t| {
                    matches!(t, Scripted::CrashBeforeSnapshotSync { .. })
                });
            }
            return Ok(());
        }
    }

    /// The rest of a ready, once its writes are durable: send, apply, answer, advance.
    pub(super) fn finish_ready(&mut self, i: usize, ready: Ready) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        let Ready {
            soft_state,
            snapshot,
            snapshot_chunks,
            received_snapshot,
            hard_state,
            entries,
            messages,
            committed,
            read_states,
            forwarded,
        } = ready;
        for msg in messages {
            if let MessageBody::VoteResponse { granted: true } = msg.body {
                self.checker
                    .observe_vote_granted(msg.from, msg.term, msg.to)?;
            }
            self.send(msg);
        }
        // The state machine restarts from an installed snapshot before it applies the
        // entries that follow it, read from the log that now stores it.
        if let Some(meta) = &snapshot {
            let raft = self.nodes[i].raft.as_ref().expect("up");
            let stored = raft
                .log()
                .snapshot()
                .ok()
                .flatten()
                .filter(|s| s.meta == *meta)
                .ok_or_else(|| Violation::Storage {
                    node: id,
                    detail: format!("installed {meta:?} but the log does not store it"),
                })?;
            let machine = self.restore_snapshot(id, &stored)?;
            let node = &mut self.nodes[i];
            node.machine = machine;
            node.receiving_snapshot = false;
            node.snapshots_installed += 1;
            self.count("snapshot_installed");
            self.record(TraceEvent::SnapshotInstalled {
                node: id,
                index: meta.last_index,
            });
        }
        if !committed.is_empty() {
            let raft = self.nodes[i].raft.as_ref().expect("up");
            let commit = raft.commit_index();
            let applied: Vec<(LogIndex, Term, u64)> = committed
                .iter()
                .map(|e| (e.index, e.term, entry_digest(e)))
                .collect();
            self.checker.observe_applied(id, commit, &applied)?;
            let machine = &mut self.nodes[i].machine;
            for e in &committed {
                // Only commands reach the state machine; a configuration entry is the
                // protocol's (it advances the applied index like a no-op).
                let data = if e.kind == EntryKind::Command {
                    e.data.clone()
                } else {
                    Bytes::new()
                };
                self.workload.apply(machine, e.index, &data);
                self.reference.applied(e.index, &data);
            }
        }
        let mut replies = Vec::new();
        let node = &mut self.nodes[i];
        for rs in read_states {
            let Some(w) = node.reading.remove(&rs.request_id) else {
                continue;
            };
            match rs.index {
                Some(index) => node.read_waiting.push((w, index)),
                None => replies.push((w, Reply::Retry(None))),
            }
        }
        for fp in forwarded {
            let Some(w) = node.placing.remove(&fp.request_id) else {
                continue;
            };
            match fp.placed {
                Some((index, _term)) => node.applying.push((w, index)),
                None => replies.push((w, Reply::Retry(None))),
            }
        }
        let ready = Ready {
            soft_state,
            snapshot,
            snapshot_chunks,
            received_snapshot,
            hard_state,
            entries,
            messages: Vec::new(),
            committed,
            read_states: Vec::new(),
            forwarded: Vec::new(),
        };
        node.raft.as_mut().expect("up").advance(ready);
        self.serve_waiting(i, &mut replies);
        for (w, reply) in replies {
            self.client_reply(w, reply);
        }
        self.maybe_snapshot(i)
    }

    /// A state machine restored from `snapshot` on node `id`, checked against the
    /// committed prefix it claims to hold.
    pub(super) fn restore_snapshot(
        &mut self,
        id: NodeId,
        snapshot: &Snapshot,
    ) -> Result<W::Machine, Violation> {
        let index = snapshot.meta.last_index;
        let bad = |detail: String| Violation::BadSnapshot {
            node: id,
            index,
            detail: format!("it does not decode: {detail}"),
        };
        let machine = self.workload.restore(&snapshot.data).map_err(bad)?;
        let applied = self.workload.applied_index(&machine);
        if applied != index {
            return Err(Violation::BadSnapshot {
                node: id,
                index,
                detail: format!("its state machine is at {applied}"),
            });
        }
        self.checker
            .observe_snapshot_restored(id, snapshot.meta.clone())?;
        self.reference
            .check(id, &machine, &self.workload, Found::Restored)?;
        Ok(machine)
    }

    /// Snapshots node `i`'s state machine and compacts its log, if the policy says so.
    /// Like the runtime, it saves the snapshot, compacts, and syncs a little later (a
    /// crash before then keeps the old snapshot or the new one, whole).
    pub(super) fn maybe_snapshot(&mut self, i: usize) -> Result<(), Violation> {
        let Some(policy) = self.cfg.snapshots else {
            return Ok(());
        };
        let node = &mut self.nodes[i];
        let id = node.id;
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let storage = |e: StorageError| Violation::Storage {
            node: id,
            detail: e.to_string(),
        };
        let applied = self.workload.applied_index(&node.machine);
        let last = raft.log().snapshot().map_err(storage)?;
        let last = last.map_or(0, |s| s.meta.last_index);
        if applied < last + policy.every_applied_entries {
            return Ok(());
        }
        let state = self
            .workload
            .snapshot(&node.machine, self.cfg.broken_snapshot);
        // With the configuration at `applied` in its metadata, as the runtime does.
        let Some(meta) = raft.snapshot_meta_at(applied) else {
            return Ok(()); // compacted already: a newer snapshot was installed
        };
        let snapshot = Snapshot { meta, data: state };
        let compact_first = self.cfg.broken_snapshot == Some(BrokenSnapshot::CompactBeforeSave);
        if !compact_first {
            raft.log_mut().save_snapshot(&snapshot).map_err(storage)?;
        }
        let keep_from = applied.saturating_sub(policy.trailing_entries);
        let compaction = raft.compaction_meta(keep_from);
        if let Some(meta) = &compaction {
            raft.log_mut().compact(meta.clone()).map_err(storage)?;
        }
        if compact_first {
            raft.log_mut().save_snapshot(&snapshot).map_err(storage)?;
        }
        if compaction.is_some() {
            self.count("log_compacted");
        }
        let compacted_to = self.nodes[i]
            .raft
            .as_ref()
            .expect("up")
            .log()
            .snapshot_meta()
            .last_index;
        self.count("snapshot_taken");
        self.record(TraceEvent::SnapshotTaken {
            node: id,
            index: applied,
            compacted_to,
        });
        let life = self.nodes[i].life;
        let delay = self.rng.gen_range(10..=UNITS_PER_TICK / 2);
        self.schedule_in(delay, Ev::SnapshotSync { node: i, life });
        Ok(())
    }

    /// Answers the requests whose condition the node's state machine now meets.
    pub(super) fn serve_waiting(
        &mut self,
        i: usize,
        replies: &mut Vec<(Waiter, Reply<W::Output>)>,
    ) {
        let (workload, history) = (&self.workload, &self.history);
        let node = &mut self.nodes[i];
        let machine = &node.machine;
        let applied = workload.applied_index(machine);
        node.applying.retain(|&(w, index)| {
            if let Some(at) = workload.applied_at(machine, w.op) {
                let output = workload.write_output(machine, w.op);
                replies.push((w, Reply::Ok(output, Some(at))));
                false
            } else if applied >= index {
                // Something else is at that index: this attempt did not take effect.
                replies.push((w, Reply::Retry(None)));
                false
            } else {
                true
            }
        });
        node.read_waiting.retain(|&(w, index)| {
            if applied >= index {
                let output = workload.read(machine, &history[w.op as usize].input);
                replies.push((w, Reply::Ok(Some(output), None)));
                false
            } else {
                true
            }
        });
    }

    pub(super) fn send(&mut self, msg: Message) {
        let fate = self.net.fate(msg.from, msg.to, &mut self.rng);
        let chunk = matches!(msg.body, MessageBody::InstallSnapshot { .. });
        if let MessageBody::InstallSnapshot { offset, .. } = msg.body {
            self.count("snapshot_chunk_sent");
            if offset == 0 {
                self.count("snapshot_transfer_started");
            }
        }
        match fate {
            Fate::Dropped => {
                let cut = !self.net.connected(msg.from, msg.to);
                self.count(if cut {
                    "msg_cut_by_partition"
                } else {
                    "msg_lost"
                });
                if chunk && !cut {
                    self.count("snapshot_chunk_lost");
                }
            }
            Fate::Delivered(delays) => {
                if delays.len() > 1 {
                    self.count("msg_duplicated");
                    if chunk {
                        self.count("snapshot_chunk_duplicated");
                    }
                }
                self.seq += 1;
                let send_seq = self.seq;
                let profile = self.net.profile;
                for d in delays {
                    if profile.long_tail > 0.0 && d > UNITS_PER_TICK {
                        self.count("msg_long_tail");
                    }
                    self.schedule_in(
                        d,
                        Ev::Deliver {
                            msg: msg.clone(),
                            send_seq,
                        },
                    );
                }
            }
        }
    }

    /// Runs the checks on a node after an event touched it.
    pub(super) fn after_node_event(&mut self, i: usize) -> Result<(), Violation> {
        let Self {
            nodes,
            checker,
            trace,
            now,
            verbose,
            ..
        } = self;
        let node = &nodes[i];
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let (role, term, commit) = (raft.role(), raft.term(), raft.commit_index());
        let view = RaftView(raft);
        checker.observe_state(node.id, role, term, raft.vote(), &view)?;
        let leader_logs = |id: NodeId| -> Option<Box<dyn LogView + '_>> {
            nodes[(id - 1) as usize]
                .raft
                .as_ref()
                .map(|r| Box::new(RaftView(r)) as Box<dyn LogView>)
        };
        checker.observe_commit(node.id, commit, term, &view, &leader_logs)?;
        checker.observe_configuration_at_commit(node.id, commit, raft.membership_at(commit))?;
        let mut events = Vec::new();
        let became_leader = role == Role::Leader && node.last_role != Some((role, term));
        if became_leader {
            let since = raft.membership_since(raft.last_index());
            let removed_from = (since > commit && since > 0).then(|| raft.membership_at(since - 1));
            checker.observe_leader_membership(node.id, term, raft.membership(), removed_from)?;
        }
        if node.last_role != Some((role, term)) {
            events.push(TraceEvent::Role {
                node: node.id,
                role,
                term,
                leader: raft.leader(),
            });
        }
        if commit != node.last_commit {
            events.push(TraceEvent::Commit {
                node: node.id,
                index: commit,
            });
        }
        let node = &mut nodes[i];
        node.last_role = Some((role, term));
        node.last_commit = commit;
        for e in events {
            if *verbose {
                println!("{:>9.3} {e}", *now as f64 / UNITS_PER_TICK as f64);
            }
            trace.record(*now, e);
        }
        // New leaders are fragile: crash some of them mid-way through their first
        // replication round (the Figure 8 situations live there).
        if became_leader
            && self.phase == Phase::Safety
            && self.cfg.faults.crash
            && self.rng.gen_bool(self.cfg.faults.new_leader_crash)
        {
            let d = self.rng.gen_range(0..=2 * UNITS_PER_TICK);
            self.schedule_in(d, Ev::CrashNewLeader { node: i, term });
        }
        Ok(())
    }
}

pub(super) fn entry_digest(e: &Entry) -> u64 {
    digest(&e.data)
        ^ match e.kind {
            EntryKind::Noop => 0x9e37,
            EntryKind::Membership => 0x7f4a,
            EntryKind::Command => 0,
        }
}

pub(super) fn msg_detail(body: &MessageBody) -> [u64; 4] {
    match body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => [*prev_index, *prev_term, entries.len() as u64, *commit],
        MessageBody::AppendResponse { index, reject } => match reject {
            None => [*index, 0, 0, 0],
            Some(h) => [*index, 1, h.last_index, h.conflict_index],
        },
        MessageBody::Vote {
            last_log_index,
            last_log_term,
            transfer,
        } => [*last_log_index, *last_log_term, u64::from(*transfer), 0],
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => [*last_log_index, *last_log_term, 0, 0],
        MessageBody::VoteResponse { granted } | MessageBody::PreVoteResponse { granted } => {
            [u64::from(*granted), 0, 0, 0]
        }
        MessageBody::Heartbeat { commit, read_round } => [*commit, *read_round, 0, 0],
        MessageBody::HeartbeatResponse {
            read_round,
            last_index,
        } => [*read_round, *last_index, 0, 0],
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => [
            meta.last_index,
            *offset,
            data.len() as u64,
            u64::from(done.is_some()),
        ],
        MessageBody::SnapshotResponse {
            last_index,
            next_offset,
        } => [*last_index, *next_offset, 0, 0],
        _ => [0; 4],
    }
}
