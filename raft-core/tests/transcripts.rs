//! Scripted interactions whose expected output is a readable transcript of every message
//! delivered and the nodes' state after each step, kept in `tests/transcripts/*.txt`.
//! After an intended behaviour change, rerun with `RAFT_TRANSCRIPTS=rewrite` and review
//! the diff of the transcripts like any other change.

mod common;

use common::*;

/// Pre-vote, vote, the leader's no-op, a proposal and its commit, in a 3-node cluster.
/// §5.2, §5.3
#[test]
fn transcript_election_and_replication() {
    let mut net = Network::new(3);
    let mut out = String::new();
    out.push_str("== n1 campaigns (pre-vote first)\n");
    net.node_mut(1).campaign();
    net.deliver_all_logged(&mut out);
    out.push_str(&net.describe());
    out.push_str("== n1 proposes x\n");
    net.propose(1, "x");
    net.deliver_all_logged(&mut out);
    out.push_str(&net.describe());
    out.push_str("== heartbeat interval passes\n");
    for _ in 0..net.node(1).config().heartbeat_interval_ticks {
        net.tick(1);
    }
    net.deliver_all_logged(&mut out);
    out.push_str(&net.describe());
    assert_transcript("election_and_replication", &out);
}

/// Figure 7 (f): the new leader of term 8 walks back through the follower's conflicting
/// terms 3 and 2 in one round trip each, then replaces its suffix. §5.3
#[test]
fn transcript_figure_7_f_catches_up() {
    let mut net = Network::builder(2)
        .config(paper_config)
        .log_terms(1, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6], 7)
        .log_terms(2, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3)
        .build();
    let mut out = String::new();
    out.push_str(&net.describe());
    out.push_str("== n1 campaigns\n");
    net.node_mut(1).campaign();
    net.deliver_all_logged(&mut out);
    out.push_str(&net.describe());
    assert_transcript("figure_7_f_catches_up", &out);
}

/// Leadership transfer: the target is caught up, told to campaign, and wins at once.
#[test]
fn transcript_leadership_transfer() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(2);
    net.propose(1, "x");
    net.deliver_all();
    net.heal();
    let mut out = String::new();
    out.push_str(&net.describe());
    out.push_str("== n1 transfers leadership to n2, which is behind\n");
    net.node_mut(1).transfer_leadership(2).unwrap();
    net.deliver_all_logged(&mut out);
    out.push_str(&net.describe());
    assert_transcript("leadership_transfer", &out);
}
