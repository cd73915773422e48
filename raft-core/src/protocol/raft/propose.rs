//! Proposals: a client command appended on the leader, or forwarded to it by a follower.

use super::*;

impl<L: Log> Raft<L> {
    /// Proposes a command. Only the leader accepts; it returns where the entry was placed.
    /// The entry is committed when a later [`Ready::committed`] carries it.
    ///
    /// # Errors
    /// [`ProposeError`]: not the leader, too large, too many uncommitted, transferring.
    pub fn propose(&mut self, data: Bytes) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        let size_bytes = data.len() as u64;
        if size_bytes > self.config.entry_bytes_max {
            return Err(ProposeError::TooLarge {
                size_bytes,
                limit_bytes: self.config.entry_bytes_max,
            });
        }
        let uncommitted = self.log.last_index() - self.log.committed;
        if uncommitted >= self.config.uncommitted_entries_max {
            return Err(ProposeError::Busy(uncommitted));
        }
        let index = self.log.last_index() + 1;
        self.log.append_unstable(&[Entry {
            term: self.term,
            index,
            kind: EntryKind::Command,
            data,
        }]);
        self.broadcast_needed = true;
        Ok((index, self.term))
    }

    /// On a follower, forwards a command to the leader; the outcome arrives in
    /// [`Ready::forwarded`] under `request_id`. On the leader, proposes it directly and
    /// reports the outcome the same way.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] with no known leader; [`ProposeError::TooLarge`] on
    /// any node (so an oversize command is refused before it crosses the network); on the
    /// leader, as [`Raft::propose`].
    pub fn propose_or_forward(&mut self, request_id: u64, data: Bytes) -> Result<(), ProposeError> {
        if data.len() as u64 > self.config.entry_bytes_max {
            return Err(ProposeError::TooLarge {
                size_bytes: data.len() as u64,
                limit_bytes: self.config.entry_bytes_max,
            });
        }
        if self.role == Role::Leader {
            let placed = self.propose(data)?;
            self.forwarded.push(ForwardedProposal {
                request_id,
                placed: Some(placed),
            });
            return Ok(());
        }
        let Some(leader) = self.leader else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        self.send(leader, MessageBody::Propose { request_id, data });
        Ok(())
    }

    pub(super) fn handle_forwarded_propose(&mut self, from: NodeId, request_id: u64, data: Bytes) {
        let placed = match self.propose(data) {
            Ok(placed) => Some(placed),
            Err(e) => {
                log::debug!("n{} refused a proposal forwarded by n{from}: {e}", self.id);
                None
            }
        };
        self.send(from, MessageBody::ProposeResponse { request_id, placed });
    }
}
