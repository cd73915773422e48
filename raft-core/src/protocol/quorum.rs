//! Quorum math, independent of everything else so it can be tested on its own.

use std::collections::BTreeMap;

use crate::types::{LogIndex, NodeId};

/// The number of votes that make a majority of `voters`.
///
/// ```
/// # use raft_core::protocol::quorum::majority;
/// assert_eq!((majority(1), majority(3), majority(4), majority(5)), (1, 2, 3, 3));
/// ```
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of voters have reached: the majority-th largest
/// of `match_indexes`. Voters missing from the map count as 0.
///
/// ```
/// # use raft_core::protocol::quorum::committed_index;
/// let voters = [1, 2, 3];
/// let matched = [(1, 7), (2, 5), (3, 2)].into_iter().collect();
/// assert_eq!(committed_index(&voters, &matched), 5);
/// ```
pub fn committed_index(voters: &[NodeId], match_indexes: &BTreeMap<NodeId, LogIndex>) -> LogIndex {
    if voters.is_empty() {
        return 0;
    }
    let mut matched: Vec<LogIndex> = voters
        .iter()
        .map(|id| match_indexes.get(id).copied().unwrap_or(0))
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[majority(voters.len()) - 1]
}

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: this election cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

/// Counts `votes` (granted or not, one per voter) among `voters`.
///
/// ```
/// # use raft_core::protocol::quorum::{tally, VoteResult};
/// let votes = [(1, true), (2, false)].into_iter().collect();
/// assert_eq!(tally(&[1, 2, 3], &votes), VoteResult::Pending);
/// ```
pub fn tally(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let need = majority(voters.len());
    let granted = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&true))
        .count();
    let refused = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&false))
        .count();
    if granted >= need {
        VoteResult::Won
    } else if refused >= need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive definition: the largest index n such that a majority have match >= n.
    fn naive_committed(matches: &[LogIndex]) -> LogIndex {
        let max = matches.iter().copied().max().unwrap_or(0);
        (0..=max)
            .rev()
            .find(|n| matches.iter().filter(|m| **m >= *n).count() >= majority(matches.len()))
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn committed_index_matches_naive(matches in proptest::collection::vec(0u64..50, 1..8)) {
            let voters: Vec<NodeId> = (1..=matches.len() as u64).collect();
            let map = voters.iter().copied().zip(matches.iter().copied()).collect();
            prop_assert_eq!(committed_index(&voters, &map), naive_committed(&matches));
        }
    }

    #[test]
    fn tally_table() {
        let voters = [1, 2, 3, 4, 5];
        // (votes, expected)
        let cases: &[(&[(NodeId, bool)], VoteResult)] = &[
            // nobody answered yet
            (&[], VoteResult::Pending),
            // exactly a majority granted
            (&[(1, true), (2, true), (3, true)], VoteResult::Won),
            // a majority refused
            (
                &[(1, true), (2, false), (3, false), (4, false)],
                VoteResult::Lost,
            ),
            // split, still undecided
            (
                &[(1, true), (2, true), (3, false), (4, false)],
                VoteResult::Pending,
            ),
        ];
        for (votes, want) in cases {
            let map = votes.iter().copied().collect();
            assert_eq!(tally(&voters, &map), *want, "votes {votes:?}");
        }
    }
}
