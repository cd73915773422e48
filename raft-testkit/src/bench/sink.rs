//! The benchmark's state machine: it keeps a count and nothing else, so what is
//! measured is the replication, not the user's state.

use raft_core::node::{RestoreError, StateMachine};
use raft_core::LogIndex;

/// Counts the commands applied. Snapshots are its 8-byte count, so the runtime's
/// snapshot policy compacts the log as it would for a real state machine, and memory
/// stays bounded however long the run.
#[derive(Clone, Debug, Default)]
pub struct Sink {
    applied: u64,
}

impl Sink {
    /// Commands applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }
}

impl StateMachine for Sink {
    type Response = ();

    fn apply(&mut self, _index: LogIndex, _command: &[u8]) {
        self.applied += 1;
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.applied.to_le_bytes().to_vec())
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let bytes: [u8; 8] = data
            .try_into()
            .map_err(|_| RestoreError(format!("a Sink snapshot is 8 bytes, not {}", data.len())))?;
        self.applied = u64::from_le_bytes(bytes);
        Ok(())
    }
}
