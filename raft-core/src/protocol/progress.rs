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
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Records an acknowledged match; returns whether it moved forward.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
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
        }
    }

    /// Records an append sent with entries up to `last_index`.
    pub(crate) fn sent(&mut self, last_index: LogIndex, bytes: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index + 1;
                    self.inflight.push_back((last_index, bytes));
                    self.inflight_bytes += bytes;
                }
            }
        }
    }

    /// Frees the oldest in-flight append. A full window whose appends were all lost is
    /// never freed by acknowledgements; freeing one slot lets the leader send again, and
    /// the follower's answer (a rejection if appends are missing) resynchronizes it.
    pub(crate) fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
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

    /// Number of appends in flight.
    pub(crate) fn inflight_messages(&self) -> usize {
        self.inflight.len()
    }
}
