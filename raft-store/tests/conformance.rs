//! The conformance suite every `Log` implementation passes: each case is a generic
//! function over a [`Fixture`], instantiated below for MemLog and SledLog.

mod common;

use common::*;
use raft_core::{HardState, Log, SnapshotMeta, StorageError};

mod cases {
    use super::*;

    /// Index 0 is the empty log's sentinel with term 0.
    pub fn empty_log<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        assert_eq!((log.first_index(), log.last_index()), (1, 0));
        assert_eq!(log.term(0).unwrap(), 0);
        assert!(matches!(
            log.term(1),
            Err(StorageError::Unavailable {
                index: 1,
                last_index: 0
            })
        ));
        assert_eq!(log.entries(1, 1, u64::MAX).unwrap(), vec![]);
        assert_eq!(log.hard_state(), HardState::default());
        assert_eq!(log.snapshot_meta(), SnapshotMeta::default());
        log.append(&[]).unwrap();
        log.sync().unwrap();
        assert_eq!(log.last_index(), 0);
    }

    pub fn append_and_read<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 3, 1)).unwrap();
        log.append(&run(4, 6, 2)).unwrap();
        log.sync().unwrap();
        assert_eq!((log.first_index(), log.last_index()), (1, 6));
        let mut all = run(1, 3, 1);
        all.extend(run(4, 6, 2));
        assert_eq!(log.entries(1, 7, u64::MAX).unwrap(), all);
        assert_eq!(log.entries(2, 5, u64::MAX).unwrap(), all[1..4]);
        assert_eq!(log.entries(4, 4, u64::MAX).unwrap(), vec![]);
        for e in &all {
            assert_eq!(log.term(e.index).unwrap(), e.term);
        }
    }

    /// Appends that would leave a gap, are not contiguous or decrease terms are refused
    /// and change nothing.
    pub fn invalid_appends<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 3, 1)).unwrap();
        let gap = log.append(&run(5, 6, 1));
        assert!(
            matches!(gap, Err(StorageError::InvalidAppend(_))),
            "{gap:?}"
        );
        let holes = log.append(&[entry(4, 1), entry(6, 1)]);
        assert!(
            matches!(holes, Err(StorageError::InvalidAppend(_))),
            "{holes:?}"
        );
        let backwards = log.append(&[entry(4, 2), entry(5, 1)]);
        assert!(
            matches!(backwards, Err(StorageError::InvalidAppend(_))),
            "{backwards:?}"
        );
        log.compact(SnapshotMeta::at(2, 1)).unwrap();
        let below = log.append(&run(2, 4, 1));
        assert!(
            matches!(below, Err(StorageError::InvalidAppend(_))),
            "{below:?}"
        );
        assert_eq!((log.first_index(), log.last_index()), (3, 3));
        assert_eq!(log.entries(3, 4, u64::MAX).unwrap(), run(3, 3, 1));
    }

    /// An append whose first index is inside the log replaces the suffix from there on.
    pub fn overwrite_conflicting_suffix<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 5, 1)).unwrap();
        log.append(&run(3, 4, 2)).unwrap();
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.term(3).unwrap(), 2);
        assert!(matches!(log.term(5), Err(StorageError::Unavailable { .. })));
        let mut expected = run(1, 2, 1);
        expected.extend(run(3, 4, 2));
        assert_eq!(log.entries(1, 5, u64::MAX).unwrap(), expected);
        // Replacing from the very first entry, and a longer replacement.
        log.append(&run(1, 8, 3)).unwrap();
        assert_eq!(log.entries(1, 9, u64::MAX).unwrap(), run(1, 8, 3));
        // Replacing only the last entry.
        log.append(&run(8, 8, 4)).unwrap();
        assert_eq!(log.term(8).unwrap(), 4);
        log.sync().unwrap();
        assert_eq!(log.last_index(), 8);
    }

    /// Overwrites that land in the middle of an earlier append, at its start and across
    /// several earlier appends.
    pub fn overwrite_inside_earlier_batches<F: Fixture>() {
        let mut f = F::create();
        let mut model = raft_store::MemLog::new();
        let steps: Vec<Vec<raft_core::Entry>> = vec![
            run(1, 10, 1),
            run(11, 20, 1),
            run(21, 30, 2),
            run(15, 25, 3), // inside the second, across the third
            run(21, 22, 4), // at the start of the last append
            run(5, 5, 5),   // inside the first, dropping everything after
            run(6, 40, 5),
        ];
        for (i, step) in steps.iter().enumerate() {
            f.log().append(step).unwrap();
            model.append(step).unwrap();
            if i % 2 == 0 {
                f.log().sync().unwrap();
            }
            assert_eq!(view(f.log()), view(&model), "after step {i}");
        }
        f.log().sync().unwrap();
        if let Some(log) = f.reopen() {
            assert_eq!(view(log), view(&model), "after reopen");
        }
    }

    /// A byte-limited read stops before the entry that would pass the limit, but always
    /// returns at least one entry.
    pub fn byte_limited_reads<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        let entries: Vec<_> = (1..=20).map(|i| sized(i, 1, 100)).collect();
        log.append(&entries[..10]).unwrap();
        log.append(&entries[10..]).unwrap();
        log.sync().unwrap();
        let one = entries[0].size_bytes();
        assert_eq!(log.entries(1, 21, 0).unwrap(), entries[..1]);
        assert_eq!(log.entries(1, 21, one - 1).unwrap(), entries[..1]);
        assert_eq!(log.entries(1, 21, one).unwrap(), entries[..1]);
        assert_eq!(log.entries(1, 21, 2 * one).unwrap(), entries[..2]);
        assert_eq!(log.entries(1, 21, 2 * one + 1).unwrap(), entries[..2]);
        // Across the boundary between the two appends.
        assert_eq!(log.entries(9, 21, 3 * one).unwrap(), entries[8..11]);
        assert_eq!(log.entries(5, 21, u64::MAX).unwrap(), entries[4..]);
        // The range's end wins over a large budget.
        assert_eq!(log.entries(5, 7, u64::MAX).unwrap(), entries[4..6]);
    }

    pub fn read_errors<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 10, 1)).unwrap();
        log.compact(SnapshotMeta::at(4, 1)).unwrap();
        assert!(matches!(
            log.entries(4, 6, u64::MAX),
            Err(StorageError::Compacted {
                index: 4,
                first_index: 5
            })
        ));
        assert!(matches!(
            log.entries(5, 12, u64::MAX),
            Err(StorageError::Unavailable { last_index: 10, .. })
        ));
        assert_eq!(log.entries(5, 11, u64::MAX).unwrap(), run(5, 10, 1));
        assert_eq!(log.entries(11, 11, u64::MAX).unwrap(), vec![]);
    }

    /// Entries far larger than a record's usual size (sled stores them in blob files).
    pub fn large_entries<F: Fixture>() {
        let mut f = F::create();
        let entries: Vec<_> = (1..=4).map(|i| sized(i, 1, 300_000 + i as usize)).collect();
        f.log().append(&entries[..2]).unwrap();
        f.log().sync().unwrap();
        f.log().append(&entries[2..]).unwrap();
        f.log().append(&entries[3..]).unwrap();
        f.log().sync().unwrap();
        assert_eq!(f.log().entries(1, 5, u64::MAX).unwrap(), entries);
        assert_eq!(f.log().entries(1, 5, 1).unwrap(), entries[..1]);
        if let Some(log) = f.reopen() {
            assert_eq!(log.entries(1, 5, u64::MAX).unwrap(), entries);
        }
    }

    /// A reversed range past the end is a caller's mistake; it must not panic. (raft-core's
    /// MemLog panics here: `VecDeque::range` out of bounds in `MemLog::entries`.)
    pub fn reversed_range_past_the_end_does_not_panic<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 1, 1)).unwrap();
        // low > last_index + 1 but high <= last_index + 1: passes both bound checks.
        let got = log.entries(3, 2, u64::MAX);
        assert!(
            matches!(&got, Ok(v) if v.is_empty()) || got.is_err(),
            "{got:?}"
        );
        let got = log.entries(5, 1, u64::MAX);
        assert!(
            matches!(&got, Ok(v) if v.is_empty()) || got.is_err(),
            "{got:?}"
        );
    }

    /// term(0) is 0, term(snapshot index) is the snapshot's term, below it is compacted,
    /// past the end is unavailable.
    pub fn term_lookup<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 4, 1)).unwrap();
        log.append(&run(5, 8, 3)).unwrap();
        assert_eq!(log.term(0).unwrap(), 0);
        assert_eq!(log.term(4).unwrap(), 1);
        assert_eq!(log.term(5).unwrap(), 3);
        log.compact(SnapshotMeta::at(6, 3)).unwrap();
        assert_eq!(log.term(6).unwrap(), 3);
        assert!(matches!(
            log.term(5),
            Err(StorageError::Compacted {
                index: 5,
                first_index: 7
            })
        ));
        assert!(matches!(log.term(0), Err(StorageError::Compacted { .. })));
        assert_eq!(log.term(8).unwrap(), 3);
        assert!(matches!(
            log.term(9),
            Err(StorageError::Unavailable {
                index: 9,
                last_index: 8
            })
        ));
    }

    /// Compaction that agrees with the log keeps the suffix after the snapshot.
    pub fn compact_keeps_matching_suffix<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 6, 1)).unwrap();
        log.append(&run(7, 12, 2)).unwrap();
        log.sync().unwrap();
        let meta = SnapshotMeta::at(8, 2);
        log.compact(meta.clone()).unwrap();
        assert_eq!(log.snapshot_meta(), meta);
        assert_eq!((log.first_index(), log.last_index()), (9, 12));
        assert_eq!(log.entries(9, 13, u64::MAX).unwrap(), run(9, 12, 2));
        // Compacting to or below the current snapshot changes nothing.
        log.compact(SnapshotMeta::at(5, 1)).unwrap();
        log.compact(meta.clone()).unwrap();
        assert_eq!(log.snapshot_meta(), meta);
        // Compacting to the last index leaves an empty log after the snapshot.
        log.compact(SnapshotMeta::at(12, 2)).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (13, 12));
        assert_eq!(log.term(12).unwrap(), 2);
        log.append(&run(13, 14, 3)).unwrap();
        log.sync().unwrap();
        assert_eq!(log.entries(13, 15, u64::MAX).unwrap(), run(13, 14, 3));
    }

    /// Compaction that disagrees with the log, or reaches past it, discards the log.
    pub fn compact_discards_on_mismatch<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 10, 1)).unwrap();
        let meta = SnapshotMeta::at(5, 7);
        log.compact(meta.clone()).unwrap();
        assert_eq!(log.snapshot_meta(), meta);
        assert_eq!((log.first_index(), log.last_index()), (6, 5));
        assert_eq!(log.term(5).unwrap(), 7);
        assert!(matches!(log.term(6), Err(StorageError::Unavailable { .. })));
        log.append(&run(6, 7, 7)).unwrap();
        assert_eq!(log.entries(6, 8, u64::MAX).unwrap(), run(6, 7, 7));
        // Past the end.
        let meta = SnapshotMeta::at(20, 8);
        log.compact(meta.clone()).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (21, 20));
        log.sync().unwrap();
        if let Some(log) = f.reopen() {
            assert_eq!((log.first_index(), log.last_index()), (21, 20));
            assert_eq!(log.snapshot_meta(), meta);
        }
    }

    /// A compaction that ends inside an earlier append, then an overwrite right after it.
    pub fn compact_inside_a_batch_then_overwrite<F: Fixture>() {
        let mut f = F::create();
        let mut model = raft_store::MemLog::new();
        let meta = SnapshotMeta::at(4, 1);
        for log in [f.log() as &mut dyn Log, &mut model as &mut dyn Log] {
            log.append(&run(1, 10, 1)).unwrap();
            log.sync().unwrap();
            log.compact(meta.clone()).unwrap();
            log.append(&run(5, 6, 2)).unwrap();
        }
        assert_eq!(view(f.log()), view(&model));
        f.log().sync().unwrap();
        if let Some(log) = f.reopen() {
            assert_eq!(view(log), view(&model));
            log.append(&run(7, 9, 2)).unwrap();
            log.sync().unwrap();
            model.append(&run(7, 9, 2)).unwrap();
            assert_eq!(view(log), view(&model));
        }
    }

    pub fn hard_state_round_trip<F: Fixture>() {
        let mut f = F::create();
        let hs = HardState {
            term: 7,
            vote: Some(3),
            commit: 0,
        };
        f.log().set_hard_state(hs).unwrap();
        assert_eq!(f.log().hard_state(), hs);
        let hs2 = HardState {
            term: 8,
            vote: None,
            commit: 2,
        };
        f.log().append(&run(1, 2, 8)).unwrap();
        f.log().set_hard_state(hs2).unwrap();
        f.log().sync().unwrap();
        assert_eq!(f.log().hard_state(), hs2);
        if let Some(log) = f.reopen() {
            assert_eq!(log.hard_state(), hs2);
        }
    }

    /// Reopening restores hard state, entries and snapshot metadata exactly as synced.
    pub fn reopen_restores_everything<F: Fixture>() {
        let mut f = F::create();
        let log = f.log();
        log.append(&run(1, 30, 1)).unwrap();
        log.append(&run(20, 40, 2)).unwrap();
        log.compact(SnapshotMeta::at(25, 2)).unwrap();
        log.set_hard_state(HardState {
            term: 2,
            vote: Some(1),
            commit: 30,
        })
        .unwrap();
        log.sync().unwrap();
        let before = view(log);
        let Some(log) = f.reopen() else { return };
        assert_eq!(view(log), before);
        // Reopening twice in a row changes nothing either.
        let Some(log) = f.reopen() else { return };
        assert_eq!(view(log), before);
    }

    /// Writes after the last sync are not guaranteed to survive a restart, but what does
    /// survive is a prefix of them: here, with no sync at all, the synced state exactly.
    pub fn unsynced_writes_are_not_half_present<F: Fixture>() {
        let mut f = F::create();
        f.log().append(&run(1, 5, 1)).unwrap();
        f.log().sync().unwrap();
        let synced = view(f.log());
        f.log().append(&run(3, 9, 2)).unwrap();
        f.log()
            .set_hard_state(HardState {
                term: 2,
                vote: None,
                commit: 3,
            })
            .unwrap();
        f.log().compact(SnapshotMeta::at(2, 1)).unwrap();
        if let Some(log) = f.reopen() {
            assert_eq!(view(log), synced);
        }
    }
}

macro_rules! conformance {
    ($name:ident, $fixture:ty) => {
        mod $name {
            use super::*;

            #[test]
            fn empty_log() {
                cases::empty_log::<$fixture>()
            }
            #[test]
            fn append_and_read() {
                cases::append_and_read::<$fixture>()
            }
            #[test]
            fn invalid_appends() {
                cases::invalid_appends::<$fixture>()
            }
            #[test]
            fn overwrite_conflicting_suffix() {
                cases::overwrite_conflicting_suffix::<$fixture>()
            }
            #[test]
            fn overwrite_inside_earlier_batches() {
                cases::overwrite_inside_earlier_batches::<$fixture>()
            }
            #[test]
            fn byte_limited_reads() {
                cases::byte_limited_reads::<$fixture>()
            }
            #[test]
            fn read_errors() {
                cases::read_errors::<$fixture>()
            }
            #[test]
            fn large_entries() {
                cases::large_entries::<$fixture>()
            }
            #[test]
            fn term_lookup() {
                cases::term_lookup::<$fixture>()
            }
            #[test]
            fn compact_keeps_matching_suffix() {
                cases::compact_keeps_matching_suffix::<$fixture>()
            }
            #[test]
            fn compact_discards_on_mismatch() {
                cases::compact_discards_on_mismatch::<$fixture>()
            }
            #[test]
            fn compact_inside_a_batch_then_overwrite() {
                cases::compact_inside_a_batch_then_overwrite::<$fixture>()
            }
            #[test]
            fn hard_state_round_trip() {
                cases::hard_state_round_trip::<$fixture>()
            }
            #[test]
            fn reopen_restores_everything() {
                cases::reopen_restores_everything::<$fixture>()
            }
            #[test]
            fn unsynced_writes_are_not_half_present() {
                cases::unsynced_writes_are_not_half_present::<$fixture>()
            }
        }
    };
}

conformance!(mem_log, MemFixture);
conformance!(sled_log, SledFixture);
conformance!(sled_log_tiny_records, TinySledFixture);

// Regression: MemLog::entries(3, 2, _) on a 1-entry log used to panic (fixed in raft-core).
mod reversed_range {
    use super::*;

    #[test]
    fn mem_log() {
        cases::reversed_range_past_the_end_does_not_panic::<MemFixture>()
    }
    #[test]
    fn sled_log() {
        cases::reversed_range_past_the_end_does_not_panic::<SledFixture>()
    }
}
