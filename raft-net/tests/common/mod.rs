//! Helpers shared by the integration tests: sample messages of every kind, loopback
//! clusters on ephemeral ports, and waiting on a condition with a deadline.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use raft_core::{Entry, EntryKind, Message, MessageBody, RejectHint, Transport};
use raft_net::{NetConfig, UdpTransport};

/// Generous: the machine is a loaded 2-core box shared with other builds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A small KDF cost so tests stay quick; one test uses the default.
pub const TEST_KDF_ITERATIONS: u32 = 1_000;

/// One body of every MessageBody kind (keep in sync with raft-core's enum: the match
/// in `kind_name` fails to compile when a kind is added).
pub fn every_body() -> Vec<MessageBody> {
    let entries = (1..=3)
        .map(|i| Entry {
            term: 7,
            index: 10 + i,
            kind: if i == 1 {
                EntryKind::Noop
            } else {
                EntryKind::Command
            },
            data: if i == 1 {
                Vec::new().into()
            } else {
                vec![i as u8; 100].into()
            },
        })
        .collect();
    let bodies = vec![
        MessageBody::PreVote {
            last_log_index: 10,
            last_log_term: 6,
        },
        MessageBody::PreVoteResponse { granted: true },
        MessageBody::Vote {
            last_log_index: 10,
            last_log_term: 6,
            transfer: true,
        },
        MessageBody::VoteResponse { granted: false },
        MessageBody::Append {
            prev_index: 10,
            prev_term: 6,
            entries,
            commit: 9,
        },
        MessageBody::AppendResponse {
            index: 10,
            reject: Some(RejectHint {
                last_index: 8,
                conflict_index: 5,
                conflict_term: Some(4),
            }),
        },
        MessageBody::AppendResponse {
            index: 13,
            reject: None,
        },
        MessageBody::Heartbeat {
            commit: 9,
            read_round: 3,
        },
        MessageBody::HeartbeatResponse {
            read_round: 3,
            last_index: 13,
        },
        MessageBody::ReadIndex { request_id: 42 },
        MessageBody::ReadIndexResponse {
            request_id: 42,
            index: Some(13),
        },
        MessageBody::Propose {
            request_id: 43,
            data: b"set x=1".to_vec().into(),
        },
        MessageBody::ProposeResponse {
            request_id: 43,
            placed: Some((14, 7)),
        },
        MessageBody::TimeoutNow,
        MessageBody::InstallSnapshot {
            meta: raft_core::SnapshotMeta::at(900, 7),
            offset: 4096,
            data: vec![0xAB; 2000].into(),
            done: Some(0xDEAD_BEEF),
        },
        MessageBody::SnapshotResponse {
            last_index: 900,
            next_offset: 6096,
        },
    ];
    for b in &bodies {
        kind_name(b);
    }
    bodies
}

/// Exhaustive on purpose: a new kind must be added to `every_body`.
fn kind_name(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::PreVote { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::Vote { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::Append { .. }
        | MessageBody::AppendResponse { .. }
        | MessageBody::Heartbeat { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::ReadIndex { .. }
        | MessageBody::ReadIndexResponse { .. }
        | MessageBody::Propose { .. }
        | MessageBody::ProposeResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::InstallSnapshot { .. }
        | MessageBody::SnapshotResponse { .. } => body.kind(),
    }
}

pub fn msg(from: u64, to: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term: 7,
        body,
    }
}

/// A test config: loopback, ephemeral port, optional password with a cheap KDF.
pub fn config(id: u64, cluster: &str, password: Option<&str>) -> NetConfig {
    let mut c = NetConfig::new(id, cluster, "127.0.0.1:0");
    c.password = password.map(str::to_string);
    c.kdf_iterations = TEST_KDF_ITERATIONS;
    c
}

/// Started transports that know each other, and their inboxes.
pub struct Cluster {
    pub nodes: Vec<UdpTransport>,
    pub inboxes: Vec<Receiver<Message>>,
}

impl Cluster {
    /// Binds every config, tells every node every other node's address, starts all.
    pub fn start(configs: Vec<NetConfig>) -> Cluster {
        let mut nodes: Vec<UdpTransport> = configs
            .into_iter()
            .map(|c| UdpTransport::bind(c).expect("bind"))
            .collect();
        let addrs: Vec<(u64, std::net::SocketAddr)> = nodes
            .iter()
            .map(|n| (n.config().node_id, n.local_addr()))
            .collect();
        for node in &nodes {
            for &(id, addr) in &addrs {
                node.directory().insert(id, format!("n{id}"), addr);
            }
        }
        let mut inboxes = Vec::new();
        for node in &mut nodes {
            let (tx, rx) = crossbeam_channel::bounded(4096);
            node.start(tx).expect("start");
            inboxes.push(rx);
        }
        Cluster { nodes, inboxes }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

/// Polls `cond` until it holds or the deadline passes; returns whether it held.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Receives exactly `n` messages or fails at the deadline.
pub fn recv_n(inbox: &Receiver<Message>, n: usize) -> Vec<Message> {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = end.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(left) {
            Ok(m) => got.push(m),
            Err(_) => panic!(
                "received {} of {n} messages before the deadline: {got:?}",
                got.len()
            ),
        }
    }
    got
}
