//! Exactly-once application of retried proposals (Raft thesis §6.3, in small).
//!
//! A proposal may reach the log twice: a follower re-forwards a proposal whose answer was
//! lost, or a caller retries after a leader change. Every copy carries the same
//! (origin, request id) envelope, so the apply thread of every node skips the later
//! copies. The decision depends only on the log, so every node skips the same entries.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Deserializer, Serialize};

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
    /// Applied ids above `floor`. Invariant: strictly increasing, all above `floor`, at
    /// most [`REQUESTS_REMEMBERED_PER_ORIGIN_MAX`]. A node's request ids grow, so an id
    /// applied is almost always above all before it and is appended in O(1) (a
    /// `BTreeSet` here cost the apply thread about half its CPU at 170k entries/s).
    /// Serialized as a sequence of ids, as the `BTreeSet` was: snapshots keep their
    /// format.
    #[serde(deserialize_with = "sorted_ids")]
    applied: VecDeque<u64>,
    last_active: LogIndex,
}

/// Reads a window's ids in any order (a snapshot is checksummed, but the invariant of
/// [`Window::applied`] must not rest on that): sorted, duplicates removed.
fn sorted_ids<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<u64>, D::Error> {
    let mut ids = Vec::<u64>::deserialize(d)?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids.into())
}

impl Window {
    fn contains(&self, request_id: u64) -> bool {
        request_id <= self.floor || self.applied.binary_search(&request_id).is_ok()
    }

    /// Records `request_id`; `false` if it was there (or at or below the floor).
    fn insert(&mut self, request_id: u64) -> bool {
        if request_id <= self.floor {
            return false;
        }
        match self.applied.back() {
            Some(&last) if request_id <= last => match self.applied.binary_search(&request_id) {
                Ok(_) => return false,
                Err(at) => self.applied.insert(at, request_id),
            },
            _ => self.applied.push_back(request_id),
        }
        if self.applied.len() > REQUESTS_REMEMBERED_PER_ORIGIN_MAX {
            self.floor = self.applied.pop_front().expect("not empty");
        }
        debug_assert!(self.applied.front().is_none_or(|&first| first > self.floor));
        true
    }
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
            .is_some_and(|w| w.contains(request_id))
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
        w.insert(request_id)
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

    #[test]
    fn out_of_order_ids_and_the_serialized_form() {
        let mut d = Dedup::default();
        for id in [10, 12, 11, 20, 15] {
            assert!(d.first_time(1, id, id));
        }
        for id in [10, 11, 12, 15, 20] {
            assert!(!d.first_time(1, id, 100), "{id} again is skipped");
        }
        assert!(!d.was_applied(1, 13));
        assert!(d.first_time(1, 13, 101));
        let w = &d.origins[&1];
        assert!(w
            .applied
            .iter()
            .zip(w.applied.iter().skip(1))
            .all(|(a, b)| a < b));

        // The same bytes as the BTreeSet form, read back sorted from any order.
        #[derive(Serialize)]
        struct Old {
            floor: u64,
            applied: std::collections::BTreeSet<u64>,
            last_active: LogIndex,
        }
        let old = Old {
            floor: 3,
            applied: [5, 9, 7].into_iter().collect(),
            last_active: 4,
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        assert_eq!(
            bytes,
            postcard::to_allocvec(&{
                let mut w = Window {
                    floor: 3,
                    last_active: 4,
                    ..Window::default()
                };
                for id in [5, 7, 9] {
                    w.insert(id);
                }
                w
            })
            .unwrap()
        );
        let unsorted = postcard::to_allocvec(&(3u64, vec![9u64, 5, 7, 5], 4u64)).unwrap();
        let w: Window = postcard::from_bytes(&unsorted).unwrap();
        assert_eq!(w.applied, [5, 7, 9]);
    }
}
