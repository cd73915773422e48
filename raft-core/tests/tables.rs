//! Table tests: how a follower handles appends that match, extend, conflict with or
//! precede its log (§5.3), and which configurations `Config::validate` refuses.

// Table tests read best as slices of tuples, one row per case.
#![allow(clippy::type_complexity)]

mod common;

use common::*;
use raft_core::{Config, HardState, LogIndex, MemLog, MessageBody, ReadMode, RejectHint, Term};

/// What a follower answers an append with.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Accepted: the follower matches the leader up to this index.
    Ok(LogIndex),
    /// Refused, with the hint (last index, conflict index, conflict term).
    Reject(LogIndex, LogIndex, Option<Term>),
}

/// Steps one append of term 4 from n1 into follower n2 holding `log` with `commit`, and
/// returns the follower's log terms and its reply.
fn follower_handles(
    log: &[Term],
    commit: LogIndex,
    prev: (LogIndex, Term),
    new: &[Term],
) -> (Vec<Term>, Reply) {
    let stored = HardState {
        term: 3,
        vote: None,
        commit,
    };
    let mut node = lone_node(2, &[1, 2, 3], preloaded_log(log, stored), paper_config);
    let entries = new
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(prev.0 + 1 + i as LogIndex, t))
        .collect();
    node.step(append(1, 2, 4, prev, entries, 0));
    let replies = drain_messages(&mut node);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let reply = match replies[0].body {
        MessageBody::AppendResponse {
            index,
            reject: None,
        } => Reply::Ok(index),
        MessageBody::AppendResponse {
            reject:
                Some(RejectHint {
                    last_index,
                    conflict_index,
                    conflict_term,
                }),
            ..
        } => Reply::Reject(last_index, conflict_index, conflict_term),
        ref other => panic!("unexpected reply {other:?}"),
    };
    let terms = (1..=node.last_index())
        .map(|i| node.term_at(i).unwrap())
        .collect();
    assert!(node.commit_index() >= commit, "the commit index went back");
    (terms, reply)
}

/// Appends against a follower log of terms [1, 1, 2, 2, 3] with entries 1 and 2
/// committed: only a conflicting suffix is truncated, never a committed entry. §5.3
#[test]
fn append_conflict_handling() {
    const LOG: &[Term] = &[1, 1, 2, 2, 3];
    const COMMIT: LogIndex = 2;
    // (prev (index, term), new entries' terms, follower log after, reply)
    let cases: &[((LogIndex, Term), &[Term], &[Term], Reply)] = &[
        // Entries the follower already has: nothing changes.
        ((2, 1), &[2, 2], LOG, Reply::Ok(4)),
        ((1, 1), &[1, 2], LOG, Reply::Ok(3)),
        ((5, 3), &[], LOG, Reply::Ok(5)),
        // A shorter (stale or reordered) append truncates nothing after it.
        ((3, 2), &[2], LOG, Reply::Ok(4)),
        // New entries after the end are appended.
        ((5, 3), &[4], &[1, 1, 2, 2, 3, 4], Reply::Ok(6)),
        ((5, 3), &[4, 4], &[1, 1, 2, 2, 3, 4, 4], Reply::Ok(7)),
        // A conflict truncates from the first conflicting entry, keeping what matches.
        ((4, 2), &[4], &[1, 1, 2, 2, 4], Reply::Ok(5)),
        ((2, 1), &[2, 4], &[1, 1, 2, 4], Reply::Ok(4)),
        ((3, 2), &[4, 4, 4], &[1, 1, 2, 4, 4, 4], Reply::Ok(6)),
        ((2, 1), &[4], &[1, 1, 4], Reply::Ok(3)),
        // An append that starts inside the committed prefix: the committed part is skipped
        // and only the conflicting suffix after it replaced.
        ((0, 0), &[1, 1, 4], &[1, 1, 4], Reply::Ok(3)),
        ((0, 0), &[1], LOG, Reply::Ok(COMMIT)),
        ((1, 1), &[1], LOG, Reply::Ok(COMMIT)),
        // A (misbehaving) append that contradicts a committed entry changes nothing.
        ((1, 1), &[4], LOG, Reply::Ok(COMMIT)),
        // Previous entry missing: the hint says where the follower's log ends.
        ((6, 3), &[4], LOG, Reply::Reject(5, 6, None)),
        ((9, 4), &[], LOG, Reply::Reject(5, 6, None)),
        // Previous entry of another term: the hint names that term and its first index.
        ((5, 4), &[4], LOG, Reply::Reject(5, 5, Some(3))),
        ((4, 3), &[4], LOG, Reply::Reject(5, 3, Some(2))),
        ((3, 1), &[], LOG, Reply::Reject(5, 3, Some(2))),
    ];
    for (prev, new, want_log, want_reply) in cases {
        let (log, reply) = follower_handles(LOG, COMMIT, *prev, new);
        let context = format!("append after {prev:?} of terms {new:?}");
        assert_eq!(log, *want_log, "{context}");
        assert_eq!(reply, *want_reply, "{context}");
    }
}

/// The hint's conflict index never reaches back past the commit index: entries there
/// match every leader, so skipping them is never needed. §5.3
#[test]
fn rejection_hint_stops_at_the_commit_index() {
    // (follower log, commit, prev, reply)
    let cases: &[(&[Term], LogIndex, (LogIndex, Term), Reply)] = &[
        // A long run of term 1: without a commit index the hint goes back to its start.
        (&[1, 1, 1, 1, 1], 0, (5, 2), Reply::Reject(5, 1, Some(1))),
        // With entries committed, it stops there.
        (&[1, 1, 1, 1, 1], 3, (5, 2), Reply::Reject(5, 3, Some(1))),
        (&[1, 1, 2, 2, 2], 3, (5, 3), Reply::Reject(5, 3, Some(2))),
        (&[1, 1, 2, 2, 2], 1, (5, 3), Reply::Reject(5, 3, Some(2))),
    ];
    for (log, commit, prev, want) in cases {
        let (after, reply) = follower_handles(log, *commit, *prev, &[]);
        assert_eq!(after, *log, "log {log:?}");
        assert_eq!(reply, *want, "log {log:?} commit {commit} prev {prev:?}");
    }
}

/// `Config::validate` refuses nonsense, naming the field.
#[test]
fn config_validate_rejects_nonsense() {
    fn with(f: impl Fn(&mut Config)) -> Config {
        let mut c = Config::new(1, [1, 2, 3]);
        f(&mut c);
        c
    }
    // (config, the field named, or None when valid)
    let cases: Vec<(Config, Option<&str>)> = vec![
        // Sane configs.
        (Config::default(), None),
        (Config::new(1, [1, 2, 3]), None),
        (Config::new(7, [7]), None),
        (with(|c| c.heartbeat_interval_ticks = 9), None),
        (
            with(|c| {
                c.read_mode = ReadMode::Lease;
                c.lease_drift_ticks = 0;
            }),
            None,
        ),
        (with(|c| c.inflight_bytes_max = c.append_bytes_max), None),
        // Ids: 0 means nobody; a node outside the initial voters joins an existing
        // cluster (membership changes), but some voter is needed.
        (with(|c| c.id = 0), Some("id")),
        (Config::new(1, [0, 1, 2]), Some("voters")),
        (Config::new(4, [1, 2, 3]), None),
        (Config::new(1, []), Some("voters")),
        // Timing: a heartbeat must come well within an election timeout.
        (
            with(|c| c.election_timeout_ticks = 0),
            Some("election_timeout_ticks"),
        ),
        (
            with(|c| c.election_timeout_ticks = 1),
            Some("election_timeout_ticks"),
        ),
        (
            with(|c| c.heartbeat_interval_ticks = 0),
            Some("heartbeat_interval_ticks"),
        ),
        (
            with(|c| c.heartbeat_interval_ticks = 10),
            Some("heartbeat_interval_ticks"),
        ),
        (
            with(|c| c.heartbeat_interval_ticks = 11),
            Some("heartbeat_interval_ticks"),
        ),
        // Leases need check-quorum and a drift bound inside the election timeout.
        (
            with(|c| {
                c.read_mode = ReadMode::Lease;
                c.check_quorum = false;
            }),
            Some("read_mode"),
        ),
        (
            with(|c| c.lease_drift_ticks = 10),
            Some("lease_drift_ticks"),
        ),
        // Limits: none may be zero, and the byte window holds a full append.
        (with(|c| c.append_bytes_max = 0), Some("append_bytes_max")),
        (with(|c| c.entry_bytes_max = 0), Some("entry_bytes_max")),
        // An entry may be larger than an append (it then goes alone) and the window.
        (
            with(|c| c.entry_bytes_max = 100 * c.inflight_bytes_max),
            None,
        ),
        (
            with(|c| c.inflight_messages_max = 0),
            Some("inflight_messages_max"),
        ),
        (
            with(|c| c.inflight_bytes_max = 0),
            Some("inflight_bytes_max"),
        ),
        (
            with(|c| c.inflight_bytes_max = c.append_bytes_max - 1),
            Some("inflight_bytes_max"),
        ),
        (
            with(|c| c.uncommitted_entries_max = 0),
            Some("uncommitted_entries_max"),
        ),
        // Snapshot chunks: positive (a chunk larger than an append is capped, not
        // refused); snapshots bounded.
        (
            with(|c| c.snapshot_chunk_bytes = 0),
            Some("snapshot_chunk_bytes"),
        ),
        (
            with(|c| c.snapshot_chunk_bytes = c.append_bytes_max + 1),
            None,
        ),
        (
            with(|c| c.snapshot_bytes_max = 0),
            Some("snapshot_bytes_max"),
        ),
        (with(|c| set_append_bytes_max(c, 100)), None),
    ];
    for (config, want) in cases {
        let got = config.validate().err().map(|e| e.field);
        assert_eq!(got, want, "{config:?}");
        // Raft::new validates too.
        let built = raft_core::Raft::new(config.clone(), MemLog::new(), 1);
        assert_eq!(built.is_ok(), want.is_none(), "Raft::new with {config:?}");
    }
    let err = with(|c| c.heartbeat_interval_ticks = 10)
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config field `heartbeat_interval_ticks`: heartbeat interval (10) must be \
         shorter than the election timeout (10)"
    );

    // Voters read from a list (a config file) must not repeat an id.
    assert!(Config::check_unique_ids(&[1, 2, 3]).is_ok());
    assert_eq!(
        Config::check_unique_ids(&[1, 2, 2]).unwrap_err().field,
        "voters"
    );
}

/// An election timeout so large that `2 * T` overflows passes `validate()`, and then
/// drawing the randomized timeout in [T, 2T) panics in `Raft::new`.
#[test]
fn config_validate_rejects_an_election_timeout_that_overflows() {
    let mut c = Config::new(1, [1, 2, 3]);
    c.election_timeout_ticks = u32::MAX;
    assert_eq!(
        c.validate().err().map(|e| e.field),
        Some("election_timeout_ticks")
    );
}
