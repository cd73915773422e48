//! One test per claim of the Raft paper (Ongaro and Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", sections 5.1 to 5.4). Each test names its section.
//!
//! Unless a test says otherwise, nodes run the plain Raft of §5 ([`paper_config`]: no
//! pre-vote, no check-quorum), so the claims are tested as the paper states them.

// Table tests read best as slices of tuples, one row per case.
#![allow(clippy::type_complexity)]

mod common;

use bytes::Bytes;
use common::*;
use raft_core::{
    Config, Entry, EntryKind, HardState, LogIndex, MemLog, Message, MessageBody, NodeId, Role, Term,
};

/// A node of a 3-node cluster in `role` at `term`, outside any network, its ready drained.
fn node_in_role(role: Role, term: Term) -> Node {
    match role {
        Role::Follower => lone_node(
            1,
            &[1, 2, 3],
            preloaded_log(&[], at_term(term)),
            paper_config,
        ),
        Role::Candidate => {
            let mut n = lone_node(
                1,
                &[1, 2, 3],
                preloaded_log(&[], at_term(term - 1)),
                paper_config,
            );
            n.campaign();
            drain_messages(&mut n);
            assert_eq!((n.role(), n.term()), (Role::Candidate, term));
            n
        }
        Role::Leader => {
            let mut n = node_in_role(Role::Candidate, term);
            n.step(vote_response(2, 1, term, true));
            drain_messages(&mut n);
            assert_eq!((n.role(), n.term()), (Role::Leader, term));
            n
        }
        Role::PreCandidate => unreachable!("not in the paper"),
    }
}

fn vote_response(from: NodeId, to: NodeId, term: Term, granted: bool) -> Message {
    msg(from, to, term, MessageBody::VoteResponse { granted })
}

fn vote_request(from: NodeId, to: NodeId, term: Term, last: (LogIndex, Term)) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::Vote {
            last_log_index: last.0,
            last_log_term: last.1,
            transfer: false,
        },
    )
}

/// The votes granted (true) or refused (false) in `msgs`, by receiver.
fn vote_answers(msgs: &[Message]) -> Vec<(NodeId, bool)> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted } => Some((m.to, granted)),
            _ => None,
        })
        .collect()
}

// ----- §5.1 ------------------------------------------------------------------------------

/// "If one server's current term is smaller than the other's, then it updates its current
/// term to the larger value. If a candidate or leader discovers that its term is out of
/// date, it immediately reverts to follower state." §5.1
#[test]
fn any_message_with_a_larger_term_updates_the_term_and_reverts_to_follower() {
    let bodies = [
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        },
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
        // Up to date with any of the nodes' logs, so the vote is granted.
        MessageBody::Vote {
            last_log_index: 9,
            last_log_term: 9,
            transfer: false,
        },
        MessageBody::VoteResponse { granted: false },
        MessageBody::AppendResponse {
            index: 0,
            reject: None,
        },
        MessageBody::HeartbeatResponse {
            read_round: 0,
            last_index: 0,
        },
    ];
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        for body in &bodies {
            let mut node = node_in_role(role, 2);
            node.step(msg(2, 1, 5, body.clone()));
            let context = format!("{role:?} receiving {} at term 5", body.kind());
            assert_eq!(node.term(), 5, "{context}");
            assert_eq!(node.role(), Role::Follower, "{context}");
            // Only a message from a leader tells who leads the new term.
            let from_leader = matches!(
                body,
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
            );
            let expected_leader = if from_leader { Some(2) } else { None };
            assert_eq!(node.leader(), expected_leader, "{context}");
            // A vote from an older term does not carry over; only the vote request
            // itself may have been granted in the new term.
            let expected_vote = if matches!(body, MessageBody::Vote { .. }) {
                Some(2)
            } else {
                None
            };
            assert_eq!(node.vote(), expected_vote, "{context}");
        }
    }
}

/// "If a server receives a request with a stale term number, it rejects the request." The
/// stale sender is told the newer term so it can update (Figure 2: "currentTerm, for
/// leader to update itself", and for the candidate to update itself): appends,
/// heartbeats and vote requests are each answered at our term. §5.1
#[test]
fn requests_with_a_stale_term_are_rejected() {
    for config in [paper_config as fn(&mut Config), |_: &mut Config| {}] {
        let mut node = lone_node(1, &[1, 2, 3], preloaded_log(&[1, 1], at_term(3)), config);
        let stale = [
            append(2, 1, 2, (2, 1), vec![entry(3, 2)], 3),
            msg(
                2,
                1,
                2,
                MessageBody::Heartbeat {
                    commit: 2,
                    read_round: 1,
                },
            ),
            vote_request(2, 1, 2, (9, 2)),
        ];
        for m in stale {
            let kind = m.body.kind();
            node.step(m);
            let replies = drain_messages(&mut node);
            assert_eq!(node.term(), 3, "{kind}");
            assert_eq!(node.role(), Role::Follower, "{kind}");
            assert_eq!(node.leader(), None, "{kind}: a stale leader was accepted");
            assert_eq!(node.vote(), None, "{kind}: a stale candidate got a vote");
            assert_eq!(node.last_index(), 2, "{kind}: a stale append was accepted");
            assert_eq!(
                node.commit_index(),
                0,
                "{kind}: a stale commit was accepted"
            );
            // Answered, not ignored: a candidate that is never told keeps campaigning
            // below our term (the simulator's membership seed 891).
            assert_eq!(
                replies.len(),
                1,
                "{kind}: the stale sender is told: {replies:?}"
            );
            for r in &replies {
                assert_eq!(
                    r.term, 3,
                    "{kind}: a reply must carry our newer term: {r:?}"
                );
                assert!(
                    !matches!(r.body, MessageBody::VoteResponse { granted: true }),
                    "{kind}: granted a stale vote"
                );
            }
        }
    }
}

// ----- §5.2 ------------------------------------------------------------------------------

/// "When servers start up, they begin as followers", and a restarted server resumes its
/// persisted term and vote. §5.2
#[test]
fn servers_start_as_followers() {
    let fresh = lone_node(1, &[1, 2, 3], MemLog::new(), |_| {});
    assert_eq!(
        (fresh.role(), fresh.term(), fresh.leader(), fresh.vote()),
        (Role::Follower, 0, None, None)
    );

    let stored = HardState {
        term: 5,
        vote: Some(2),
        commit: 1,
    };
    let restarted = lone_node(1, &[1, 2, 3], preloaded_log(&[1, 3], stored), |_| {});
    assert_eq!(
        (restarted.role(), restarted.term(), restarted.vote()),
        (Role::Follower, 5, Some(2))
    );
    assert_eq!(restarted.commit_index(), 1);
}

/// "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to
/// all followers in order to maintain their authority." §5.2
#[test]
fn leader_sends_heartbeats_to_every_follower_each_interval() {
    let mut net = Network::builder(3).config(paper_config).build();
    net.elect(1);
    net.drop_in_flight();
    let interval = net.node(1).config().heartbeat_interval_ticks;
    let commit = net.node(1).commit_index();
    for round in 0..3 {
        for _ in 1..interval {
            net.tick(1);
            assert!(
                net.take_in_flight().is_empty(),
                "heartbeat before the interval"
            );
        }
        net.tick(1);
        let mut heartbeats: Vec<(NodeId, Term, LogIndex)> = net
            .take_in_flight()
            .into_iter()
            .map(|m| match m.body {
                MessageBody::Heartbeat { commit, .. } => (m.to, m.term, commit),
                other => panic!("round {round}: expected only heartbeats, got {other:?}"),
            })
            .collect();
        heartbeats.sort();
        assert_eq!(
            heartbeats,
            vec![(2, 1, commit), (3, 1, commit)],
            "round {round}"
        );
    }
}

/// "If a follower receives no communication over a period of time called the election
/// timeout, then it assumes there is no viable leader and begins an election": it
/// increments its term, votes for itself and asks every other server for its vote. §5.2
#[test]
fn follower_starts_an_election_when_its_timeout_fires() {
    let mut node = lone_node(
        1,
        &[1, 2, 3],
        preloaded_log(&[1, 2], at_term(2)),
        paper_config,
    );
    let timeout = node.randomized_election_timeout();
    for _ in 1..timeout {
        node.tick();
    }
    assert_eq!(node.role(), Role::Follower, "campaigned before its timeout");
    node.tick();
    assert_eq!(
        (node.role(), node.term(), node.vote()),
        (Role::Candidate, 3, Some(1))
    );
    let mut requests: Vec<Message> = drain_messages(&mut node);
    requests.sort_by_key(|m| m.to);
    assert_eq!(
        requests,
        vec![vote_request(1, 2, 3, (2, 2)), vote_request(1, 3, 3, (2, 2))]
    );
}

/// With pre-vote (thesis §9.6) the follower first asks whether it could win, at the term
/// it would use, without raising its own term or voting. §5.2
#[test]
fn follower_with_pre_vote_asks_before_raising_its_term() {
    let mut node = lone_node(1, &[1, 2, 3], preloaded_log(&[1, 2], at_term(2)), |_| {});
    for _ in 0..node.randomized_election_timeout() {
        node.tick();
    }
    assert_eq!(
        (node.role(), node.term(), node.vote()),
        (Role::PreCandidate, 2, None)
    );
    let msgs = drain_messages(&mut node);
    assert_eq!(msgs.len(), 2);
    for m in msgs {
        assert_eq!(m.term, 3, "a pre-vote asks about the next term");
        assert_eq!(
            m.body,
            MessageBody::PreVote {
                last_log_index: 2,
                last_log_term: 2
            }
        );
    }
}

/// "If many followers become candidates at the same time, votes could be split so that
/// no candidate obtains a majority. When this happens, each candidate will time out and
/// start a new election by incrementing its term." §5.2
#[test]
fn candidate_starts_a_new_election_when_its_timeout_fires() {
    let mut node = node_in_role(Role::Candidate, 1);
    for round in 2..6 {
        for _ in 1..node.randomized_election_timeout() {
            node.tick();
        }
        assert_eq!(node.term(), round - 1, "restarted before its timeout");
        node.tick();
        assert_eq!(
            (node.role(), node.term(), node.vote()),
            (Role::Candidate, round, Some(1))
        );
        let msgs = drain_messages(&mut node);
        assert_eq!(
            msgs.iter()
                .filter(|m| is(m, "vote") && m.term == round)
                .count(),
            2,
            "round {round}: {msgs:?}"
        );
    }
}

/// "A candidate wins an election if it receives votes from a majority of the servers in
/// the full cluster for the same term"; it loses once a majority refused; otherwise the
/// election is still open. §5.2
#[test]
fn election_is_won_lost_or_undecided_after_one_round() {
    // (cluster size, answers to node 1's vote requests, role after the round)
    let cases: &[(u64, &[(NodeId, bool)], Role)] = &[
        // A single node elects itself.
        (1, &[], Role::Leader),
        // A majority granted: won.
        (3, &[(2, true)], Role::Leader),
        (3, &[(2, true), (3, true)], Role::Leader),
        (3, &[(2, false), (3, true)], Role::Leader),
        (5, &[(2, true), (3, true)], Role::Leader),
        (
            5,
            &[(2, true), (3, true), (4, false), (5, false)],
            Role::Leader,
        ),
        // A majority refused: lost, back to follower.
        (3, &[(2, false), (3, false)], Role::Follower),
        (5, &[(2, false), (3, false), (4, false)], Role::Follower),
        // Neither yet: still a candidate.
        (3, &[], Role::Candidate),
        (3, &[(2, false)], Role::Candidate),
        (5, &[(2, true)], Role::Candidate),
        (5, &[(2, true), (3, false), (4, false)], Role::Candidate),
    ];
    for (size, answers, want) in cases {
        let voters: Vec<NodeId> = (1..=*size).collect();
        let mut node = lone_node(1, &voters, MemLog::new(), paper_config);
        node.campaign();
        let requests = drain_messages(&mut node);
        assert_eq!(requests.len() as u64, size - 1, "one request per peer");
        for &(from, granted) in *answers {
            node.step(vote_response(from, 1, 1, granted));
        }
        assert_eq!(node.role(), *want, "size {size}, answers {answers:?}");
        assert_eq!(node.term(), 1, "size {size}, answers {answers:?}");
    }
}

/// A split vote: two candidates of the same term each get half the votes, neither wins,
/// and each starts a new election with a higher term when its timeout fires. §5.2
#[test]
fn split_vote_leaves_no_leader_and_a_new_term_follows() {
    let mut net = Network::builder(4).config(paper_config).build();
    net.node_mut(1).campaign();
    net.node_mut(3).campaign();
    // n2 hears from n1 first and n4 from n3 first; then the other requests arrive.
    let mut first: Vec<Message> = Vec::new();
    let mut later: Vec<Message> = Vec::new();
    for m in net.take_in_flight() {
        if (m.from, m.to) == (1, 2) || (m.from, m.to) == (3, 4) || m.to == 1 || m.to == 3 {
            first.push(m);
        } else {
            later.push(m);
        }
    }
    for m in first.into_iter().chain(later) {
        net.step(m);
    }
    net.deliver_all();
    assert_eq!(net.role(1), Role::Candidate, "\n{}", net.describe());
    assert_eq!(net.role(3), Role::Candidate, "\n{}", net.describe());
    assert!(net.leaders().is_empty());
    assert_eq!((net.node(2).vote(), net.node(4).vote()), (Some(1), Some(3)));

    // Whoever times out first starts term 2 and wins it.
    for _ in 0..40 {
        net.tick_all();
        net.deliver_all();
        if !net.leaders().is_empty() {
            break;
        }
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "\n{}", net.describe());
    assert!(net.term(leaders[0]) >= 2);
}

/// "Each server will vote for at most one candidate in a given term, on a first-come-
/// first-served basis." Asking again for the same candidate gets the same answer. §5.2
#[test]
fn at_most_one_vote_per_term() {
    // (vote already cast in term 1, candidate asking in term 1, granted)
    let cases: &[(Option<NodeId>, NodeId, bool)] = &[
        // No vote yet: first come, first served.
        (None, 1, true),
        (None, 2, true),
        // Already voted: only the same candidate gets it (again).
        (Some(1), 1, true),
        (Some(1), 2, false),
        (Some(2), 1, false),
        (Some(2), 2, true),
    ];
    for &(voted, candidate, want) in cases {
        let stored = HardState {
            term: 1,
            vote: voted,
            commit: 0,
        };
        let mut node = lone_node(3, &[1, 2, 3], preloaded_log(&[], stored), paper_config);
        node.step(vote_request(candidate, 3, 1, (0, 0)));
        let answers = vote_answers(&drain_messages(&mut node));
        assert_eq!(
            answers,
            vec![(candidate, want)],
            "voted {voted:?}, asked by n{candidate}"
        );
        // A granted vote is recorded; a refusal leaves the earlier vote as it was.
        assert_eq!(node.vote(), voted.or(Some(candidate)), "voted {voted:?}");
    }
}

/// The vote is in the hard state of the very ready that carries the granted answer, so
/// the driver makes it durable before the answer is sent (Figure 2: "Persistent state
/// ... updated on stable storage before responding to RPCs"). §5.2
#[test]
fn vote_is_persisted_in_the_same_ready_that_sends_it() {
    let mut voter = lone_node(2, &[1, 2, 3], MemLog::new(), paper_config);
    voter.step(vote_request(1, 2, 1, (0, 0)));
    let ready = voter.ready();
    assert!(
        ready
            .messages
            .iter()
            .any(|m| m.body == MessageBody::VoteResponse { granted: true }),
        "{ready:?}"
    );
    let hs = ready
        .hard_state
        .expect("the vote must be persisted with the answer");
    assert_eq!((hs.term, hs.vote), (1, Some(1)));
    assert!(ready.must_sync());
    voter.advance(ready);

    // The candidate's vote for itself travels with its requests the same way.
    let mut candidate = lone_node(1, &[1, 2, 3], MemLog::new(), paper_config);
    candidate.campaign();
    let ready = candidate.ready();
    assert_eq!(ready.messages.iter().filter(|m| is(m, "vote")).count(), 2);
    let hs = ready
        .hard_state
        .expect("the self-vote must be persisted with the requests");
    assert_eq!((hs.term, hs.vote), (1, Some(1)));
    candidate.advance(ready);
}

/// "While waiting for votes, a candidate may receive an AppendEntries RPC from another
/// server claiming to be leader. If the leader's term is at least as large as the
/// candidate's current term, then the candidate recognizes the leader as legitimate and
/// returns to follower state. If the term in the RPC is smaller than the candidate's
/// current term, then the candidate rejects the RPC and continues in candidate state." §5.2
#[test]
fn candidate_falls_back_to_follower_on_a_valid_leader() {
    // (message from n2 at term, role after, leader after)
    let heartbeat = |term| {
        msg(
            2,
            1,
            term,
            MessageBody::Heartbeat {
                commit: 0,
                read_round: 0,
            },
        )
    };
    let cases: Vec<(Message, Role, Option<NodeId>)> = vec![
        // Same term: a legitimate leader.
        (append(2, 1, 2, (0, 0), vec![], 0), Role::Follower, Some(2)),
        (heartbeat(2), Role::Follower, Some(2)),
        // Larger term: legitimate too.
        (append(2, 1, 3, (0, 0), vec![], 0), Role::Follower, Some(2)),
        // Smaller term: rejected, still campaigning.
        (append(2, 1, 1, (0, 0), vec![], 0), Role::Candidate, None),
        (heartbeat(1), Role::Candidate, None),
    ];
    for (m, role, leader) in cases {
        let mut node = node_in_role(Role::Candidate, 2);
        let context = format!("{} at term {}", m.body.kind(), m.term);
        node.step(m);
        assert_eq!((node.role(), node.leader()), (role, leader), "{context}");
    }
}

/// "Raft uses randomized election timeouts ... chosen randomly from a fixed interval":
/// here [T, 2T), drawn afresh each time the timer is reset. §5.2
#[test]
fn election_timeouts_are_random_in_t_to_2t() {
    let t = Config::default().election_timeout_ticks;
    let mut node = lone_node(1, &[1, 2, 3], MemLog::new(), paper_config);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        // Measure the timeout by ticking until the node campaigns (again).
        let term = node.term();
        let mut ticks = 0;
        while node.term() == term {
            node.tick();
            ticks += 1;
            assert!(ticks < 2 * t, "no campaign after {ticks} ticks");
        }
        drain_messages(&mut node);
        assert!((t..2 * t).contains(&ticks), "timed out after {ticks} ticks");
        seen.insert(ticks);
    }
    assert!(
        seen.len() >= t as usize / 2,
        "timeouts barely vary: {seen:?}"
    );
}

/// Randomized timeouts spread the servers out "so that in most cases only a single server
/// will time out": nodes sharing a seed still draw different timeouts, and the first
/// timeout of a 5-node cluster is rarely shared. §5.2
#[test]
fn election_timeouts_rarely_conflict_across_nodes() {
    let runs = 1000;
    let mut conflicts = 0;
    let mut all_equal = 0;
    for seed in 0..runs {
        let timeouts: Vec<u32> = (1..=5)
            .map(|id| {
                let config = Config {
                    id,
                    ..Config::new(id, 1..=5)
                };
                raft_core::Raft::new(config, MemLog::new(), seed)
                    .unwrap()
                    .randomized_election_timeout()
            })
            .collect();
        let first = *timeouts.iter().min().unwrap();
        if timeouts.iter().filter(|t| **t == first).count() > 1 {
            conflicts += 1;
        }
        if timeouts.iter().all(|t| *t == first) {
            all_equal += 1;
        }
    }
    // Independent uniform draws from 10 values collide at the minimum ~23% of the time.
    assert!(
        conflicts * 10 <= runs * 3,
        "{conflicts} of {runs} runs had a conflict"
    );
    assert!(
        all_equal * 100 <= runs,
        "{all_equal} of {runs} runs had identical timeouts"
    );
}

// ----- §5.3 ------------------------------------------------------------------------------

/// "Once a leader has been elected, it begins servicing client requests ... The leader
/// appends the command to its log as a new entry, then issues AppendEntries RPCs in
/// parallel to each of the other servers to replicate the entry." §5.3
#[test]
fn leader_appends_a_proposal_and_sends_it_to_every_follower() {
    let mut net = Network::builder(3).config(paper_config).build();
    net.elect(1);
    let (index, term) = net.propose(1, "x");
    assert_eq!((index, term), (2, 1), "after the leader's no-op at 1");
    assert_eq!(net.node(1).last_index(), 2);
    let mut appends: Vec<(NodeId, LogIndex, Term, Vec<Entry>)> = net
        .take_in_flight()
        .into_iter()
        .map(|m| match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                ..
            } => (m.to, prev_index, prev_term, entries),
            other => panic!("expected appends only: {other:?}"),
        })
        .collect();
    appends.sort_by_key(|a| a.0);
    let x = Entry {
        term: 1,
        index: 2,
        kind: EntryKind::Command,
        data: Bytes::from_static(b"x"),
    };
    assert_eq!(
        appends,
        vec![(2, 1, 1, vec![x.clone()]), (3, 1, 1, vec![x])]
    );
}

/// "A log entry is committed once the leader that created the entry has replicated it on
/// a majority of the servers", and the leader applies it then. §5.3
#[test]
fn leader_commits_once_a_majority_has_the_entry() {
    // (cluster size, followers that receive the append, committed)
    let cases: &[(u64, &[NodeId], bool)] = &[
        (1, &[], true),
        // 3 nodes: the leader and one follower are a majority.
        (3, &[], false),
        (3, &[2], true),
        (3, &[2, 3], true),
        // 5 nodes: the leader and two followers are needed.
        (5, &[], false),
        (5, &[2], false),
        (5, &[2, 3], true),
        (5, &[2, 3, 4], true),
    ];
    for &(size, acceptors, want) in cases {
        let mut net = Network::builder(size).config(paper_config).build();
        net.elect(1);
        let (index, _) = net.propose(1, "x");
        net.deliver_all_with(|m| {
            if is(m, "append") && !acceptors.contains(&m.to) {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        let committed = net.node(1).commit_index() >= index;
        assert_eq!(committed, want, "size {size}, acceptors {acceptors:?}");
        assert_eq!(
            net.applied_data(1).contains(&Bytes::from_static(b"x")),
            want,
            "size {size}, acceptors {acceptors:?}: applied iff committed"
        );
    }
}

/// "This also commits all preceding entries in the leader's log, including entries
/// created by previous leaders." §5.3
#[test]
fn committing_an_entry_commits_all_preceding_ones() {
    // (leader's log terms before the election, the followers' logs)
    let cases: &[(&[Term], &[Term])] = &[
        (&[], &[]),
        (&[1], &[]),
        (&[1, 1], &[1]),
        (&[1, 2], &[1]),
        (&[1, 1, 2, 2, 3], &[1, 1, 2]),
    ];
    for &(leader_log, follower_log) in cases {
        let term = leader_log.last().copied().unwrap_or(0);
        let mut net = Network::builder(3)
            .config(paper_config)
            .log_terms(1, leader_log, term)
            .log_terms(2, follower_log, term)
            .log_terms(3, follower_log, term)
            .build();
        net.elect(1);
        let last = leader_log.len() as LogIndex + 1;
        assert_eq!(
            net.node(1).commit_index(),
            last,
            "leader log {leader_log:?}"
        );
        let applied: Vec<Term> = net.applied[&1].iter().map(|e| e.term).collect();
        let mut expected = leader_log.to_vec();
        expected.push(term + 1);
        assert_eq!(applied, expected, "leader log {leader_log:?}");
    }
}

/// "Once a follower learns that a log entry is committed, it applies the entry to its
/// local state machine": followers learn the commit index from appends (bounded by what
/// the append proved matches) and from heartbeats. §5.3
#[test]
fn follower_commits_what_the_leader_has_committed() {
    // (follower log, append (prev, entries), leader commit, follower commit after)
    let cases: &[(&[Term], (LogIndex, Term), &[Term], LogIndex, LogIndex)] = &[
        // Commit up to the leader's, within the entries the append brought.
        (&[], (0, 0), &[1, 1], 1, 1),
        (&[], (0, 0), &[1, 1], 2, 2),
        // Never beyond the last entry the append proved matches (the rest may conflict).
        (&[], (0, 0), &[1], 5, 1),
        (&[1, 1, 1], (1, 1), &[], 3, 1),
        (&[1, 1, 1], (1, 1), &[1], 3, 2),
    ];
    for &(log, prev, new, leader_commit, want) in cases {
        let mut node = lone_node(2, &[1, 2, 3], preloaded_log(log, at_term(1)), paper_config);
        let entries: Vec<Entry> = new
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(prev.0 + 1 + i as LogIndex, t))
            .collect();
        node.step(append(1, 2, 1, prev, entries, leader_commit));
        drain_messages(&mut node);
        assert_eq!(
            node.commit_index(),
            want,
            "log {log:?}, append after {prev:?} of {new:?}, commit {leader_commit}"
        );
    }

    // A heartbeat carries the commit index too.
    let mut net = Network::builder(3).config(paper_config).build();
    net.elect(1);
    net.propose(1, "x");
    // The followers get the entry, but the leader's commit broadcast is lost.
    net.deliver_round_with(|_| Fate::Deliver);
    net.deliver_round_with(|_| Fate::Deliver);
    net.drop_in_flight();
    assert_eq!(net.node(1).commit_index(), 2);
    assert_eq!(net.node(2).commit_index(), 1);
    for _ in 0..net.node(1).config().heartbeat_interval_ticks {
        net.tick(1);
    }
    net.deliver_round_with(|_| Fate::Deliver);
    assert_eq!(
        (net.node(2).commit_index(), net.node(3).commit_index()),
        (2, 2)
    );
    assert_eq!(net.applied_data(2), vec![Bytes::from_static(b"x")]);
}

/// "When sending an AppendEntries RPC, the leader includes the index and term of the entry
/// in its log that immediately precedes the new entries. If the follower does not find an
/// entry in its log with the same index and term, then it refuses the new entries." §5.3
#[test]
fn follower_refuses_an_append_whose_previous_entry_does_not_match() {
    // Follower log: terms [1, 2], commit 1. (prev index, prev term, accepted, reply index)
    let cases: &[(LogIndex, Term, bool, LogIndex)] = &[
        // The empty log's sentinel and committed entries always match.
        (0, 0, true, 1),
        (1, 1, true, 1),
        (2, 2, true, 2),
        // Wrong term at an existing index.
        (2, 1, false, 2),
        (2, 3, false, 2),
        // Past the end of the follower's log.
        (3, 2, false, 3),
        (5, 2, false, 5),
    ];
    for &(prev_index, prev_term, accepted, reply) in cases {
        let stored = HardState {
            term: 2,
            vote: None,
            commit: 1,
        };
        let mut node = lone_node(2, &[1, 2, 3], preloaded_log(&[1, 2], stored), paper_config);
        node.step(append(1, 2, 2, (prev_index, prev_term), vec![], 1));
        let replies = drain_messages(&mut node);
        let context = format!("append after {prev_index}@{prev_term}");
        assert_eq!(replies.len(), 1, "{context}: {replies:?}");
        match &replies[0].body {
            MessageBody::AppendResponse { index, reject } => {
                assert_eq!(reject.is_none(), accepted, "{context}: {reject:?}");
                assert_eq!(*index, reply, "{context}");
            }
            other => panic!("{context}: unexpected reply {other:?}"),
        }
        assert_eq!(node.last_index(), 2, "{context}: the log changed");
    }
}

/// "To bring a follower's log into consistency with its own, the leader must find the
/// latest log entry where the two logs agree, delete any entries in the follower's log
/// after that point, and send the follower all of the leader's entries after that point."
/// Each of the follower logs (a) to (f) of Figure 7 converges to the leader's. §5.3
#[test]
fn figure_7_every_follower_log_converges_to_the_leaders() {
    let leader_log: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: &[(&str, &[Term])] = &[
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for &(name, follower_log) in followers {
        // The leader of term 8 (n1), the follower (n2) and an empty node (n3) whose vote
        // the leader needs when the follower's log is more up to date than its own.
        let follower_term = follower_log.last().copied().unwrap();
        let mut net = Network::builder(3)
            .config(paper_config)
            .log_terms(1, leader_log, 7)
            .log_terms(2, follower_log, follower_term)
            .build();
        net.elect(1);
        assert_eq!(net.term(1), 8);
        let mut expected = leader_log.to_vec();
        expected.push(8); // the new leader's no-op
        assert_eq!(net.log_terms(2), expected, "follower ({name})");
        assert_eq!(net.log_entries(2), net.log_entries(1), "follower ({name})");
        // The follower learns the commit index at the latest with the next heartbeat.
        for _ in 0..net.node(1).config().heartbeat_interval_ticks {
            net.tick(1);
        }
        net.deliver_all();
        assert_eq!(net.node(2).commit_index(), 11, "follower ({name})");
    }
}

// ----- §5.4 ------------------------------------------------------------------------------

/// "The voter denies its vote if its own log is more up-to-date than that of the
/// candidate ... If the logs have last entries with different terms, then the log with the
/// later term is more up-to-date. If the logs end with the same term, then whichever log
/// is longer is more up-to-date." §5.4.1
#[test]
fn vote_goes_only_to_a_candidate_at_least_as_up_to_date() {
    // (voter's log terms, candidate's last index and last term, granted)
    let cases: &[(&[Term], LogIndex, Term, bool)] = &[
        // Same last term: the longer (or equal) log wins.
        (&[1, 1], 1, 1, false),
        (&[1, 1], 2, 1, true),
        (&[1, 1], 3, 1, true),
        // A later last term wins whatever the length.
        (&[1, 1], 1, 2, true),
        (&[1, 1], 5, 2, true),
        // An earlier last term loses whatever the length.
        (&[1, 2], 1, 1, false),
        (&[1, 2], 2, 1, false),
        (&[1, 2], 9, 1, false),
        // An empty voter log votes for anyone.
        (&[], 0, 0, true),
        (&[], 3, 2, true),
        // An empty candidate log gets no vote from a voter with entries.
        (&[1], 0, 0, false),
    ];
    for &(log, last_index, last_term, want) in cases {
        let mut voter = lone_node(2, &[1, 2, 3], preloaded_log(log, at_term(2)), paper_config);
        voter.step(vote_request(1, 2, 3, (last_index, last_term)));
        let answers = vote_answers(&drain_messages(&mut voter));
        assert_eq!(
            answers,
            vec![(1, want)],
            "voter log {log:?}, candidate last {last_index}@{last_term}"
        );
    }
}

/// State (b) of Figure 8: S1 has entry 2 of term 2, S5 entry 2 of term 3.
fn figure_8_b() -> Network {
    Network::builder(5)
        .config(|c| {
            paper_config(c);
            // One entry per append, so S1's no-op can be held back.
            set_append_bytes_max(c, Entry::OVERHEAD_BYTES);
            c.inflight_bytes_max = 1024;
        })
        .log_terms(1, &[1, 2], 3)
        .log_terms(2, &[1], 3)
        .log_terms(3, &[1], 3)
        .log_terms(4, &[1], 3)
        // S5 saw term 4 start too (it will campaign for term 5 in (d)).
        .log_terms(5, &[1, 3], 4)
        .build()
}

/// From (b) to (c): S1 leads term 4 and gets entry 2 (term 2) onto S2 and S3, but not
/// its own no-op at 3.
fn figure_8_b_to_c(net: &mut Network) {
    net.isolate(5);
    net.cut(1, 4);
    net.node_mut(1).campaign();
    let mut probed = std::collections::BTreeSet::new();
    net.deliver_all_with(|m| {
        // S2 and S3 refuse the first probe (after index 2, which they lack); after that
        // only entry 2 reaches them, never the no-op at 3.
        let carries_noop = matches!(&m.body, MessageBody::Append { entries, .. }
            if entries.iter().any(|e| e.index == 3));
        if carries_noop && !probed.insert(m.to) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    assert_eq!(net.role(1), Role::Leader);
    assert_eq!(net.term(1), 4);
    for id in [1, 2, 3] {
        assert_eq!(net.log_terms(id)[..2], [1, 2], "S{id}:\n{}", net.describe());
    }
}

/// Figure 8: "a leader cannot immediately conclude that an entry from a previous term is
/// committed once it is stored on a majority of servers." S1 (leader of term 4) gets its
/// term-2 entry onto a majority, but must not commit it: S5 can still be elected and
/// overwrite it. Once S1 replicates an entry of its own term, both commit. §5.4.2
#[test]
fn figure_8_entries_of_older_terms_are_not_committed_by_counting_replicas() {
    // (c): S1 leads term 4 and gets entry 2 (term 2) onto S2 and S3, but not its no-op.
    let mut net = figure_8_b();
    figure_8_b_to_c(&mut net);
    assert_eq!(
        net.node(1).commit_index(),
        0,
        "entry 2 of term 2 is on a majority but must not be committed:\n{}",
        net.describe()
    );
    assert!(net.applied[&1].is_empty());

    // (d): S1 crashes; S5 is elected with votes from S2, S3 and S4 and overwrites entry 2.
    net.drop_in_flight();
    net.heal();
    net.isolate(1);
    net.node_mut(5).campaign();
    net.deliver_all();
    assert_eq!(net.role(5), Role::Leader, "\n{}", net.describe());
    for id in [2, 3, 4, 5] {
        assert_eq!(
            net.log_terms(id),
            vec![1, 3, 5],
            "S{id}:\n{}",
            net.describe()
        );
    }
    assert_eq!(net.node(5).commit_index(), 3);

    // (e): instead, S1 gets an entry of its own term onto a majority: both commit.
    let mut net = figure_8_b();
    net.isolate(5);
    net.cut(1, 4);
    net.elect(1);
    assert_eq!(net.log_terms(2), vec![1, 2, 4]);
    assert_eq!(net.node(1).commit_index(), 3, "\n{}", net.describe());
    let applied: Vec<Term> = net.applied[&1].iter().map(|e| e.term).collect();
    assert_eq!(applied, vec![1, 2, 4]);
}

/// "Raft never commits log entries from previous terms by counting replicas. Only log
/// entries from the leader's current term are committed by counting replicas." §5.4.2
#[test]
fn leader_commits_only_by_counting_entries_of_its_own_term() {
    // (leader log before election, index the follower acknowledges, leader commit after)
    let cases: &[(&[Term], LogIndex, LogIndex)] = &[
        // The follower acknowledges only older-term entries: nothing commits.
        (&[1, 1], 1, 0),
        (&[1, 1], 2, 0),
        // It acknowledges the new leader's no-op (index 3, term 3): all commit.
        (&[1, 1], 3, 3),
        (&[1, 2], 2, 0),
        (&[1, 2], 3, 3),
    ];
    for &(log, acked, want) in cases {
        let mut leader = lone_node(1, &[1, 2, 3], preloaded_log(log, at_term(2)), paper_config);
        leader.campaign();
        drain_messages(&mut leader);
        leader.step(vote_response(2, 1, 3, true));
        drain_messages(&mut leader);
        assert_eq!(leader.role(), Role::Leader);
        leader.step(msg(
            2,
            1,
            3,
            MessageBody::AppendResponse {
                index: acked,
                reject: None,
            },
        ));
        drain_messages(&mut leader);
        assert_eq!(
            leader.commit_index(),
            want,
            "log {log:?}, follower acked {acked}"
        );
    }
}

/// The vote is persistent state (Figure 2): a voter that crashes and restarts after
/// voting still refuses a second candidate of the same term. §5.2
#[test]
fn vote_survives_a_restart() {
    let mut net = Network::builder(3).config(paper_config).build();
    net.node_mut(1).campaign();
    net.deliver_round_with(|m| if m.to == 2 { Fate::Deliver } else { Fate::Drop });
    assert_eq!(net.node(2).vote(), Some(1));
    net.restart(2, 99);
    assert_eq!((net.term(2), net.node(2).vote()), (1, Some(1)));
    net.drop_in_flight();
    net.step(vote_request(3, 2, 1, (0, 0)));
    let answers = vote_answers(&net.take_in_flight());
    assert_eq!(answers, vec![(3, false)]);
}

/// A follower acknowledges entries only in the ready that also asks the driver to
/// persist them, so an acknowledged entry survives a crash (Figure 2: "updated on stable
/// storage before responding to RPCs"). §5.3
#[test]
fn appended_entries_are_persisted_in_the_same_ready_that_acknowledges_them() {
    let mut follower = lone_node(2, &[1, 2, 3], MemLog::new(), paper_config);
    follower.step(append(1, 2, 1, (0, 0), vec![entry(1, 1), entry(2, 1)], 0));
    let ready = follower.ready();
    assert_eq!(
        ready.messages,
        vec![msg(
            2,
            1,
            1,
            MessageBody::AppendResponse {
                index: 2,
                reject: None
            }
        )]
    );
    assert_eq!(ready.entries, vec![entry(1, 1), entry(2, 1)]);
    assert!(ready.must_sync());
    follower.advance(ready);
}

/// The Figure 8 test catches a leader that commits older-term entries by counting
/// replicas. Run with `--features fault-injection`. §5.4.2
#[cfg(feature = "fault-injection")]
#[test]
fn figure_8_catches_commit_by_counting_older_terms() {
    let mut net = figure_8_b();
    for id in net.ids() {
        net.node_mut(id)
            .set_broken_variant(Some(raft_core::protocol::BrokenVariant::CommitOlderTerms));
    }
    figure_8_b_to_c(&mut net);
    assert_eq!(
        net.node(1).commit_index(),
        2,
        "the broken leader commits entry 2"
    );
}
