//! The run's trace: a hash of every event (so two runs of a seed can be compared) and a
//! ring of the last events, printed when a check fails.

use std::collections::VecDeque;
use std::fmt;

use raft_core::{LogIndex, NodeId, Role, Term};

use crate::checker::digest;
use crate::sim_log::CrashOutcome;

/// How many recent events the ring keeps.
pub const TRACE_EVENTS_MAX: usize = 60;

/// One notable event of a run.
#[derive(Clone, Debug)]
#[allow(missing_docs)] // field names say it all
pub enum TraceEvent {
    Deliver {
        from: NodeId,
        to: NodeId,
        term: Term,
        kind: &'static str,
        detail: [u64; 4],
    },
    Drop {
        from: NodeId,
        to: NodeId,
        kind: &'static str,
        cut: bool,
    },
    Role {
        node: NodeId,
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
    Commit {
        node: NodeId,
        index: LogIndex,
    },
    Crash {
        node: NodeId,
        outcome: CrashOutcome,
    },
    Restart {
        node: NodeId,
        term: Term,
        commit: LogIndex,
        last_index: LogIndex,
    },
    Pause {
        node: NodeId,
        ticks: u64,
    },
    /// A node's sync blocks it (see `FaultProfile::stall`).
    Stall {
        node: NodeId,
        ticks: u64,
    },
    Resume {
        node: NodeId,
        missed_ticks: u64,
    },
    Partition {
        description: String,
    },
    Heal,
    Transfer {
        from: NodeId,
        to: NodeId,
    },
    /// A leader accepted a membership change; its entry is at `index`.
    Membership {
        leader: NodeId,
        index: LogIndex,
        change: String,
    },
    Campaign {
        node: NodeId,
    },
    Invoke {
        client: usize,
        op: u64,
        node: NodeId,
        /// What it asks, as the workload shows it.
        input: String,
        /// Two words that stand for the input in the hash.
        words: [u64; 2],
    },
    Return {
        client: usize,
        op: u64,
        /// The output as the workload shows it; `None`: returned without one.
        output: Option<String>,
        /// A word that stands for the output in the hash.
        word: u64,
    },
    GiveUp {
        client: usize,
        op: u64,
    },
    Phase {
        description: &'static str,
    },
    /// A node snapshotted its state machine at `index` and compacted its log to
    /// `compacted_to` (unchanged if the trailing window kept everything).
    SnapshotTaken {
        node: NodeId,
        index: LogIndex,
        compacted_to: LogIndex,
    },
    /// A node installed a snapshot from the leader and restored its state machine.
    SnapshotInstalled {
        node: NodeId,
        index: LogIndex,
    },
}

impl TraceEvent {
    fn hash_words(&self) -> [u64; 6] {
        use TraceEvent::*;
        match self {
            Deliver {
                from,
                to,
                term,
                kind,
                detail,
            } => [
                1,
                *from ^ (*to << 8),
                *term,
                digest(kind.as_bytes()),
                detail[0] ^ detail[1] << 1,
                detail[2] ^ detail[3] << 2,
            ],
            Drop {
                from,
                to,
                kind,
                cut,
            } => [2, *from, *to, digest(kind.as_bytes()), u64::from(*cut), 0],
            Role {
                node,
                role,
                term,
                leader,
            } => [3, *node, *role as u64, *term, leader.unwrap_or(0), 0],
            Commit { node, index } => [4, *node, *index, 0, 0, 0],
            Crash { node, outcome } => [
                5,
                *node,
                outcome.pending_writes as u64,
                outcome.kept_writes as u64,
                u64::from(outcome.torn_append),
                0,
            ],
            Restart {
                node,
                term,
                commit,
                last_index,
            } => [6, *node, *term, *commit, *last_index, 0],
            Pause { node, ticks } => [7, *node, *ticks, 0, 0, 0],
            Stall { node, ticks } => [19, *node, *ticks, 0, 0, 0],
            Resume { node, missed_ticks } => [8, *node, *missed_ticks, 0, 0, 0],
            Partition { description } => [9, digest(description.as_bytes()), 0, 0, 0, 0],
            Heal => [10, 0, 0, 0, 0, 0],
            Transfer { from, to } => [11, *from, *to, 0, 0, 0],
            Campaign { node } => [12, *node, 0, 0, 0, 0],
            Membership {
                leader,
                index,
                change,
            } => [30, *leader, *index, digest(change.as_bytes()), 0, 0],
            Invoke {
                client,
                op,
                node,
                words,
                ..
            } => [13, *client as u64, *op, *node, words[0], words[1]],
            Return {
                client, op, word, ..
            } => [14, *client as u64, *op, *word, 0, 0],
            GiveUp { client, op } => [15, *client as u64, *op, 0, 0, 0],
            Phase { description } => [16, digest(description.as_bytes()), 0, 0, 0, 0],
            SnapshotTaken {
                node,
                index,
                compacted_to,
            } => [17, *node, *index, *compacted_to, 0, 0],
            SnapshotInstalled { node, index } => [18, *node, *index, 0, 0, 0],
        }
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TraceEvent::*;
        match self {
            Deliver {
                from,
                to,
                term,
                kind,
                detail: d,
            } => {
                write!(f, "n{from} -> n{to} {kind} t{term}")?;
                match *kind {
                    "append" => write!(
                        f,
                        " prev {}@{} +{} entries commit {}",
                        d[0], d[1], d[2], d[3]
                    ),
                    "append_response" if d[1] == 1 => {
                        write!(f, " REJECT {} (hint last {} conflict {})", d[0], d[2], d[3])
                    }
                    "append_response" => write!(f, " ok {}", d[0]),
                    "vote" | "pre_vote" => write!(
                        f,
                        " last {}@{}{}",
                        d[0],
                        d[1],
                        if d[2] == 1 { " (transfer)" } else { "" }
                    ),
                    "vote_response" | "pre_vote_response" => {
                        write!(f, " {}", if d[0] == 1 { "granted" } else { "refused" })
                    }
                    "heartbeat" => write!(f, " commit {} round {}", d[0], d[1]),
                    "heartbeat_response" => write!(f, " round {} last {}", d[0], d[1]),
                    "install_snapshot" => write!(
                        f,
                        " up to {} offset {} +{} bytes{}",
                        d[0],
                        d[1],
                        d[2],
                        if d[3] == 1 { " (last chunk)" } else { "" }
                    ),
                    "snapshot_response" => write!(f, " {} next offset {}", d[0], d[1]),
                    _ => Ok(()),
                }
            }
            Drop {
                from,
                to,
                kind,
                cut,
            } => {
                write!(
                    f,
                    "n{from} -> n{to} {kind} {}",
                    if *cut { "cut by partition" } else { "lost" }
                )
            }
            Role {
                node,
                role,
                term,
                leader,
            } => write!(f, "n{node} is {role:?} at term {term} (leader {leader:?})"),
            Commit { node, index } => write!(f, "n{node} commit -> {index}"),
            Crash { node, outcome } => write!(
                f,
                "CRASH n{node}: kept {}/{} unsynced writes{}{}{}",
                outcome.kept_writes,
                outcome.pending_writes,
                if outcome.torn_append {
                    ", last append torn"
                } else {
                    ""
                },
                if outcome.lost_snapshot {
                    ", unsynced snapshot lost"
                } else {
                    ""
                },
                if outcome.snapshot_without_compaction {
                    ", snapshot kept without its compaction"
                } else {
                    ""
                }
            ),
            Restart {
                node,
                term,
                commit,
                last_index,
            } => {
                write!(
                    f,
                    "RESTART n{node} at term {term}, commit {commit}, last index {last_index}"
                )
            }
            Pause { node, ticks } => write!(f, "PAUSE n{node} for {ticks} ticks"),
            Stall { node, ticks } => {
                write!(f, "STALL n{node}: its sync blocks it for {ticks} ticks")
            }
            Resume { node, missed_ticks } => {
                write!(f, "RESUME n{node} ({missed_ticks} missed ticks)")
            }
            Partition { description } => write!(f, "PARTITION {description}"),
            Heal => write!(f, "HEAL network"),
            Transfer { from, to } => write!(f, "n{from} transfers leadership to n{to}"),
            Campaign { node } => write!(f, "n{node} forced to campaign"),
            Membership {
                leader,
                index,
                change,
            } => write!(f, "n{leader} proposes {change} at {index}"),
            Invoke {
                client,
                op,
                node,
                input,
                ..
            } => write!(f, "c{client} invokes op{op} {input} at n{node}"),
            Return {
                client, op, output, ..
            } => match output {
                Some(v) => write!(f, "c{client} op{op} returns {v}"),
                None => write!(f, "c{client} op{op} returns ok"),
            },
            GiveUp { client, op } => write!(f, "c{client} op{op} timed out (never returns)"),
            Phase { description } => write!(f, "== {description}"),
            SnapshotTaken {
                node,
                index,
                compacted_to,
            } => write!(
                f,
                "n{node} snapshots at {index}, log compacted to {compacted_to}"
            ),
            SnapshotInstalled { node, index } => {
                write!(f, "n{node} installs the leader's snapshot up to {index}")
            }
        }
    }
}

/// The trace of a run: a running hash of everything, a ring of the last events.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    hash: u64,
    ring: VecDeque<(u64, TraceEvent)>,
    events: u64,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            ..Self::default()
        }
    }

    fn mix(&mut self, word: u64) {
        self.hash = (self.hash ^ word)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(5);
    }

    /// Records an event at `time` (simulator units).
    pub fn record(&mut self, time: u64, event: TraceEvent) {
        self.mix(time);
        for w in event.hash_words() {
            self.mix(w);
        }
        self.events += 1;
        if self.ring.len() == TRACE_EVENTS_MAX {
            self.ring.pop_front();
        }
        self.ring.push_back((time, event));
    }

    /// Folds a routine event (a tick) into the hash without keeping it in the ring.
    pub fn record_quiet(&mut self, time: u64, word: u64) {
        self.mix(time);
        self.mix(word);
    }

    /// The hash of everything recorded so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The last events, formatted with their time in ticks.
    pub fn last_events(&self, units_per_tick: u64) -> Vec<String> {
        self.ring
            .iter()
            .map(|(t, e)| format!("{:>9.3} {e}", *t as f64 / units_per_tick as f64))
            .collect()
    }
}
