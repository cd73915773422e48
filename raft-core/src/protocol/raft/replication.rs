//! Log replication (§5.3, §5.4.2): appends and their answers, log matching, and the
//! leader's commit rule.

use super::*;

impl<L: Log> Raft<L> {
    pub(super) fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                let commit = commit.min(self.log.last_index());
                self.log.commit_to(commit);
                self.send(
                    m.from,
                    MessageBody::HeartbeatResponse {
                        read_round,
                        last_index: self.log.last_index(),
                    },
                );
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_snapshot_chunk(m.from, meta, offset, data, done);
            }
            MessageBody::TimeoutNow => {
                log::info!(
                    "n{} told to campaign by n{} (leadership transfer) at term {}",
                    self.id,
                    m.from,
                    self.term
                );
                self.start_election(true);
            }
            _ => self.counters.messages_ignored += 1,
        }
    }

    pub(super) fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
        commit: LogIndex,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit matches the leader already; keep the rest.
            let skip = (self.log.committed - prev_index) as usize;
            if skip >= entries.len() {
                self.send(
                    leader,
                    MessageBody::AppendResponse {
                        index: self.log.committed,
                        reject: None,
                    },
                );
                return;
            }
            let new_prev = self.log.committed;
            let new_prev_term = entries[skip - 1].term;
            return self.handle_append(leader, new_prev, new_prev_term, &entries[skip..], commit);
        }
        if !entries_are_well_formed(prev_index, prev_term, entries) {
            log::warn!(
                "n{} ignoring malformed append from n{leader} after {prev_index}",
                self.id
            );
            self.counters.messages_ignored += 1;
            return;
        }
        if self.log.matches(prev_index, prev_term) {
            let (last_new, conflict) = self.log.append_after(prev_index, entries);
            if let Some(from) = conflict {
                self.record_appended_configs(from, entries);
            }
            self.log.commit_to(commit.min(last_new));
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: last_new,
                    reject: None,
                },
            );
            return;
        }
        let last_index = self.log.last_index();
        let hint = if prev_index > last_index {
            RejectHint {
                last_index,
                conflict_index: last_index + 1,
                conflict_term: None,
            }
        } else {
            RejectHint {
                last_index,
                conflict_index: self.log.first_index_of_term_at(prev_index),
                conflict_term: self.log.term(prev_index),
            }
        };
        log::debug!(
            "n{} rejects append after {prev_index}@{prev_term} from n{leader}: {hint:?}",
            self.id
        );
        self.counters.appends_rejected += 1;
        self.send(
            leader,
            MessageBody::AppendResponse {
                index: prev_index,
                reject: Some(hint),
            },
        );
    }

    pub(super) fn handle_append_rejection(
        &mut self,
        from: NodeId,
        rejected: LogIndex,
        hint: RejectHint,
    ) {
        let pr = &self.progress[&from];
        if rejected < pr.match_index
            || (pr.state == ProgressState::Probe && rejected + 1 != pr.next_index)
        {
            // A stale rejection (reordered or duplicated): we already know better.
            return;
        }
        let mut next = match hint.conflict_term {
            // Skip the follower's whole conflicting term: if we have that term, resume
            // after our last entry of it, else before the follower's first entry of it.
            Some(term) => match self.log.last_index_of_term(term) {
                Some(ours) if ours < rejected => ours + 1,
                _ => hint.conflict_index,
            },
            None => hint.conflict_index,
        };
        let pr = self.progress.get_mut(&from).expect("checked above");
        next = next.clamp(pr.match_index + 1, rejected.max(pr.match_index + 1));
        log::debug!(
            "n{} append to n{from} rejected at {rejected}; retrying from {next} ({hint:?})",
            self.id
        );
        pr.become_probe();
        pr.next_index = next;
        self.send_append(from, Send::Entries);
    }

    /// Sends the next append to `to` if its window allows, as `how` says.
    pub(super) fn send_append(&mut self, to: NodeId, how: Send) {
        let last = self.log.last_index();
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        let pr = &self.progress[&to];
        if pr.is_paused(messages_max, bytes_max) {
            return;
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.start_snapshot_transfer(to, prev_index);
            return;
        };
        // In replicate state the batch must also fit what is left of the byte window, so
        // the bytes in flight never pass `inflight_bytes_max`.
        let budget = match pr.state {
            ProgressState::Replicate => self
                .config
                .append_bytes_max
                .min(bytes_max.saturating_sub(pr.inflight_bytes())),
            ProgressState::Probe | ProgressState::Snapshot => self.config.append_bytes_max,
        };
        let window_in_use = pr.inflight_messages() > 0;
        let entries = if next <= last {
            match self.log.entries(next, last + 1, budget) {
                Ok(entries) => entries,
                Err(e) => {
                    log::error!(
                        "n{} cannot read entries {next}..={last} for n{to}: {e}",
                        self.id
                    );
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let pr = &self.progress[&to];
        if entries.is_empty() && !how.even_empty() && pr.state == ProgressState::Replicate {
            return;
        }
        // Batching: while small appends are unanswered, entries that do not fill an
        // append wait for the answer, and then go together. An append of at least
        // `Config::big_append_bytes_min` (half `append_bytes_max`, 4 KiB at least) is
        // big: waiting would not let it carry much more, so it goes at once and does not
        // count as small (issue 18: 50 KB entries waited a follower's round trip and
        // sync each, one behind the other).
        // (`next <= last` first: a caught-up follower has `next == last + 1`.)
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let big_bytes_min = self.config.big_append_bytes_min();
        let fills = (next <= last && entries.len() as u64 <= last - next) || bytes >= big_bytes_min;
        if how.batched()
            && pr.state == ProgressState::Replicate
            && pr.inflight_small_messages(big_bytes_min)
                >= self.config.inflight_small_appends_max as usize
            && !fills
        {
            return;
        }
        if bytes > budget && window_in_use {
            return; // the next entry does not fit the window: wait for acknowledgements
        }
        let last_sent = prev_index + entries.len() as u64;
        let pr = self.progress.get_mut(&to).expect("peer exists");
        pr.sent(last_sent, bytes);
        pr.commit_sent = self.log.committed;
        log::trace!(
            "n{} -> n{to}: append {} entries after {prev_index}@{prev_term}, commit {}",
            self.id,
            entries.len(),
            self.log.committed
        );
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit: self.log.committed,
            },
        );
    }

    pub(super) fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer, Send::Batched);
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        self.read_round += 1;
        self.round_sent_ticks.push_back(self.now_ticks);
        if self.round_sent_ticks.len() > READ_ROUNDS_REMEMBERED_MAX {
            self.round_sent_ticks.pop_front();
        }
        let round = self.read_round;
        for peer in self.peers() {
            let commit = self.progress[&peer].match_index.min(self.log.committed);
            self.send(
                peer,
                MessageBody::Heartbeat {
                    commit,
                    read_round: round,
                },
            );
        }
        // A single-node cluster confirms its rounds by itself.
        self.release_confirmed_reads();
    }

    /// Advances the commit index to what a majority has, but only to an entry of the
    /// current term (§5.4.2, Figure 8). Returns whether it moved.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let mut matched: BTreeMap<NodeId, LogIndex> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        matched.insert(self.id, self.log.persisted);
        let candidate = self.configs.current().committed_index(&matched);
        if candidate <= self.log.committed {
            return false;
        }
        let any_term = self.broken(BrokenVariant::CommitOlderTerms);
        if !any_term && self.log.term(candidate) != Some(self.term) {
            return false;
        }
        let first_in_term = !self.committed_in_current_term();
        self.log.commit_to(candidate);
        log::trace!("n{} committed up to {candidate}", self.id);
        if first_in_term && self.committed_in_current_term() {
            for (from, request_id) in std::mem::take(&mut self.reads_before_first_commit) {
                self.leader_read(from, request_id);
            }
        }
        self.maybe_leave_joint();
        true
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    pub(super) fn flush_leader_sends(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.broadcast_needed {
            self.broadcast_needed = false;
            self.broadcast_append();
        }
        if self.read_round_needed {
            self.read_round_needed = false;
            self.broadcast_heartbeat();
        }
    }
}

/// How [`Raft::send_append`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Send {
    /// Only if there are entries to send.
    Entries,
    /// Only if there are entries to send, and held back while
    /// `inflight_small_appends_max` appends are unanswered unless they fill an append.
    EntriesBatched,
    /// Even an empty one (to carry the commit index), but held back as `EntriesBatched`.
    Batched,
    /// Even an empty one, at once (a probe, loss recovery, a leadership transfer).
    Forced,
}

impl Send {
    pub(super) fn even_empty(self) -> bool {
        matches!(self, Send::Batched | Send::Forced)
    }

    pub(super) fn batched(self) -> bool {
        matches!(self, Send::Batched | Send::EntriesBatched)
    }
}

/// Whether an append's entries follow `prev_index` contiguously with non-decreasing terms.
pub(super) fn entries_are_well_formed(
    prev_index: LogIndex,
    prev_term: Term,
    entries: &[Entry],
) -> bool {
    let mut term = prev_term;
    for (expected, e) in (prev_index + 1..).zip(entries) {
        if e.index != expected || e.term < term {
            return false;
        }
        term = e.term;
    }
    true
}
