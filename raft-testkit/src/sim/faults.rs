//! Fault injection: the random fault schedule, scripted faults, membership changes,
//! pauses and stalls.

use raft_core::{NodeId, Role};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::*;
use super::workload::Workload;
use super::world::*;
use super::{Simulator, UNITS_PER_TICK};
use crate::checker::Violation;
use crate::network::PartitionKind;
use crate::trace::TraceEvent;

impl<W: Workload> Simulator<W> {
    pub(super) fn on_script(&mut self, k: usize) -> Result<(), Violation> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        let action = self.cfg.script[k].1;
        self.count("scripted_fault");
        match action {
            Scripted::Isolate(node) => {
                let others: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .map(|n| n.id)
                    .filter(|&id| id != node)
                    .collect();
                self.net.cut_between(&[node], &others);
                self.partition_generation += 1;
                self.record(TraceEvent::Partition {
                    description: format!("n{node} isolated (scripted)"),
                });
            }
            Scripted::Heal => {
                self.net.heal();
                self.record(TraceEvent::Heal);
            }
            Scripted::Crash { node, down_ticks } => {
                let i = (node - 1) as usize;
                self.crash(i)?;
                self.schedule_in(down_ticks * UNITS_PER_TICK, Ev::Restart { node: i });
            }
            Scripted::CrashWhileReceivingSnapshot { node, .. }
            | Scripted::CrashBeforeSnapshotSync { node, .. } => {
                self.nodes[(node - 1) as usize].crash_trigger = Some(action);
            }
        }
        Ok(())
    }

    /// Fires node `i`'s scripted crash if `now` is its moment: right away, before any
    /// other event (the pending sync in particular).
    /// `writes_before`: unsynced writes the node had before the moment's own writes.
    pub(super) fn fire_trigger(
        &mut self,
        i: usize,
        writes_before: usize,
        moment: fn(&Scripted) -> bool,
    ) {
        let Some(trigger) = self.nodes[i].crash_trigger.filter(moment) else {
            return;
        };
        let (kept_writes, down_ticks) = match trigger {
            Scripted::CrashBeforeSnapshotSync {
                kept_writes,
                down_ticks,
                ..
            } => (Some(writes_before.saturating_add(kept_writes)), down_ticks),
            Scripted::CrashWhileReceivingSnapshot { down_ticks, .. } => (None, down_ticks),
            _ => return,
        };
        self.nodes[i].crash_trigger = None;
        let life = self.nodes[i].life;
        self.schedule_in(
            0,
            Ev::TriggeredCrash {
                node: i,
                life,
                kept_writes,
                down_ticks,
            },
        );
    }

    // ----- faults ------------------------------------------------------------------------

    pub(super) fn on_fault(&mut self) -> Result<(), Violation> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        // Sometimes faults come in bursts: several within a tick, so that one fault
        // lands in the window another one opened.
        let gap = if self.rng.gen_bool(0.25) {
            self.rng.gen_range(0..=UNITS_PER_TICK)
        } else {
            self.fault_gap()
        };
        self.schedule_in(gap, Ev::Fault);
        self.inject_fault()
    }

    pub(super) fn inject_fault(&mut self) -> Result<(), Violation> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        let kinds = self.cfg.faults.kinds();
        let kind = *kinds
            .choose(&mut self.rng)
            .expect("some fault kind is enabled");
        match kind {
            FaultKind::Partition(pk) => {
                let leader = self.leader().map(|i| self.nodes[i].id);
                let description = self.net.partition(pk, leader, &mut self.rng);
                self.count(match pk {
                    PartitionKind::Symmetric => "partition_symmetric",
                    PartitionKind::OneWay => "partition_one_way",
                    PartitionKind::IsolateLeader => "partition_isolate_leader",
                    PartitionKind::Bridge => "partition_bridge",
                });
                self.record(TraceEvent::Partition { description });
                self.partition_generation += 1;
                let generation = self.partition_generation;
                // The bridge node is the only link between the halves: restarting it
                // once the far half has lost touch with the leader tests that it does
                // not forget what it promised the leader (its lease acknowledgement).
                if let Some(bridge) = self.net.bridge {
                    if self.cfg.faults.quick_restart && self.rng.gen_bool(0.5) {
                        let t = u64::from(self.cfg.raft.election_timeout_ticks);
                        let d = self
                            .rng
                            .gen_range(t * UNITS_PER_TICK..=3 * t * UNITS_PER_TICK);
                        let node = (bridge - 1) as usize;
                        self.schedule_in(d, Ev::QuickRestart { node, generation });
                        // ... and sometimes cut the leader off right after.
                        if self.rng.gen_bool(0.5) {
                            let e = d + self.rng.gen_range(0..=UNITS_PER_TICK);
                            self.schedule_in(e, Ev::ExtraFault);
                        }
                    }
                }
                let d = self
                    .rng
                    .gen_range(UNITS_PER_TICK..=self.cfg.partition_ticks_max * UNITS_PER_TICK);
                self.schedule_in(d, Ev::HealPartition { generation });
            }
            FaultKind::Crash => {
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i))
                    .collect();
                // Crash the leader, or a node with unsynced writes (to tear its tail),
                // more often than chance would.
                let unsynced: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&i| self.nodes[i].syncing.is_some())
                    .collect();
                // And a node in the middle of a snapshot: receiving one, or with one
                // stored but not synced.
                let snapshotting: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let n = &self.nodes[i];
                        n.receiving_snapshot
                            || n.raft.as_ref().is_some_and(|r| r.log().snapshot_pending())
                    })
                    .collect();
                let pick = self.rng.gen_range(0..10);
                let victim = match (pick, self.leader()) {
                    (0..=2, Some(l)) => Some(l),
                    (3..=4, _) if !unsynced.is_empty() => unsynced.choose(&mut self.rng).copied(),
                    (5, _) if !snapshotting.is_empty() => {
                        snapshotting.choose(&mut self.rng).copied()
                    }
                    _ => up.choose(&mut self.rng).copied(),
                };
                if let Some(i) = victim {
                    self.crash(i)?;
                    // Often a quick restart, which matters for anything that relies on
                    // a node remembering recent history (leases).
                    let max = if self.rng.gen_bool(0.5) {
                        5
                    } else {
                        self.cfg.node_down_ticks_max
                    };
                    let d = self
                        .rng
                        .gen_range(UNITS_PER_TICK / 4..=max * UNITS_PER_TICK);
                    self.schedule_in(d, Ev::Restart { node: i });
                }
            }
            FaultKind::QuickRestart => {
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i))
                    .collect();
                if let Some(&i) = up.choose(&mut self.rng) {
                    self.count("quick_restart");
                    self.crash(i)?;
                    let d = self.rng.gen_range(UNITS_PER_TICK / 10..=UNITS_PER_TICK);
                    self.schedule_in(d, Ev::Restart { node: i });
                }
            }
            FaultKind::Pause => {
                let candidates: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i) && self.nodes[i].paused.is_none())
                    .collect();
                if let Some(&i) = candidates.choose(&mut self.rng) {
                    self.pause_counter += 1;
                    let ticks = self.rng.gen_range(1..=self.cfg.node_down_ticks_max);
                    self.nodes[i].paused = Some(self.pause_counter);
                    self.nodes[i].missed_ticks = 0;
                    self.count("pause");
                    let node = self.nodes[i].id;
                    self.record(TraceEvent::Pause { node, ticks });
                    let pause = self.pause_counter;
                    self.schedule_in(ticks * UNITS_PER_TICK, Ev::Resume { node: i, pause });
                }
            }
            FaultKind::Stall => {
                // Half the time the leader: a leader that stalls while the others move on
                // is the case lease reads must survive.
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.node_is_up(i) && self.nodes[i].paused.is_none())
                    .collect();
                let leader = self.leader().filter(|_| self.rng.gen_bool(0.5));
                if let Some(i) = leader.or_else(|| up.choose(&mut self.rng).copied()) {
                    let ticks = self.rng.gen_range(1..=self.cfg.node_down_ticks_max);
                    self.nodes[i].stall_next_sync_ticks = Some(ticks);
                }
            }
            FaultKind::Transfer => {
                if let Some(l) = self.leader() {
                    let others: Vec<NodeId> = self
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|&id| id != self.nodes[l].id)
                        .collect();
                    let to = *others.choose(&mut self.rng).expect("more than one node");
                    let from = self.nodes[l].id;
                    let raft = self.nodes[l].raft.as_mut().expect("up");
                    if raft.transfer_leadership(to).is_ok() {
                        self.count("transfer_leadership");
                        self.record(TraceEvent::Transfer { from, to });
                        self.drive(l)?;
                        self.after_node_event(l)?;
                    }
                }
            }
            FaultKind::Membership => self.change_membership()?,
            FaultKind::Campaign => {
                let candidates: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| {
                        self.nodes[i].paused.is_none()
                            && self.nodes[i]
                                .raft
                                .as_ref()
                                .is_some_and(|r| r.role() != Role::Leader)
                    })
                    .collect();
                if let Some(&i) = candidates.choose(&mut self.rng) {
                    self.count("forced_campaign");
                    let node = self.nodes[i].id;
                    self.record(TraceEvent::Campaign { node });
                    self.nodes[i].raft.as_mut().expect("up").campaign();
                    self.drive(i)?;
                    self.after_node_event(i)?;
                }
            }
        }
        Ok(())
    }

    /// Proposes a membership change drawn from the leader's configuration in force: add
    /// a learner, promote a learner, remove a voter (the leader itself too) or a
    /// learner, replace a voter, or swap two voters through a joint configuration. The
    /// protocol refuses a change while another is in flight or before the leader
    /// committed an entry of its term; that is counted, not a failure.
    pub(super) fn change_membership(&mut self) -> Result<(), Violation> {
        use raft_core::protocol::membership::MembershipChange;
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let all = self.cfg.node_ids();
        let m = self.nodes[l]
            .raft
            .as_ref()
            .expect("up")
            .membership()
            .clone();
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        let learners: Vec<NodeId> = m.learners.iter().copied().collect();
        let outsiders: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|&id| !m.is_voter(id) && !m.is_learner(id))
            .collect();
        let non_voters: Vec<NodeId> = learners.iter().chain(&outsiders).copied().collect();
        // Keep at least two voters, so that the cluster keeps some fault tolerance.
        let mut options: Vec<&'static str> = Vec::new();
        if !outsiders.is_empty() {
            options.push("membership_add_learner");
        }
        if !learners.is_empty() {
            options.extend(["membership_promote", "membership_remove_learner"]);
        }
        if voters.len() > 2 {
            options.push("membership_remove_voter");
        }
        if !non_voters.is_empty() {
            options.push("membership_replace");
        }
        if non_voters.len() >= 2 && voters.len() >= 2 {
            options.push("membership_joint_swap");
        }
        let Some(&kind) = options.choose(&mut self.rng) else {
            return Ok(());
        };
        let rng = &mut self.rng;
        let pick = |from: &[NodeId], rng: &mut ChaCha8Rng| *from.choose(rng).expect("not empty");
        let change = match kind {
            "membership_add_learner" => MembershipChange::AddLearner(pick(&outsiders, rng)),
            "membership_promote" => MembershipChange::Promote(pick(&learners, rng)),
            "membership_remove_learner" => MembershipChange::Remove(pick(&learners, rng)),
            "membership_remove_voter" => MembershipChange::Remove(pick(&voters, rng)),
            _ => {
                let swap = if kind == "membership_joint_swap" {
                    2
                } else {
                    1
                };
                let out: Vec<NodeId> = voters.choose_multiple(rng, swap).copied().collect();
                let inn: Vec<NodeId> = non_voters.choose_multiple(rng, swap).copied().collect();
                let mut next_voters = m.voters.clone();
                let mut next_learners = m.learners.clone();
                for id in &out {
                    next_voters.remove(id);
                    // Half the time a replaced voter stays on as a learner.
                    if rng.gen_bool(0.5) {
                        next_learners.insert(*id);
                    }
                }
                for id in &inn {
                    next_voters.insert(*id);
                    next_learners.remove(id);
                }
                MembershipChange::ChangeTo {
                    voters: next_voters,
                    learners: next_learners,
                }
            }
        };
        let raft = self.nodes[l].raft.as_mut().expect("up");
        match raft.propose_membership(change.clone()) {
            Ok((index, _term)) => {
                self.count(kind);
                let leader = self.nodes[l].id;
                self.record(TraceEvent::Membership {
                    leader,
                    index,
                    change: format!("{change:?}"),
                });
                self.drive(l)?;
                self.after_node_event(l)?;
            }
            Err(_) => self.count("membership_refused"),
        }
        Ok(())
    }

    pub(super) fn resume(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        node.paused = None;
        let missed = std::mem::take(&mut node.missed_ticks);
        let inbox = std::mem::take(&mut node.pause_inbox);
        let id = node.id;
        self.record(TraceEvent::Resume {
            node: id,
            missed_ticks: missed,
        });
        // The runtime's order (WaitLoop::keep_time): a sync the node was blocked in
        // returns first; the ticks that passed are caught up before the node decides
        // anything more (the rest of that ready, then its queue), as a runtime that counts
        // ticks from a monotonic clock must: otherwise a paused leader would trust a lease
        // that has long expired.
        let (syncs, queued): (Vec<Ev>, Vec<Ev>) = inbox
            .into_iter()
            .partition(|ev| matches!(ev, Ev::SyncDone { .. } | Ev::SnapshotSync { .. }));
        let ticks_first = self.cfg.broken != Some(Broken::TicksAfterQueue);
        if ticks_first {
            self.catch_up_ticks(i, missed)?;
        }
        for ev in syncs.into_iter().chain(queued) {
            self.handle(ev)?;
        }
        if !ticks_first {
            self.catch_up_ticks(i, missed)?;
        }
        self.drive(i)?;
        self.after_node_event(i)
    }

    pub(super) fn catch_up_ticks(&mut self, i: usize, missed: u64) -> Result<(), Violation> {
        for _ in 0..missed {
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                raft.tick();
            }
            self.drive(i)?;
            self.after_node_event(i)?;
        }
        Ok(())
    }
}
