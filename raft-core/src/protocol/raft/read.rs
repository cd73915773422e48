//! Linearizable reads without a log entry (thesis §6.4): read index and leases.

use super::*;

impl<L: Log> Raft<L> {
    /// Asks for a linearizable read. The answer arrives in [`Ready::read_states`]: wait
    /// until the state machine has applied its index, then read locally.
    ///
    /// On the leader: confirmed by a heartbeat round (or at once under a valid lease);
    /// a new leader first waits for an entry of its term to commit. On a follower: asks
    /// the leader.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] when no leader is known.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ProposeError> {
        if self.role == Role::Leader {
            self.leader_read(self.id, request_id);
            return Ok(());
        }
        let Some(leader) = self.leader else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        self.send(leader, MessageBody::ReadIndex { request_id });
        Ok(())
    }

    pub(super) fn leader_read(&mut self, from: NodeId, request_id: u64) {
        if !self.committed_in_current_term() {
            // Until an entry of its term commits, a new leader does not know the
            // commit index of its predecessor (thesis §6.4 step 1).
            self.reads_before_first_commit.push((from, request_id));
            return;
        }
        let index = self.log.committed;
        if self.voters.len() == 1
            || (self.config.read_mode == ReadMode::Lease
                && !self.timeout_now_sent
                && self.lease_valid())
        {
            self.answer_read(from, request_id, Some(index));
            return;
        }
        self.pending_reads.push_back(PendingRead {
            from,
            request_id,
            index,
            round: self.read_round + 1,
        });
        self.read_round_needed = true;
    }

    pub(super) fn answer_read(&mut self, from: NodeId, request_id: u64, index: Option<LogIndex>) {
        if from == self.id {
            self.read_states.push(ReadState { request_id, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { request_id, index });
        }
    }

    /// The newest heartbeat round a majority (the leader included) acknowledged.
    pub(super) fn confirmed_round(&self) -> u64 {
        let mut acked: BTreeMap<NodeId, u64> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.read_round_acked))
            .collect();
        acked.insert(self.id, self.read_round);
        quorum::committed_index(&self.voters, &acked)
    }

    pub(super) fn release_confirmed_reads(&mut self) {
        let confirmed = self.confirmed_round();
        while let Some(read) = self.pending_reads.front().copied() {
            if read.round > confirmed {
                break;
            }
            self.pending_reads.pop_front();
            self.answer_read(read.from, read.request_id, Some(read.index));
        }
    }

    /// Whether the leader's lease holds: a majority acknowledged a heartbeat sent less
    /// than `election_timeout - lease_drift` ticks ago, so no other leader can have been
    /// elected since (followers ignore votes for an election timeout after hearing from
    /// us, and we count from when we sent, not when they answered).
    ///
    /// `now_ticks` is only as good as the driver: it must deliver every tick that came
    /// due before it steps a message, asks for a read or advances (the runtime's
    /// `WaitLoop::keep_time`; the simulator's resume). A driver that handles input queued
    /// during a stall before the missed ticks makes a run-out lease look fresh (issue 19).
    pub(super) fn lease_valid(&self) -> bool {
        let oldest_round = self.read_round + 1 - self.round_sent_ticks.len() as u64;
        let sent_tick = |round: u64| -> u64 {
            if round < oldest_round || round == 0 {
                0
            } else {
                self.round_sent_ticks[(round - oldest_round) as usize]
            }
        };
        let mut acked: BTreeMap<NodeId, u64> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, sent_tick(p.read_round_acked)))
            .collect();
        acked.insert(self.id, self.now_ticks);
        let quorum_tick = quorum::committed_index(&self.voters, &acked);
        let lease_ticks =
            u64::from(self.config.election_timeout_ticks - self.config.lease_drift_ticks);
        quorum_tick > 0 && self.now_ticks < quorum_tick + lease_ticks
    }

    pub(super) fn fail_pending_reads(&mut self) {
        let pending: Vec<(NodeId, u64)> = self
            .pending_reads
            .drain(..)
            .map(|r| (r.from, r.request_id))
            .chain(self.reads_before_first_commit.drain(..))
            .collect();
        for (from, request_id) in pending {
            self.answer_read(from, request_id, None);
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct PendingRead {
    pub(super) from: NodeId,
    pub(super) request_id: u64,
    pub(super) index: LogIndex,
    pub(super) round: u64,
}
