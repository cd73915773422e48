//! Safety checkers, fed by the simulator after every step.
//!
//! They are incremental: the simulator reports what it saw (a node's role and term, the
//! entries it wrote, its commit index, the entries it applied, the votes it granted, its
//! crashes and restarts) and the checker compares each observation with what it learned
//! from every earlier one. Each check is a method that returns the first
//! [`Violation`] it finds, so unit tests can feed hand-made violations.
//!
//! How each Raft property is checked:
//! - *Election safety* (one leader per term, §5.2): every (term, leader) observed is kept;
//!   a second node leading a term already led is a violation. Granted votes are kept per
//!   (term, voter) too, so a double vote is caught even when it elects nobody.
//! - *Log matching* (§5.3): every entry any node writes is registered under its (index,
//!   term) with the term of the entry before it and a digest of its data. Two writes of
//!   the same (index, term) that disagree on either are a violation. By induction on the
//!   index this is the log matching property for every pair of logs, checked at write time.
//! - *Leader completeness* (§5.4): every committed index is kept with its term and the
//!   lowest term at which any node was seen to have it committed. A leader of a higher
//!   term must hold that entry, checked when a node becomes leader and again whenever a
//!   commit is first seen while leaders of higher terms exist.
//! - *State machine safety* (§5.4.3): committed indexes must agree on their term across
//!   nodes, and each node applies exactly the committed sequence, in order, without gaps:
//!   so all applied sequences are prefixes of one another.
//! - Commit and applied indexes never go back within one life of a node; after a restart
//!   the commit index is what the durable hard state says.
//! - Term never goes back and a vote never changes within a term, within a life and
//!   across restarts (against the last synced hard state).
//!
//! Compacted logs: a log no longer holds the entries below its compaction point
//! ([`LogView::compacted_to`]); its snapshot stands for them. The checks that read a log
//! compare only the indexes it still holds, and at the compaction point itself the
//! snapshot's term, which must be the committed one. A node that restores a snapshot
//! ([`SafetyChecker::observe_snapshot_restored`]) has applied everything up to its index,
//! so its applied sequence continues from there; that the snapshot's *contents* equal the
//! committed prefix is checked by the simulator, which owns the state machine.

use std::collections::BTreeMap;
use std::fmt;

use raft_core::{HardState, LogIndex, Membership, NodeId, Role, SnapshotMeta, Term};

/// A broken safety or liveness property, with enough detail to start debugging.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Two nodes led the same term.
    TwoLeaders {
        /// The term.
        term: Term,
        /// The leader seen first.
        first: NodeId,
        /// The other one.
        second: NodeId,
    },
    /// A node granted its vote to two candidates in one term.
    DoubleVote {
        /// The term.
        term: Term,
        /// The voter.
        voter: NodeId,
        /// The first candidate it voted for.
        first: NodeId,
        /// The second.
        second: NodeId,
    },
    /// Two logs hold the same (index, term) with different contents or predecessors.
    LogMismatch {
        /// Where.
        index: LogIndex,
        /// The entry's term.
        term: Term,
        /// The node whose write disagreed with an earlier one.
        node: NodeId,
        /// What differed.
        detail: String,
    },
    /// A leader lacks an entry committed in an earlier term.
    LeaderIncomplete {
        /// The leader.
        leader: NodeId,
        /// Its term.
        term: Term,
        /// The committed index it lacks.
        index: LogIndex,
        /// The committed entry's term.
        committed_term: Term,
        /// What the leader has there (`None`: nothing).
        found_term: Option<Term>,
    },
    /// Nodes disagree on a committed or applied entry.
    StateMachineDivergence {
        /// The node that disagreed.
        node: NodeId,
        /// Where.
        index: LogIndex,
        /// The term committed there earlier.
        expected_term: Term,
        /// What this node has.
        found_term: Option<Term>,
    },
    /// A node restored a snapshot that is not the committed prefix it claims to be.
    BadSnapshot {
        /// The node.
        node: NodeId,
        /// The snapshot's last index.
        index: LogIndex,
        /// What was wrong.
        detail: String,
    },
    /// A node's state machine is not the state the committed prefix it applied
    /// produces: replicas diverged (a nondeterministic apply, a lost or doubled
    /// command).
    StateDiverged {
        /// The node.
        node: NodeId,
        /// The last index it applied.
        index: LogIndex,
        /// What differed.
        detail: String,
    },
    /// A node applied out of order or beyond its commit.
    BadApply {
        /// The node.
        node: NodeId,
        /// What was wrong.
        detail: String,
    },
    /// A node's commit index went back within one life.
    CommitWentBack {
        /// The node.
        node: NodeId,
        /// The previous commit index.
        from: LogIndex,
        /// The new one.
        to: LogIndex,
    },
    /// A node's term went back, within a life or across a restart.
    TermWentBack {
        /// The node.
        node: NodeId,
        /// The previous term.
        from: Term,
        /// The new one.
        to: Term,
    },
    /// A node changed its vote within a term, within a life or across a restart.
    VoteChanged {
        /// The node.
        node: NodeId,
        /// The term.
        term: Term,
        /// The vote before.
        from: Option<NodeId>,
        /// The vote after.
        to: Option<NodeId>,
    },
    /// A restarted node's state is not what its durable hard state says.
    BadRestart {
        /// The node.
        node: NodeId,
        /// What was wrong.
        detail: String,
    },
    /// A write acknowledged to a client is missing from the final log.
    AckedWriteLost {
        /// The operation id.
        op: u64,
        /// The index it was acknowledged at.
        index: LogIndex,
        /// What was wrong.
        detail: String,
    },
    /// A storage call the protocol asked for failed (a gap, a bad truncation).
    Storage {
        /// The node.
        node: NodeId,
        /// The error.
        detail: String,
    },
    /// The protocol panicked (one of its own assertions fired).
    ProtocolPanic {
        /// The panic message.
        message: String,
    },
    /// The key/value history is not linearizable.
    NotLinearizable {
        /// The key.
        key: u64,
        /// The checker's explanation.
        detail: String,
    },
    /// A node led a term without being a voter of the configuration in force on it, or
    /// without the votes of a majority of that configuration (of each half of a joint
    /// one) in that term (thesis §4).
    BadLeaderMembership {
        /// The leader.
        leader: NodeId,
        /// The term.
        term: Term,
        /// What was wrong.
        detail: String,
    },
    /// Two nodes hold different configurations in force at the same committed index
    /// (thesis §4.1: the configuration at an index is the latest one in the log up to
    /// it, and the committed prefix is the same everywhere): a node lost a configuration
    /// entry, or installed a snapshot without its configuration.
    ConfigurationDivergence {
        /// The node whose configuration differs.
        node: NodeId,
        /// The committed index.
        index: LogIndex,
        /// Its configuration there, and the one the node seen first there had.
        detail: String,
    },
    /// A leader appended a configuration entry that breaks the change rules (thesis
    /// §4.1-§4.3): a second change while one is in flight, a single-server change
    /// before an entry of its term committed, or a step that changes the voters by more
    /// than one server outside a joint configuration.
    BadMembershipChange {
        /// The leader.
        leader: NodeId,
        /// The entry's index.
        index: LogIndex,
        /// The entry's term.
        term: Term,
        /// What was wrong.
        detail: String,
    },
    /// After the faults healed, the cluster did not make progress within the bound.
    Liveness {
        /// What was missing.
        detail: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TwoLeaders {
                term,
                first,
                second,
            } => {
                write!(
                    f,
                    "election safety: n{first} and n{second} both led term {term}"
                )
            }
            Violation::DoubleVote {
                term,
                voter,
                first,
                second,
            } => write!(
                f,
                "election safety: n{voter} voted for n{first} and n{second} in term {term}"
            ),
            Violation::LogMismatch {
                index,
                term,
                node,
                detail,
            } => {
                write!(f, "log matching: n{node} wrote {index}@{term}: {detail}")
            }
            Violation::LeaderIncomplete {
                leader,
                term,
                index,
                committed_term,
                found_term,
            } => write!(
                f,
                "leader completeness: n{leader} leads term {term} without committed entry \
                 {index}@{committed_term} (has {found_term:?})"
            ),
            Violation::StateMachineDivergence {
                node,
                index,
                expected_term,
                found_term,
            } => write!(
                f,
                "state machine safety: n{node} has {found_term:?} at committed index {index}, \
                 committed elsewhere with term {expected_term}"
            ),
            Violation::BadSnapshot {
                node,
                index,
                detail,
            } => write!(
                f,
                "state machine safety: n{node} restored a bad snapshot at {index}: {detail}"
            ),
            Violation::StateDiverged {
                node,
                index,
                detail,
            } => write!(
                f,
                "state machine safety: n{node}'s state machine, applied to {index}, is not \
                 the state the committed prefix produces: {detail}"
            ),
            Violation::BadApply { node, detail } => write!(f, "apply order: n{node}: {detail}"),
            Violation::CommitWentBack { node, from, to } => {
                write!(f, "commit went back on n{node}: {from} -> {to}")
            }
            Violation::TermWentBack { node, from, to } => {
                write!(f, "term went back on n{node}: {from} -> {to}")
            }
            Violation::VoteChanged {
                node,
                term,
                from,
                to,
            } => {
                write!(
                    f,
                    "vote changed on n{node} in term {term}: {from:?} -> {to:?}"
                )
            }
            Violation::BadRestart { node, detail } => write!(f, "restart of n{node}: {detail}"),
            Violation::AckedWriteLost { op, index, detail } => {
                write!(
                    f,
                    "acknowledged write op{op} at index {index} lost: {detail}"
                )
            }
            Violation::Storage { node, detail } => write!(f, "storage on n{node}: {detail}"),
            Violation::ProtocolPanic { message } => write!(f, "protocol panicked: {message}"),
            Violation::NotLinearizable { key, detail } => {
                write!(f, "not linearizable on key {key}: {detail}")
            }
            Violation::BadLeaderMembership {
                leader,
                term,
                detail,
            } => write!(f, "membership: n{leader} led term {term}: {detail}"),
            Violation::BadMembershipChange {
                leader,
                index,
                term,
                detail,
            } => write!(
                f,
                "membership change: n{leader}'s configuration entry {index}@{term}: {detail}"
            ),
            Violation::ConfigurationDivergence {
                node,
                index,
                detail,
            } => write!(f, "membership: at committed index {index} n{node} {detail}"),
            Violation::Liveness { detail } => write!(f, "liveness: {detail}"),
        }
    }
}

/// A cheap, stable 64-bit digest (FNV-1a) for entry data and trace hashing.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Clone, Copy, Debug)]
struct Registered {
    prev_term: Term,
    digest: u64,
    node: NodeId,
}

#[derive(Clone, Copy, Debug)]
struct Committed {
    term: Term,
    /// The lowest term at which some node was seen holding this index committed: the
    /// entry was committed by a leader of this term or earlier.
    seen_at_term: Term,
}

/// What the checker remembers about one node.
#[derive(Clone, Copy, Debug, Default)]
struct NodeWatch {
    life: u32,
    term: Term,
    vote: Option<NodeId>,
    commit: LogIndex,
    applied: LogIndex,
    role: Option<Role>,
    /// The last hard state made durable (any life).
    synced: HardState,
}

/// What a restarting node's disk held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskState {
    /// The stored hard state.
    pub hard_state: HardState,
    /// The last index in the log.
    pub last_index: LogIndex,
    /// The stored snapshot's last index (0: none).
    pub snapshot_index: LogIndex,
}

/// A view of one node's log for the checks that read it.
pub trait LogView {
    /// The term at `index`, if the log holds it (at the compaction point: the
    /// snapshot's term).
    fn term_at(&self, index: LogIndex) -> Option<Term>;

    /// The compaction point: a snapshot covers every index up to it, and the log holds
    /// none below it. 0 for a log that was never compacted.
    fn compacted_to(&self) -> LogIndex {
        0
    }
}

impl<F: Fn(LogIndex) -> Option<Term>> LogView for F {
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self(index)
    }
}

/// The incremental safety checker. See the module docs for what it checks.
#[derive(Debug, Default)]
pub struct SafetyChecker {
    leaders: BTreeMap<Term, NodeId>,
    votes: BTreeMap<(Term, NodeId), NodeId>,
    registry: BTreeMap<(LogIndex, Term), Registered>,
    /// `committed[i - 1]` is index `i`.
    committed: Vec<Committed>,
    nodes: BTreeMap<NodeId, NodeWatch>,
    /// Nodes currently seen as leader, with their term.
    current_leaders: BTreeMap<NodeId, Term>,
    /// The configuration in force at committed indexes, as the first node seen there
    /// held it (only indexes some node's commit index stopped at).
    configs_at_commit: BTreeMap<LogIndex, (NodeId, Membership)>,
}

impl SafetyChecker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest index known committed anywhere.
    pub fn committed_len(&self) -> LogIndex {
        self.committed.len() as LogIndex
    }

    /// The term committed at `index`, if known.
    pub fn committed_term(&self, index: LogIndex) -> Option<Term> {
        index
            .checked_sub(1)
            .and_then(|i| self.committed.get(i as usize))
            .map(|c| c.term)
    }

    /// A node wrote `entries` (contiguous) after an entry of term `prev_term`.
    ///
    /// # Errors
    /// A [`Violation::LogMismatch`] when an earlier write of the same (index, term)
    /// disagrees on the previous term or the data.
    pub fn observe_write(
        &mut self,
        node: NodeId,
        prev_term: Term,
        entries: &[(LogIndex, Term, u64)],
    ) -> Result<(), Violation> {
        let mut prev = prev_term;
        for &(index, term, digest) in entries {
            let reg = Registered {
                prev_term: prev,
                digest,
                node,
            };
            match self.registry.get(&(index, term)) {
                None => {
                    self.registry.insert((index, term), reg);
                }
                Some(old) if old.prev_term != prev => {
                    return Err(Violation::LogMismatch {
                        index,
                        term,
                        node,
                        detail: format!(
                            "previous entry has term {prev}, but n{} has term {} before it",
                            old.node, old.prev_term
                        ),
                    })
                }
                Some(old) if old.digest != digest => {
                    return Err(Violation::LogMismatch {
                        index,
                        term,
                        node,
                        detail: format!("data differs from n{}'s entry", old.node),
                    })
                }
                Some(_) => {}
            }
            prev = term;
        }
        Ok(())
    }

    /// A node's role, term and vote after a step.
    ///
    /// # Errors
    /// Two leaders in a term, a term going back, a vote changing within a term, or a new
    /// leader missing a committed entry.
    pub fn observe_state(
        &mut self,
        node: NodeId,
        role: Role,
        term: Term,
        vote: Option<NodeId>,
        log: &dyn LogView,
    ) -> Result<(), Violation> {
        let w = self.nodes.entry(node).or_default();
        if term < w.term {
            return Err(Violation::TermWentBack {
                node,
                from: w.term,
                to: term,
            });
        }
        if term == w.term && w.vote.is_some() && vote != w.vote {
            return Err(Violation::VoteChanged {
                node,
                term,
                from: w.vote,
                to: vote,
            });
        }
        let became_leader =
            role == Role::Leader && (w.role != Some(Role::Leader) || w.term != term);
        w.term = term;
        w.vote = vote;
        w.role = Some(role);
        if role != Role::Leader {
            self.current_leaders.remove(&node);
            return Ok(());
        }
        if !became_leader {
            return Ok(());
        }
        match self.leaders.get(&term) {
            Some(&first) if first != node => {
                return Err(Violation::TwoLeaders {
                    term,
                    first,
                    second: node,
                })
            }
            _ => {
                self.leaders.insert(term, node);
            }
        }
        self.current_leaders.insert(node, term);
        // Below the compaction point the leader's snapshot stands for its entries.
        let compacted = log.compacted_to();
        for (i, c) in self.committed.iter().enumerate() {
            let index = i as LogIndex + 1;
            if c.seen_at_term < term && index >= compacted {
                let found = log.term_at(index);
                if found != Some(c.term) {
                    return Err(Violation::LeaderIncomplete {
                        leader: node,
                        term,
                        index,
                        committed_term: c.term,
                        found_term: found,
                    });
                }
            }
        }
        Ok(())
    }

    /// A node granted its vote to `candidate` in `term` (seen on the wire).
    ///
    /// # Errors
    /// [`Violation::DoubleVote`] if it granted another candidate the same term.
    pub fn observe_vote_granted(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
    ) -> Result<(), Violation> {
        match self.votes.insert((term, voter), candidate) {
            Some(first) if first != candidate => Err(Violation::DoubleVote {
                term,
                voter,
                first,
                second: candidate,
            }),
            _ => Ok(()),
        }
    }

    /// `leader` became leader of `term` with `membership` in force. It must be a voter
    /// of it, or of `removed_from`: the configuration before the latest one when that
    /// one removed it and is not committed as far as the leader knows (thesis §4.2.2:
    /// it may still be needed). The votes granted to it in `term` (seen on the wire,
    /// plus its own only where it is a voter) must be a majority of the voters of
    /// `membership`, of each half when joint (thesis §4.3). The majority is counted
    /// here, not by the protocol's quorum code.
    ///
    /// # Errors
    /// [`Violation::BadLeaderMembership`].
    pub fn observe_leader_membership(
        &self,
        leader: NodeId,
        term: Term,
        membership: &Membership,
        removed_from: Option<&Membership>,
    ) -> Result<(), Violation> {
        let bad = |detail: String| {
            Err(Violation::BadLeaderMembership {
                leader,
                term,
                detail,
            })
        };
        let voter =
            |m: &Membership| m.voters.contains(&leader) || m.outgoing_voters.contains(&leader);
        if !voter(membership) && !removed_from.is_some_and(voter) {
            return bad(format!(
                "it is not a voter of {membership:?} (nor of an uncommitted predecessor \
                 {removed_from:?})"
            ));
        }
        let granted = |v: &NodeId| *v == leader || self.votes.get(&(term, *v)) == Some(&leader);
        for half in [&membership.voters, &membership.outgoing_voters] {
            if half.is_empty() {
                continue;
            }
            let yes = half.iter().filter(|v| granted(v)).count();
            if 2 * yes <= half.len() {
                return bad(format!(
                    "only {yes} of the voters {half:?} voted for it (configuration \
                     {membership:?})"
                ));
            }
        }
        Ok(())
    }

    /// Node `node`'s commit index is `commit` and its configuration in force there is
    /// `membership`. Every node must hold the same configuration at the same committed
    /// index: it is the latest configuration entry in the committed prefix (or what a
    /// snapshot covering it carried, or the initial one).
    ///
    /// # Errors
    /// [`Violation::ConfigurationDivergence`].
    pub fn observe_configuration_at_commit(
        &mut self,
        node: NodeId,
        commit: LogIndex,
        membership: &Membership,
    ) -> Result<(), Violation> {
        if commit == 0 {
            return Ok(());
        }
        match self.configs_at_commit.get(&commit) {
            Some((other, expected)) if expected != membership => {
                Err(Violation::ConfigurationDivergence {
                    node,
                    index: commit,
                    detail: format!(
                        "has configuration {membership:?} but n{other} had {expected:?}"
                    ),
                })
            }
            Some(_) => Ok(()),
            None => {
                self.configs_at_commit
                    .insert(commit, (node, membership.clone()));
                Ok(())
            }
        }
    }

    /// A leader of `term` appended the configuration entry `next` at `index`; before
    /// it, `prev` was in force from `prev_index`; the leader's commit index was
    /// `commit`, holding an entry of term `commit_term` (`None` if unknown). The rules
    /// (thesis §4): `prev` is committed (one change at a time); a change out of a simple
    /// configuration comes after an entry of the leader's term committed (§4.1, the
    /// single-server bug fix); outside a joint configuration the voters change by at
    /// most one; a joint configuration is entered from `prev`'s voters and left to its
    /// incoming voters only; learners never vote.
    ///
    /// # Errors
    /// [`Violation::BadMembershipChange`].
    #[allow(clippy::too_many_arguments)]
    pub fn observe_membership_appended(
        &self,
        leader: NodeId,
        term: Term,
        index: LogIndex,
        prev_index: LogIndex,
        prev: &Membership,
        next: &Membership,
        commit: LogIndex,
        commit_term: Option<Term>,
    ) -> Result<(), Violation> {
        let bad = |detail: String| {
            Err(Violation::BadMembershipChange {
                leader,
                index,
                term,
                detail,
            })
        };
        if prev_index > commit {
            return bad(format!(
                "the configuration before it (entry {prev_index}) is not committed (commit \
                 {commit}): two changes in flight"
            ));
        }
        let prev_joint = !prev.outgoing_voters.is_empty();
        if !prev_joint && commit_term != Some(term) {
            return bad(format!(
                "no entry of its term is committed yet (commit {commit} has term \
                 {commit_term:?})"
            ));
        }
        if next.voters.is_empty() {
            return bad("no voters".into());
        }
        if let Some(l) = next
            .learners
            .iter()
            .find(|l| next.voters.contains(l) || next.outgoing_voters.contains(l))
        {
            return bad(format!("n{l} is both a voter and a learner"));
        }
        let next_joint = !next.outgoing_voters.is_empty();
        match (prev_joint, next_joint) {
            (false, false) => {
                let changed = prev.voters.symmetric_difference(&next.voters).count();
                if changed > 1 {
                    return bad(format!(
                        "the voters change by {changed} servers without a joint \
                         configuration: {prev:?} to {next:?}"
                    ));
                }
            }
            (false, true) if next.outgoing_voters != prev.voters => {
                return bad(format!(
                    "the joint configuration's outgoing voters are not the voters before \
                     it: {prev:?} to {next:?}"
                ));
            }
            (true, false) if next.voters != prev.voters => {
                return bad(format!(
                    "leaving the joint configuration for other voters than its incoming \
                     ones: {prev:?} to {next:?}"
                ));
            }
            (true, true) => {
                return bad(format!(
                    "a joint configuration after a joint one: {prev:?} to {next:?}"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// A node's commit index after a step, with its log and its term. `leader_logs`
    /// gives the logs of nodes currently leading, for leader completeness.
    ///
    /// # Errors
    /// Commit going back, a committed index whose term differs from what is committed
    /// elsewhere, or a current leader of a later term lacking a newly committed entry.
    pub fn observe_commit<'a>(
        &mut self,
        node: NodeId,
        commit: LogIndex,
        term: Term,
        log: &dyn LogView,
        leader_logs: &dyn Fn(NodeId) -> Option<Box<dyn LogView + 'a>>,
    ) -> Result<(), Violation> {
        let w = self.nodes.entry(node).or_default();
        let from = w.commit;
        if commit < from {
            return Err(Violation::CommitWentBack {
                node,
                from,
                to: commit,
            });
        }
        w.commit = commit;
        let compacted = log.compacted_to();
        for index in from + 1..=commit {
            let i = (index - 1) as usize;
            if index < compacted {
                // The node's snapshot stands for this entry: it must be known committed
                // (some node committed it before any snapshot could hold it).
                match self.committed.get_mut(i) {
                    Some(c) => c.seen_at_term = c.seen_at_term.min(term),
                    None => {
                        return Err(Violation::BadSnapshot {
                            node,
                            index: compacted,
                            detail: format!("it covers {index}, which no node committed"),
                        })
                    }
                }
                continue;
            }
            let found = log.term_at(index);
            if let Some(c) = self.committed.get_mut(i) {
                if found != Some(c.term) {
                    return Err(Violation::StateMachineDivergence {
                        node,
                        index,
                        expected_term: c.term,
                        found_term: found,
                    });
                }
                c.seen_at_term = c.seen_at_term.min(term);
                continue;
            }
            let Some(found) = found else {
                return Err(Violation::BadApply {
                    node,
                    detail: format!("commit index {commit} but no entry at {index}"),
                });
            };
            self.committed.push(Committed {
                term: found,
                seen_at_term: term,
            });
            // Leaders elected earlier in later terms must hold it too.
            for (&leader, &leader_term) in &self.current_leaders {
                if leader_term <= term {
                    continue;
                }
                if let Some(view) = leader_logs(leader) {
                    if index < view.compacted_to() {
                        continue; // in the leader's snapshot
                    }
                    let has = view.term_at(index);
                    if has != Some(found) {
                        return Err(Violation::LeaderIncomplete {
                            leader,
                            term: leader_term,
                            index,
                            committed_term: found,
                            found_term: has,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// A node applied `entries` as (index, term, data digest), after its commit index
    /// reached `commit`.
    ///
    /// # Errors
    /// Gaps, going back, applying beyond the commit index, or an entry that differs from
    /// the committed one.
    pub fn observe_applied(
        &mut self,
        node: NodeId,
        commit: LogIndex,
        entries: &[(LogIndex, Term, u64)],
    ) -> Result<(), Violation> {
        for &(index, term, digest) in entries {
            let w = self.nodes.entry(node).or_default();
            if index != w.applied + 1 {
                return Err(Violation::BadApply {
                    node,
                    detail: format!("applied {index} after {}", w.applied),
                });
            }
            if index > commit {
                return Err(Violation::BadApply {
                    node,
                    detail: format!("applied {index} beyond commit {commit}"),
                });
            }
            w.applied = index;
            match self.committed_term(index) {
                Some(t) if t == term => {}
                expected => {
                    return Err(Violation::StateMachineDivergence {
                        node,
                        index,
                        expected_term: expected.unwrap_or(0),
                        found_term: Some(term),
                    })
                }
            }
            match self.registry.get(&(index, term)) {
                Some(r) if r.digest == digest => {}
                _ => {
                    return Err(Violation::LogMismatch {
                        index,
                        term,
                        node,
                        detail: "applied data differs from what was written".into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// A node's state machine was restored from the snapshot ending at `meta` (installed
    /// from the leader, or read from its disk at a restart): it has now applied everything
    /// up to `meta.last_index`, and its applied sequence continues from there.
    ///
    /// # Errors
    /// [`Violation::BadSnapshot`] if the snapshot does not end on the committed entry at
    /// its index, or is behind what the node already applied in this life.
    pub fn observe_snapshot_restored(
        &mut self,
        node: NodeId,
        meta: SnapshotMeta,
    ) -> Result<(), Violation> {
        let index = meta.last_index;
        match self.committed_term(index) {
            Some(t) if t == meta.last_term => {}
            expected => {
                return Err(Violation::BadSnapshot {
                    node,
                    index,
                    detail: format!(
                        "it ends at term {}, the committed entry there has term {expected:?}",
                        meta.last_term
                    ),
                })
            }
        }
        let w = self.nodes.entry(node).or_default();
        if index < w.applied {
            return Err(Violation::BadSnapshot {
                node,
                index,
                detail: format!("the node had already applied up to {}", w.applied),
            });
        }
        w.applied = index;
        Ok(())
    }

    /// A node made `hard_state` durable.
    pub fn observe_sync(&mut self, node: NodeId, hard_state: HardState) {
        self.nodes.entry(node).or_default().synced = hard_state;
    }

    /// A node crashed. Its volatile state is forgotten; what it synced is not.
    pub fn observe_crash(&mut self, node: NodeId) {
        self.current_leaders.remove(&node);
        let w = self.nodes.entry(node).or_default();
        w.life += 1;
        w.role = None;
    }

    /// A node restarted from `disk`, and the protocol came up with `term`, `vote` and
    /// `commit`.
    ///
    /// # Errors
    /// [`Violation::TermWentBack`] or [`Violation::VoteChanged`] against the last
    /// synced hard state, or [`Violation::BadRestart`] if the protocol's state is not
    /// the durable one.
    #[allow(clippy::too_many_arguments)] // one observation: the disk and what came up
    pub fn observe_restart(
        &mut self,
        node: NodeId,
        disk: DiskState,
        term: Term,
        vote: Option<NodeId>,
        commit: LogIndex,
    ) -> Result<(), Violation> {
        let DiskState {
            hard_state: disk,
            last_index,
            snapshot_index,
        } = disk;
        let w = self.nodes.entry(node).or_default();
        let synced = w.synced;
        if disk.term < synced.term {
            return Err(Violation::TermWentBack {
                node,
                from: synced.term,
                to: disk.term,
            });
        }
        if disk.term == synced.term && synced.vote.is_some() && disk.vote != synced.vote {
            return Err(Violation::VoteChanged {
                node,
                term: disk.term,
                from: synced.vote,
                to: disk.vote,
            });
        }
        if (term, vote) != (disk.term, disk.vote) {
            return Err(Violation::BadRestart {
                node,
                detail: format!(
                    "came up at term {term} vote {vote:?}, disk says term {} vote {:?}",
                    disk.term, disk.vote
                ),
            });
        }
        // The snapshot is committed state even when the hard state that would say so
        // was not synced with it.
        if commit != disk.commit.min(last_index).max(snapshot_index) {
            return Err(Violation::BadRestart {
                node,
                detail: format!(
                    "came up with commit {commit}, disk says {} (last index {last_index}, \
                     snapshot {snapshot_index})",
                    disk.commit
                ),
            });
        }
        // A new life: the term and vote carry over (they are durable), the commit and
        // applied indexes start again from the disk.
        w.term = term;
        w.vote = vote;
        w.commit = 0;
        w.applied = 0;
        w.role = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(terms: &'static [Term]) -> impl Fn(LogIndex) -> Option<Term> {
        move |i: LogIndex| {
            if i == 0 {
                Some(0)
            } else {
                terms.get(i as usize - 1).copied()
            }
        }
    }

    fn no_leaders(_: NodeId) -> Option<Box<dyn LogView>> {
        None
    }

    fn on_disk(hard_state: HardState, last_index: LogIndex, snapshot_index: LogIndex) -> DiskState {
        DiskState {
            hard_state,
            last_index,
            snapshot_index,
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut c = SafetyChecker::new();
        let empty = log_of(&[]);
        c.observe_state(1, Role::Leader, 3, Some(1), &empty)
            .unwrap();
        c.observe_state(2, Role::Follower, 3, None, &empty).unwrap();
        // The same leader seen again is fine; another one is not.
        c.observe_state(1, Role::Leader, 3, Some(1), &empty)
            .unwrap();
        let v = c.observe_state(2, Role::Leader, 3, Some(2), &empty);
        assert!(
            matches!(
                v,
                Err(Violation::TwoLeaders {
                    term: 3,
                    first: 1,
                    second: 2
                })
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_double_vote_is_caught() {
        let mut c = SafetyChecker::new();
        c.observe_vote_granted(3, 5, 1).unwrap();
        c.observe_vote_granted(3, 5, 1).unwrap(); // a duplicate answer is fine
        c.observe_vote_granted(3, 6, 2).unwrap();
        assert!(matches!(
            c.observe_vote_granted(3, 5, 2),
            Err(Violation::DoubleVote {
                term: 5,
                voter: 3,
                ..
            })
        ));
    }

    #[test]
    fn log_matching_violations_are_caught() {
        let mut c = SafetyChecker::new();
        c.observe_write(1, 0, &[(1, 1, 10), (2, 1, 20)]).unwrap();
        c.observe_write(2, 0, &[(1, 1, 10)]).unwrap();
        // Same (index, term), different data.
        assert!(matches!(
            c.observe_write(3, 1, &[(2, 1, 99)]),
            Err(Violation::LogMismatch { index: 2, .. })
        ));
        // Same (index, term), different predecessor.
        assert!(matches!(
            c.observe_write(3, 2, &[(2, 1, 20)]),
            Err(Violation::LogMismatch { index: 2, .. })
        ));
    }

    #[test]
    fn a_leader_without_a_committed_entry_is_caught() {
        let mut c = SafetyChecker::new();
        let full = log_of(&[1, 1]);
        c.observe_commit(1, 2, 1, &full, &no_leaders).unwrap();
        // A leader of term 2 with the entries: fine. One lacking index 2: violation.
        c.observe_state(2, Role::Leader, 2, Some(2), &log_of(&[1, 1, 2]))
            .unwrap();
        let v = c.observe_state(3, Role::Leader, 3, Some(3), &log_of(&[1, 3]));
        assert!(
            matches!(
                v,
                Err(Violation::LeaderIncomplete {
                    leader: 3,
                    index: 2,
                    ..
                })
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_commit_seen_after_a_later_leader_was_elected_is_checked_against_it() {
        let mut c = SafetyChecker::new();
        c.observe_state(3, Role::Leader, 4, Some(3), &log_of(&[1, 4]))
            .unwrap();
        let leader_log = |id: NodeId| -> Option<Box<dyn LogView>> {
            (id == 3).then(|| Box::new(log_of(&[1, 4])) as Box<dyn LogView>)
        };
        // Node 1, still in term 2, commits entry 2@2: leader 3 of term 4 lacks it.
        let v = c.observe_commit(1, 2, 2, &log_of(&[1, 2]), &leader_log);
        assert!(
            matches!(
                v,
                Err(Violation::LeaderIncomplete {
                    leader: 3,
                    index: 2,
                    ..
                })
            ),
            "{v:?}"
        );
    }

    #[test]
    fn divergent_commits_and_applies_are_caught() {
        let mut c = SafetyChecker::new();
        c.observe_write(1, 0, &[(1, 1, 10), (2, 1, 20)]).unwrap();
        c.observe_write(2, 0, &[(1, 1, 10), (2, 2, 30)]).unwrap();
        c.observe_commit(1, 2, 1, &log_of(&[1, 1]), &no_leaders)
            .unwrap();
        assert!(matches!(
            c.observe_commit(2, 2, 2, &log_of(&[1, 2]), &no_leaders),
            Err(Violation::StateMachineDivergence {
                node: 2,
                index: 2,
                ..
            })
        ));
        c.observe_applied(1, 2, &[(1, 1, 10), (2, 1, 20)]).unwrap();
        assert!(matches!(
            c.observe_applied(2, 2, &[(1, 1, 10), (2, 2, 30)]),
            Err(Violation::StateMachineDivergence {
                node: 2,
                index: 2,
                ..
            })
        ));
    }

    /// A log compacted to `at`: it holds `terms` (1-based) from `at` on.
    struct Compacted {
        at: LogIndex,
        terms: &'static [Term],
    }

    impl LogView for Compacted {
        fn term_at(&self, index: LogIndex) -> Option<Term> {
            (index >= self.at)
                .then(|| self.terms.get(index as usize - 1).copied())
                .flatten()
        }
        fn compacted_to(&self) -> LogIndex {
            self.at
        }
    }

    #[test]
    fn compacted_logs_are_compared_where_they_hold_entries_and_at_the_snapshot() {
        let mut c = SafetyChecker::new();
        c.observe_commit(1, 4, 2, &log_of(&[1, 1, 2, 2]), &no_leaders)
            .unwrap();
        // Compacted to 3 with the right snapshot term: agrees.
        let good = Compacted {
            at: 3,
            terms: &[0, 0, 2, 2],
        };
        c.observe_commit(2, 4, 2, &good, &no_leaders).unwrap();
        c.observe_state(2, Role::Leader, 3, Some(2), &good).unwrap();
        // A snapshot ending on the wrong term at 3 is a divergence there.
        let bad = Compacted {
            at: 3,
            terms: &[0, 0, 1, 2],
        };
        let v = c.observe_commit(3, 4, 2, &bad, &no_leaders);
        assert!(
            matches!(
                v,
                Err(Violation::StateMachineDivergence {
                    node: 3,
                    index: 3,
                    ..
                })
            ),
            "{v:?}"
        );
        // A leader whose log holds entries past its snapshot must still hold the
        // committed ones.
        let short = Compacted {
            at: 2,
            terms: &[0, 1, 2],
        };
        let v = c.observe_state(4, Role::Leader, 4, Some(4), &short);
        assert!(
            matches!(v, Err(Violation::LeaderIncomplete { index: 4, .. })),
            "{v:?}"
        );
        // A snapshot covering what nobody committed.
        let ahead = Compacted {
            at: 7,
            terms: &[0, 0, 0, 0, 0, 0, 3],
        };
        let v = c.observe_commit(5, 7, 3, &ahead, &no_leaders);
        assert!(matches!(v, Err(Violation::BadSnapshot { .. })), "{v:?}");
    }

    #[test]
    fn a_restored_snapshot_must_end_on_a_committed_entry_and_not_go_back() {
        let mut c = SafetyChecker::new();
        c.observe_write(1, 0, &[(1, 1, 10), (2, 1, 20), (3, 2, 30)])
            .unwrap();
        c.observe_commit(1, 3, 2, &log_of(&[1, 1, 2]), &no_leaders)
            .unwrap();
        let meta = |last_index, last_term| SnapshotMeta::at(last_index, last_term);
        let v = c.observe_snapshot_restored(2, meta(2, 2));
        assert!(
            matches!(v, Err(Violation::BadSnapshot { index: 2, .. })),
            "{v:?}"
        );
        let v = c.observe_snapshot_restored(2, meta(4, 2));
        assert!(
            matches!(v, Err(Violation::BadSnapshot { index: 4, .. })),
            "{v:?}"
        );
        // After a good restore the applied sequence continues from the snapshot.
        c.observe_snapshot_restored(2, meta(2, 1)).unwrap();
        c.observe_applied(2, 3, &[(3, 2, 30)]).unwrap();
        let v = c.observe_snapshot_restored(2, meta(2, 1));
        assert!(matches!(v, Err(Violation::BadSnapshot { .. })), "{v:?}");
        // A new life starts from the disk again.
        c.observe_crash(2);
        let disk = HardState {
            term: 2,
            vote: None,
            commit: 1,
        };
        c.observe_restart(2, on_disk(disk, 1, 2), 2, None, 2)
            .unwrap();
        c.observe_snapshot_restored(2, meta(2, 1)).unwrap();
        assert!(matches!(
            c.observe_applied(2, 3, &[(2, 1, 20)]),
            Err(Violation::BadApply { .. })
        ));
    }

    #[test]
    fn applying_out_of_order_or_beyond_commit_is_caught() {
        let mut c = SafetyChecker::new();
        c.observe_write(1, 0, &[(1, 1, 10), (2, 1, 20)]).unwrap();
        c.observe_commit(1, 1, 1, &log_of(&[1, 1]), &no_leaders)
            .unwrap();
        assert!(matches!(
            c.observe_applied(1, 1, &[(2, 1, 20)]),
            Err(Violation::BadApply { .. })
        ));
        c.observe_applied(1, 1, &[(1, 1, 10)]).unwrap();
        assert!(matches!(
            c.observe_applied(1, 1, &[(2, 1, 20)]),
            Err(Violation::BadApply { .. })
        ));
        assert!(matches!(
            c.observe_applied(1, 2, &[(1, 1, 10)]),
            Err(Violation::BadApply { .. })
        ));
    }

    #[test]
    fn commit_going_back_is_caught_but_not_across_a_restart() {
        let mut c = SafetyChecker::new();
        let log = log_of(&[1, 1, 1]);
        c.observe_commit(1, 3, 1, &log, &no_leaders).unwrap();
        assert!(matches!(
            c.observe_commit(1, 2, 1, &log, &no_leaders),
            Err(Violation::CommitWentBack { from: 3, to: 2, .. })
        ));
        let disk = HardState {
            term: 1,
            vote: None,
            commit: 2,
        };
        c.observe_crash(1);
        c.observe_restart(1, on_disk(disk, 3, 0), 1, None, 2)
            .unwrap();
        c.observe_commit(1, 2, 1, &log, &no_leaders).unwrap();
    }

    #[test]
    fn term_and_vote_going_back_are_caught() {
        let mut c = SafetyChecker::new();
        let empty = log_of(&[]);
        c.observe_state(1, Role::Follower, 4, Some(2), &empty)
            .unwrap();
        assert!(matches!(
            c.observe_state(1, Role::Follower, 3, None, &empty),
            Err(Violation::TermWentBack { from: 4, to: 3, .. })
        ));
        assert!(matches!(
            c.observe_state(1, Role::Follower, 4, Some(3), &empty),
            Err(Violation::VoteChanged { term: 4, .. })
        ));
    }

    #[test]
    fn a_restart_that_forgets_synced_state_is_caught() {
        let mut c = SafetyChecker::new();
        c.observe_sync(
            1,
            HardState {
                term: 5,
                vote: Some(2),
                commit: 0,
            },
        );
        c.observe_crash(1);
        let older = HardState {
            term: 4,
            vote: Some(2),
            commit: 0,
        };
        assert!(matches!(
            c.observe_restart(1, on_disk(older, 0, 0), 4, Some(2), 0),
            Err(Violation::TermWentBack { from: 5, to: 4, .. })
        ));
        let other_vote = HardState {
            term: 5,
            vote: Some(3),
            commit: 0,
        };
        assert!(matches!(
            c.observe_restart(1, on_disk(other_vote, 0, 0), 5, Some(3), 0),
            Err(Violation::VoteChanged { .. })
        ));
        let good = HardState {
            term: 5,
            vote: Some(2),
            commit: 0,
        };
        assert!(matches!(
            c.observe_restart(1, on_disk(good, 0, 0), 5, None, 0),
            Err(Violation::BadRestart { .. })
        ));
        c.observe_restart(1, on_disk(good, 0, 0), 5, Some(2), 0)
            .unwrap();
    }
}
