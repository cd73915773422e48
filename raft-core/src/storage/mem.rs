//! `MemLog`: an ephemeral in-memory [`Log`].

use std::collections::VecDeque;

use super::{Log, StorageError};
use crate::types::{Entry, HardState, LogIndex, Snapshot, SnapshotMeta, Term};

/// An in-memory [`Log`]: fast, and gone when the process ends (the original's
/// "ephemeral storage"). [`Log::sync`] is a no-op because there is nothing to make durable.
///
/// ```
/// use raft_core::{Entry, EntryKind, Log, MemLog};
/// let mut log = MemLog::new();
/// let e = |index, term| Entry { index, term, kind: EntryKind::Command, data: Default::default() };
/// log.append(&[e(1, 1), e(2, 1), e(3, 2)]).unwrap();
/// log.append(&[e(3, 3)]).unwrap(); // replaces the conflicting suffix
/// assert_eq!((log.last_index(), log.term(3).unwrap()), (3, 3));
/// ```
#[derive(Debug, Default, Clone)]
pub struct MemLog {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Invariant: `entries[i].index == snapshot.last_index + 1 + i`.
    entries: VecDeque<Entry>,
    /// The stored snapshot; covers at least up to `snapshot.last_index`.
    stored: Option<Snapshot>,
}

impl MemLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn offset(&self) -> LogIndex {
        self.snapshot.last_index + 1
    }
}

impl Log for MemLog {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.hard_state = hard_state;
        Ok(())
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn first_index(&self) -> LogIndex {
        self.offset()
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.last_index + self.entries.len() as u64
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.snapshot.last_index {
            return Ok(self.snapshot.last_term);
        }
        if index < self.snapshot.last_index {
            return Err(StorageError::Compacted {
                index,
                first_index: self.offset(),
            });
        }
        match self.entries.get((index - self.offset()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(StorageError::Unavailable {
                index,
                last_index: self.last_index(),
            }),
        }
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low < self.offset() {
            return Err(StorageError::Compacted {
                index: low,
                first_index: self.offset(),
            });
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable {
                index: high - 1,
                last_index: self.last_index(),
            });
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let start = (low - self.offset()) as usize;
        let end = (high.max(low) - self.offset()) as usize;
        for e in self.entries.range(start..end) {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        check_contiguous(entries)?;
        if first.index < self.offset() {
            return Err(StorageError::InvalidAppend(format!(
                "entry {} is at or below the snapshot at {}",
                first.index, self.snapshot.last_index
            )));
        }
        if first.index > self.last_index() + 1 {
            return Err(StorageError::InvalidAppend(format!(
                "entry {} leaves a gap after last index {}",
                first.index,
                self.last_index()
            )));
        }
        self.entries
            .truncate((first.index - self.offset()) as usize);
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.stored.clone())
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.stored = Some(snapshot.clone());
        Ok(())
    }

    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        if meta.last_index <= self.snapshot.last_index {
            return Ok(());
        }
        let keep_suffix = self.term(meta.last_index).ok() == Some(meta.last_term);
        if keep_suffix {
            let drop = (meta.last_index + 1 - self.offset()) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot = meta;
        Ok(())
    }
}

/// Checks that `entries` have consecutive indexes and non-decreasing terms.
///
/// # Errors
/// [`StorageError::InvalidAppend`] naming the first offending pair.
pub fn check_contiguous(entries: &[Entry]) -> Result<(), StorageError> {
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index + 1 || pair[1].term < pair[0].term {
            return Err(StorageError::InvalidAppend(format!(
                "entries not contiguous: ({}, term {}) then ({}, term {})",
                pair[0].index, pair[0].term, pair[1].index, pair[1].term
            )));
        }
    }
    Ok(())
}
