//! Membership changes (Raft thesis §4): configuration entries, in force from the moment
//! a node appends them (§4.1); one change in flight at a time; single-server changes
//! (§4.2) and joint consensus (§4.3) with an automatic leave once the joint entry
//! commits; learners; a removed leader steps down once its removal commits.
//!
//! The configuration rules themselves (what a change leads to, how a joint quorum
//! counts) are in [`super::membership`].

use super::*;

/// Most bytes of log read at once while looking for configuration entries at startup.
const CONFIG_SCAN_BYTES_MAX: u64 = 4 * 1024 * 1024;

impl<L: Log> Raft<L> {
    /// The configuration history a node resumes with: `base` (from the stored
    /// snapshot, at its last index) or the initial configuration, then every
    /// configuration entry in the log after it.
    pub(super) fn load_configs(
        config: &Config,
        log: &RaftLog<L>,
        base: Option<(LogIndex, Membership)>,
    ) -> Result<ConfigHistory, ConfigError> {
        let (from, base) =
            base.unwrap_or_else(|| (0, Membership::new(config.voters.iter().copied(), [])));
        let mut configs = ConfigHistory::new(from, base);
        let mut next = (from + 1).max(log.first_index());
        let last = log.last_index();
        while next <= last {
            let entries = log
                .entries(next, last + 1, CONFIG_SCAN_BYTES_MAX)
                .map_err(|e| {
                    ConfigError::new(
                        "log",
                        format!("cannot read entries from {next} for configurations: {e}"),
                    )
                })?;
            let Some(end) = entries.last().map(|e| e.index) else {
                break;
            };
            for e in entries.iter().filter(|e| e.kind == EntryKind::Membership) {
                match membership::decode_entry(&e.data) {
                    Ok(m) => configs.push(e.index, m),
                    Err(why) => {
                        return Err(ConfigError::new(
                            "log",
                            format!("configuration entry {} is unreadable: {why}", e.index),
                        ))
                    }
                }
            }
            next = end + 1;
        }
        Ok(configs)
    }

    /// The configuration in force: the latest in the log, committed or not (thesis
    /// §4.1).
    pub fn membership(&self) -> &Membership {
        self.configs.current()
    }

    /// The configuration in force at `index` (at or after the log's start).
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.configs.at(index)
    }

    /// The index from which the configuration in force at `index` holds: its
    /// configuration entry's index, or where the node's configuration history starts
    /// (0, or its snapshot's last index).
    pub fn membership_since(&self, index: LogIndex) -> LogIndex {
        self.configs.index_at(index)
    }

    /// The metadata of a snapshot of the state machine at `index`, for the driver to
    /// store with the state machine's bytes: the index, its term and the configuration in
    /// force there, so that a node installing or restarting from the snapshot knows who
    /// votes. `None` if `index` is not in the log (compacted, or beyond its end).
    pub fn snapshot_meta_at(&self, index: LogIndex) -> Option<SnapshotMeta> {
        let term = self.log.term(index)?;
        Some(SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: Some(self.configs.at(index).clone()),
        })
    }

    /// Proposes a membership change. Only the leader accepts, one change at a time, and
    /// only once it has committed an entry of its term (thesis §4.1). The new
    /// configuration is in force on the leader at once, and on each follower as soon as
    /// it appends the entry. A joint configuration ([`MembershipChange::ChangeTo`]) is
    /// left automatically once its entry commits (thesis §4.3).
    ///
    /// Returns where the configuration entry was placed.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`]; [`ProposeError::Transferring`];
    /// [`ProposeError::ChangeInFlight`]; [`ProposeError::NotCommittedInTerm`];
    /// [`ProposeError::Membership`] when the change does not apply to the configuration
    /// in force. Nothing changed.
    ///
    /// ```
    /// use raft_core::protocol::membership::MembershipChange;
    /// use raft_core::{Config, Log, MemLog, Raft};
    /// let mut node = Raft::new(Config::new(1, [1]), MemLog::new(), 7).unwrap();
    /// node.campaign();
    /// let ready = node.ready();
    /// node.log_mut().append(&ready.entries).unwrap();
    /// node.advance(ready);
    /// node.propose_membership(MembershipChange::AddLearner(2)).unwrap();
    /// assert!(node.membership().is_learner(2));
    /// ```
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.propose_membership_with_addresses(change, BTreeMap::new())
    }

    /// [`Raft::propose_membership`], recording `addresses` (`host:port` per node) in
    /// the new configuration for the runtime's transport. Addresses of nodes that are
    /// not members of the new configuration are ignored; the protocol never reads them.
    ///
    /// # Errors
    /// As [`Raft::propose_membership`].
    pub fn propose_membership_with_addresses(
        &mut self,
        change: MembershipChange,
        addresses: BTreeMap<NodeId, String>,
    ) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        if !self.committed_in_current_term() {
            return Err(ProposeError::NotCommittedInTerm);
        }
        // One change at a time. Leaving a joint configuration is the second half of its
        // change, allowed once the joint entry committed.
        let uncommitted = !self.broken(BrokenVariant::TwoChangesInFlight)
            && self.configs.current_index() > self.log.committed;
        let joint = self.configs.current().is_joint() && change != MembershipChange::LeaveJoint;
        if uncommitted || joint {
            return Err(ProposeError::ChangeInFlight {
                index: self.configs.current_index(),
            });
        }
        let mut next = self.configs.current().apply(&change)?;
        for (id, addr) in addresses {
            if next.members().any(|m| m == id) {
                next.addresses.insert(id, addr);
            }
        }
        let placed = self.append_config(next);
        log::info!(
            "n{} proposed {change:?} at {}@{}: now {:?}",
            self.id,
            placed.0,
            placed.1,
            self.configs.current()
        );
        Ok(placed)
    }

    /// Leader: appends `next` as a configuration entry, in force at once.
    fn append_config(&mut self, next: Membership) -> (LogIndex, Term) {
        let index = self.log.last_index() + 1;
        self.log.append_unstable(&[Entry {
            term: self.term,
            index,
            kind: EntryKind::Membership,
            data: membership::encode_entry(&next),
        }]);
        self.configs.push(index, next);
        self.sync_progress();
        self.broadcast_needed = true;
        (index, self.term)
    }

    /// Leader: tracks the progress of exactly the members of the configuration in force
    /// (new members start probing from the end of the log).
    pub(super) fn sync_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let peers = self.peers();
        self.progress.retain(|id, _| peers.contains(id));
        let next = self.log.last_index() + 1;
        for peer in peers {
            self.progress
                .entry(peer)
                .or_insert_with(|| Progress::new(next));
        }
        if let Some(to) = self.lead_transferee {
            if !self.configs.current().is_voter(to) {
                self.lead_transferee = None;
            }
        }
    }

    /// Leader, after its commit index moved: once a joint configuration's entry
    /// commits, leave it (thesis §4.3: C_new follows C_old,new automatically).
    pub(super) fn maybe_leave_joint(&mut self) {
        if self.role != Role::Leader
            || !self.configs.current().is_joint()
            || self.configs.current_index() > self.log.committed
        {
            return;
        }
        match self.configs.current().apply(&MembershipChange::LeaveJoint) {
            Ok(next) => {
                let (index, term) = self.append_config(next);
                log::info!(
                    "n{} leaving the joint configuration at {index}@{term}: now {:?}",
                    self.id,
                    self.configs.current()
                );
            }
            Err(e) => log::error!("n{} cannot leave the joint configuration: {e}", self.id),
        }
    }

    /// Leader: a leader that is not a voter of the configuration in force (it removed
    /// itself) keeps leading until that configuration commits, then steps down (thesis
    /// §4.2.2), so the remaining voters elect one of theirs.
    pub(super) fn step_down_if_removed(&mut self) {
        if self.role == Role::Leader
            && !self.configs.current().is_voter(self.id)
            && self.configs.current_index() <= self.log.committed
        {
            log::info!(
                "n{} is not a voter of the committed configuration {:?}: stepping down",
                self.id,
                self.configs.current()
            );
            self.become_follower(self.term, None);
        }
    }

    /// Follower: entries from `from` on were (re)written by the leader's append:
    /// configurations past `from` that were truncated no longer apply, and those in
    /// the new entries are in force at once.
    pub(super) fn record_appended_configs(&mut self, from: LogIndex, entries: &[Entry]) {
        self.configs.truncate_from(from);
        for e in entries
            .iter()
            .filter(|e| e.index >= from && e.kind == EntryKind::Membership)
        {
            match membership::decode_entry(&e.data) {
                Ok(m) => self.configs.push(e.index, m),
                Err(why) => log::error!(
                    "n{} keeps its configuration: entry {}@{} from the leader is not one \
                     ({why})",
                    self.id,
                    e.index,
                    e.term
                ),
            }
        }
    }

    /// Follower: a snapshot up to `meta` is being installed: the configuration it
    /// carries is in force at its last index, and the configuration entries after it stay
    /// if the log kept its suffix (`kept_suffix`). Returns the error to log when the
    /// configuration is invalid (nothing changed). A snapshot without one (stored before
    /// configurations were kept with snapshots) keeps the configuration this node had at
    /// that index.
    pub(super) fn configs_from_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        kept_suffix: bool,
    ) -> Result<(), String> {
        let ignore = self.broken(BrokenVariant::SnapshotWithoutConfig);
        let base = match &meta.membership {
            Some(m) if !ignore => {
                m.validate()
                    .map_err(|e| format!("its configuration is invalid: {e}"))?;
                m.clone()
            }
            _ => self.configs.at(meta.last_index).clone(),
        };
        self.configs.restart_at(meta.last_index, base, kept_suffix);
        Ok(())
    }
}
