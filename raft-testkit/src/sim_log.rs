//! `SimLog`: an in-memory [`Log`] with crash semantics.
//!
//! Every write (append, hard state, snapshot, compaction) is visible to reads at once, as
//! a real file system's page cache would make it, but only [`Log::sync`] makes it
//! durable. A crash ([`SimLog::crash`]) keeps the durable state plus a random *prefix* of
//! the writes made since the last sync: a torn, unsynced tail. The last surviving append
//! may itself be cut after any of its entries. Nothing that was never written survives,
//! and writes never survive out of order.
//!
//! A snapshot is replaced atomically ([`Log::save_snapshot`] is one write that survives
//! whole or not at all): after a crash the log holds the last synced snapshot or, if a
//! newer one was saved since and the crash kept that write, the newer one; never a torn
//! one. Because writes survive in order, a compaction survives only with the snapshot
//! saved before it, so the stored snapshot always covers the compaction point.

use raft_core::{
    Entry, HardState, Log, LogIndex, MemLog, Snapshot, SnapshotMeta, StorageError, Term,
};
use rand::Rng;

/// One buffered write, kept until the next sync so a crash can tear it.
#[derive(Clone, Debug)]
enum Write {
    Append(Vec<Entry>),
    HardState(HardState),
    SaveSnapshot(Snapshot),
    Compact(SnapshotMeta),
}

/// Applies a write to a log state (a `MemLog`, whose semantics are the reference: the
/// same truncation on append, the same suffix rule on compaction). Every write was
/// validated by `SimLog` before it was buffered, so it applies to any state of its
/// lineage (the durable state, a crash's prefix).
fn apply(state: &mut MemLog, write: &Write) {
    let applied = match write {
        Write::Append(entries) => state.append(entries),
        Write::HardState(hs) => state.set_hard_state(*hs),
        Write::SaveSnapshot(snapshot) => state.save_snapshot(snapshot),
        Write::Compact(meta) => state.compact(meta.clone()),
    };
    applied.expect("a write validated when it was buffered applies to its lineage");
}

/// What a crash kept of the unsynced writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashOutcome {
    /// Writes made since the last sync.
    pub pending_writes: usize,
    /// How many of them survived (a prefix).
    pub kept_writes: usize,
    /// Whether the last surviving write was an append cut after some of its entries.
    pub torn_append: bool,
    /// Whether an unsynced snapshot was lost (the previous one, if any, is back).
    pub lost_snapshot: bool,
    /// Whether an unsynced snapshot survived but a compaction written after it did not.
    pub snapshot_without_compaction: bool,
}

impl CrashOutcome {
    /// Whether the crash lost anything that had been written.
    pub fn lost_anything(&self) -> bool {
        self.kept_writes < self.pending_writes || self.torn_append
    }
}

/// An in-memory [`Log`] that models durability: see the module docs.
///
/// ```
/// use raft_core::{Entry, EntryKind, HardState, Log};
/// use raft_testkit::SimLog;
/// let e = |index| Entry { index, term: 1, kind: EntryKind::Command, data: Default::default() };
/// let mut log = SimLog::new();
/// log.append(&[e(1), e(2)]).unwrap();
/// log.sync().unwrap();
/// log.append(&[e(3)]).unwrap();
/// log.set_hard_state(HardState { term: 1, vote: Some(1), commit: 2 }).unwrap();
/// // Keep nothing of the unsynced tail: entry 3 and the hard state are gone.
/// let (after, _) = log.crash_keeping(0, None);
/// assert_eq!(after.last_index(), 2);
/// assert_eq!(after.hard_state(), HardState::default());
/// ```
#[derive(Clone, Debug, Default)]
pub struct SimLog {
    /// What reads see: durable plus every pending write.
    current: MemLog,
    /// What survives any crash.
    durable: MemLog,
    /// Writes since the last sync, oldest first.
    pending: Vec<Write>,
    syncs: u64,
}

impl SimLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes made since the last sync.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// How many syncs this log has seen (in this life).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The hard state that would survive a crash now.
    pub fn durable_hard_state(&self) -> HardState {
        self.durable.hard_state()
    }

    /// The last index that would survive a crash now.
    pub fn durable_last_index(&self) -> LogIndex {
        self.durable.last_index()
    }

    /// The snapshot that would survive a crash now, whatever else the crash keeps.
    pub fn durable_snapshot(&self) -> Option<Snapshot> {
        self.durable.snapshot().expect("MemLog reads do not fail")
    }

    /// Whether a snapshot was saved since the last sync.
    pub fn snapshot_pending(&self) -> bool {
        self.pending
            .iter()
            .any(|w| matches!(w, Write::SaveSnapshot(_)))
    }

    /// The disk after a crash at this instant: the durable state plus a random prefix of
    /// the pending writes, the last kept append possibly cut after some of its entries.
    ///
    /// A crash with an unsynced snapshot save among the pending writes is rare and a
    /// uniform prefix seldom ends right at it, so half of those crashes cut exactly
    /// before the save (the snapshot is lost) or right after it (kept, without the
    /// compaction written next).
    pub fn crash(&self, rng: &mut impl Rng) -> (SimLog, CrashOutcome) {
        let save = self
            .pending
            .iter()
            .position(|w| matches!(w, Write::SaveSnapshot(_)));
        let kept = match save {
            Some(at) if rng.gen_bool(0.5) => at + usize::from(rng.gen_bool(0.5)),
            _ => rng.gen_range(0..=self.pending.len()),
        };
        let cut = match kept.checked_sub(1).map(|i| &self.pending[i]) {
            Some(Write::Append(entries)) if entries.len() > 1 && rng.gen_bool(0.5) => {
                Some(rng.gen_range(1..entries.len()))
            }
            _ => None,
        };
        self.crash_keeping(kept, cut)
    }

    /// The disk after a crash that kept the first `kept_writes` pending writes; if
    /// `cut_last_append` is `Some(n)` and the last kept write is an append, only its first
    /// `n` entries survive (`n` is clamped to at least 1).
    pub fn crash_keeping(
        &self,
        kept_writes: usize,
        cut_last_append: Option<usize>,
    ) -> (SimLog, CrashOutcome) {
        let kept_writes = kept_writes.min(self.pending.len());
        let mut state = self.durable.clone();
        let mut torn_append = false;
        for (i, write) in self.pending[..kept_writes].iter().enumerate() {
            match (write, cut_last_append) {
                (Write::Append(entries), Some(n)) if i + 1 == kept_writes && n < entries.len() => {
                    torn_append = true;
                    apply(&mut state, &Write::Append(entries[..n.max(1)].to_vec()));
                }
                _ => apply(&mut state, write),
            }
        }
        let is_save = |w: &Write| matches!(w, Write::SaveSnapshot(_));
        let is_compact = |w: &Write| matches!(w, Write::Compact(_));
        let (kept, lost) = self.pending.split_at(kept_writes);
        let outcome = CrashOutcome {
            pending_writes: self.pending.len(),
            kept_writes,
            torn_append,
            lost_snapshot: lost.iter().any(is_save),
            snapshot_without_compaction: kept.iter().any(is_save) && lost.iter().any(is_compact),
        };
        let log = SimLog {
            current: state.clone(),
            durable: state,
            pending: Vec::new(),
            syncs: 0,
        };
        (log, outcome)
    }
}

impl SimLog {
    /// Buffers a write: visible to reads at once, durable at the next sync.
    fn write(&mut self, write: Write) {
        apply(&mut self.current, &write);
        self.pending.push(write);
    }
}

impl Log for SimLog {
    fn hard_state(&self) -> HardState {
        self.current.hard_state()
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.write(Write::HardState(hard_state));
        Ok(())
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.current.snapshot_meta()
    }

    fn first_index(&self) -> LogIndex {
        self.current.first_index()
    }

    fn last_index(&self) -> LogIndex {
        self.current.last_index()
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.current.term(index)
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.current.entries(low, high, max_bytes)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        // MemLog checks before it changes anything: a refused append buffers nothing.
        self.current.append(entries)?;
        self.pending.push(Write::Append(entries.to_vec()));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        for write in self.pending.drain(..) {
            apply(&mut self.durable, &write);
        }
        self.syncs += 1;
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.current.snapshot()
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.write(Write::SaveSnapshot(snapshot.clone()));
        Ok(())
    }

    /// # Panics
    /// If no stored snapshot covers `meta`: the driver must save one first, or a crash
    /// could leave entries compacted that no snapshot holds.
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let covered = self.current.snapshot()?.map_or(0, |s| s.meta.last_index);
        assert!(
            meta.last_index <= covered,
            "compact({}) beyond the stored snapshot at {covered}: save a snapshot covering \
             the compaction point first",
            meta.last_index
        );
        self.write(Write::Compact(meta));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::EntryKind;
    use rand::SeedableRng;

    fn e(index: LogIndex, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Command,
            data: vec![index as u8].into(),
        }
    }

    fn terms(log: &SimLog) -> Vec<Term> {
        (1..=log.last_index())
            .map(|i| log.term(i).unwrap())
            .collect()
    }

    #[test]
    fn sync_makes_writes_survive_a_crash() {
        let mut log = SimLog::new();
        log.append(&[e(1, 1), e(2, 1)]).unwrap();
        log.set_hard_state(HardState {
            term: 1,
            vote: Some(2),
            commit: 1,
        })
        .unwrap();
        log.sync().unwrap();
        let (after, outcome) = log.crash_keeping(0, None);
        assert_eq!(terms(&after), vec![1, 1]);
        assert_eq!(after.hard_state().vote, Some(2));
        assert!(!outcome.lost_anything());
    }

    #[test]
    fn a_crash_keeps_a_prefix_of_pending_writes() {
        let mut log = SimLog::new();
        log.append(&[e(1, 1)]).unwrap();
        log.sync().unwrap();
        log.append(&[e(2, 2)]).unwrap();
        let hs = HardState {
            term: 2,
            vote: None,
            commit: 2,
        };
        log.set_hard_state(hs).unwrap();
        log.append(&[e(3, 2)]).unwrap();
        assert_eq!(log.pending_writes(), 3);
        // Keeping one write: entry 2 survives, the hard state and entry 3 do not.
        let (after, outcome) = log.crash_keeping(1, None);
        assert_eq!(terms(&after), vec![1, 2]);
        assert_eq!(after.hard_state(), HardState::default());
        assert!(outcome.lost_anything());
        // Keeping two: the hard state survives too, but never entry 3 without it.
        let (after, _) = log.crash_keeping(2, None);
        assert_eq!((after.last_index(), after.hard_state()), (2, hs));
    }

    #[test]
    fn a_torn_append_keeps_a_prefix_of_its_entries() {
        let mut log = SimLog::new();
        log.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        let (after, outcome) = log.crash_keeping(1, Some(2));
        assert_eq!(terms(&after), vec![1, 1]);
        assert!(outcome.torn_append);
    }

    #[test]
    fn an_unsynced_overwrite_can_be_lost_restoring_the_old_suffix() {
        let mut log = SimLog::new();
        log.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        log.sync().unwrap();
        log.append(&[e(2, 3)]).unwrap();
        assert_eq!(terms(&log), vec![1, 3]);
        let (after, _) = log.crash_keeping(0, None);
        assert_eq!(terms(&after), vec![1, 1, 1]);
    }

    #[test]
    fn random_crashes_never_invent_or_reorder_writes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let mut log = SimLog::new();
            let mut synced = Vec::new();
            let mut all_states = vec![Vec::new()];
            for step in 0..10u64 {
                let at = rng.gen_range(1..=log.last_index() + 1);
                let n = rng.gen_range(1..4);
                let entries: Vec<Entry> = (0..n).map(|k| e(at + k, step + 1)).collect();
                log.append(&entries).unwrap();
                all_states.push(terms(&log));
                if rng.gen_bool(0.3) {
                    log.sync().unwrap();
                    synced = terms(&log);
                    all_states = vec![synced.clone()];
                }
            }
            let (after, _) = log.crash(&mut rng);
            let got = terms(&after);
            // The result is a state between the last sync and now, possibly with the last
            // append cut short: some recorded state, or a prefix of one that extends the one before.
            let ok = all_states.windows(2).any(|w| {
                got == w[1]
                    || (got.len() < w[1].len()
                        && w[1].starts_with(&got)
                        && got.len() >= common_prefix(&w[0], &w[1]))
            }) || got == all_states[0];
            assert!(
                ok,
                "crash produced {got:?}, not derived from {all_states:?}"
            );
            assert!(got.len() >= common_prefix(&synced, &got));
        }
    }

    fn snap(index: LogIndex, term: Term, data: &'static [u8]) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta::at(index, term),
            data: data.into(),
        }
    }

    #[test]
    fn an_unsynced_snapshot_survives_whole_or_leaves_the_old_one() {
        let mut log = SimLog::new();
        log.append(&[e(1, 1), e(2, 1), e(3, 1), e(4, 2)]).unwrap();
        let old = snap(2, 1, b"old");
        log.save_snapshot(&old).unwrap();
        log.compact(old.meta.clone()).unwrap();
        log.sync().unwrap();
        let new = snap(3, 1, b"new");
        log.save_snapshot(&new).unwrap();
        log.compact(new.meta.clone()).unwrap();
        assert!(log.snapshot_pending());
        assert_eq!(log.durable_snapshot(), Some(old.clone()));
        // Nothing kept: the old snapshot and compaction point.
        let (after, outcome) = log.crash_keeping(0, None);
        assert_eq!(after.snapshot().unwrap(), Some(old.clone()));
        assert_eq!((after.first_index(), after.last_index()), (3, 4));
        assert!(outcome.lost_snapshot);
        // The save kept, the compaction lost: the new snapshot, whole, over a log that
        // still holds the entries it covers.
        let (after, outcome) = log.crash_keeping(1, None);
        assert_eq!(after.snapshot().unwrap(), Some(new.clone()));
        assert_eq!(after.snapshot_meta(), old.meta);
        assert!(outcome.snapshot_without_compaction && !outcome.lost_snapshot);
        // Both kept.
        let (after, _) = log.crash_keeping(2, None);
        assert_eq!(after.snapshot().unwrap(), Some(new));
        assert_eq!((after.first_index(), after.last_index()), (4, 4));
    }

    #[test]
    fn compaction_keeps_a_matching_suffix_and_drops_a_conflicting_log() {
        let mut log = SimLog::new();
        log.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        log.save_snapshot(&snap(2, 1, b"")).unwrap();
        log.compact(SnapshotMeta::at(2, 1)).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (3, 3));
        // A snapshot that disagrees at its last index: nothing of the log survives.
        log.save_snapshot(&snap(5, 4, b"")).unwrap();
        log.compact(SnapshotMeta::at(5, 4)).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (6, 5));
        assert_eq!(log.term(5).unwrap(), 4);
    }

    #[test]
    #[should_panic(expected = "beyond the stored snapshot")]
    fn compacting_past_the_stored_snapshot_is_refused() {
        let mut log = SimLog::new();
        log.append(&[e(1, 1), e(2, 1)]).unwrap();
        log.save_snapshot(&snap(1, 1, b"")).unwrap();
        let _ = log.compact(SnapshotMeta::at(2, 1));
    }

    fn common_prefix(a: &[Term], b: &[Term]) -> usize {
        a.iter().zip(b).take_while(|(x, y)| x == y).count()
    }
}
