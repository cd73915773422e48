//! Membership changes at run time: the handle's blocking calls (`add_learner`,
//! `promote`, `remove`, `change_membership`, `wait_caught_up`), the WaitLoop's side
//! (propose the change, answer once it commits, publish events, tell the transport
//! where new members are), and the membership shown in the status.
//!
//! A change is proposed on the leader only: a follower answers
//! [`NodeError::NotLeader`] with the leader it knows of, so the caller asks it (a
//! change is rare and operator-driven, unlike `propose`, which is forwarded). Each call
//! returns once the change is committed (a joint change: once the joint configuration
//! is left), or with an error that says whether it may still take effect:
//! [`NodeError::Timeout`] (it may), [`NodeError::Dropped`] (a new leader overwrote it:
//! it did not), [`NodeError::Rejected`] and [`NodeError::NotLeader`] (nothing changed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, Sender};

use super::error::NodeError;
use super::events::Event;
use super::state_machine::StateMachine;
use super::wait_loop::{Request, WaitLoop};
use super::Node;
use crate::protocol::membership::{MembershipChange, MembershipError};
use crate::protocol::ProposeError;
use crate::types::{LogIndex, Membership, NodeId, Term};

/// The configuration in force on a node, as [`crate::node::NodeStatus`] shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipStatus {
    /// The voters (during a joint change: the incoming voters).
    pub voters: BTreeSet<NodeId>,
    /// The learners (non-voting members).
    pub learners: BTreeSet<NodeId>,
    /// During a joint change, the voters being left; empty otherwise.
    pub outgoing_voters: BTreeSet<NodeId>,
    /// Members' addresses, as given when they were added.
    pub addresses: BTreeMap<NodeId, String>,
    /// Index of the configuration's entry (0, or the snapshot's last index, for the
    /// configuration the node started with).
    pub index: LogIndex,
    /// Whether a change is pending: the configuration is not committed yet, or it is
    /// joint (it is left automatically once committed).
    pub pending: bool,
}

impl MembershipStatus {
    pub(crate) fn new(m: &Membership, index: LogIndex, commit_index: LogIndex) -> Self {
        MembershipStatus {
            voters: m.voters.clone(),
            learners: m.learners.clone(),
            outgoing_voters: m.outgoing_voters.clone(),
            addresses: m.addresses.clone(),
            index,
            pending: index > commit_index || m.is_joint(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
            || self.outgoing_voters.contains(&id)
            || self.learners.contains(&id)
    }
}

/// A membership change waiting for its configuration entry to commit.
pub(crate) struct ChangeWaiter {
    /// Where the configuration entry was placed.
    index: LogIndex,
    term: Term,
    /// A joint change: answer once the joint configuration is left, not when it commits.
    until_left: bool,
    /// Whether the entry at `index` was seen committed (a joint change then waits for
    /// the leave).
    committed: bool,
    reply: Sender<Result<LogIndex, NodeError>>,
}

/// What the WaitLoop last saw of the configuration in force, to publish changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeenConfig {
    index: LogIndex,
    committed: bool,
}

/// How long a handle call waits between two questions to the WaitLoop (caught-up
/// checks, retries of a change refused for a moment).
const POLL_INTERVAL: Duration = Duration::from_millis(5);

impl<S: StateMachine> WaitLoop<S> {
    /// A membership change from the handle: proposed here if this node leads, refused
    /// with the leader's id otherwise. Answered once committed (see `check_membership`).
    pub(crate) fn on_change_membership(
        &mut self,
        change: MembershipChange,
        addresses: BTreeMap<NodeId, String>,
        reply: Sender<Result<LogIndex, NodeError>>,
    ) {
        let id = self.shared.id;
        if self.raft.role() != crate::protocol::Role::Leader {
            let _ = reply.send(Err(NodeError::NotLeader {
                hint: self.raft.leader(),
            }));
            return;
        }
        let until_left = matches!(change, MembershipChange::ChangeTo { .. });
        match self
            .raft
            .propose_membership_with_addresses(change.clone(), addresses)
        {
            Ok((index, term)) => self.change_waiters.push(ChangeWaiter {
                index,
                term,
                until_left,
                committed: false,
                reply,
            }),
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(Err(NodeError::NotLeader { hint: leader }));
            }
            Err(e) => {
                log::info!("n{id} refused membership change {change:?}: {e}");
                let _ = reply.send(Err(NodeError::Rejected(e)));
            }
        }
    }

    /// After every turn: answers the changes that committed (or were overwritten),
    /// publishes a configuration that came into force or committed, and tells the
    /// transport the addresses of a configuration that came into force.
    pub(crate) fn check_membership(&mut self) {
        let commit = self.raft.commit_index();
        let last = self.raft.last_index();
        let current_index = self.raft.membership_since(last);
        let seen = SeenConfig {
            index: current_index,
            committed: current_index <= commit,
        };
        if seen != self.seen_config {
            let membership = self.raft.membership().clone();
            if seen.index != self.seen_config.index {
                log::info!(
                    "n{} configuration at {} in force: {membership:?}",
                    self.shared.id,
                    seen.index
                );
                self.update_transport_peers();
            } else {
                log::info!(
                    "n{} configuration at {} committed",
                    self.shared.id,
                    seen.index
                );
            }
            self.seen_config = seen;
            // The status shows the new configuration before any caller is answered.
            self.publish_status();
            if self.shared.events.has_subscribers() {
                self.shared.events.publish(Event::MembershipChanged {
                    index: seen.index,
                    membership,
                    committed: seen.committed,
                });
            }
        }
        if self.change_waiters.is_empty() {
            return;
        }
        let joint = self.raft.membership().is_joint();
        let waiters = std::mem::take(&mut self.change_waiters);
        for mut w in waiters {
            if !w.committed {
                // An entry of another term at the index: a new leader overwrote the
                // change. A configuration entry of ours there, committed: done.
                let ours = self.raft.term_at(w.index).map(|t| t == w.term);
                match ours {
                    Some(false) => {
                        let _ = w.reply.send(Err(NodeError::Dropped));
                        continue;
                    }
                    None if w.index > last => {
                        let _ = w.reply.send(Err(NodeError::Dropped));
                        continue;
                    }
                    _ if w.index <= commit => w.committed = true,
                    _ => {}
                }
            }
            if w.committed
                && (!w.until_left || (!joint && current_index > w.index && seen.committed))
            {
                let _ = w.reply.send(Ok(w.index));
                continue;
            }
            self.change_waiters.push(w);
        }
    }

    /// Leader: how many entries member `id` is behind the leader's last index, from
    /// the protocol's progress as of now. A member that has not acknowledged the
    /// configuration in force yet counts as infinitely behind: on a short log a learner
    /// that never answered (not started, unreachable) is only a few entries behind, and
    /// promoting it would add a voter that cannot vote.
    pub(crate) fn lag_of(&self, id: NodeId) -> Result<LogIndex, NodeError> {
        if self.raft.role() != crate::protocol::Role::Leader {
            return Err(NodeError::NotLeader {
                hint: self.raft.leader(),
            });
        }
        let not_a_member =
            || NodeError::Rejected(ProposeError::Membership(MembershipError::NotAMember(id)));
        if id == self.shared.id || !self.raft.membership().members().any(|m| m == id) {
            return Err(not_a_member());
        }
        let status = self.raft.status();
        let peer = status
            .peers
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(not_a_member)?;
        if peer.match_index < self.raft.membership_since(status.last_index) {
            return Ok(LogIndex::MAX);
        }
        Ok(status.last_index.saturating_sub(peer.match_index))
    }

    /// Tells the transport where the members of the configuration in force are.
    pub(crate) fn update_transport_peers(&mut self) {
        let id = self.shared.id;
        let peers: Vec<(NodeId, String)> = self
            .raft
            .membership()
            .addresses
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(peer, addr)| (*peer, addr.clone()))
            .collect();
        if !peers.is_empty() {
            self.transport.update_peers(&peers);
        }
    }
}

/// Whether node `id` was a member of a configuration in `raft`'s history but is not one
/// of the configuration in force: it was removed.
pub(crate) fn was_removed<L: crate::storage::Log>(
    raft: &crate::protocol::Raft<L>,
    id: NodeId,
) -> bool {
    let is_member = |m: &Membership| m.members().any(|m| m == id);
    if is_member(raft.membership()) {
        return false;
    }
    let mut index = raft.last_index();
    loop {
        let since = raft.membership_since(index);
        if is_member(raft.membership_at(since)) {
            return true;
        }
        if since == 0 || raft.membership_since(since - 1) == since {
            return false;
        }
        index = since - 1;
    }
}

impl<S: StateMachine> Node<S> {
    /// Adds node `id` as a learner reachable at `addr` (`host:port`): it receives the
    /// log (or a snapshot) but does not vote. Every node's transport learns `addr` from
    /// the configuration. Call it on the leader. Returns the index of the configuration
    /// entry once it is committed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use raft_core::node::{ChannelNetwork, KvStore, Node, NodeConfig};
    /// use raft_core::MemLog;
    ///
    /// let net = ChannelNetwork::new();
    /// let start = |id| {
    ///     Node::<KvStore<String, String>>::builder(NodeConfig::new(id, [1]))
    ///         .log(MemLog::new())
    ///         .transport(net.transport(id))
    ///         .state_machine(KvStore::new())
    ///         .start()
    ///         .unwrap()
    /// };
    /// let (n1, n2) = (start(1), start(2)); // n2 is not a member: it waits to be added
    /// let t = Duration::from_secs(10);
    /// n1.wait_for_leader(t).unwrap();
    /// n1.add_learner(2, "n2.example:7002", t).unwrap();
    /// n1.wait_caught_up(2, 0, t).unwrap();
    /// n1.promote(2, t).unwrap();
    /// assert_eq!(n1.status().membership.voters, [1, 2].into());
    /// n1.stop();
    /// n2.stop();
    /// ```
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] (ask `hint`), [`NodeError::Rejected`] (already a member,
    /// a change in flight: nothing changed), [`NodeError::Dropped`] (a new leader
    /// overwrote it: it did not take effect), [`NodeError::Timeout`] (it may still take
    /// effect), [`NodeError::Stopped`].
    pub fn add_learner(
        &self,
        id: NodeId,
        addr: impl Into<String>,
        timeout: Duration,
    ) -> Result<LogIndex, NodeError> {
        let addresses = [(id, addr.into())].into_iter().collect();
        self.change(MembershipChange::AddLearner(id), addresses, timeout)
    }

    /// Makes learner `id` a voter (a single-server change, thesis §4.2). Promote a
    /// learner once it has caught up ([`Node::wait_caught_up`], or
    /// [`Node::promote_caught_up`]): a voter far behind slows commits down.
    ///
    /// # Errors
    /// As [`Node::add_learner`].
    pub fn promote(&self, id: NodeId, timeout: Duration) -> Result<LogIndex, NodeError> {
        self.change(MembershipChange::Promote(id), BTreeMap::new(), timeout)
    }

    /// Waits until learner `id` is within `max_lag_entries` of the leader's log, then
    /// promotes it, all within `timeout`.
    ///
    /// # Errors
    /// As [`Node::wait_caught_up`] and [`Node::promote`].
    pub fn promote_caught_up(
        &self,
        id: NodeId,
        max_lag_entries: u64,
        timeout: Duration,
    ) -> Result<LogIndex, NodeError> {
        let deadline = Instant::now() + timeout;
        self.wait_caught_up(id, max_lag_entries, timeout)?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.promote(id, left.max(Duration::from_millis(1)))
            .map_err(|e| match e {
                NodeError::Timeout(_) => NodeError::Timeout(timeout),
                e => e,
            })
    }

    /// Removes voter or learner `id`. Removing the leader itself is allowed: it keeps
    /// leading until the change commits (the call returns then), then steps down and the
    /// remaining voters elect one of theirs.
    ///
    /// # Errors
    /// As [`Node::add_learner`].
    pub fn remove(&self, id: NodeId, timeout: Duration) -> Result<LogIndex, NodeError> {
        self.change(MembershipChange::Remove(id), BTreeMap::new(), timeout)
    }

    /// Moves to exactly `voters` and `learners` through a joint configuration (thesis
    /// §4.3), whatever the number of voters that change; returns once the joint
    /// configuration is committed and left. New members need an address: add them as
    /// learners first ([`Node::add_learner`]), or give none on a transport that does not
    /// need them. Returns the index of the joint configuration's entry.
    ///
    /// # Errors
    /// As [`Node::add_learner`]. A timeout after the joint configuration committed
    /// still means the change may complete: the leader leaves it on its own.
    pub fn change_membership(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
        timeout: Duration,
    ) -> Result<LogIndex, NodeError> {
        let change = MembershipChange::ChangeTo {
            voters: voters.into_iter().collect(),
            learners: learners.into_iter().collect(),
        };
        self.change(change, BTreeMap::new(), timeout)
    }

    /// The configuration in force on this node (as of the last tick at most).
    pub fn membership(&self) -> MembershipStatus {
        self.status().membership
    }

    /// Waits until member `id` has caught up: it acknowledged the configuration in force
    /// (so it runs and is reachable) and its match index is within `max_lag_entries` of
    /// the leader's last index. Call it on the leader (only the leader knows).
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] (this node is not, or stopped being, the leader),
    /// [`NodeError::Rejected`] with [`MembershipError::NotAMember`] (`id` is not a
    /// member, or is this node), [`NodeError::Timeout`], [`NodeError::Stopped`].
    pub fn wait_caught_up(
        &self,
        id: NodeId,
        max_lag_entries: u64,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Asked of the WaitLoop each time: the published status may be a tick old.
            let (tx, rx) = crossbeam_channel::bounded(1);
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .requests
                .send_timeout(Request::Lag { id, reply: tx }, left)
            {
                Ok(()) => {}
                Err(SendTimeoutError::Timeout(_)) => return Err(NodeError::Timeout(timeout)),
                Err(SendTimeoutError::Disconnected(_)) => return Err(NodeError::Stopped),
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(lag)) if lag <= max_lag_entries => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => return Err(NodeError::Timeout(timeout)),
                Err(RecvTimeoutError::Disconnected) => return Err(NodeError::Stopped),
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Timeout(timeout));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `change` to the WaitLoop and waits for its answer. A leader that has not
    /// committed an entry of its term yet refuses changes for a moment (thesis §4.1):
    /// that refusal is retried until `timeout`.
    fn change(
        &self,
        change: MembershipChange,
        addresses: BTreeMap<NodeId, String>,
        timeout: Duration,
    ) -> Result<LogIndex, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return Err(NodeError::Stopped);
            }
            let (tx, rx) = crossbeam_channel::bounded(1);
            let left = deadline.saturating_duration_since(Instant::now());
            let request = Request::ChangeMembership {
                change: change.clone(),
                addresses: addresses.clone(),
                reply: tx,
            };
            match self.requests.send_timeout(request, left) {
                Ok(()) => {}
                Err(SendTimeoutError::Timeout(_)) => return Err(NodeError::Timeout(timeout)),
                Err(SendTimeoutError::Disconnected(_)) => return Err(NodeError::Stopped),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Err(NodeError::Rejected(ProposeError::NotCommittedInTerm))) => {
                    if Instant::now() >= deadline {
                        return Err(NodeError::Timeout(timeout));
                    }
                    std::thread::sleep(POLL_INTERVAL);
                }
                Ok(answer) => return answer,
                Err(RecvTimeoutError::Timeout) => return Err(NodeError::Timeout(timeout)),
                Err(RecvTimeoutError::Disconnected) => return Err(NodeError::Stopped),
            }
        }
    }
}
