//! Per-follower replication progress, kept by the leader.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader is sending to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches: it sends one append at
    /// a time and waits for the answer.
    Probe,
    /// The follower's log matches: the leader streams appends, up to the in-flight window.
    Replicate,
    /// The follower needs entries that were compacted away: the leader streams it a
    /// snapshot in chunks.
    Snapshot,
}

impl std::fmt::Debug for OutgoingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingSnapshot")
            .field("info", &self.info)
            .field("acked", &self.acked)
            .field("sent", &self.sent)
            .field("acked_at_last_heartbeat", &self.acked_at_last_heartbeat)
            .field("behind", &self.behind)
            .finish_non_exhaustive()
    }
}

/// A snapshot being streamed to one follower.
#[derive(Clone)]
pub(crate) struct OutgoingSnapshot {
    /// What is sent (its checksum goes with the last chunk).
    pub(crate) info: crate::types::SnapshotInfo,
    /// Where its chunks are read from as they go out (`Log::open_snapshot`): it is never
    /// held whole here, and stays readable if the log stores a newer snapshot meanwhile.
    pub(crate) chunks: std::sync::Arc<dyn crate::storage::SnapshotChunks>,
    /// Bytes the follower acknowledged (received in order).
    pub(crate) acked: u64,
    /// Bytes sent so far (`acked <= sent`).
    pub(crate) sent: u64,
    /// `acked` at the previous heartbeat answer: no progress since means chunks were
    /// lost, and the leader resends from `acked`.
    pub(crate) acked_at_last_heartbeat: u64,
    /// The highest answer below `acked` since the previous heartbeat answer, unless an
    /// answer at or above `acked` came after it. Usually one overtaken by later
    /// answers; but if the follower lost its partial snapshot (or a delayed answer
    /// from before it lost it raised `acked`), every answer is below `acked`, and with
    /// no progress for a heartbeat interval the leader believes this one.
    pub(crate) behind: Option<u64>,
}

/// What the leader knows about one follower.
///
/// Invariant: `match_index < next_index`.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ProgressState,
    /// In probe state: an append is outstanding, wait for its answer or a heartbeat answer.
    pub(crate) probe_sent: bool,
    /// In-flight appends as (last index, bytes), oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// The newest read round this follower acknowledged.
    pub(crate) read_round_acked: u64,
    /// In snapshot state: the transfer.
    pub(crate) outgoing: Option<OutgoingSnapshot>,
    /// The leader's read round when `match_index` last advanced: a heartbeat answer of a
    /// later round reflects a log that must hold everything up to `match_index`.
    pub(crate) match_round: u64,
    /// The commit index the last append to this follower carried. An append held back
    /// for batching may have been the one to carry a new commit index: when an answer
    /// frees the window and nothing else is to be sent, the leader still sends the
    /// commit index if this is behind it.
    pub(crate) commit_sent: LogIndex,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Self {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            read_round_acked: 0,
            match_round: 0,
            outgoing: None,
            commit_sent: 0,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.outgoing = None;
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.outgoing = None;
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    pub(crate) fn become_snapshot(
        &mut self,
        info: crate::types::SnapshotInfo,
        chunks: std::sync::Arc<dyn crate::storage::SnapshotChunks>,
    ) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.outgoing = Some(OutgoingSnapshot {
            info,
            chunks,
            acked: 0,
            sent: 0,
            acked_at_last_heartbeat: 0,
            behind: None,
        });
    }

    /// Records an acknowledged match at the leader's current `round`; returns whether it
    /// moved forward.
    pub(crate) fn maybe_update(&mut self, index: LogIndex, round: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.match_round = round;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        self.free_to(index);
        updated
    }

    /// Whether another append may be sent now.
    pub(crate) fn is_paused(&self, messages_max: u32, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() >= messages_max as usize || self.inflight_bytes >= bytes_max
            }
            ProgressState::Snapshot => true,
        }
    }

    /// Records an append sent with entries up to `last_index`.
    pub(crate) fn sent(&mut self, last_index: LogIndex, bytes: u64) {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => self.probe_sent = true,
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index + 1;
                    self.inflight.push_back((last_index, bytes));
                    self.inflight_bytes += bytes;
                }
            }
        }
    }

    /// Frees the oldest in-flight append. Called when a heartbeat answer shows the
    /// follower alive while the window is full: appends were lost (UDP, or the follower
    /// restarted), and one more append will either succeed or be rejected, which moves
    /// the follower to probe.
    pub(crate) fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    /// The follower lost entries it had acknowledged (ephemeral storage restarted empty):
    /// forget what it matched and probe from its real end.
    pub(crate) fn reset_after_data_loss(&mut self, last_index: LogIndex) {
        self.match_index = last_index;
        self.become_probe();
    }

    fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
    }

    /// Entry bytes in flight.
    pub(crate) fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// Number of appends in flight.
    pub(crate) fn inflight_messages(&self) -> usize {
        self.inflight.len()
    }

    /// Number of appends in flight that carry fewer than `big_bytes_min` entry bytes:
    /// the small ones that `inflight_small_appends_max` bounds (at most
    /// `inflight_messages_max` to count).
    pub(crate) fn inflight_small_messages(&self, big_bytes_min: u64) -> usize {
        self.inflight
            .iter()
            .filter(|&&(_, bytes)| bytes < big_bytes_min)
            .count()
    }
}
