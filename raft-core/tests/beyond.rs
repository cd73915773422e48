//! Behaviour beyond the paper's §5: pre-vote, check-quorum, linearizable reads, flow
//! control, rejection hints, leadership transfer, forwarding, and lossy networks.
//! Nodes run the default config (pre-vote and check-quorum on) unless a test says so.

// Table tests read best as slices of tuples, one row per case.
#![allow(clippy::type_complexity)]

mod common;

use bytes::Bytes;
use common::*;
use raft_core::{
    Config, Entry, LogIndex, MessageBody, NodeId, ProposeError, ReadMode, ReadState, Role, Term,
};

/// Ticks every node and delivers everything until `done` holds; panics after `max` ticks.
fn run_until(net: &mut Network, max: u32, mut done: impl FnMut(&Network) -> bool) {
    for _ in 0..max {
        if done(net) {
            return;
        }
        net.tick_all();
        net.deliver_all();
    }
    assert!(done(net), "not reached in {max} ticks:\n{}", net.describe());
}

/// Exactly one leader, every node at its term, every log equal to its log.
fn assert_converged(net: &Network) {
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "\n{}", net.describe());
    let leader = leaders[0];
    for id in net.ids() {
        assert_eq!(net.term(id), net.term(leader), "\n{}", net.describe());
        assert_eq!(
            net.log_entries(id),
            net.log_entries(leader),
            "\n{}",
            net.describe()
        );
    }
}

fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn heartbeat_interval(net: &Network, id: NodeId) -> u32 {
    net.node(id).config().heartbeat_interval_ticks
}

// ----- elections -------------------------------------------------------------------------

/// Two candidates competing in the same terms still converge on one leader, with and
/// without pre-vote.
#[test]
fn dueling_candidates_converge() {
    // Plain Raft, scripted as in etcd's TestDuelingCandidates: n1 wins term 1 while n3 is
    // cut off from it; n3 then forces term 2 but cannot win it with a shorter log.
    let mut net = Network::builder(3).config(paper_config).build();
    net.cut(1, 3);
    net.node_mut(1).campaign();
    net.node_mut(3).campaign();
    net.deliver_all();
    assert_eq!((net.role(1), net.role(3)), (Role::Leader, Role::Candidate));
    net.heal();
    net.node_mut(3).campaign();
    net.deliver_all();
    assert_eq!(net.term(3), 2);
    assert!(net.leaders().is_empty(), "\n{}", net.describe());
    assert_eq!(net.role(3), Role::Follower, "refused by both, n3 lost");
    run_until(&mut net, 100, |net| net.leaders().len() == 1);
    assert_converged(&net);
    assert_ne!(
        net.leaders(),
        vec![3],
        "n3 lacks the committed no-op of term 1"
    );

    // Every node campaigns at once, repeatedly, with and without pre-vote.
    for pre_vote in [false, true] {
        let mut net = Network::builder(5)
            .config(move |c| c.pre_vote = pre_vote)
            .build();
        for _ in 0..3 {
            for id in net.ids() {
                net.node_mut(id).campaign();
            }
            net.deliver_all();
        }
        run_until(&mut net, 200, |net| net.leaders().len() == 1);
        net.propose(net.leaders()[0], "x");
        net.deliver_all();
        assert_converged(&net);
    }
}

/// A node with a smaller term that missed the last election can still complete the next
/// one, with pre-vote on (etcd's TestNodeWithSmallerTermCanCompleteElection): it neither
/// blocks the others nor is stuck as a pre-candidate.
#[test]
fn node_with_a_smaller_term_can_complete_an_election() {
    for check_quorum in [false, true] {
        let mut net = Network::builder(3)
            .config(move |c| c.check_quorum = check_quorum)
            .build();
        // n3 is cut off while n2 is elected, and fails its own pre-vote.
        net.isolate(3);
        net.elect(2);
        net.node_mut(3).campaign();
        net.deliver_all();
        assert_eq!((net.role(3), net.term(3)), (Role::PreCandidate, 0));
        assert_eq!(net.term(2), 1);

        // n3 comes back just as the leader n2 crashes; n3 and n1 both campaign.
        net.heal();
        net.isolate(2);
        net.node_mut(3).campaign();
        net.deliver_all();
        net.node_mut(1).campaign();
        net.deliver_all();
        // With check-quorum, n1 ignores votes until its election timeout has passed.
        run_until(&mut net, 100, |net| {
            net.role(1) == Role::Leader || net.role(3) == Role::Leader
        });
        let leader = if net.role(1) == Role::Leader { 1 } else { 3 };
        assert!(net.term(leader) >= 2, "check_quorum {check_quorum}");
        assert_eq!(leader, 1, "n3 lacks the term-1 no-op, so only n1 can win");
    }
}

/// A node partitioned away keeps failing pre-votes without raising its term, so when it
/// rejoins it does not depose the healthy leader (pre-vote + check-quorum, thesis §9.6).
#[test]
fn partitioned_node_rejoining_does_not_depose_a_healthy_leader() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(3);
    for i in 0..100 {
        net.tick_all();
        net.deliver_all();
        if i % 10 == 0 {
            net.propose(1, "while partitioned");
        }
    }
    assert_eq!(net.term(3), 1, "pre-vote never raises the term of a loner");
    assert_ne!(net.role(3), Role::Leader);
    let term = net.term(1);

    net.heal();
    run_until(&mut net, 100, |net| {
        net.log_entries(3) == net.log_entries(1) && net.role(3) == Role::Follower
    });
    for _ in 0..100 {
        net.tick_all();
        net.deliver_all();
    }
    assert_eq!(
        (net.leaders(), net.term(1)),
        (vec![1], term),
        "\n{}",
        net.describe()
    );
    assert_eq!(net.node(3).leader(), Some(1));
    assert_converged(&net);
}

/// Check-quorum: a leader that hears from no majority within an election timeout steps
/// down; one that hears from a majority stays.
#[test]
fn leader_that_lost_its_quorum_steps_down() {
    let mut net = Network::new(5);
    net.elect(1);
    let timeout = net.node(1).config().election_timeout_ticks;
    // Cut from two of four followers: still a majority (n1, n2, n3).
    net.cut(1, 4);
    net.cut(1, 5);
    for _ in 0..3 * timeout {
        net.tick(1);
        net.deliver_all();
    }
    assert_eq!(net.role(1), Role::Leader);

    // Cut from a third: n1 and n2 are no majority of 5.
    net.cut(1, 3);
    let mut ticks = 0;
    while net.role(1) == Role::Leader {
        net.tick(1);
        net.deliver_all();
        ticks += 1;
        assert!(ticks <= 2 * timeout, "still leading after {ticks} ticks");
    }
    assert_eq!((net.role(1), net.term(1)), (Role::Follower, 1));
    assert_eq!(net.node(1).leader(), None);
}

// ----- reads -----------------------------------------------------------------------------

/// A new leader does not know the commit index of its predecessor until an entry of its
/// own term commits, so a read waits for that (thesis §6.4 step 1).
#[test]
fn read_on_a_new_leader_waits_for_its_first_commit() {
    let mut net = Network::builder(3)
        .log_terms(1, &[1, 1], 1)
        .log_terms(2, &[1, 1], 1)
        .log_terms(3, &[1], 1)
        .build();
    net.node_mut(1).campaign();
    // Deliver the election but hold every append: the no-op of term 2 cannot commit.
    let hold_appends = |m: &raft_core::Message| {
        if is(m, "append") {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    };
    net.deliver_all_with(hold_appends);
    assert_eq!(net.role(1), Role::Leader);
    net.node_mut(1).read_index(7).unwrap();
    net.deliver_all_with(hold_appends);
    for _ in 0..3 * heartbeat_interval(&net, 1) {
        net.tick(1);
        net.deliver_all_with(hold_appends);
    }
    assert!(
        net.read_states[&1].is_empty(),
        "answered a read before committing an entry of its term: {:?}",
        net.read_states[&1]
    );

    net.deliver_all();
    run_until(&mut net, 10, |net| !net.read_states[&1].is_empty());
    assert_eq!(net.node(1).commit_index(), 3);
    assert_eq!(
        net.read_states[&1],
        vec![ReadState {
            request_id: 7,
            index: Some(3)
        }]
    );
}

/// ReadIndex: the leader answers only after a majority acknowledged a heartbeat round sent
/// after the request, and it answers with its commit index at the time of the request.
#[test]
fn read_index_is_confirmed_by_a_heartbeat_round() {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, "x");
    net.deliver_all();
    let commit = net.node(1).commit_index();

    net.node_mut(1).read_index(1).unwrap();
    net.flush();
    assert!(net.read_states[&1].is_empty(), "answered without a round");
    let round: Vec<_> = net.take_in_flight();
    assert_eq!(round.len(), 2);
    assert!(round.iter().all(|m| is(m, "heartbeat")), "{round:?}");

    // A round nobody answers confirms nothing.
    for m in round.clone() {
        net.step(m);
    }
    net.drop_in_flight();
    assert!(net.read_states[&1].is_empty());

    // One follower's answer makes a majority with the leader.
    for m in round.into_iter().filter(|m| m.to == 2) {
        net.step(m);
    }
    net.deliver_all();
    assert_eq!(
        net.read_states[&1],
        vec![ReadState {
            request_id: 1,
            index: Some(commit)
        }]
    );
}

/// A leader cut off from the majority cannot confirm a read; once it learns of the new
/// leader it fails the read instead of answering it.
#[test]
fn deposed_leader_fails_reads_it_could_not_confirm() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(1);
    net.node_mut(1).read_index(1).unwrap();
    run_until(&mut net, 100, |net| {
        net.role(2) == Role::Leader || net.role(3) == Role::Leader
    });
    assert!(net.read_states[&1].is_empty(), "{:?}", net.read_states[&1]);
    net.heal();
    run_until(&mut net, 20, |net| net.role(1) == Role::Follower);
    assert_eq!(
        net.read_states[&1],
        vec![ReadState {
            request_id: 1,
            index: None
        }]
    );
}

fn lease_config(c: &mut Config) {
    c.read_mode = ReadMode::Lease;
}

/// The answer node `id` gives a read at once, without a round trip, if any.
fn lease_read(net: &mut Network, id: NodeId, request_id: u64) -> Option<Option<LogIndex>> {
    let before = net.read_states[&id].len();
    if net.node_mut(id).read_index(request_id).is_err() {
        return None; // not leader, and no leader known
    }
    net.flush();
    let answered = net.read_states[&id][before..]
        .iter()
        .find(|r| r.request_id == request_id)
        .map(|r| r.index);
    answered
}

/// Lease reads are served without a round trip only while a majority acknowledged a
/// heartbeat sent less than `election_timeout - lease_drift` ticks ago; no other leader
/// can be elected in that window.
#[test]
fn lease_reads_are_served_without_a_round_only_while_the_lease_holds() {
    let mut net = Network::builder(3).config(lease_config).build();
    net.elect(1);
    for _ in 0..2 * heartbeat_interval(&net, 1) {
        net.tick_all();
        net.deliver_all();
    }
    let commit = net.node(1).commit_index();
    assert_eq!(
        lease_read(&mut net, 1, 1),
        Some(Some(commit)),
        "no lease after acked heartbeats"
    );
    assert!(
        net.take_in_flight().iter().all(|m| !is(m, "heartbeat")),
        "a lease read needs no round"
    );

    // Cut the leader off; the others elect a new leader and commit a write.
    net.isolate(1);
    let config = net.node(1).config().clone();
    let lease_ticks = config.election_timeout_ticks - config.lease_drift_ticks;
    let mut served_after_cut = 0;
    let mut request = 100;
    for tick in 0..100 {
        net.tick_all();
        net.deliver_all();
        request += 1;
        let answer = lease_read(&mut net, 1, request);
        let other_leader = [2, 3].into_iter().find(|id| net.role(*id) == Role::Leader);
        if let Some(Some(index)) = answer {
            served_after_cut += 1;
            assert!(
                other_leader.is_none(),
                "tick {tick}: stale lease read at {index} while n{other_leader:?} leads"
            );
        }
        if let Some(new) = other_leader {
            if net.node(new).commit_index() == commit + 1 {
                net.propose(new, "w");
            }
        }
    }
    assert!(
        served_after_cut >= 1,
        "the lease did not outlive the cut at all"
    );
    assert!(
        served_after_cut < lease_ticks,
        "served {served_after_cut} ticks after the cut, lease is {lease_ticks}"
    );
    assert!([2, 3].into_iter().any(|id| net.role(id) == Role::Leader));
}

/// While a leadership transfer is under way the transferee may be elected at once (voters
/// skip their lease for it), so the old leader's lease no longer proves anything: a lease
/// read must not be served from it.
#[test]
fn lease_read_is_not_served_once_leadership_was_handed_over() {
    let mut net = Network::builder(3).config(lease_config).build();
    net.elect(1);
    for _ in 0..2 * heartbeat_interval(&net, 1) {
        net.tick_all();
        net.deliver_all();
    }
    let commit = net.node(1).commit_index();
    assert_eq!(lease_read(&mut net, 1, 1), Some(Some(commit)));

    // n1 hands over to n2, and is cut off right after the TimeoutNow leaves.
    net.node_mut(1).transfer_leadership(2).unwrap();
    net.flush();
    net.deliver_round_with(|m| {
        if is(m, "timeout_now") {
            Fate::Deliver
        } else {
            Fate::Drop
        }
    });
    net.isolate(1);
    net.deliver_all();
    assert_eq!(net.role(2), Role::Leader, "\n{}", net.describe());
    net.propose(2, "w");
    net.deliver_all();
    assert!(net.node(2).commit_index() > commit);

    // n1 still believes it leads, within what it thinks is its lease.
    assert_eq!(net.role(1), Role::Leader);
    assert_eq!(
        lease_read(&mut net, 1, 2),
        None,
        "stale read: n2 committed a write after index {commit}"
    );
}

// ----- replication -----------------------------------------------------------------------

/// Reordered and duplicated messages are harmless: every node ends with the same log and
/// the same applied commands, in order.
#[test]
fn reordered_and_duplicated_messages_are_harmless() {
    let mut net = Network::new(3);
    net.elect(1);
    let mut rng = 0x1234_5678u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..40 {
        net.propose(1, &format!("c{i}"));
        // Deliver in a scrambled order, duplicating a third of the messages and holding
        // another third back to the next round.
        let mut msgs = net.take_in_flight();
        for j in (1..msgs.len()).rev() {
            msgs.swap(j, (next() % (j as u64 + 1)) as usize);
        }
        let fates: Vec<Fate> = msgs
            .iter()
            .map(|_| match next() % 3 {
                0 => Fate::Duplicate,
                1 => Fate::Hold,
                _ => Fate::Deliver,
            })
            .collect();
        let mut fates = fates.into_iter();
        net.in_flight = msgs;
        net.deliver_round_with(|_| fates.next().unwrap());
        if i % 5 == 0 {
            net.tick_all();
        }
    }
    run_until(&mut net, 50, |net| {
        net.ids()
            .iter()
            .all(|id| net.node(*id).commit_index() == net.node(1).last_index())
    });
    assert_converged(&net);
    let expected: Vec<Bytes> = (0..40).map(|i| data(&format!("c{i}"))).collect();
    for id in net.ids() {
        assert_eq!(net.applied_data(id), expected, "n{id}");
    }
}

/// The rejection hint lets the leader skip a whole conflicting term per round trip rather
/// than one index at a time: count the rejections before the follower's log matches.
#[test]
fn rejection_hint_skips_a_whole_conflicting_term_per_round_trip() {
    fn terms(runs: &[(Term, usize)]) -> Vec<Term> {
        runs.iter()
            .flat_map(|&(t, n)| std::iter::repeat_n(t, n))
            .collect()
    }
    // (leader log, follower log, rejections before the match)
    let cases: Vec<(Vec<Term>, Vec<Term>, usize)> = vec![
        // Already matching: no rejection.
        (terms(&[(1, 10)]), terms(&[(1, 10)]), 0),
        // Follower far behind: one rejection, then it gets everything after its end.
        (terms(&[(1, 1), (3, 100)]), terms(&[(1, 1)]), 1),
        // Follower with a long suffix of a term the leader lacks: one rejection skips it.
        (terms(&[(1, 1), (3, 50)]), terms(&[(1, 1), (2, 100)]), 1),
        // Follower behind within a term the leader has: one rejection.
        (terms(&[(1, 1), (3, 50)]), terms(&[(1, 1), (3, 10)]), 1),
        // Figure 7 (f): terms 3 and 2 are skipped in one round trip each.
        (
            vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
            vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
            2,
        ),
        // Figure 7 (e): past the leader's end, then the term-4 run.
        (
            vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
            vec![1, 1, 1, 4, 4, 4, 4],
            2,
        ),
    ];
    for (leader_log, follower_log, want) in cases {
        let leader_term = *leader_log.last().unwrap();
        let follower_term = *follower_log.last().unwrap();
        let mut net = Network::builder(3)
            .log_terms(1, &leader_log, leader_term.max(follower_term))
            .log_terms(2, &follower_log, follower_term)
            .build();
        net.elect(1);
        let rejections = net
            .delivered
            .iter()
            .filter(|m| {
                m.from == 2
                    && matches!(
                        m.body,
                        MessageBody::AppendResponse {
                            reject: Some(_),
                            ..
                        }
                    )
            })
            .count();
        assert_eq!(net.log_entries(2), net.log_entries(1));
        assert_eq!(
            rejections,
            want,
            "leader {} entries, follower {} entries",
            leader_log.len(),
            follower_log.len()
        );
    }
}

/// An append that arrives late (after a longer one) truncates nothing: only a conflicting
/// suffix is ever cut, and entries the follower knows committed are never touched.
#[test]
fn stale_appends_truncate_nothing() {
    let mut net = Network::new(3);
    net.elect(1);
    for i in 0..3 {
        net.propose(1, &format!("c{i}"));
    }
    // Keep the first appends to n2 aside, deliver the rest.
    let mut early = Vec::new();
    net.deliver_all_with(|m| {
        if m.to == 2 && is(m, "append") && early.len() < 2 {
            early.push(m.clone());
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    run_until(&mut net, 20, |net| net.log_entries(2) == net.log_entries(1));
    let before = net.log_entries(2);
    for m in early {
        net.step(m);
    }
    net.deliver_all();
    assert_eq!(net.log_entries(2), before);
    assert_converged(&net);
}

/// A lost append (or a whole window of them) is sent again: the leader must not wait for
/// a new proposal to notice that a follower in replicate state fell behind.
#[test]
fn lost_appends_are_resent_without_new_proposals() {
    for window in [1, 2, 64] {
        let mut net = Network::builder(3)
            .config(move |c| c.inflight_messages_max = window)
            .build();
        net.elect(1);
        // Everything sent for these proposals is lost.
        for i in 0..3 {
            net.propose(1, &format!("c{i}"));
        }
        net.drop_in_flight();
        run_until(&mut net, 50, |net| net.node(1).commit_index() == 4);
        // The follower that lost them catches up too, even when the window was full.
        let last = net.node(1).last_index();
        run_until(&mut net, 50, |net| {
            net.node(2).last_index() == last && net.node(3).last_index() == last
        });
        assert_converged(&net);
    }
}

/// The bytes of entries in `m`, if it is an append with entries.
fn append_bytes(m: &raft_core::Message) -> Option<u64> {
    match &m.body {
        MessageBody::Append { entries, .. } if !entries.is_empty() => {
            Some(entries.iter().map(Entry::size_bytes).sum())
        }
        _ => None,
    }
}

/// The leader keeps at most `inflight_messages_max` appends and `inflight_bytes_max`
/// entry bytes in flight to a follower in replicate state; acknowledgements open the
/// window again.
#[test]
fn inflight_window_is_respected_in_messages_and_bytes() {
    // (messages max, bytes max, payload bytes per proposal)
    let cases: &[(u32, u64, usize)] = &[
        // The message count binds.
        (3, 1 << 20, 10),
        // The byte count binds: 4 entries of 140 bytes fit under 600, a 5th would not.
        (64, 600, 100),
        (64, 500, 60),
    ];
    for &(messages_max, bytes_max, payload) in cases {
        let mut net = Network::builder(3)
            .config(move |c| {
                c.inflight_messages_max = messages_max;
                c.inflight_bytes_max = bytes_max;
                set_append_bytes_max(c, c.append_bytes_max.min(bytes_max));
            })
            .build();
        net.elect(1);
        let context = format!("window {messages_max} messages, {bytes_max} bytes");
        for i in 0..20 {
            let command = format!("{i:0payload$}");
            net.propose(1, &command);
            for follower in [2, 3] {
                let (count, bytes) = net
                    .in_flight
                    .iter()
                    .filter(|m| m.to == follower)
                    .filter_map(append_bytes)
                    .fold((0, 0), |(c, b), x| (c + 1, b + x));
                assert!(
                    count <= messages_max,
                    "{context}: {count} appends in flight"
                );
                assert!(bytes <= bytes_max, "{context}: {bytes} bytes in flight");
            }
        }
        assert!(net
            .node(1)
            .status()
            .peers
            .iter()
            .all(|p| p.inflight_messages > 0));
        net.deliver_all();
        run_until(&mut net, 20, |net| {
            net.node(1).commit_index() == 21 && net.node(2).last_index() == 21
        });
        assert_converged(&net);
    }
}

/// A follower that is behind gets entries in batches as large as `append_bytes_max`
/// allows, never larger; a proposal larger than one append is refused.
#[test]
fn appends_are_batched_up_to_append_bytes_max() {
    let payload = 100usize;
    let entry_bytes = payload as u64 + Entry::OVERHEAD_BYTES;
    let mut net = Network::builder(3)
        .config(move |c| set_append_bytes_max(c, 3 * entry_bytes + 10))
        .build();
    net.elect(1);
    net.isolate(3);
    for i in 0..20 {
        net.propose(1, &format!("{i:0payload$}"));
        net.deliver_all();
    }
    net.heal();
    net.drop_in_flight();
    let start = net.delivered.len();
    run_until(&mut net, 30, |net| net.node(3).last_index() == 21);
    // Appends the follower refused (the leader's guess at its end was wrong: with
    // batching, the entries proposed during the partition were never sent, and the
    // first append after it starts at the leader's end) carry no batch of catch-up.
    let refused: Vec<u64> = net.delivered[start..]
        .iter()
        .filter(|m| m.from == 3)
        .filter_map(|m| match &m.body {
            MessageBody::AppendResponse {
                index,
                reject: Some(_),
            } => Some(*index),
            _ => None,
        })
        .collect();
    let sizes: Vec<usize> = net.delivered[start..]
        .iter()
        .filter(|m| m.to == 3)
        .filter_map(|m| match &m.body {
            MessageBody::Append {
                entries,
                prev_index,
                ..
            } if !entries.is_empty() && !refused.contains(prev_index) => Some(entries.len()),
            _ => None,
        })
        .collect();
    let max = net.node(1).config().append_bytes_max;
    for m in &net.delivered[start..] {
        if let Some(bytes) = append_bytes(m) {
            assert!(bytes <= max, "append of {bytes} bytes, limit {max}");
        }
    }
    // 20 commands after the no-op the follower has: six full batches and a rest of two.
    assert_eq!(sizes, vec![3, 3, 3, 3, 3, 3, 2], "batch sizes");

    let limit = net.node(1).config().entry_bytes_max;
    let huge = vec![b'x'; limit as usize + 1];
    let err = net.node_mut(1).propose(huge.into()).unwrap_err();
    assert_eq!(
        err,
        ProposeError::TooLarge {
            size_bytes: limit + 1,
            limit_bytes: limit
        }
    );
    assert!(
        err.to_string()
            .contains(&format!("limit of {limit} bytes (entry_bytes_max)")),
        "{err}"
    );
    // Forwarding from a follower refuses it too, before it crosses the network.
    assert!(matches!(
        net.node_mut(2)
            .propose_or_forward(7, vec![b'x'; limit as usize + 1].into()),
        Err(ProposeError::TooLarge { .. })
    ));
}

/// Entries larger than `append_bytes_max` (up to `entry_bytes_max`) are accepted and
/// each goes alone in an append, even when it is larger than the whole in-flight byte
/// window: the leader sends it when nothing else is in flight and never wedges. Batches
/// of small entries around it stay within `append_bytes_max`.
#[test]
fn an_entry_larger_than_an_append_goes_alone_and_never_wedges_the_window() {
    let append_max = 1_000u64;
    let mut net = Network::builder(3)
        .config(move |c| {
            set_append_bytes_max(c, append_max);
            c.inflight_bytes_max = 4 * append_max;
            c.entry_bytes_max = 64 * 1024;
        })
        .build();
    net.elect(1);
    let big = |tag: u8| vec![tag; 20_000];
    net.propose(1, "small-1");
    net.node_mut(1).propose(big(b'a').into()).unwrap();
    net.propose(1, "small-2");
    net.node_mut(1).propose(big(b'b').into()).unwrap();
    let full = vec![b'c'; 64 * 1024];
    net.node_mut(1).propose(full.into()).unwrap();
    net.propose(1, "small-3");
    let start = net.delivered.len();
    run_until(&mut net, 60, |net| {
        net.ids()
            .iter()
            .all(|&id| net.node(id).commit_index() == 7 && net.applied_data(id).len() >= 6)
    });
    for m in &net.delivered[start..] {
        if let MessageBody::Append { entries, .. } = &m.body {
            let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
            assert!(
                bytes <= append_max || entries.len() == 1,
                "an append of {} entries and {bytes} bytes passes append_bytes_max",
                entries.len()
            );
        }
    }
    assert_converged(&net);
    let applied = net.applied_data(3);
    assert!(applied.iter().any(|d| d.len() == 64 * 1024 && d[0] == b'c'));
}

// ----- leadership transfer and forwarding ------------------------------------------------

/// Leadership transfer (thesis §3.10): the leader brings the target up to date, sends it
/// TimeoutNow, and the target wins at once; proposals are refused meanwhile.
#[test]
fn leadership_transfer_hands_over_to_a_caught_up_target() {
    let mut net = Network::new(3);
    net.elect(1);
    // n3 falls behind, so the leader must first catch it up.
    net.isolate(3);
    net.propose(1, "x");
    net.deliver_all();
    net.heal();
    net.node_mut(1).transfer_leadership(3).unwrap();
    assert_eq!(
        net.node_mut(1).propose(data("y")),
        Err(ProposeError::Transferring)
    );
    net.deliver_all();
    assert_eq!(net.leaders(), vec![3], "\n{}", net.describe());
    assert_eq!(net.term(3), 2);
    assert_eq!(net.node(1).leader(), Some(3));
    net.propose(3, "z");
    net.deliver_all();
    assert_converged(&net);
    assert_eq!(net.applied_data(1), vec![data("x"), data("z")]);
}

/// A transfer to an unreachable target is abandoned after an election timeout, and the
/// leader accepts proposals again.
#[test]
fn leadership_transfer_to_an_unreachable_node_is_abandoned() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(3);
    net.node_mut(1).transfer_leadership(3).unwrap();
    assert_eq!(
        net.node_mut(1).propose(data("y")),
        Err(ProposeError::Transferring)
    );
    let timeout = net.node(1).config().election_timeout_ticks;
    for _ in 0..timeout {
        net.tick(1);
        net.deliver_all();
    }
    assert_eq!(net.role(1), Role::Leader);
    assert!(net.node_mut(1).propose(data("y")).is_ok());
    assert!(matches!(
        net.node_mut(2).transfer_leadership(3),
        Err(ProposeError::NotLeader { leader: Some(1) })
    ));
}

/// Starting a leadership transfer does not postpone check-quorum: a leader cut off from
/// every follower that keeps asking for transfers still steps down within two election
/// timeouts. (It used to restart its check-quorum timer with every transfer request,
/// so one asked for every half timeout led on forever.)
#[test]
fn transfer_requests_do_not_postpone_check_quorum() {
    let mut net = Network::builder(3)
        .config(|c| c.check_quorum = true)
        .build();
    net.elect(1);
    net.isolate(1);
    let timeout = net.node(1).config().election_timeout_ticks;
    let mut ticks = 0;
    while net.role(1) == Role::Leader && ticks < 4 * timeout {
        if ticks % (timeout / 2).max(1) == 0 {
            let _ = net.node_mut(1).transfer_leadership(2);
        }
        net.tick(1);
        net.deliver_all();
        ticks += 1;
    }
    assert_ne!(
        net.role(1),
        Role::Leader,
        "n1 still leads after {ticks} ticks alone"
    );
    assert!(
        ticks <= 2 * timeout,
        "stepped down only after {ticks} ticks"
    );
}

/// A follower forwards a proposal to the leader and hears back where it was placed; the
/// command commits everywhere.
#[test]
fn forwarded_proposals_are_placed_by_the_leader() {
    let mut net = Network::new(3);
    assert_eq!(
        net.node_mut(2).propose_or_forward(1, data("lost")),
        Err(ProposeError::NotLeader { leader: None })
    );
    net.elect(1);
    net.node_mut(2).propose_or_forward(7, data("x")).unwrap();
    net.deliver_all();
    let answers = net.forwarded[&2].clone();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].request_id, 7);
    assert_eq!(answers[0].placed, Some((2, 1)));
    // On the leader itself the answer comes at once.
    net.node_mut(1).propose_or_forward(8, data("y")).unwrap();
    net.deliver_all();
    assert_eq!(net.forwarded[&1][0].placed, Some((3, 1)));
    for id in net.ids() {
        assert_eq!(net.applied_data(id), vec![data("x"), data("y")]);
    }

    // A deposed leader that does not know it yet places a command, which never commits.
    net.isolate(1);
    run_until(&mut net, 100, |net| {
        net.role(2) == Role::Leader || net.role(3) == Role::Leader
    });
    net.node_mut(1).propose_or_forward(9, data("z")).unwrap();
    net.heal();
    run_until(&mut net, 50, |net| {
        net.role(1) == Role::Follower && net.log_entries(1) == net.log_entries(2)
    });
    for id in net.ids() {
        assert!(
            !net.applied_data(id).contains(&data("z")),
            "n{id} applied it"
        );
    }
}

/// A follower's read goes to the leader, which confirms with a heartbeat round and
/// answers with its commit index; a node that is not leader answers None.
#[test]
fn forwarded_reads_are_confirmed_by_the_leader() {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, "x");
    net.deliver_all();
    net.node_mut(2).read_index(5).unwrap();
    net.deliver_all();
    assert_eq!(
        net.read_states[&2],
        vec![ReadState {
            request_id: 5,
            index: Some(2)
        }]
    );

    // A follower asked directly by another follower cannot serve the read.
    net.step(msg(3, 2, 1, MessageBody::ReadIndex { request_id: 6 }));
    net.deliver_all();
    assert_eq!(
        net.read_states[&3],
        vec![ReadState {
            request_id: 6,
            index: None
        }]
    );
}

/// Check-quorum: a follower that heard from its leader less than an election timeout ago
/// ignores (pre-)vote requests for a higher term, unless a leadership transfer asked for
/// the election.
#[test]
fn followers_in_lease_ignore_vote_requests_unless_transferring() {
    let vote = |transfer| MessageBody::Vote {
        last_log_index: 9,
        last_log_term: 9,
        transfer,
    };
    let pre_vote = MessageBody::PreVote {
        last_log_index: 9,
        last_log_term: 9,
    };
    // (request from n3 at term 2, granted)
    let cases = [
        (vote(false), None),
        (pre_vote, None),
        (vote(true), Some(true)),
    ];
    for (body, want) in cases {
        let mut net = Network::new(3);
        net.elect(1);
        let kind = body.kind();
        net.step(msg(3, 2, 2, body));
        let answer = net.take_in_flight().into_iter().find_map(|m| match m.body {
            MessageBody::VoteResponse { granted } | MessageBody::PreVoteResponse { granted } => {
                Some(granted)
            }
            _ => None,
        });
        assert_eq!(answer, want, "{kind}");
        let expected_term = if want.is_some() { 2 } else { 1 };
        assert_eq!(net.term(2), expected_term, "{kind}");
    }

    // Once an election timeout passed without hearing from the leader, it may vote.
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(1);
    for _ in 0..net.node(2).config().election_timeout_ticks {
        net.node_mut(2).tick();
        net.drop_in_flight();
        if net.role(2) != Role::Follower {
            break;
        }
    }
    net.step(msg(3, 2, 2, vote(false)));
    assert!(
        net.take_in_flight()
            .iter()
            .any(|m| m.body == MessageBody::VoteResponse { granted: true }),
        "\n{}",
        net.describe()
    );
}

/// With check-quorum but without pre-vote, a node that was cut off keeps raising its
/// term; when it comes back the leader learns the higher term from its answer to a
/// heartbeat and steps down, so the cluster is not stuck (etcd's
/// TestFreeStuckCandidateWithCheckQuorum). The loner cannot win with its short log.
#[test]
fn stuck_candidate_is_freed_with_check_quorum_alone() {
    let mut net = Network::builder(3).config(|c| c.pre_vote = false).build();
    net.elect(1);
    net.isolate(3);
    net.propose(1, "x");
    for _ in 0..60 {
        net.tick_all();
        net.deliver_all();
    }
    assert!(
        net.term(3) > net.term(1),
        "the loner campaigned:\n{}",
        net.describe()
    );
    net.heal();
    run_until(&mut net, 200, |net| {
        let leaders = net.leaders();
        leaders.len() == 1
            && net
                .ids()
                .iter()
                .all(|id| net.term(*id) == net.term(leaders[0]))
    });
    assert_ne!(net.leaders(), vec![3], "n3 lacks the committed entry");
    net.propose(net.leaders()[0], "y");
    net.deliver_all();
    assert_converged(&net);
}

/// A heartbeat carries at most what the follower is known to match, so a follower holding
/// a stale entry at a committed index never commits it.
#[test]
fn heartbeat_commit_never_exceeds_what_the_follower_matches() {
    let mut net = Network::builder(3)
        .log_terms(1, &[1, 1], 2)
        .log_terms(2, &[1, 1], 2)
        .log_terms(3, &[1, 2], 2)
        .build();
    net.node_mut(1).campaign();
    let hold_appends_to_3 = |m: &raft_core::Message| {
        if m.to == 3 && is(m, "append") {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    };
    net.deliver_all_with(hold_appends_to_3);
    assert_eq!(net.node(1).commit_index(), 3);
    for _ in 0..3 * heartbeat_interval(&net, 1) {
        net.tick(1);
        net.deliver_all_with(hold_appends_to_3);
    }
    assert_eq!(
        net.node(3).commit_index(),
        0,
        "n3 committed its stale entry 2"
    );
    assert!(net.applied[&3].is_empty());
    net.deliver_all();
    run_until(&mut net, 10, |net| net.node(3).commit_index() == 3);
    assert_eq!(net.log_terms(3), vec![1, 1, 3]);
}

/// A leader refuses proposals once `uncommitted_entries_max` entries wait to commit, and
/// accepts them again once they commit.
#[test]
fn proposals_are_refused_while_too_many_entries_are_uncommitted() {
    let mut net = Network::builder(3)
        .config(|c| c.uncommitted_entries_max = 3)
        .build();
    net.elect(1);
    net.isolate(1);
    for i in 0..3 {
        net.propose(1, &format!("c{i}"));
    }
    assert_eq!(
        net.node_mut(1).propose(data("too many")),
        Err(ProposeError::Busy(3))
    );
    net.heal();
    net.drop_in_flight();
    run_until(&mut net, 20, |net| net.node(1).commit_index() == 4);
    assert!(net.node_mut(1).propose(data("again")).is_ok());
}

/// Messages from oneself or addressed to another node change nothing. (Messages from
/// nodes outside the configuration are handled: a node joining the cluster hears from a
/// leader its configuration does not list yet; see `membership.rs`.)
#[test]
fn misaddressed_messages_are_ignored() {
    let heartbeat = MessageBody::Heartbeat {
        commit: 0,
        read_round: 0,
    };
    for m in [
        msg(0, 1, 5, heartbeat.clone()),
        msg(1, 1, 5, heartbeat.clone()),
        msg(2, 3, 5, heartbeat),
    ] {
        let mut node = lone_node(1, &[1, 2, 3], raft_core::MemLog::new(), |_| {});
        node.step(m.clone());
        assert_eq!((node.term(), node.leader()), (0, None), "{m:?}");
        assert!(drain_messages(&mut node).is_empty(), "{m:?}");
    }
}

/// A lease rests on the followers that acknowledged the leader refusing votes for an
/// election timeout. A follower that restarts forgets that it heard from the leader and
/// would vote at once, so a node that missed the lease round could be elected while the
/// old leader still serves lease reads. Fixed: under lease reads, a restarted node refuses
/// votes for its first election timeout.
#[test]
fn lease_survives_a_follower_restart() {
    let mut net = Network::builder(3).config(lease_config).build();
    net.elect(1);
    // n2 stops hearing from n1 and, as a pre-candidate, keeps asking n3, which refuses
    // while n1's heartbeats keep reaching it.
    net.cut(1, 2);
    let mut tick = 0;
    while net.role(2) == Role::Follower {
        net.tick_all();
        net.deliver_all();
        tick += 1;
        assert!(tick < 100);
    }
    // Just before n2 asks again, n3 crashes and restarts (right after acknowledging a
    // heartbeat), and n1 is cut off.
    for _ in 1..net.node(2).randomized_election_timeout() {
        net.tick_all();
        net.deliver_all();
    }
    net.restart(3, 7);
    net.isolate(1);
    let commit = net.node(1).commit_index();
    for tick in 0..40 {
        net.tick_all();
        net.deliver_all();
        if net.role(2) == Role::Leader && net.node(2).commit_index() == commit + 1 {
            net.propose(2, "w");
            net.deliver_all();
        }
        if net.node(2).commit_index() > commit + 1 {
            assert_eq!(
                lease_read(&mut net, 1, tick),
                None,
                "tick {tick}: stale lease read while n2 committed past {commit}"
            );
        }
    }
}
