//! Membership configurations and changes to them (Raft thesis §4), kept apart from the
//! protocol state machine as etcd-io/raft keeps `confchange/` and `tracker/` apart.
//!
//! This module is pure: it says which configuration a change leads to, whether the
//! change is allowed from the configuration in force, and how votes and match indexes
//! are counted under a (possibly joint) configuration. When a configuration takes
//! effect (on append, §4.1) and the one-change-in-flight rule belong to the protocol.

use std::collections::{BTreeMap, BTreeSet};

use super::quorum::{self, VoteResult};
use crate::types::{LogIndex, Membership, NodeId};

/// A requested change of membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a node as a learner (it receives the log, does not vote).
    AddLearner(NodeId),
    /// Make a learner a voter (a single-server change, thesis §4.2).
    Promote(NodeId),
    /// Remove a voter or a learner (for a voter: a single-server change, thesis §4.2).
    Remove(NodeId),
    /// Move to these voters and learners through a joint configuration (thesis §4.3).
    ChangeTo {
        /// The voters once the change is complete.
        voters: BTreeSet<NodeId>,
        /// The learners once the change is complete.
        learners: BTreeSet<NodeId>,
    },
    /// Leave the joint configuration: the incoming voters alone decide from then on.
    LeaveJoint,
}

/// Why a membership change or configuration was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// A configuration needs at least one voter.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// Node id 0 means "nobody" and cannot be a member.
    #[error("node id 0 cannot be a member")]
    ZeroId,
    /// A node would be both a voter and a learner.
    #[error("n{0} would be both a voter and a learner")]
    VoterAndLearner(NodeId),
    /// The node is already a member (voter or learner).
    #[error("n{0} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a learner, so it cannot be promoted.
    #[error("n{0} is not a learner")]
    NotALearner(NodeId),
    /// The node is not a member, so it cannot be removed.
    #[error("n{0} is not a member")]
    NotAMember(NodeId),
    /// Removing the last voter would leave nobody to decide.
    #[error("n{0} is the last voter")]
    LastVoter(NodeId),
    /// A joint configuration is in force: only leaving it is allowed.
    #[error("a joint configuration is in force; leave it first")]
    InJoint,
    /// There is no joint configuration to leave.
    #[error("not in a joint configuration")]
    NotInJoint,
}

impl Membership {
    /// A simple (not joint) configuration.
    ///
    /// ```
    /// # use raft_core::types::Membership;
    /// let m = Membership::new([1, 2, 3], [4]);
    /// assert!(m.is_voter(2) && m.is_learner(4) && !m.is_joint());
    /// ```
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            outgoing_voters: BTreeSet::new(),
            learners: learners.into_iter().collect(),
            addresses: BTreeMap::new(),
        }
    }

    /// Checks the invariants documented on [`Membership`].
    ///
    /// # Errors
    /// The first invariant broken.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if self.members().any(|id| id == 0) {
            return Err(MembershipError::ZeroId);
        }
        if let Some(id) = self
            .learners
            .iter()
            .find(|id| self.voters.contains(id) || self.outgoing_voters.contains(id))
        {
            return Err(MembershipError::VoterAndLearner(*id));
        }
        Ok(())
    }

    /// Whether this is a joint configuration (thesis §4.3).
    pub fn is_joint(&self) -> bool {
        !self.outgoing_voters.is_empty()
    }

    /// Whether `id` votes: in the incoming or, during a joint change, the outgoing voters.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing_voters.contains(&id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Every member (voters of both halves and learners), each once, sorted.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let all: BTreeSet<NodeId> = self
            .voters
            .iter()
            .chain(&self.outgoing_voters)
            .chain(&self.learners)
            .copied()
            .collect();
        all.into_iter()
    }

    /// The highest index committed under this configuration: replicated on a majority
    /// of `voters` and, when joint, also on a majority of `outgoing_voters` (thesis
    /// §4.3). Learners never count.
    ///
    /// ```
    /// # use raft_core::types::Membership;
    /// let mut m = Membership::new([1, 2, 3], []);
    /// m.outgoing_voters = [3, 4, 5].into_iter().collect();
    /// let matched = [(1, 9), (2, 9), (3, 1), (4, 1), (5, 1)].into_iter().collect();
    /// // The incoming majority has 9, but the outgoing one only 1.
    /// assert_eq!(m.committed_index(&matched), 1);
    /// ```
    pub fn committed_index(&self, match_indexes: &BTreeMap<NodeId, LogIndex>) -> LogIndex {
        let voters: Vec<NodeId> = self.voters.iter().copied().collect();
        let incoming = quorum::committed_index(&voters, match_indexes);
        if !self.is_joint() {
            return incoming;
        }
        let outgoing: Vec<NodeId> = self.outgoing_voters.iter().copied().collect();
        incoming.min(quorum::committed_index(&outgoing, match_indexes))
    }

    /// Counts `votes` under this configuration: won only if both halves of a joint
    /// configuration are won, lost as soon as either half is lost (thesis §4.3).
    /// Votes of learners or non-members are ignored.
    pub fn tally(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let voters: Vec<NodeId> = self.voters.iter().copied().collect();
        let incoming = quorum::tally(&voters, votes);
        if !self.is_joint() {
            return incoming;
        }
        let outgoing: Vec<NodeId> = self.outgoing_voters.iter().copied().collect();
        match (incoming, quorum::tally(&outgoing, votes)) {
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            _ => VoteResult::Pending,
        }
    }

    /// The configuration `change` leads to from this one.
    ///
    /// Single-server changes (add a learner, promote, remove) change the voters by at
    /// most one (thesis §4.2); [`MembershipChange::ChangeTo`] enters a joint
    /// configuration (thesis §4.3) that [`MembershipChange::LeaveJoint`] leaves. While a
    /// joint configuration is in force only leaving it is allowed.
    ///
    /// # Errors
    /// [`MembershipError`]: the change does not apply to this configuration, or the
    /// result would break an invariant. `self` is unchanged.
    ///
    /// ```
    /// # use raft_core::types::Membership;
    /// # use raft_core::protocol::membership::MembershipChange;
    /// let m = Membership::new([1, 2, 3], []);
    /// let joint = m
    ///     .apply(&MembershipChange::ChangeTo { voters: [1, 4, 5].into(), learners: [].into() })
    ///     .unwrap();
    /// assert!(joint.is_joint());
    /// let done = joint.apply(&MembershipChange::LeaveJoint).unwrap();
    /// assert_eq!(done, Membership::new([1, 4, 5], []));
    /// ```
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, MembershipError> {
        if self.is_joint() && *change != MembershipChange::LeaveJoint {
            return Err(MembershipError::InJoint);
        }
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if self.is_voter(*id) || self.is_learner(*id) {
                    return Err(MembershipError::AlreadyMember(*id));
                }
                next.learners.insert(*id);
            }
            MembershipChange::Promote(id) => {
                if !next.learners.remove(id) {
                    return Err(MembershipError::NotALearner(*id));
                }
                next.voters.insert(*id);
            }
            MembershipChange::Remove(id) => {
                if next.voters.remove(id) {
                    if next.voters.is_empty() {
                        return Err(MembershipError::LastVoter(*id));
                    }
                } else if !next.learners.remove(id) {
                    return Err(MembershipError::NotAMember(*id));
                }
            }
            MembershipChange::ChangeTo { voters, learners } => {
                next.outgoing_voters = self.voters.clone();
                next.voters = voters.clone();
                next.learners = learners.clone();
            }
            MembershipChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err(MembershipError::NotInJoint);
                }
                next.outgoing_voters.clear();
            }
        }
        // Addresses are only kept for members (a removed node's address goes with it).
        let members: BTreeSet<NodeId> = next.members().collect();
        next.addresses.retain(|id, _| members.contains(id));
        next.validate()?;
        Ok(next)
    }
}

/// A configuration entry's payload: `membership`, postcard-encoded.
pub fn encode_entry(membership: &Membership) -> bytes::Bytes {
    postcard::to_allocvec(membership)
        .expect("a membership always encodes")
        .into()
}

/// Decodes a configuration entry's payload and checks its invariants.
///
/// # Errors
/// A description of what is wrong, for the log line; the caller keeps the
/// configuration it had.
pub fn decode_entry(data: &[u8]) -> Result<Membership, String> {
    let m: Membership =
        postcard::from_bytes(data).map_err(|e| format!("undecodable configuration: {e}"))?;
    m.validate()
        .map_err(|e| format!("invalid configuration: {e}"))?;
    Ok(m)
}

/// The configurations a node's log defines, oldest first: the one in force at the
/// start of the log (from the stored snapshot, or the initial configuration) and one per
/// configuration entry after it. The last is the configuration in force (thesis §4.1:
/// a server uses the latest configuration in its log, committed or not).
///
/// Invariants: not empty; indexes strictly increase; every element but the first is a
/// configuration entry in the log at that index and term.
#[derive(Clone, Debug)]
pub(crate) struct ConfigHistory {
    /// (index, configuration). The first element's index is where it starts to hold
    /// (a snapshot's last index, or 0), not necessarily an entry.
    configs: Vec<(LogIndex, Membership)>,
}

impl ConfigHistory {
    /// A history that starts with `base`, in force from `index`.
    pub(crate) fn new(index: LogIndex, base: Membership) -> Self {
        ConfigHistory {
            configs: vec![(index, base)],
        }
    }

    /// The configuration in force.
    pub(crate) fn current(&self) -> &Membership {
        &self.configs.last().expect("never empty").1
    }

    /// The index of the latest configuration entry (or of the base).
    pub(crate) fn current_index(&self) -> LogIndex {
        self.configs.last().expect("never empty").0
    }

    /// The configuration in force at `index`: the latest one at or before it.
    pub(crate) fn at(&self, index: LogIndex) -> &Membership {
        &self
            .configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .unwrap_or(&self.configs[0])
            .1
    }

    /// The index from which the configuration in force at `index` holds (its entry's
    /// index, or the base's).
    pub(crate) fn index_at(&self, index: LogIndex) -> LogIndex {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .unwrap_or(&self.configs[0])
            .0
    }

    /// A configuration entry was appended at `index`.
    pub(crate) fn push(&mut self, index: LogIndex, membership: Membership) {
        self.truncate_from(index);
        self.configs.push((index, membership));
    }

    /// Entries from `index` on were removed from the log (a new leader overwrote them):
    /// the configurations they held no longer apply, the previous one does again.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        while self.configs.len() > 1 && self.configs.last().expect("never empty").0 >= index {
            self.configs.pop();
        }
    }

    /// The log now starts after `index` with `base` in force there (a snapshot); the
    /// configuration entries after it stay if `keep_later` (the log kept its suffix).
    pub(crate) fn restart_at(&mut self, index: LogIndex, base: Membership, keep_later: bool) {
        let later: Vec<_> = if keep_later {
            self.configs
                .iter()
                .skip(1)
                .filter(|(i, _)| *i > index)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.configs = vec![(index, base)];
        self.configs.extend(later);
    }

    /// Forgets configurations superseded at or before `compacted` (the log's compaction
    /// point): nothing before it is ever asked about again.
    pub(crate) fn forget_before(&mut self, compacted: LogIndex) {
        let keep_from = self
            .configs
            .iter()
            .rposition(|(i, _)| *i <= compacted)
            .unwrap_or(0);
        self.configs.drain(..keep_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    /// Thesis §4.3: in a joint configuration an election needs a majority of both the
    /// old and the new voters; losing either half loses it.
    #[test]
    fn joint_election_needs_both_majorities() {
        let mut m = Membership::new([1, 2, 3], []);
        m.outgoing_voters = set(&[3, 4, 5]);
        let votes = |v: &[(NodeId, bool)]| v.iter().copied().collect();
        // Incoming majority only.
        assert_eq!(
            m.tally(&votes(&[(1, true), (2, true)])),
            VoteResult::Pending
        );
        // Both majorities (3 counts in both halves).
        assert_eq!(
            m.tally(&votes(&[(1, true), (3, true), (4, true)])),
            VoteResult::Won
        );
        // The outgoing half is lost.
        assert_eq!(
            m.tally(&votes(&[(1, true), (2, true), (4, false), (5, false)])),
            VoteResult::Lost
        );
    }

    /// Thesis §4.2.1 (non-voting members): a learner's vote and its match index never
    /// count.
    #[test]
    fn learners_never_count() {
        let m = Membership::new([1, 2, 3], [4, 5]);
        let votes = [(1, true), (4, true), (5, true)].into_iter().collect();
        assert_eq!(m.tally(&votes), VoteResult::Pending);
        let matched = [(1, 9), (4, 9), (5, 9)].into_iter().collect();
        assert_eq!(m.committed_index(&matched), 0);
    }

    /// Thesis §4.2: single-server changes move the voters by one; the learner path
    /// (add, then promote) and removal.
    #[test]
    fn single_server_changes() {
        let m = Membership::new([1, 2, 3], []);
        let m = m.apply(&MembershipChange::AddLearner(4)).unwrap();
        assert_eq!(m, Membership::new([1, 2, 3], [4]));
        assert_eq!(
            m.apply(&MembershipChange::AddLearner(2)),
            Err(MembershipError::AlreadyMember(2))
        );
        assert_eq!(
            m.apply(&MembershipChange::Promote(3)),
            Err(MembershipError::NotALearner(3))
        );
        let m = m.apply(&MembershipChange::Promote(4)).unwrap();
        assert_eq!(m, Membership::new([1, 2, 3, 4], []));
        let m = m.apply(&MembershipChange::Remove(1)).unwrap();
        assert_eq!(m, Membership::new([2, 3, 4], []));
        assert_eq!(
            m.apply(&MembershipChange::Remove(9)),
            Err(MembershipError::NotAMember(9))
        );
        let one = Membership::new([7], []);
        assert_eq!(
            one.apply(&MembershipChange::Remove(7)),
            Err(MembershipError::LastVoter(7))
        );
    }

    /// Thesis §4.3: a joint configuration allows only leaving it; leaving keeps the
    /// incoming voters and learners.
    #[test]
    fn joint_change_enter_and_leave() {
        let m = Membership::new([1, 2, 3], [6]);
        assert_eq!(
            m.apply(&MembershipChange::LeaveJoint),
            Err(MembershipError::NotInJoint)
        );
        // Demoting a voter straight to learner would make it both an outgoing voter
        // and a learner while joint: refused (remove it, then add it as a learner).
        let demote = MembershipChange::ChangeTo {
            voters: set(&[1, 4, 5]),
            learners: set(&[2]),
        };
        assert_eq!(m.apply(&demote), Err(MembershipError::VoterAndLearner(2)));
        let joint = m
            .apply(&MembershipChange::ChangeTo {
                voters: set(&[1, 4, 5]),
                learners: set(&[6]),
            })
            .unwrap();
        assert!(joint.is_joint());
        assert_eq!(joint.outgoing_voters, set(&[1, 2, 3]));
        assert!(
            joint.is_voter(2),
            "an outgoing voter still votes while joint"
        );
        assert_eq!(
            joint.apply(&MembershipChange::AddLearner(9)),
            Err(MembershipError::InJoint)
        );
        let left = joint.apply(&MembershipChange::LeaveJoint).unwrap();
        assert_eq!(left, Membership::new([1, 4, 5], [6]));
    }

    #[test]
    fn invalid_targets_are_refused() {
        let m = Membership::new([1, 2, 3], []);
        let to = |voters: &[NodeId], learners: &[NodeId]| MembershipChange::ChangeTo {
            voters: set(voters),
            learners: set(learners),
        };
        assert_eq!(m.apply(&to(&[], &[1])), Err(MembershipError::NoVoters));
        assert_eq!(m.apply(&to(&[0, 1], &[])), Err(MembershipError::ZeroId));
        assert_eq!(
            m.apply(&to(&[4], &[4])),
            Err(MembershipError::VoterAndLearner(4))
        );
    }

    proptest! {
        /// A joint commit index never exceeds what either half alone would commit, and
        /// equals the smaller of the two.
        #[test]
        fn joint_commit_is_the_smaller_half(
            matches in proptest::collection::vec(0u64..20, 6),
            incoming_mask in 1u8..64,
            outgoing_mask in 1u8..64,
        ) {
            let pick = |mask: u8| -> BTreeSet<NodeId> {
                (0..6).filter(|i| mask & (1 << i) != 0).map(|i| i as NodeId + 1).collect()
            };
            let mut m = Membership::new(pick(incoming_mask), []);
            m.outgoing_voters = pick(outgoing_mask);
            let map: BTreeMap<NodeId, LogIndex> =
                (1..=6).zip(matches.iter().copied()).collect();
            let half = |s: &BTreeSet<NodeId>| {
                quorum::committed_index(&s.iter().copied().collect::<Vec<_>>(), &map)
            };
            prop_assert_eq!(
                m.committed_index(&map),
                half(&m.voters).min(half(&m.outgoing_voters))
            );
        }
    }
}
