//! `RaftLog`: the protocol's view of the log: the durable [`Log`] plus the unstable
//! tail of entries not yet handed to storage and persisted.

use crate::storage::{Log, StorageError};
use crate::types::{Entry, LogIndex, SnapshotMeta, Term};

/// The durable log plus an unstable tail.
///
/// Invariants:
/// - `unstable` entries are contiguous and start at `unstable_offset`;
/// - `unstable_offset <= log.last_index() + 1` and `unstable_offset > log.snapshot.last_index`;
/// - `applied <= committed <= last_index()`.
#[derive(Debug)]
pub(crate) struct RaftLog<L: Log> {
    pub(crate) log: L,
    unstable: Vec<Entry>,
    unstable_offset: LogIndex,
    /// Highest index known committed.
    pub(crate) committed: LogIndex,
    /// Highest index handed out for applying.
    pub(crate) applied: LogIndex,
    /// Highest index known persisted (durable in `log`).
    pub(crate) persisted: LogIndex,
    /// A snapshot installed from the leader and not yet persisted by the driver: until
    /// it is, the log starts after it, whatever storage still says.
    installing: Option<SnapshotMeta>,
}

impl<L: Log> RaftLog<L> {
    /// The protocol's view of `log`. `applied` is where the state machine starts: the
    /// stored snapshot's index (the runtime restores the snapshot first).
    pub(crate) fn new(log: L, applied: LogIndex) -> Self {
        let last = log.last_index();
        let compacted = log.snapshot_meta().last_index;
        assert!(
            applied >= compacted,
            "the stored snapshot ({applied}) must cover the compacted log ({compacted})"
        );
        let committed = log.hard_state().commit.min(last).max(applied);
        Self {
            log,
            unstable: Vec::new(),
            unstable_offset: last.max(applied) + 1,
            committed,
            applied,
            persisted: last.max(applied),
            installing: None,
        }
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.installing {
            Some(meta) => meta.last_index + 1,
            None => self.log.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        match self.unstable.last() {
            Some(e) => e.index,
            None => self.unstable_offset - 1,
        }
    }

    /// Term at `index`, or `None` if the index is compacted or past the end.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if let Some(meta) = &self.installing {
            if index == meta.last_index {
                return Some(meta.last_term);
            }
            if index < meta.last_index {
                return None;
            }
        }
        if index >= self.unstable_offset {
            return self
                .unstable
                .get((index - self.unstable_offset) as usize)
                .map(|e| e.term);
        }
        match self.log.term(index) {
            Ok(t) => Some(t),
            Err(StorageError::Compacted { .. } | StorageError::Unavailable { .. }) => None,
            Err(e) => panic!("term({index}) failed: {e}: the log storage is broken"),
        }
    }

    pub(crate) fn last_term(&self) -> Term {
        self.term(self.last_index())
            .expect("the last index always has a term")
    }

    pub(crate) fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as
    /// ours (§5.4.1): a later last term wins, then a longer log.
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Entries in `[low, high)` up to `max_bytes` (at least one if the range is not empty).
    pub(crate) fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        if low < self.unstable_offset {
            let stable_high = high.min(self.unstable_offset);
            out = self.log.entries(low, stable_high, max_bytes)?;
            if (out.len() as u64) < stable_high - low {
                return Ok(out); // the byte limit was reached in the durable part
            }
            bytes = out.iter().map(Entry::size_bytes).sum();
        }
        if high > self.unstable_offset {
            let start = (low.max(self.unstable_offset) - self.unstable_offset) as usize;
            let end = ((high - self.unstable_offset) as usize).min(self.unstable.len());
            for e in &self.unstable[start.min(end)..end] {
                bytes += e.size_bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// First index of the term of the entry at `index`, scanning back no further than
    /// the committed index (entries there match the leader anyway).
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return index;
        };
        let floor = self.committed.max(self.first_index());
        let mut i = index;
        while i > floor && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Last index in our log whose term is `term`, if any entry has it. Scans back from
    /// the end while terms are `>= term` (terms never decrease along the log).
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let mut i = self.last_index();
        while i >= self.first_index() {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                Some(_) => {}
                None => return None,
            }
            i -= 1;
        }
        None
    }

    /// Appends entries received from a leader after a matching `prev_index`: skips those
    /// already present, truncates at the first conflict. Returns the last new index and
    /// the first index written (the first conflict), if anything was written.
    ///
    /// # Panics
    /// If a conflict lies at or below the commit index: a committed entry is never
    /// truncated, so this means another node broke the protocol or the log is corrupt.
    pub(crate) fn append_after(
        &mut self,
        prev_index: LogIndex,
        entries: &[Entry],
    ) -> (LogIndex, Option<LogIndex>) {
        let last_new = prev_index + entries.len() as u64;
        let conflict = entries
            .iter()
            .find(|e| !self.matches(e.index, e.term))
            .map(|e| e.index);
        if let Some(conflict) = conflict {
            assert!(
                conflict > self.committed,
                "conflicting entry at {conflict} is at or below commit {}: a committed entry \
                 would be truncated; was the log corrupted or did a leader misbehave?",
                self.committed
            );
            let from = (conflict - prev_index - 1) as usize;
            self.append_unstable(&entries[from..]);
        }
        (last_new, conflict)
    }

    /// Appends entries to the unstable tail, truncating any suffix from the first one's index.
    pub(crate) fn append_unstable(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let at = first.index;
        assert!(
            at > self.committed,
            "append at {at} would overwrite committed index {}",
            self.committed
        );
        assert!(
            at <= self.last_index() + 1,
            "append at {at} leaves a gap after last index {}",
            self.last_index()
        );
        if at >= self.unstable_offset {
            self.unstable.truncate((at - self.unstable_offset) as usize);
        } else {
            // The conflict is in the durable part: the unstable tail restarts here and
            // storage's stale suffix is replaced when these entries are persisted.
            self.unstable.clear();
            self.unstable_offset = at;
            self.persisted = self.persisted.min(at - 1);
        }
        self.unstable.extend_from_slice(entries);
    }

    /// Entries waiting to be persisted.
    pub(crate) fn unstable_entries(&self) -> &[Entry] {
        &self.unstable
    }

    /// Marks entries up to (`index`, `term`) as persisted, if they are still ours.
    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term) {
        if index < self.unstable_offset {
            return;
        }
        let pos = (index - self.unstable_offset) as usize;
        if self.unstable.get(pos).map(|e| e.term) != Some(term) {
            return; // replaced after the ready was taken: those writes were superseded
        }
        self.unstable.drain(..=pos);
        self.unstable_offset = index + 1;
        self.persisted = index;
    }

    /// Installs a snapshot received from the leader (§7): the log now starts after
    /// `meta`. Entries after it are kept if the log agrees with the snapshot at its last
    /// index (they may be a consistent suffix), else everything is discarded.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        assert!(
            meta.last_index > self.committed,
            "restore to {} at or below commit {}",
            meta.last_index,
            self.committed
        );
        if self.matches(meta.last_index, meta.last_term) {
            if meta.last_index >= self.unstable_offset {
                let pos = (meta.last_index - self.unstable_offset) as usize;
                self.unstable.drain(..=pos);
                self.unstable_offset = meta.last_index + 1;
            }
        } else {
            self.unstable.clear();
            self.unstable_offset = meta.last_index + 1;
        }
        let last_index = meta.last_index;
        self.installing = Some(meta);
        self.committed = last_index;
        self.applied = last_index;
        self.persisted = self.persisted.max(last_index).min(self.last_index());
    }

    /// The driver stored (and synced) the snapshot being installed and compacted the log.
    pub(crate) fn snapshot_persisted(&mut self, meta: SnapshotMeta) {
        if self.installing == Some(meta) {
            self.installing = None;
        }
    }

    /// The compaction point for compacting the log up to `index`, if that is allowed: at
    /// most what is applied and persisted, and above what is already compacted.
    pub(crate) fn compaction_meta(&self, index: LogIndex) -> Option<SnapshotMeta> {
        let index = index.min(self.applied).min(self.persisted);
        if index < self.first_index() || self.installing.is_some() {
            return None;
        }
        let term = self.term(index)?;
        Some(SnapshotMeta::at(index, term))
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit_to({index}) beyond last_index({}): was the log corrupted or truncated?",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// Committed entries not yet handed out for applying, up to `max_bytes`.
    pub(crate) fn next_committed(&self, max_bytes: u64) -> Vec<Entry> {
        if self.applied >= self.committed {
            return Vec::new();
        }
        let low = (self.applied + 1).max(self.first_index());
        self.entries(low, self.committed + 1, max_bytes)
            .unwrap_or_else(|e| {
                panic!(
                    "reading committed entries {low}..={} failed: {e}",
                    self.committed
                )
            })
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        self.applied < self.committed
    }

    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.committed,
            "applied_to({index}) beyond committed({})",
            self.committed
        );
        self.applied = self.applied.max(index);
    }
}
