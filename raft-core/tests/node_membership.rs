//! The node runtime's membership API over the in-process channel transport: adding a
//! learner, waiting for it to catch up, promoting it, removing voters (the leader
//! included), joint changes, and every refusal with what it says. Every wait is on a
//! condition with a deadline: these must pass on a loaded 2-core machine.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::{start_kv, wait_until, Kv};

use raft_core::node::{ChannelNetwork, Event, Node, NodeConfig, NodeError};
use raft_core::protocol::membership::MembershipError;
use raft_core::protocol::ProposeError;
use raft_core::{Log, MemLog, NodeId, Role};

const T: Duration = Duration::from_secs(20);

/// Node `id`; the cluster's initial voters are 1..=3 (a node above 3 starts as a
/// non-member and waits to be added).
fn start(net: &ChannelNetwork, id: NodeId, log: Box<dyn Log>) -> Result<Node<Kv>, NodeError> {
    start_tuned(net, id, log, |_| {})
}

fn start_tuned(
    net: &ChannelNetwork,
    id: NodeId,
    log: Box<dyn Log>,
    tune: impl Fn(&mut NodeConfig),
) -> Result<Node<Kv>, NodeError> {
    let mut c = NodeConfig::new(id, 1..=3);
    c.join_attempt_interval_ms = 2_000;
    tune(&mut c);
    start_kv(net, c, log)
}

fn start_cluster(net: &ChannelNetwork) -> Vec<Node<Kv>> {
    (1..=3)
        .map(|id| start(net, id, Box::new(MemLog::new())).unwrap())
        .collect()
}

/// The leader among `nodes` once exactly one claims it and every one agrees.
fn leader_of<'a>(nodes: &[&'a Node<Kv>]) -> &'a Node<Kv> {
    let mut found = None;
    wait_until(T, "the nodes agree on a leader", || {
        let statuses: Vec<_> = nodes.iter().map(|n| n.status()).collect();
        let leaders: BTreeSet<_> = statuses.iter().map(|s| s.leader).collect();
        let claiming: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).collect();
        if let (1, [one]) = (leaders.len(), claiming.as_slice()) {
            if leaders.contains(&Some(one.id)) {
                found = Some(one.id);
                return true;
            }
        }
        false
    });
    let id = found.unwrap();
    nodes.iter().find(|n| n.id() == id).unwrap()
}

fn stop_all(nodes: &[&Node<Kv>]) {
    for n in nodes {
        n.stop();
    }
}

fn put(n: &Node<Kv>, key: &str, value: &str) {
    n.put_with_retry(key.to_string(), value.to_string(), T)
        .unwrap();
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

/// A fresh node joins as a learner, catches up, is promoted and then takes part in
/// commits; every node shows the new configuration and its address, and events report
/// each configuration in force and then committed (thesis §4.1, §4.2.1).
#[test]
fn add_learner_catch_up_promote_then_the_new_voter_serves() {
    let net = ChannelNetwork::new();
    let nodes = start_cluster(&net);
    let all: Vec<&Node<Kv>> = nodes.iter().collect();
    let leader = leader_of(&all);
    for i in 0..50 {
        put(leader, &format!("k{i}"), "v");
    }
    let n4 = start(&net, 4, Box::new(MemLog::new())).unwrap();
    assert!(
        !n4.status().membership.is_member(4),
        "n4 starts as a non-member"
    );
    let events = leader.events();
    let index = leader.add_learner(4, "10.0.0.4:7004", T).unwrap();
    let m = leader.membership();
    assert_eq!(m.learners, set(&[4]));
    assert_eq!(
        m.addresses.get(&4).map(String::as_str),
        Some("10.0.0.4:7004")
    );
    assert!(m.index >= index);
    leader.promote_caught_up(4, 0, T).unwrap();
    let mut seen = Vec::new();
    wait_until(T, "the leader reports the promotion committed", || {
        while let Ok(e) = events.try_recv() {
            if let Event::MembershipChanged {
                membership,
                committed,
                ..
            } = e
            {
                seen.push((
                    membership.voters.clone(),
                    membership.learners.clone(),
                    committed,
                ));
            }
        }
        seen.contains(&(set(&[1, 2, 3, 4]), set(&[]), true))
    });
    assert!(
        seen.contains(&(set(&[1, 2, 3]), set(&[4]), false)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(set(&[1, 2, 3]), set(&[4]), true)),
        "{seen:?}"
    );
    let everyone: Vec<&Node<Kv>> = nodes.iter().chain([&n4]).collect();
    wait_until(
        T,
        "every node has the 4-voter configuration committed",
        || {
            everyone.iter().all(|n| {
                let m = n.membership();
                m.voters == set(&[1, 2, 3, 4]) && !m.pending
            })
        },
    );
    // n4 counts now: with one original follower down, the leader needs n4's
    // acknowledgement for 3 of 4.
    let follower = nodes.iter().find(|n| n.id() != leader.id()).unwrap();
    follower.stop();
    put(&n4, "via", "n4");
    assert_eq!(
        n4.get(&"k49".to_string(), T).unwrap(),
        Some("v".to_string())
    );
    stop_all(&everyone);
}

/// Membership changes go to the leader: a follower answers `NotLeader` with the leader
/// it knows, changes nothing, and so does `wait_caught_up`.
#[test]
fn a_follower_refuses_with_the_leaders_id() {
    let net = ChannelNetwork::new();
    let nodes = start_cluster(&net);
    let all: Vec<&Node<Kv>> = nodes.iter().collect();
    let leader = leader_of(&all);
    let follower = all.iter().find(|n| n.id() != leader.id()).unwrap();
    wait_until(T, "the follower knows the leader", || {
        follower.status().leader == Some(leader.id())
    });
    match follower.add_learner(4, "127.0.0.1:1", T) {
        Err(NodeError::NotLeader { hint }) => assert_eq!(hint, Some(leader.id())),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    let e = follower.remove(leader.id(), T).unwrap_err();
    assert!(
        e.to_string().contains(&format!("ask n{}", leader.id())),
        "{e}"
    );
    assert!(matches!(
        follower.wait_caught_up(1, 0, T),
        Err(NodeError::NotLeader { .. })
    ));
    assert_eq!(leader.membership().voters, set(&[1, 2, 3]));
    stop_all(&all);
}

/// Changes that do not apply are refused with the reason and change nothing: a
/// member added twice, an unknown id removed or promoted, a voter promoted.
#[test]
fn bad_changes_are_refused_with_the_reason() {
    let net = ChannelNetwork::new();
    let nodes = start_cluster(&net);
    let all: Vec<&Node<Kv>> = nodes.iter().collect();
    let leader = leader_of(&all);
    let refused = |r: Result<_, NodeError>| match r {
        Err(NodeError::Rejected(ProposeError::Membership(e))) => e,
        other => panic!("expected a refused change, got {other:?}"),
    };
    assert_eq!(
        refused(leader.add_learner(2, "127.0.0.1:1", T)),
        MembershipError::AlreadyMember(2)
    );
    assert_eq!(refused(leader.remove(9, T)), MembershipError::NotAMember(9));
    assert_eq!(
        refused(leader.promote(9, T)),
        MembershipError::NotALearner(9)
    );
    assert_eq!(
        refused(leader.promote(2, T)),
        MembershipError::NotALearner(2)
    );
    assert_eq!(
        refused(leader.change_membership([], [], T)),
        MembershipError::NoVoters
    );
    assert!(matches!(
        leader.wait_caught_up(9, 0, T),
        Err(NodeError::Rejected(ProposeError::Membership(
            MembershipError::NotAMember(9)
        )))
    ));
    let m = leader.membership();
    assert_eq!((m.voters, m.learners), (set(&[1, 2, 3]), set(&[])));
    stop_all(&all);
}

/// One change at a time (thesis §4.1): while the leader cannot commit (it is cut off
/// from its followers both ways), its change stays pending and times out saying it may still take effect;
/// a second change is refused with `ChangeInFlight`. Once the network heals the first
/// change commits.
#[test]
fn a_second_change_while_one_is_pending_is_refused() {
    let net = ChannelNetwork::new();
    // Without check-quorum the isolated leader keeps leading, its change pending.
    let nodes: Vec<Node<Kv>> = (1..=3)
        .map(|id| {
            start_tuned(&net, id, Box::new(MemLog::new()), |c| {
                c.protocol.check_quorum = false
            })
            .unwrap()
        })
        .collect();
    let all: Vec<&Node<Kv>> = nodes.iter().collect();
    let leader = leader_of(&all);
    net.isolate(leader.id());
    let short = Duration::from_millis(300);
    let e = leader.add_learner(4, "127.0.0.1:1", short).unwrap_err();
    assert!(matches!(e, NodeError::Timeout(_)), "{e:?}");
    assert!(e.to_string().contains("may still take effect"), "{e}");
    assert!(leader.membership().learners.contains(&4));
    // Still leading (check-quorum is off), the change uncommitted.
    match leader.add_learner(5, "127.0.0.1:2", T) {
        Err(NodeError::Rejected(ProposeError::ChangeInFlight { .. })) => {}
        Err(NodeError::NotLeader { .. }) => {
            panic!("the leader lost leadership while cut off (check-quorum is off)")
        }
        other => panic!("expected ChangeInFlight, got {other:?}"),
    }
    // The others elected a leader of their own meanwhile: once healed, the isolated
    // leader's uncommitted change is overwritten, and it falls back to the previous
    // configuration (thesis §4.1).
    net.heal();
    let rest: Vec<&Node<Kv>> = all
        .iter()
        .copied()
        .filter(|n| n.id() != leader.id())
        .collect();
    wait_until(
        T,
        "every node is back to the committed configuration",
        || {
            all.iter().all(|n| {
                let m = n.membership();
                !m.pending && m.learners.is_empty()
            })
        },
    );
    leader_of(&rest);
    stop_all(&all);
}

/// Removing the leader (thesis §4.2.2): the call returns once the removal commits; the
/// old leader then steps down, the two remaining voters elect one of theirs and keep
/// committing; the removed node never leads again.
#[test]
fn removing_the_leader_hands_over_to_the_remaining_voters() {
    let net = ChannelNetwork::new();
    let nodes = start_cluster(&net);
    let all: Vec<&Node<Kv>> = nodes.iter().collect();
    let old = leader_of(&all);
    put(old, "before", "1");
    old.remove(old.id(), T).unwrap();
    let rest: Vec<&Node<Kv>> = all.iter().copied().filter(|n| n.id() != old.id()).collect();
    let new = leader_of(&rest);
    assert_ne!(new.id(), old.id());
    wait_until(T, "the removed leader steps down", || {
        !old.status().is_leader()
    });
    put(new, "after", "2");
    let voters: BTreeSet<NodeId> = rest.iter().map(|n| n.id()).collect();
    assert_eq!(new.membership().voters, voters);
    assert!(!old.status().is_leader());
    stop_all(&all);
}

/// A learner that is behind is not promoted before it caught up: `wait_caught_up`
/// times out while it is down, and `promote_caught_up` returns only once its match index
/// is within the bound, after it came up.
#[test]
fn promoting_a_lagging_learner_waits_for_it_to_catch_up() {
    let net = ChannelNetwork::new();
    let nodes = start_cluster(&net);
    let all: Vec<&Node<Kv>> = nodes.iter().collect();
    let leader = leader_of(&all);
    // n4 is added while it is not running: it cannot catch up. On this short log it
    // is only a few entries behind, yet it never answered: not caught up.
    leader.add_learner(4, "127.0.0.1:1", T).unwrap();
    let e = leader
        .wait_caught_up(4, 1_000, Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(e, NodeError::Timeout(_)), "{e:?}");
    for i in 0..100 {
        put(leader, &format!("k{i}"), "v");
    }
    let e = leader
        .wait_caught_up(4, 10, Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(e, NodeError::Timeout(_)), "{e:?}");
    let lag = leader
        .status()
        .peers
        .iter()
        .find(|p| p.progress.id == 4)
        .map(|p| p.lag)
        .unwrap();
    assert!(lag > 10, "n4 is behind by {lag} entries");
    let n4 = start(&net, 4, Box::new(MemLog::new())).unwrap();
    leader.promote_caught_up(4, 10, T).unwrap();
    // The bound held when it was promoted: n4 has the entries written before.
    assert!(n4.status().last_index >= 100, "{:?}", n4.status());
    assert_eq!(leader.membership().voters, set(&[1, 2, 3, 4]));
    all.iter().for_each(|n| n.stop());
    n4.stop();
}

/// A joint change (thesis §4.3) swapping two voters for two learners returns only once
/// the joint configuration is left: the new voters alone are in force, committed.
#[test]
fn change_membership_goes_through_joint_and_returns_once_left() {
    let net = ChannelNetwork::new();
    let mut nodes = start_cluster(&net);
    let leader_id = leader_of(&nodes.iter().collect::<Vec<_>>()).id();
    for id in [4, 5] {
        nodes.push(start(&net, id, Box::new(MemLog::new())).unwrap());
    }
    let leader = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    leader.add_learner(4, "127.0.0.1:4", T).unwrap();
    leader.add_learner(5, "127.0.0.1:5", T).unwrap();
    let voters = [leader_id, 4, 5];
    leader.change_membership(voters, [], T).unwrap();
    let m = leader.membership();
    assert_eq!(m.voters, set(&voters));
    assert!(m.learners.is_empty(), "{m:?}");
    assert!(m.outgoing_voters.is_empty() && !m.pending, "{m:?}");
    put(leader, "after", "joint");
    nodes.iter().for_each(|n| n.stop());
}

/// A node whose own log shows it was removed refuses to start again under its id, with
/// a message that says so. (A removed follower usually never receives its removal: the
/// leader stops replicating to it. A removed leader has it in its own log.)
#[test]
fn a_removed_node_refuses_to_start() {
    let net = ChannelNetwork::new();
    let nodes = start_cluster(&net);
    let all: Vec<&Node<Kv>> = nodes.iter().collect();
    let victim = leader_of(&all);
    let id = victim.id();
    victim.remove(id, T).unwrap();
    victim.stop();
    let log = victim.take_log().unwrap();
    match start(&net, id, log) {
        Err(e @ NodeError::Removed(_)) => {
            assert!(e.to_string().contains("was removed"), "{e}")
        }
        other => panic!("expected Removed, got {other:?}"),
    }
    stop_all(&all);
}
