//! The leader's side: heartbeats and check-quorum (thesis §6.2), handling of
//! followers' answers, and leadership transfer (thesis §3.10).

use super::*;

impl<L: Log> Raft<L> {
    pub(super) fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                log::info!(
                    "n{} heard from no majority within an election timeout; stepping down at term {}",
                    self.id,
                    self.term
                );
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.lead_transferee.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_timeout_ticks {
                if let Some(to) = self.lead_transferee.take() {
                    log::info!("n{} gave up transferring leadership to n{to}", self.id);
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.read_round_needed = true;
        }
    }

    pub(super) fn quorum_recently_active(&mut self) -> bool {
        // The leader itself, and every member heard from (learners do not count).
        let mut active: BTreeMap<NodeId, bool> = [(self.id, true)].into_iter().collect();
        for (&id, p) in self.progress.iter_mut() {
            if p.recent_active {
                active.insert(id, true);
            }
            p.recent_active = false;
        }
        self.configs.current().tally(&active) == VoteResult::Won
    }

    pub(super) fn step_leader(&mut self, m: Message) {
        let from = m.from;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match m.body {
            MessageBody::AppendResponse {
                index,
                reject: None,
            } => {
                let round = self.read_round;
                let pr = self.progress.get_mut(&from).expect("checked above");
                if pr.maybe_update(index, round) {
                    let snapshot_done = pr.state == ProgressState::Snapshot
                        && pr
                            .outgoing
                            .as_ref()
                            .is_none_or(|o| index >= o.info.meta.last_index);
                    if pr.state == ProgressState::Probe || snapshot_done {
                        pr.become_replicate();
                    }
                    if self.maybe_commit() {
                        self.broadcast_needed = true;
                    }
                    if self.lead_transferee == Some(from)
                        && self
                            .progress
                            .get(&from)
                            .is_some_and(|p| p.match_index == self.log.last_index())
                    {
                        self.send_timeout_now(from);
                    }
                }
                // The commit may have left a joint configuration without `from` (its
                // progress is gone then).
                let Some(pr) = self.progress.get(&from) else {
                    return;
                };
                if self.log.last_index() > pr.match_index {
                    self.send_append(from, Send::EntriesBatched);
                } else if pr.commit_sent < self.log.committed && !self.broadcast_needed {
                    // The append that would have told it the commit index was held
                    // back for batching while this answer was on its way. (A pending
                    // broadcast tells it anyway.)
                    self.send_append(from, Send::Batched);
                }
            }
            MessageBody::AppendResponse {
                index,
                reject: Some(hint),
            } => {
                if self.progress[&from].state != ProgressState::Snapshot {
                    self.handle_append_rejection(from, index, hint);
                }
            }
            MessageBody::SnapshotResponse {
                last_index,
                next_offset,
            } => {
                let pr = self.progress.get_mut(&from).expect("checked above");
                let Some(o) = pr.outgoing.as_mut() else {
                    return;
                };
                if o.info.meta.last_index != last_index {
                    return;
                }
                if next_offset < o.acked {
                    // Stale, most likely: overtaken by a later answer (reordered or
                    // duplicated); even an answer of 0 may only say that the first
                    // chunk had not arrived yet. But the follower may also have lost
                    // its partial snapshot (restart, checksum failure): kept, and
                    // believed if the transfer makes no progress for a heartbeat
                    // interval (see `behind`). Rewinding at once let every late answer
                    // resend a whole window.
                    o.behind = o.behind.max(Some(next_offset));
                    return;
                }
                o.behind = None;
                o.acked = next_offset.min(o.info.len_bytes);
                o.sent = o.sent.max(o.acked);
                self.send_snapshot_chunks(from);
            }
            MessageBody::HeartbeatResponse {
                read_round,
                last_index,
            } => {
                let (messages_max, bytes_max) = (
                    self.config.inflight_messages_max,
                    self.config.inflight_bytes_max,
                );
                let pr = self.progress.get_mut(&from).expect("checked above");
                pr.read_round_acked = pr.read_round_acked.max(read_round);
                if read_round > pr.match_round && last_index < pr.match_index {
                    log::warn!(
                        "n{} n{from} lost entries it had acknowledged (last index {last_index} < \
                         match {}): ephemeral storage restarted? rebuilding its log",
                        self.id,
                        pr.match_index
                    );
                    pr.reset_after_data_loss(last_index);
                }
                match pr.state {
                    ProgressState::Probe => pr.probe_sent = false,
                    ProgressState::Replicate => {
                        if pr.is_paused(messages_max, bytes_max) {
                            pr.free_first_one();
                        }
                    }
                    ProgressState::Snapshot => {
                        if let Some(o) = pr.outgoing.as_mut() {
                            if o.acked == o.acked_at_last_heartbeat {
                                // No progress for a heartbeat interval: chunks were lost,
                                // or the follower has less than we counted.
                                if let Some(behind) = o.behind {
                                    o.acked = behind;
                                }
                                o.sent = o.acked;
                            }
                            o.behind = None;
                            o.acked_at_last_heartbeat = o.acked;
                        }
                        self.release_confirmed_reads();
                        self.send_snapshot_chunks(from);
                        return;
                    }
                }
                let behind = pr.match_index < self.log.last_index() || last_index > pr.match_index;
                self.release_confirmed_reads();
                if behind {
                    // Forced: if every entry was already sent (optimistically) and lost,
                    // an empty append at `next_index - 1` makes the follower reject and
                    // the leader fall back to probing from the follower's real end.
                    self.send_append(from, Send::Forced);
                }
            }
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                log::error!(
                    "n{} got {} from n{from} claiming to lead the same term {}: election safety broken?",
                    self.id,
                    m.body.kind(),
                    self.term
                );
            }
            _ => self.counters.messages_ignored += 1,
        }
    }

    /// Asks the leader to hand leadership to `to` (thesis §3.10): once `to`'s log is
    /// caught up it is told to campaign at once. Proposals are refused meanwhile; the
    /// attempt is dropped after an election timeout.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] on a non-leader; [`ProposeError::Transferring`] if
    /// `to` is not another voter of the configuration in force.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id || !self.progress.contains_key(&to) || !self.configs.current().is_voter(to)
        {
            return Err(ProposeError::Transferring);
        }
        log::info!(
            "n{} transferring leadership to n{to} at term {}",
            self.id,
            self.term
        );
        self.lead_transferee = Some(to);
        self.transfer_elapsed = 0;
        if self.progress[&to].match_index == self.log.last_index() {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, Send::Forced);
        }
        Ok(())
    }

    pub(super) fn send_timeout_now(&mut self, to: NodeId) {
        self.timeout_now_sent = true;
        self.send(to, MessageBody::TimeoutNow);
    }
}
