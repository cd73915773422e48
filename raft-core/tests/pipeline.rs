//! The pipelined write API: `Node::submitter`, `Submitter` and `Node::propose_batch`,
//! on real nodes and threads over a `ChannelNetwork`. Every wait has a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft_core::node::{
    ChannelNetwork, Completion, Node, NodeConfig, NodeError, StateMachine, Ticket,
};
use raft_core::{LogIndex, MemLog};

/// Records every command in apply order and answers each with its own bytes.
#[derive(Default)]
struct Echo {
    applied: Vec<Vec<u8>>,
}

impl StateMachine for Echo {
    type Response = Vec<u8>;
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Vec<u8> {
        self.applied.push(command.to_vec());
        command.to_vec()
    }
}

const T: Duration = Duration::from_secs(30);

fn cluster(net: &ChannelNetwork, n: u64) -> Vec<Node<Echo>> {
    let nodes: Vec<Node<Echo>> = (1..=n)
        .map(|id| {
            Node::builder(NodeConfig::new(id, 1..=n))
                .log(MemLog::new())
                .transport(net.transport(id))
                .state_machine(Echo::default())
                .start()
                .unwrap()
        })
        .collect();
    nodes[0].wait_for_leader(T).unwrap();
    // A first write, so a leader committed in its term and every node knows it.
    nodes[0].propose_with_retry(&b"start"[..], T).unwrap();
    for node in &nodes {
        node.wait_for_leader(T).unwrap();
    }
    nodes
}

fn node(nodes: &[Node<Echo>], id: u64) -> &Node<Echo> {
    &nodes[id as usize - 1]
}

fn stop(nodes: &[Node<Echo>]) {
    for n in nodes {
        n.stop();
    }
}

/// Drains until nothing is in flight, or fails at the deadline.
fn drain_all(s: &mut raft_core::node::Submitter<Echo>, out: &mut Vec<Completion<Vec<u8>>>) {
    let deadline = Instant::now() + T;
    while s.in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} tickets never answered",
            s.in_flight()
        );
        s.drain_until(out, deadline);
    }
}

#[test]
fn completions_carry_their_tickets_and_come_in_submission_order() {
    let net = ChannelNetwork::new();
    let nodes = cluster(&net, 3);
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let mut s = node(&nodes, leader).submitter();
    let mut sent: BTreeMap<Ticket, Vec<u8>> = BTreeMap::new();
    let mut done = Vec::new();
    for i in 0..5_000u32 {
        let command = i.to_le_bytes().to_vec();
        loop {
            match s.submit(command.clone()) {
                Ok(t) => {
                    if let Some(last) = sent.keys().next_back() {
                        assert!(t > *last, "tickets increase in submission order");
                    }
                    sent.insert(t, command);
                    break;
                }
                Err(NodeError::Busy) => {
                    s.drain_timeout(&mut done, T);
                }
                Err(e) => panic!("submit: {e}"),
            }
        }
        if i % 7 == 0 {
            s.try_drain(&mut done);
        }
    }
    drain_all(&mut s, &mut done);
    assert_eq!(done.len(), sent.len(), "each ticket answered once");
    let mut previous = None;
    for (ticket, result) in &done {
        let response = result
            .as_ref()
            .expect("a stable leader applies every command");
        assert_eq!(
            response, &sent[ticket],
            "the response of the ticket's own command"
        );
        assert!(previous < Some(*ticket), "apply order is submission order");
        previous = Some(*ticket);
    }
    stop(&nodes);
}

#[test]
fn busy_at_the_in_flight_limit_until_drained() {
    let net = ChannelNetwork::new();
    let nodes = cluster(&net, 3);
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let mut s = node(&nodes, leader).submitter().with_in_flight_max(8);
    assert_eq!(s.in_flight_max(), 8);
    for i in 0..8u8 {
        s.submit(vec![i]).unwrap();
    }
    // In flight until drained, whether or not applied yet: the limit is exact.
    assert!(matches!(s.submit(vec![9]), Err(NodeError::Busy)));
    assert!(matches!(
        s.submit_batch(vec![vec![9u8]]),
        Err(NodeError::Busy)
    ));
    assert_eq!(s.in_flight(), 8);
    let mut done = Vec::new();
    drain_all(&mut s, &mut done);
    assert_eq!(done.len(), 8);
    // Room again: a batch of exactly the limit fits, one more does not.
    assert!(matches!(
        s.submit_batch((0..9u8).map(|i| vec![i]).collect()),
        Err(NodeError::Busy)
    ));
    let tickets = s.submit_batch((0..8u8).map(|i| vec![i]).collect()).unwrap();
    assert_eq!(tickets.len(), 8);
    done.clear();
    drain_all(&mut s, &mut done);
    let answered: Vec<Ticket> = done.iter().map(|(t, _)| *t).collect();
    assert_eq!(answered, tickets);
    assert!(done.iter().all(|(_, r)| r.is_ok()));
    // Nothing in flight: a drain returns at once with nothing.
    assert_eq!(s.drain_timeout(&mut done, T), 0);
    stop(&nodes);
}

#[test]
fn a_followers_submitter_forwards_to_the_leader() {
    let net = ChannelNetwork::new();
    let nodes = cluster(&net, 3);
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut s = node(&nodes, follower).submitter();
    let mut tickets = Vec::new();
    for chunk in 0..20u32 {
        let batch: Vec<Vec<u8>> = (0..50u32)
            .map(|i| (chunk * 50 + i).to_le_bytes().to_vec())
            .collect();
        tickets.extend(s.submit_batch(batch).unwrap());
    }
    let mut done = Vec::new();
    drain_all(&mut s, &mut done);
    assert_eq!(done.iter().map(|(t, _)| *t).collect::<Vec<_>>(), tickets);
    for (i, (_, r)) in done.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap(), &(i as u32).to_le_bytes().to_vec());
    }
    // The leader applied them in the same order.
    let leader_applied = node(&nodes, leader).read(T, |sm| sm.applied.len()).unwrap();
    assert_eq!(leader_applied, 1 + 1_000);
    stop(&nodes);
}

#[test]
fn propose_batch_answers_each_proposal() {
    let net = ChannelNetwork::new();
    let nodes = cluster(&net, 3);
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    for id in [leader, follower] {
        let commands: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i, id as u8]).collect();
        let proposals = node(&nodes, id).propose_batch(commands.clone()).unwrap();
        assert_eq!(proposals.len(), 100);
        for (p, c) in proposals.into_iter().zip(commands) {
            assert_eq!(p.wait(T).unwrap(), c);
        }
    }
    stop(&nodes);
}

/// Batches of commands of mixed sizes (empty ones too) from two threads at once, on the
/// leader and on a follower: the runtime envelopes each batch into one shared buffer and
/// hands the leader's placements to the apply thread a ready at a time; every ticket
/// still gets its own command back, in submission order per submitter, and every node
/// applies the same commands.
#[test]
fn concurrent_batches_of_mixed_sizes_answer_each_ticket_with_its_own_command() {
    let net = ChannelNetwork::new();
    let nodes = cluster(&net, 3);
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let writers: Vec<_> = [leader, follower]
        .into_iter()
        .map(|id| {
            let n = node(&nodes, id).clone();
            std::thread::spawn(move || {
                let mut s = n.submitter().with_in_flight_max(512);
                let mut sent: BTreeMap<Ticket, Vec<u8>> = BTreeMap::new();
                let mut done = Vec::new();
                for round in 0..40u32 {
                    let batch: Vec<Vec<u8>> = (0..100u32)
                        .map(|k| {
                            let len = ((round * 100 + k) % 7) as usize * 30;
                            let mut c = vec![id as u8; len];
                            c.extend_from_slice(&(round * 100 + k).to_le_bytes()[..len.min(4)]);
                            c
                        })
                        .collect();
                    loop {
                        match s.submit_batch(batch.clone()) {
                            Ok(tickets) => {
                                sent.extend(tickets.into_iter().zip(batch));
                                break;
                            }
                            Err(NodeError::Busy) => {
                                s.drain_timeout(&mut done, T);
                            }
                            Err(e) => panic!("n{id}: submit_batch: {e}"),
                        }
                    }
                    s.try_drain(&mut done);
                }
                drain_all(&mut s, &mut done);
                assert_eq!(done.len(), sent.len(), "n{id}: each ticket answered once");
                let mut previous = None;
                for (ticket, result) in &done {
                    let response = result.as_ref().expect("a stable leader applies all");
                    assert_eq!(response, &sent[ticket], "n{id}: the ticket's own command");
                    assert!(previous < Some(*ticket), "n{id}: submission order");
                    previous = Some(*ticket);
                }
                sent.len()
            })
        })
        .collect();
    let total: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 2 * 40 * 100);
    // Every node applies the start write and every command (followers may lag a little).
    let deadline = Instant::now() + T;
    let applied: Vec<Vec<Vec<u8>>> = nodes
        .iter()
        .map(|n| loop {
            let applied = n.read_stale(|sm| sm.applied.clone());
            if applied.len() > total {
                break applied;
            }
            assert!(
                Instant::now() < deadline,
                "n{} applied {}",
                n.id(),
                applied.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        })
        .collect();
    assert_eq!(
        applied[0].len(),
        1 + total,
        "the start write and every command"
    );
    assert!(
        applied.iter().all(|a| *a == applied[0]),
        "same commands everywhere"
    );
    stop(&nodes);
}

/// Submitters on every node keep writing while the leader is stopped: every ticket is
/// answered exactly once (applied, or an error saying it did not take effect, or
/// `Stopped` on the stopped node), and nothing waits past the deadline.
#[test]
fn leader_killed_mid_pipeline_every_ticket_answered_once() {
    let net = ChannelNetwork::new();
    let nodes = cluster(&net, 5);
    let leader = nodes[0].wait_for_leader(T).unwrap();
    let writers: Vec<_> = nodes
        .iter()
        .map(|n| {
            let n = n.clone();
            std::thread::spawn(move || {
                let mut s = n.submitter().with_in_flight_max(256);
                let mut submitted = Vec::new();
                let mut done = Vec::new();
                let until = Instant::now() + Duration::from_millis(1_500);
                let mut i = 0u32;
                while Instant::now() < until {
                    let batch: Vec<Vec<u8>> =
                        (0..16).map(|k| (i + k).to_le_bytes().to_vec()).collect();
                    match s.submit_batch(batch) {
                        Ok(t) => {
                            submitted.extend(t);
                            i += 16;
                        }
                        Err(NodeError::Busy) => {
                            s.drain_timeout(&mut done, Duration::from_millis(50));
                        }
                        Err(NodeError::Stopped) => break,
                        Err(e) => panic!("submit_batch: {e}"),
                    }
                    s.try_drain(&mut done);
                }
                drain_all(&mut s, &mut done);
                (n.id(), submitted, done)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    node(&nodes, leader).stop();
    let mut applied_somewhere = 0;
    for w in writers {
        let (id, submitted, done) = w.join().unwrap();
        let mut answered: Vec<Ticket> = done.iter().map(|(t, _)| *t).collect();
        answered.sort();
        let mut expected = submitted.clone();
        expected.sort();
        assert_eq!(
            answered, expected,
            "n{id}: each ticket answered exactly once"
        );
        for (_, r) in &done {
            match r {
                Ok(_) => applied_somewhere += 1,
                Err(
                    NodeError::Dropped
                    | NodeError::NoLeader
                    | NodeError::Rejected(_)
                    | NodeError::Stopped,
                ) => {}
                Err(e) => panic!("n{id}: unexpected outcome {e}"),
            }
        }
    }
    assert!(applied_somewhere > 0);
    stop(&nodes);
}
