//! Exactly-once application of retried proposals (Raft thesis §6.3, in small).
//!
//! A proposal may reach the log twice: a follower re-forwards a proposal whose answer was
//! lost, or a caller retries after a leader change. Every copy carries the same
//! (origin, request id) envelope, so the apply thread of every node skips the later
//! copies. The decision depends only on the log, so every node skips the same entries.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::types::LogIndex;

/// Request ids remembered per origin. A first copy older than this many later requests
/// of the same origin would be taken for a duplicate; at that age its proposer gave up
/// long ago.
pub(crate) const REQUESTS_REMEMBERED_PER_ORIGIN_MAX: usize = 16_384;
/// Origins (node starts) remembered; the least recently active is forgotten first.
pub(crate) const ORIGINS_REMEMBERED_MAX: usize = 32;

#[derive(Default, Serialize, Deserialize)]
struct Window {
    /// Ids at or below this are all treated as applied.
    floor: u64,
    applied: BTreeSet<u64>,
    last_active: LogIndex,
}

/// Which (origin, request id) pairs were applied. Part of every snapshot, so a node
/// restored from one skips exactly what the others skip.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct Dedup {
    origins: BTreeMap<u64, Window>,
}

impl Dedup {
    /// Whether (`origin`, `request_id`) was applied, without recording anything.
    pub(crate) fn was_applied(&self, origin: u64, request_id: u64) -> bool {
        self.origins
            .get(&origin)
            .is_some_and(|w| request_id <= w.floor || w.applied.contains(&request_id))
    }

    /// Records that the entry at `index` carries (`origin`, `request_id`); returns
    /// `false` if that pair was applied before (this copy must be skipped).
    pub(crate) fn first_time(&mut self, origin: u64, request_id: u64, index: LogIndex) -> bool {
        if !self.origins.contains_key(&origin) && self.origins.len() >= ORIGINS_REMEMBERED_MAX {
            let oldest = self
                .origins
                .iter()
                .min_by_key(|(o, w)| (w.last_active, **o))
                .map(|(o, _)| *o)
                .expect("not empty");
            self.origins.remove(&oldest);
        }
        let w = self.origins.entry(origin).or_default();
        w.last_active = index;
        if request_id <= w.floor || !w.applied.insert(request_id) {
            return false;
        }
        if w.applied.len() > REQUESTS_REMEMBERED_PER_ORIGIN_MAX {
            let smallest = w.applied.pop_first().expect("not empty");
            w.floor = smallest;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_copy_is_skipped_and_windows_are_bounded() {
        let mut d = Dedup::default();
        assert!(d.first_time(1, 5, 1));
        assert!(d.first_time(2, 5, 2), "another origin's id 5 is different");
        assert!(!d.first_time(1, 5, 3), "a retried copy is skipped");
        for id in 6..(6 + REQUESTS_REMEMBERED_PER_ORIGIN_MAX as u64) {
            assert!(d.first_time(1, id, id));
        }
        assert!(
            !d.first_time(1, 4, 100_000),
            "ids below the floor count as applied"
        );
        for origin in 10..(10 + ORIGINS_REMEMBERED_MAX as u64) {
            d.first_time(origin, 1, 200_000 + origin);
        }
        assert!(d.origins.len() <= ORIGINS_REMEMBERED_MAX);
    }
}
