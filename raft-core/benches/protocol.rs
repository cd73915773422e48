//! Micro-benchmarks of the protocol core (no threads, no I/O): the two steps every
//! replicated entry goes through.
//!
//! - `follower/append_64`: a follower steps one append of 64 100-byte entries (checks
//!   the log matches, appends to the unstable tail, queues the acknowledgement);
//!   `follower/append_64_ready`: the same, then takes the `Ready`, stores its entries
//!   in a `MemLog` and advances, as the runtime does.
//! - `leader/commit_64`: the leader of 3 nodes, with 64 entries persisted and sent,
//!   steps the append response that makes them committed (quorum, commit index, the
//!   broadcast that carries the commit); `leader/commit_64_ready`: then takes and
//!   advances the `Ready` (committed entries to apply, appends to send).
//!
//! `cargo bench -p raft-core --bench protocol`. For repeatable instruction counts on a
//! noisy machine, run the bench binary under `valgrind --tool=callgrind` with
//! `--bench --profile-time 5 <name>`.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft_core::{Config, Entry, EntryKind, Log, MemLog, Message, MessageBody, Raft, Role};

const ENTRIES: u64 = 64;
const ENTRY_BYTES: usize = 100;

fn entries(first: u64, term: u64, data: &Bytes) -> Vec<Entry> {
    (first..first + ENTRIES)
        .map(|index| Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: data.clone(),
        })
        .collect()
}

/// Handles every pending ready as the runtime does with a `MemLog`: persist, then drop
/// the messages (they would be sent), then advance.
fn drain(raft: &mut Raft<MemLog>) -> usize {
    let mut messages = 0;
    let mut installer = raft_core::InMemoryInstaller::default();
    while raft.has_ready() {
        let ready = raft.ready();
        installer.persist(raft.log_mut(), &ready).unwrap();
        raft.log_mut().append(&ready.entries).unwrap();
        if let Some(hs) = ready.hard_state {
            raft.log_mut().set_hard_state(hs).unwrap();
        }
        messages += ready.messages.len();
        raft.advance(ready);
        installer.after_advance(raft);
    }
    messages
}

fn append(prev_index: u64, entries: Vec<Entry>, commit: u64) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index,
            prev_term: u64::from(prev_index > 0),
            entries,
            commit,
        },
    }
}

/// Node 2 of 3, following leader 1 at term 1, with 64 entries already.
fn follower(data: &Bytes) -> Raft<MemLog> {
    let mut raft = Raft::new(Config::new(2, [1, 2, 3]), MemLog::new(), 1).unwrap();
    raft.step(append(0, entries(1, 1, data), 0));
    drain(&mut raft);
    assert_eq!(raft.last_index(), ENTRIES);
    raft
}

/// Node 1 of 3, leader at term 1, with followers in replicate state, and 64 proposed
/// entries persisted and sent (not yet acknowledged).
fn leader(data: &Bytes) -> Raft<MemLog> {
    let mut raft = Raft::new(Config::new(1, [1, 2, 3]), MemLog::new(), 1).unwrap();
    raft.campaign();
    drain(&mut raft);
    for (kind, from) in [("pre", 2), ("vote", 2)] {
        let body = match kind {
            "pre" => MessageBody::PreVoteResponse { granted: true },
            _ => MessageBody::VoteResponse { granted: true },
        };
        raft.step(Message {
            from,
            to: 1,
            term: 1,
            body,
        });
        drain(&mut raft);
    }
    assert_eq!(raft.role(), Role::Leader);
    // Both followers acknowledge the leader's no-op: they move to replicate.
    let noop = raft.last_index();
    for from in [2, 3] {
        raft.step(Message {
            from,
            to: 1,
            term: 1,
            body: MessageBody::AppendResponse {
                index: noop,
                reject: None,
            },
        });
    }
    drain(&mut raft);
    for _ in 0..ENTRIES {
        raft.propose(data.clone()).unwrap();
    }
    drain(&mut raft);
    assert_eq!(raft.commit_index(), noop);
    raft
}

fn ack(index: u64) -> Message {
    Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::AppendResponse {
            index,
            reject: None,
        },
    }
}

fn bench_follower(c: &mut Criterion) {
    let data = Bytes::from(vec![0x5a; ENTRY_BYTES]);
    let mut g = c.benchmark_group("follower");
    g.throughput(Throughput::Elements(ENTRIES));
    g.bench_function("append_64", |b| {
        b.iter_batched(
            || {
                (
                    follower(&data),
                    append(ENTRIES, entries(ENTRIES + 1, 1, &data), ENTRIES),
                )
            },
            |(mut raft, m)| {
                raft.step(m);
                raft
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("append_64_ready", |b| {
        b.iter_batched(
            || {
                (
                    follower(&data),
                    append(ENTRIES, entries(ENTRIES + 1, 1, &data), ENTRIES),
                )
            },
            |(mut raft, m)| {
                raft.step(m);
                drain(&mut raft);
                raft
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_leader(c: &mut Criterion) {
    let data = Bytes::from(vec![0x5a; ENTRY_BYTES]);
    let mut g = c.benchmark_group("leader");
    g.throughput(Throughput::Elements(ENTRIES));
    g.bench_function("commit_64", |b| {
        b.iter_batched(
            || {
                let raft = leader(&data);
                let last = raft.last_index();
                (raft, ack(last))
            },
            |(mut raft, m)| {
                raft.step(m);
                raft
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("commit_64_ready", |b| {
        b.iter_batched(
            || {
                let raft = leader(&data);
                let last = raft.last_index();
                (raft, ack(last))
            },
            |(mut raft, m)| {
                let last = match &m.body {
                    MessageBody::AppendResponse { index, .. } => *index,
                    _ => unreachable!(),
                };
                raft.step(m);
                drain(&mut raft);
                assert_eq!(raft.commit_index(), last);
                raft
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_follower, bench_leader);
criterion_main!(benches);
