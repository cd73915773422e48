//! The checks at the end of a run: the liveness phase, the final state machine and
//! history checks, and the reference state each committed prefix produces.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::{LogIndex, NodeId, Role};

use super::workload::Workload;
use super::world::*;
use super::{Simulator, LIN_BUDGET_STEPS, MARKER_OP, UNITS_PER_TICK};
use crate::checker::Violation;
use crate::linearizability::LinResult;
use crate::network::LinkProfile;
use crate::trace::TraceEvent;

/// How the simulator came by a state machine it checks against the [`Reference`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// Restored from a snapshot.
    Restored,
    /// Built by applying the log (the end of a run).
    Applied,
}

/// The state each committed prefix produces: the ground truth that restored snapshots
/// and final state machines are compared with.
pub(super) struct Reference<M> {
    /// The committed entries' data: `entries[i - 1]` is index `i`. Filled as nodes
    /// apply (the checker has verified that they agree).
    entries: Vec<Bytes>,
    /// States already built, by applied index, to build later ones from.
    states: BTreeMap<LogIndex, M>,
}

impl<M> Reference<M> {
    pub(super) const STATES_MAX: usize = 64;

    pub(super) fn new() -> Self {
        Reference {
            entries: Vec::new(),
            states: BTreeMap::new(),
        }
    }

    pub(super) fn applied(&mut self, index: LogIndex, data: &Bytes) {
        if index == self.entries.len() as LogIndex + 1 {
            self.entries.push(data.clone());
        }
    }

    /// The state after applying the committed entries up to `index`, if all are known.
    pub(super) fn state_at<W: Workload<Machine = M>>(
        &mut self,
        index: LogIndex,
        workload: &W,
    ) -> Option<M> {
        if index > self.entries.len() as LogIndex {
            return None;
        }
        let (from, mut state) = self
            .states
            .range(..=index)
            .next_back()
            .map_or((0, workload.fresh()), |(&i, s)| (i, workload.duplicate(s)));
        for i in from + 1..=index {
            workload.apply(&mut state, i, &self.entries[(i - 1) as usize]);
        }
        if self.states.len() >= Self::STATES_MAX {
            self.states.pop_first();
        }
        self.states.insert(index, workload.duplicate(&state));
        Some(state)
    }

    /// Checks a state machine against the committed prefix it claims to hold; `found`
    /// says how the simulator came by it (restored from a snapshot, or applied).
    pub(super) fn check<W: Workload<Machine = M>>(
        &mut self,
        node: NodeId,
        machine: &M,
        workload: &W,
        found: Found,
    ) -> Result<(), Violation> {
        let index = workload.applied_index(machine);
        let Some(expected) = self.state_at(index, workload) else {
            return Err(Violation::BadSnapshot {
                node,
                index,
                detail: format!(
                    "it holds {index} entries, only {} are known committed",
                    self.entries.len()
                ),
            });
        };
        if !workload.same(machine, &expected) {
            let detail = format!(
                "its state ({}) differs from the committed prefix's ({})",
                workload.describe(machine),
                workload.describe(&expected)
            );
            return Err(match found {
                Found::Restored => Violation::BadSnapshot {
                    node,
                    index,
                    detail,
                },
                Found::Applied => Violation::StateDiverged {
                    node,
                    index,
                    detail,
                },
            });
        }
        Ok(())
    }
}

impl<W: Workload> Simulator<W> {
    // ----- liveness and the end ----------------------------------------------------------

    pub(super) fn start_liveness(&mut self) -> Result<(), Violation> {
        self.phase = Phase::Liveness;
        self.liveness_start = self.now;
        self.record(TraceEvent::Phase {
            description: "liveness phase: every fault heals",
        });
        self.net.heal();
        self.net.profile = LinkProfile::clean();
        for i in 0..self.nodes.len() {
            self.nodes[i].stall_next_sync_ticks = None;
            if !self.node_is_up(i) {
                self.start_node(i)?;
            } else if self.nodes[i].paused.is_some() {
                self.resume(i)?;
            }
        }
        Ok(())
    }

    pub(super) fn check_liveness(&mut self) -> Result<(), Violation> {
        let elapsed = self.now - self.liveness_start;
        if elapsed > self.cfg.liveness_bound_ticks * UNITS_PER_TICK {
            let detail = match (self.marker, self.liveness_ticks) {
                (None, _) => "no leader accepted a write".to_string(),
                (Some((i, index, _)), None) => {
                    format!("the write placed at {index} on n{} did not commit", i + 1)
                }
                (Some((_, index, _)), Some(_)) => {
                    let members: Vec<NodeId> = self
                        .leader()
                        .and_then(|l| self.nodes[l].raft.as_ref())
                        .map(|r| r.membership().members().collect())
                        .unwrap_or_default();
                    let behind: Vec<String> = self
                        .nodes
                        .iter()
                        .filter(|n| {
                            members.contains(&n.id)
                                && self.workload.applied_index(&n.machine) < index
                        })
                        .map(|n| {
                            format!("n{} at {}", n.id, self.workload.applied_index(&n.machine))
                        })
                        .collect();
                    format!("the write at {index} committed but was not applied on {behind:?}")
                }
            };
            return Err(Violation::Liveness {
                detail: format!(
                    "within {} ticks of healing: {detail}",
                    self.cfg.liveness_bound_ticks
                ),
            });
        }
        match self.marker {
            None => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let cmd = self.workload.marker(MARKER_OP);
                let raft = self.nodes[l].raft.as_mut().expect("up");
                if let Ok((index, term)) = raft.propose(cmd) {
                    self.marker = Some((l, index, term));
                    self.drive(l)?;
                    self.after_node_event(l)?;
                }
            }
            Some((l, index, term)) => {
                let Some(raft) = self.nodes[l].raft.as_ref() else {
                    self.marker = None;
                    return Ok(());
                };
                // Once compacted, the log no longer says; the committed record does.
                let ours = match raft.term_at(index) {
                    Some(t) => t == term,
                    None => self.checker.committed_term(index) == Some(term),
                };
                if !ours {
                    self.marker = None; // overwritten by a newer leader: propose again
                    return Ok(());
                }
                // A leader that lost its term before the write committed may never
                // hear of it again (removed from the configuration, nobody sends it
                // entries to overwrite it): propose again at the current leader.
                let deposed = raft.role() != Role::Leader || raft.term() != term;
                if deposed && raft.commit_index() < index {
                    self.marker = None;
                    return Ok(());
                }
                // Every member of the leader's configuration applies it; a node outside
                // it (removed, or never added) gets nothing more.
                let members: Vec<NodeId> = raft.membership().members().collect();
                if self.liveness_ticks.is_none() && raft.commit_index() >= index {
                    self.liveness_ticks = Some(elapsed / UNITS_PER_TICK);
                    self.record(TraceEvent::Phase {
                        description: "liveness: a new write committed",
                    });
                }
                if self.liveness_ticks.is_some()
                    && self
                        .nodes
                        .iter()
                        .filter(|n| members.contains(&n.id))
                        .all(|n| self.workload.applied_index(&n.machine) >= index)
                {
                    self.record(TraceEvent::Phase {
                        description: "liveness: every node applied it",
                    });
                    self.phase = Phase::Done;
                }
            }
        }
        Ok(())
    }

    pub(super) fn final_checks(&mut self) -> Result<(), Violation> {
        // No acknowledged write lost: it is committed where it was acknowledged, and
        // every node that applied that far applied it there.
        for &(op, index) in &self.acked {
            if self.checker.committed_term(index).is_none() {
                return Err(Violation::AckedWriteLost {
                    op,
                    index,
                    detail: "the index is not known committed".into(),
                });
            }
            for n in &self.nodes {
                let applied = self.workload.applied_index(&n.machine);
                let at = self.workload.applied_at(&n.machine, op);
                if applied >= index && at != Some(index) {
                    return Err(Violation::AckedWriteLost {
                        op,
                        index,
                        detail: format!(
                            "n{} applied up to {} and has it at {:?}",
                            n.id, applied, at
                        ),
                    });
                }
            }
        }
        // Every state machine is the state its applied committed prefix produces.
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            self.reference
                .check(id, &self.nodes[i].machine, &self.workload, Found::Applied)?;
        }
        // The history: open operations never returned.
        for c in 0..self.clients.len() {
            if self.clients[c].op.take().is_some() {
                self.ops.never_returned += 1;
            }
        }
        self.ops.checked = self.history.len() as u64;
        match self.workload.check(&self.history, LIN_BUDGET_STEPS) {
            LinResult::Ok => Ok(()),
            LinResult::Unknown { .. } => {
                self.lin_unknown = true;
                Ok(())
            }
            LinResult::Illegal { key, detail } => {
                let ops = self.workload.explain(&self.history, key);
                Err(Violation::NotLinearizable {
                    key,
                    detail: format!("{detail}; last operations on the key (newest first): {ops:?}"),
                })
            }
        }
    }
}
