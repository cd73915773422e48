//! Membership changes, one test per rule of the Raft thesis (Ongaro, "Consensus: Bridging
//! Theory and Practice", chapter 4). Each test names its section.
//!
//! The [`Network`] harness checks election safety (one leader per term) and state
//! machine safety on every ready, whatever the test asserts besides.

mod common;

use common::*;
use raft_core::protocol::membership::{MembershipChange, MembershipError};
use raft_core::{Log, Membership, NodeId, ProposeError, Role};

fn set(ids: &[NodeId]) -> std::collections::BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

/// Nodes 1..=n with only `voters` in the initial configuration; n1 elected and its
/// no-op committed everywhere reachable.
fn cluster(n: u64, voters: &[NodeId]) -> Network {
    let mut net = Network::builder(n).initial_voters(voters).build();
    net.elect(1);
    net.deliver_all();
    net
}

/// Leader `id` proposes `change`, and everything is delivered.
fn change(net: &mut Network, id: NodeId, change: MembershipChange) {
    net.node_mut(id)
        .propose_membership(change.clone())
        .unwrap_or_else(|e| panic!("n{id} refused {change:?}: {e}"));
    net.flush();
    net.deliver_all();
}

/// Ticks every node and delivers, until `done` or `ticks_max` ticks.
fn run_until(net: &mut Network, ticks_max: u32, mut done: impl FnMut(&Network) -> bool) {
    for _ in 0..ticks_max {
        if done(net) {
            return;
        }
        net.tick_all();
        net.deliver_all();
    }
    assert!(done(net), "condition not reached:\n{}", net.describe());
}

/// Thesis §4.1: "a server always uses the latest configuration in its log, regardless of
/// whether the entry is committed". A follower switches on append, before the commit.
#[test]
fn configuration_is_in_force_once_appended() {
    let mut net = cluster(4, &[1, 2, 3]);
    net.node_mut(1)
        .propose_membership(MembershipChange::AddLearner(4))
        .unwrap();
    assert!(net.node(1).membership().is_learner(4), "the leader at once");
    net.flush();
    // Only the appends are delivered; their answers are held back, so nothing commits.
    net.deliver_round_with(|m| {
        if is(m, "append") {
            Fate::Deliver
        } else {
            Fate::Hold
        }
    });
    let index = net.node(1).last_index();
    assert!(net.node(2).commit_index() < index);
    assert_eq!(
        net.node(2).membership(),
        &Membership::new([1, 2, 3], [4]),
        "a follower once appended, before the entry commits"
    );
    net.deliver_all();
    assert_eq!(net.node(2).commit_index(), index);
}

/// Thesis §4.2.1: a learner (non-voting member) receives the log, but its
/// acknowledgements never count toward a commit, it is not asked for votes, and it never
/// campaigns. A node outside the configuration never campaigns either.
#[test]
fn learners_receive_the_log_but_never_vote_or_count() {
    let mut net = cluster(5, &[1, 2, 3]);
    change(&mut net, 1, MembershipChange::AddLearner(4));
    let (index, _) = net.propose(1, "x");
    net.deliver_all();
    assert_eq!(net.node(4).commit_index(), index, "the learner has the log");
    // With both other voters cut off, the learner's acknowledgement commits nothing.
    net.cut(1, 2);
    net.cut(1, 3);
    let (index, _) = net.propose(1, "y");
    net.run(3);
    assert_eq!(net.node(4).last_index(), index, "the learner got it");
    assert!(net.node(1).commit_index() < index, "but it does not count");
    assert!(
        net.in_flight.iter().all(|m| !is(m, "vote")),
        "nobody asks a learner"
    );
    // Left alone for many election timeouts, the learner and the non-member (n5) never
    // campaign.
    net.heal();
    net.isolate(4);
    net.isolate(5);
    net.run(200);
    for id in [4, 5] {
        assert_eq!(net.role(id), Role::Follower, "n{id}");
        assert_eq!(net.node(id).status().counters.elections_started, 0, "n{id}");
    }
}

/// Thesis §4.1: one change at a time. A second change is refused while the first one's
/// entry is uncommitted; once it commits, the next is accepted.
#[test]
fn one_change_in_flight() {
    let mut net = cluster(5, &[1, 2, 3]);
    net.isolate(1);
    let (index, _) = net
        .node_mut(1)
        .propose_membership(MembershipChange::AddLearner(4))
        .unwrap();
    assert_eq!(
        net.node_mut(1)
            .propose_membership(MembershipChange::AddLearner(5)),
        Err(ProposeError::ChangeInFlight { index })
    );
    net.heal();
    net.flush();
    net.run(5);
    assert!(net.node(1).commit_index() >= index);
    change(&mut net, 1, MembershipChange::AddLearner(5));
    assert_eq!(
        net.node(3).membership(),
        &Membership::new([1, 2, 3], [4, 5])
    );
}

/// Thesis §4.1 (the single-server change bug, fixed as the thesis's erratum says): a
/// leader changes the membership only once an entry of its own term committed.
#[test]
fn no_change_before_the_leader_commits_in_its_term() {
    let mut net = Network::builder(4).initial_voters(&[1, 2, 3]).build();
    net.node_mut(1).campaign();
    // Votes arrive, the no-op's acknowledgements do not.
    net.deliver_all_with(|m| {
        if is(m, "append_response") {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    assert_eq!(net.role(1), Role::Leader);
    assert!(net.node(1).commit_index() < net.node(1).last_index());
    assert_eq!(
        net.node_mut(1)
            .propose_membership(MembershipChange::AddLearner(4)),
        Err(ProposeError::NotCommittedInTerm)
    );
    run_until(&mut net, 20, |net| {
        net.node(1).commit_index() == net.node(1).last_index()
    });
    change(&mut net, 1, MembershipChange::AddLearner(4));
}

/// Changes that do not apply to the configuration in force are refused with the reason,
/// and change nothing.
#[test]
fn invalid_changes_are_refused() {
    let mut net = cluster(4, &[1, 2, 3]);
    let before = net.node(1).membership().clone();
    let last = net.node(1).last_index();
    for (c, want) in [
        (
            MembershipChange::Promote(4),
            MembershipError::NotALearner(4),
        ),
        (
            MembershipChange::AddLearner(2),
            MembershipError::AlreadyMember(2),
        ),
        (MembershipChange::Remove(9), MembershipError::NotAMember(9)),
        (MembershipChange::LeaveJoint, MembershipError::NotInJoint),
    ] {
        assert_eq!(
            net.node_mut(1).propose_membership(c),
            Err(ProposeError::Membership(want))
        );
    }
    assert_eq!(net.node(1).membership(), &before);
    assert_eq!(net.node(1).last_index(), last);
    assert!(matches!(
        net.node_mut(2)
            .propose_membership(MembershipChange::AddLearner(4)),
        Err(ProposeError::NotLeader { leader: Some(1) })
    ));
}

/// Thesis §4.2: a learner caught up and promoted is a voter: it counts toward commits
/// and can be elected.
#[test]
fn promoted_learner_votes_and_counts() {
    let mut net = cluster(4, &[1, 2, 3]);
    change(&mut net, 1, MembershipChange::AddLearner(4));
    change(&mut net, 1, MembershipChange::Promote(4));
    assert_eq!(net.node(4).membership(), &Membership::new([1, 2, 3, 4], []));
    // 4 voters: a majority is 3, so the leader and n4 alone do not commit...
    net.cut(1, 2);
    net.cut(1, 3);
    let (index, _) = net.propose(1, "x");
    net.run(2);
    assert!(net.node(1).commit_index() < index);
    // ...but with n2 they do.
    net.heal();
    net.cut(1, 3);
    net.run(3);
    assert!(net.node(1).commit_index() >= index);
    // And n4 can lead.
    net.heal();
    net.node_mut(1).transfer_leadership(4).unwrap();
    net.flush();
    run_until(&mut net, 50, |net| net.role(4) == Role::Leader);
}

/// Thesis §4.3: during a joint change an entry commits only with a majority of the old
/// AND of the new voters; once the joint entry commits the leader moves to the new
/// configuration by itself.
#[test]
fn joint_change_needs_both_majorities_and_leaves_by_itself() {
    let mut net = cluster(5, &[1, 2, 3]);
    change(&mut net, 1, MembershipChange::AddLearner(4));
    change(&mut net, 1, MembershipChange::AddLearner(5));
    // Swap two voters at once: {1,2,3} -> {1,4,5}. n4 and n5 are cut off, so the new
    // half has only n1: the joint entry cannot commit.
    net.isolate(4);
    net.isolate(5);
    let (joint_index, _) = net
        .node_mut(1)
        .propose_membership(MembershipChange::ChangeTo {
            voters: set(&[1, 4, 5]),
            learners: set(&[]),
        })
        .unwrap();
    net.flush();
    net.run(5);
    assert!(net.node(2).membership().is_joint());
    assert!(
        net.node(1).commit_index() < joint_index,
        "the old majority alone does not commit"
    );
    assert!(matches!(
        net.node_mut(1)
            .propose_membership(MembershipChange::AddLearner(9)),
        Err(ProposeError::ChangeInFlight { .. })
    ));
    net.heal();
    // n2 and n3 are no longer members once the joint configuration is left: they need
    // not hear of it.
    run_until(&mut net, 50, |net| {
        [1, 4, 5]
            .iter()
            .all(|id| net.node(*id).membership() == &Membership::new([1, 4, 5], []))
    });
    // The leave entry commits with the new voters alone.
    net.isolate(2);
    net.isolate(3);
    let (index, _) = net.propose(1, "after");
    net.run(3);
    assert!(net.node(1).commit_index() >= index);
}

/// Thesis §4.2.2: a leader that removes itself keeps leading until the change commits
/// (it replicates without counting itself), then steps down; a remaining voter takes
/// over and the removed node never campaigns again.
#[test]
fn removed_leader_steps_down_once_the_change_commits() {
    let mut net = cluster(3, &[1, 2, 3]);
    net.node_mut(1)
        .propose_membership(MembershipChange::Remove(1))
        .unwrap();
    net.flush();
    assert_eq!(net.role(1), Role::Leader, "until the removal commits");
    net.deliver_all();
    assert_eq!(net.role(1), Role::Follower, "stepped down once committed");
    run_until(&mut net, 100, |net| {
        net.leaders().iter().any(|l| [2, 3].contains(l))
    });
    let leader = net.leaders()[0];
    let (index, _) = net.propose(leader, "after");
    net.deliver_all();
    assert!(net.node(leader).commit_index() >= index);
    let started = net.node(1).status().counters.elections_started;
    net.isolate(1);
    net.run(100);
    assert_eq!(
        net.node(1).status().counters.elections_started,
        started,
        "a removed node does not campaign"
    );
}

/// Thesis §4.2.3: a removed server that never learned of its removal times out and
/// campaigns, but with pre-vote and check-quorum it disturbs nobody: the leader keeps
/// its term.
#[test]
fn removed_node_does_not_disrupt() {
    let mut net = cluster(4, &[1, 2, 3, 4]);
    net.isolate(4);
    change(&mut net, 1, MembershipChange::Remove(4));
    assert_eq!(net.node(1).membership(), &Membership::new([1, 2, 3], []));
    assert!(net.node(4).membership().is_voter(4), "n4 never heard of it");
    let term = net.term(1);
    net.heal();
    // The leader no longer sends to n4; n4 times out again and again.
    net.run(200);
    assert!(
        net.delivered
            .iter()
            .any(|m| m.from == 4 && is(m, "pre_vote")),
        "n4 campaigned"
    );
    assert_eq!(net.term(1), term, "the cluster's term did not move");
    assert_eq!(net.role(1), Role::Leader);
}

/// Thesis §4.1: "if a new leader overwrites the configuration entry, the server falls
/// back to the previous configuration".
#[test]
fn truncated_configuration_entry_falls_back() {
    let mut net = cluster(4, &[1, 2, 3]);
    net.isolate(1);
    net.node_mut(1)
        .propose_membership(MembershipChange::AddLearner(4))
        .unwrap();
    net.flush();
    assert!(net.node(1).membership().is_learner(4));
    net.drop_in_flight();
    // n2 or n3 is elected without it and commits an entry of its own over n1's index.
    run_until(&mut net, 100, |net| net.leaders().iter().any(|l| *l != 1));
    let leader = *net.leaders().iter().find(|l| **l != 1).unwrap();
    net.propose(leader, "x");
    net.deliver_all();
    net.heal();
    run_until(&mut net, 50, |net| {
        net.role(1) == Role::Follower && net.logs_agree(1, leader)
    });
    assert_eq!(
        net.node(1).membership(),
        &Membership::new([1, 2, 3], []),
        "n1's uncommitted configuration entry was overwritten"
    );
}

/// Thesis §4 (configurations are persistent state): a node restarts with the
/// configuration its log holds, and one that was compacted away is carried by the
/// snapshot: a learner added after the leader compacted gets it with its snapshot, and
/// still has it after a restart from that snapshot.
#[test]
fn configuration_survives_restarts_and_snapshots() {
    let mut net = cluster(5, &[1, 2, 3]);
    change(&mut net, 1, MembershipChange::AddLearner(4));
    change(&mut net, 1, MembershipChange::Promote(4));
    let want = Membership::new([1, 2, 3, 4], []);
    net.restart(2, 99);
    assert_eq!(net.node(2).membership(), &want, "from the log");
    // The leader compacts past every configuration entry.
    for i in 0..5 {
        net.propose(1, &format!("c{i}"));
    }
    net.deliver_all();
    assert!(net.take_snapshot(1, 0));
    assert!(net.node(1).log().snapshot_meta().last_index >= 5);
    assert_eq!(
        net.node(1).log().snapshot_meta().membership.as_ref(),
        Some(&want),
        "the compaction point names the configuration in force there"
    );
    net.restart(1, 7);
    assert_eq!(net.node(1).membership(), &want, "from the snapshot");
    run_until(&mut net, 100, |net| !net.leaders().is_empty());
    let leader = net.leaders()[0];
    net.deliver_all();
    // n5 joins: it catches up with the snapshot, which tells it the configuration.
    if leader != 1 {
        // Any leader will do; it needs the entries compacted to send a snapshot.
        assert!(net.take_snapshot(leader, 0));
    }
    change(&mut net, leader, MembershipChange::AddLearner(5));
    run_until(&mut net, 50, |net| {
        net.node(5).commit_index() == net.node(leader).commit_index()
    });
    let want = Membership::new([1, 2, 3, 4], [5]);
    assert_eq!(net.node(5).membership(), &want);
    // The configuration travelled in the snapshot's metadata (the one in force at its
    // index, before n5 was added), not inside the state machine's bytes.
    let stored = net
        .node(5)
        .log()
        .snapshot()
        .unwrap()
        .expect("n5 installed a snapshot");
    assert_eq!(
        stored.meta.membership,
        Some(Membership::new([1, 2, 3, 4], []))
    );
    assert_eq!(
        common::decode_entries(&stored.data).last().map(|e| e.index),
        Some(stored.meta.last_index),
        "the data is the harness's state machine, as it was taken"
    );
    net.restart(5, 3);
    assert_eq!(net.node(5).membership(), &want, "after a restart");
}

/// Thesis §4.3: the leader leaves a joint configuration as soon as its entry commits,
/// with one voter of each half unreachable, and an outgoing voter's acknowledgement
/// completes the outgoing majority. (The simulator found the leader panicking when such
/// an acknowledgement made it drop that voter's progress while handling it; this
/// harness commits on the leader's own sync instead, so the regression seeds in
/// raft-testkit/tests/membership_sim.rs are what reproduce that panic.)
#[test]
fn joint_entry_committed_by_an_outgoing_voter() {
    let mut net = cluster(4, &[1, 2, 3]);
    net.node_mut(1)
        .propose_membership(MembershipChange::ChangeTo {
            voters: set(&[1, 2, 4]),
            learners: set(&[]),
        })
        .unwrap();
    net.flush();
    let cut_2 = |m: &raft_core::Message| m.to == 2 || m.from == 2;
    // The appends reach n3 and n4; n4's answer arrives first (the incoming half has
    // its majority), then n3's, which completes the outgoing half.
    net.deliver_round_with(|m| if cut_2(m) { Fate::Drop } else { Fate::Deliver });
    net.deliver_round_with(|m| {
        if cut_2(m) {
            Fate::Drop
        } else if m.from == 3 {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    });
    net.deliver_all_with(|m| if cut_2(m) { Fate::Drop } else { Fate::Deliver });
    assert_eq!(net.role(1), Role::Leader);
    assert_eq!(
        net.node(1).membership(),
        &Membership::new([1, 2, 4], []),
        "left the joint configuration"
    );
    let (index, _) = net.propose(1, "after");
    net.deliver_all_with(|m| if cut_2(m) { Fate::Drop } else { Fate::Deliver });
    assert!(net.node(1).commit_index() >= index, "n1 and n4 commit");
}

/// Thesis §4.2.2: a leader that removed itself keeps leading until the removal commits.
/// If it loses touch meanwhile and the others elect a leader, nobody ever sends it a
/// vote request (it is not in their configuration): without pre-vote and check-quorum
/// it would lead a stale term forever. The others answer its appends with their term.
#[test]
fn removed_stale_leader_learns_the_new_term() {
    let mut net = Network::builder(3).config(paper_config).build();
    net.elect(1);
    net.deliver_all();
    net.node_mut(1)
        .propose_membership(MembershipChange::Remove(1))
        .unwrap();
    net.flush();
    // The removal reaches n2 and n3; their answers are lost with n1's link.
    net.deliver_round_with(|_| Fate::Deliver);
    net.isolate(1);
    run_until(&mut net, 200, |net| {
        net.leaders().iter().any(|l| [2, 3].contains(l))
    });
    assert_eq!(net.role(1), Role::Leader, "n1 still leads its stale term");
    net.heal();
    run_until(&mut net, 100, |net| net.role(1) != Role::Leader);
    assert_eq!(net.leaders().len(), 1);
}

/// Thesis §4.2.2: "a server that is not part of its own latest configuration should
/// still start new elections, as it might still be needed until the C_new entry is
/// committed". Here the removed leader holds the removal entry alone: the other voter
/// cannot win (the removed node's log is more up to date), so only the removed node can
/// finish the change, elected by the voters of its latest configuration (its own vote
/// does not count). Found by the simulator as a cluster that never elected again.
#[test]
fn node_removed_by_an_uncommitted_entry_still_campaigns() {
    let mut net = Network::builder(2).config(paper_config).build();
    net.elect(1);
    net.deliver_all();
    net.node_mut(1)
        .propose_membership(MembershipChange::Remove(1))
        .unwrap();
    let index = net.node(1).last_index();
    net.flush();
    net.deliver_round_with(|m| {
        if m.from == 1 {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    // n2 campaigns: n1 refuses (its log is longer) and follows the new term.
    net.node_mut(2).campaign();
    net.flush();
    net.deliver_all();
    assert_ne!(net.role(1), Role::Leader);
    assert!(
        !net.node(1).membership().is_voter(1),
        "n1 knows it is removed"
    );
    run_until(&mut net, 300, |net| {
        net.leaders() == vec![2]
            && net.node(2).membership() == &Membership::new([2], [])
            && net.node(2).commit_index() >= index
    });
}

/// Snapshot metadata carries the configuration (issue 14 step B). A snapshot stored
/// before that (raft-store format 2: no configuration) is still sent with one: the
/// leader fills in the configuration in force at its index, so the joining node learns
/// who votes even though the configuration entries were compacted away.
#[test]
fn a_snapshot_stored_without_configuration_is_sent_with_one() {
    let mut net = cluster(5, &[1, 2, 3]);
    change(&mut net, 1, MembershipChange::AddLearner(4));
    change(&mut net, 1, MembershipChange::Promote(4));
    for i in 0..3 {
        net.propose(1, &format!("c{i}"));
    }
    net.deliver_all();
    assert!(net.take_snapshot(1, 0));
    // Rewrite n1's stored snapshot as an older build stored it: no configuration.
    let log = net.node_mut(1).log_mut();
    let mut old = log.snapshot().unwrap().expect("n1 took a snapshot");
    old.meta.membership = None;
    log.save_snapshot(&old).unwrap();
    log.sync().unwrap();
    change(&mut net, 1, MembershipChange::AddLearner(5));
    run_until(&mut net, 50, |net| {
        net.node(5).commit_index() == net.node(1).commit_index()
    });
    let stored = net
        .node(5)
        .log()
        .snapshot()
        .unwrap()
        .expect("n5 installed a snapshot");
    assert_eq!(stored.meta.last_index, old.meta.last_index);
    assert_eq!(
        stored.meta.membership,
        Some(Membership::new([1, 2, 3, 4], [])),
        "filled in by the leader"
    );
    assert_eq!(
        net.node(5).membership(),
        &Membership::new([1, 2, 3, 4], [5])
    );
}

/// Thesis §4.2.3 (disruptive servers): "servers disregard RequestVote RPCs when they
/// believe a current leader exists". A voter removed while it was cut off never learns
/// of its removal, times out and campaigns forever. Without pre-vote and check-quorum,
/// each of its vote requests at a higher term would depose the working leader (and the
/// refusal of a stale-term request tells it the term to campaign above next); the
/// simulator's seed 2568 never kept a leader long enough to catch a lagging voter up by
/// snapshot. A node outside the configuration is not heard while a leader is.
#[test]
fn removed_node_that_missed_its_removal_does_not_depose_the_leader() {
    let mut net = Network::builder(3).config(paper_config).build();
    net.elect(1);
    net.deliver_all();
    net.isolate(3);
    change(&mut net, 1, MembershipChange::Remove(3));
    assert_eq!(net.node(1).membership(), &Membership::new([1, 2], []));
    let committed = net.node(1).commit_index();
    assert_eq!(net.node(2).commit_index(), committed, "the removal commits");
    // n3 never got the removal: it campaigns, alone, far above the cluster's term.
    for _ in 0..200 {
        net.tick(3);
        net.deliver_all();
    }
    let term = net.term(1);
    assert!(net.term(3) > term + 3, "n3 campaigned: {}", net.describe());
    net.heal();
    for _ in 0..200 {
        net.tick_all();
        net.deliver_all();
        assert_eq!(
            net.leaders(),
            vec![1],
            "n1 keeps leading: {}",
            net.describe()
        );
        assert_eq!(net.term(1), term, "n3 raised no term: {}", net.describe());
        assert_eq!(net.term(2), term);
    }
    let (index, _) = net.propose(1, "after");
    net.deliver_all();
    assert!(net.node(2).commit_index() >= index);
}
