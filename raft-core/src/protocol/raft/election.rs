//! Elections (§5.2, §5.4.1; thesis §9.6 pre-vote): the election timer, campaigns,
//! vote requests and a candidate's handling of answers.

use super::*;

impl<L: Log> Raft<L> {
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.campaign_pending && !self.granted_lease_may_hold() {
            self.election_elapsed = 0;
            self.start_election(false);
            return;
        }
        // A node that may not campaign (a learner, a removed node) lets its timer run
        // on: restarting it would keep it "in the leader's lease" forever, refusing the
        // votes that the voters of a configuration it has not heard of yet need.
        if self.election_elapsed >= self.randomized_election_timeout && self.may_campaign() {
            self.election_elapsed = 0;
            self.start_election(false);
        }
    }

    /// Starts an election (pre-vote first when configured), as if the election timer had
    /// fired. Does nothing on a leader.
    ///
    /// Under lease reads ([`ReadMode::Lease`]) a follower that heard from the leader
    /// within the last election timeout (or restarted less than one ago) may hold up that
    /// leader's lease: the leader serves reads alone, trusting that this node will not
    /// help elect anyone, itself included, before the lease runs out. Such a node stops
    /// answering the leader and campaigns once an election timeout has passed since it
    /// last heard from it, at most one election timeout later. (Electing a given node at
    /// once is what [`Raft::transfer_leadership`] is for: the leader then stops its
    /// lease reads.) Simulator seed 106384 found the immediate version serving a stale
    /// lease read.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        if self.granted_lease_may_hold() {
            log::info!(
                "n{} will campaign once the lease it granted n{:?} runs out ({} of {} ticks)",
                self.id,
                self.leader,
                self.election_elapsed,
                self.config.election_timeout_ticks
            );
            self.campaign_pending = true;
            return;
        }
        self.start_election(false);
    }

    /// Whether a lease this node granted (by answering a leader) may still hold.
    pub(super) fn granted_lease_may_hold(&self) -> bool {
        self.config.read_mode == ReadMode::Lease
            && self.config.check_quorum
            && ((self.leader.is_some()
                && self.election_elapsed < self.config.election_timeout_ticks)
                || self.restarted_inside_a_lease_window())
    }

    /// Under lease reads, a node in its first election timeout after a restart may have
    /// acknowledged a leader's heartbeat just before it crashed, holding up that leader's
    /// lease, although it no longer knows of any leader.
    pub(super) fn restarted_inside_a_lease_window(&self) -> bool {
        self.restarted
            && self.config.read_mode == ReadMode::Lease
            && self.now_ticks < u64::from(self.config.election_timeout_ticks)
    }

    pub(super) fn start_election(&mut self, transfer: bool) {
        self.campaign_pending = false;
        // Only a voter campaigns: a learner, a removed node or one not yet added never
        // becomes leader (thesis §4). Except (thesis §4.2.2) a node that an uncommitted
        // entry removed: until that entry commits the voters of the configuration
        // before may need it (it may hold the entry the others lack, and refuse them
        // its vote), so it campaigns among the voters of the configuration in force,
        // whose tally does not count its own vote.
        if !self.may_campaign() {
            log::debug!(
                "n{} does not campaign: not a voter of {:?}",
                self.id,
                self.configs.current()
            );
            return;
        }
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
            self.votes.insert(self.id, true);
            if self.configs.current().tally(&self.votes) == VoteResult::Won {
                self.start_real_election(false);
                return;
            }
            let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
            for peer in self.voter_peers() {
                self.msgs.push(Message {
                    from: self.id,
                    to: peer,
                    term: self.term + 1,
                    body: MessageBody::PreVote {
                        last_log_index,
                        last_log_term,
                    },
                });
            }
        } else {
            self.start_real_election(transfer);
        }
    }

    /// Whether this node may start an election: a voter of the configuration in force,
    /// or one that an uncommitted entry removed (see `start_election`).
    pub(super) fn may_campaign(&self) -> bool {
        self.configs.current().is_voter(self.id) || self.removed_by_uncommitted_entry()
    }

    /// Whether this node is a voter of the configuration before the latest one, which
    /// removed it and is not committed (as far as this node knows).
    pub(super) fn removed_by_uncommitted_entry(&self) -> bool {
        let since = self.configs.current_index();
        since > self.log.committed
            && since > 0
            && !self.configs.current().is_voter(self.id)
            && self.configs.at(since - 1).is_voter(self.id)
    }

    pub(super) fn start_real_election(&mut self, transfer: bool) {
        self.become_candidate();
        self.votes.insert(self.id, true);
        if self.configs.current().tally(&self.votes) == VoteResult::Won {
            self.become_leader();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.voter_peers() {
            self.send(
                peer,
                MessageBody::Vote {
                    last_log_index,
                    last_log_term,
                    transfer,
                },
            );
        }
    }

    pub(super) fn handle_vote_request(&mut self, m: &Message) {
        let (last_log_index, last_log_term, pre) = match m.body {
            MessageBody::Vote {
                last_log_index,
                last_log_term,
                ..
            } => (last_log_index, last_log_term, false),
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => (last_log_index, last_log_term, true),
            _ => unreachable!("only vote requests come here"),
        };
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && m.term > self.term);
        let up_to_date = self.broken(BrokenVariant::VoteWithoutLogCheck)
            || self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = can_vote && up_to_date;
        log::debug!(
            "n{} {} {} for n{} at term {} (our last {}@{}, theirs {}@{}, vote {:?})",
            self.id,
            if granted { "grants" } else { "refuses" },
            if pre { "pre-vote" } else { "vote" },
            m.from,
            m.term,
            self.log.last_index(),
            self.log.last_term(),
            last_log_index,
            last_log_term,
            self.vote
        );
        if pre {
            // A granted pre-vote answers in the term asked about, a refusal in ours.
            let term = if granted { m.term } else { self.term };
            self.msgs.push(Message {
                from: self.id,
                to: m.from,
                term,
                body: MessageBody::PreVoteResponse { granted },
            });
        } else {
            if granted {
                // Persisted (the hard state of this ready) before the answer is sent.
                self.vote = Some(m.from);
                self.election_elapsed = 0;
            }
            self.send(m.from, MessageBody::VoteResponse { granted });
        }
    }

    pub(super) fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // §5.2: a valid leader of our term exists; fall back to follower.
                self.become_follower(self.term, Some(m.from));
                self.step_follower(m);
            }
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                if m.term != self.term + 1 && granted {
                    return;
                }
                self.votes.insert(m.from, granted);
                match self.configs.current().tally(&self.votes) {
                    VoteResult::Won => self.start_real_election(false),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            MessageBody::VoteResponse { granted } if self.role == Role::Candidate => {
                self.votes.insert(m.from, granted);
                match self.configs.current().tally(&self.votes) {
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            MessageBody::TimeoutNow => {
                log::debug!("n{} ignoring timeout-now as candidate", self.id);
            }
            _ => self.counters.messages_ignored += 1,
        }
    }
}
