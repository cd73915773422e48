//! Messages larger than one datagram: reassembly with bounded memory on the receiving
//! side ([`Reassembler`]), and the sender's cache for answering requests for lost
//! fragments ([`ResendCache`]).
//!
//! The wire format is in [`crate::wire`] ([`FragmentHeader`], [`FragmentRequest`]).
//! Each fragment is a whole datagram, sealed on its own (MAC, replay window), so with
//! encryption on a forged fragment is dropped before it can take any reassembly memory.
//!
//! Memory invariant: the bytes reserved by incomplete messages never exceed
//! [`ReassemblyLimits::total_bytes_max`] in total nor
//! [`ReassemblyLimits::per_peer_bytes_max`] for one peer. A message reserves its whole
//! length (plus bookkeeping) when its first fragment arrives, and releases it when it
//! completes, times out or is evicted.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use raft_net::fragment::{Reassembler, ReassemblyLimits};
//! use raft_net::wire::{fragment_range, FragmentHeader};
//!
//! let mut r = Reassembler::new(ReassemblyLimits {
//!     message_bytes_max: 1 << 20,
//!     per_peer_bytes_max: 2 << 20,
//!     total_bytes_max: 4 << 20,
//!     timeout: Duration::from_secs(2),
//! });
//! let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
//! let now = Instant::now();
//! let mut assembled = None;
//! for index in (0..3).rev() {
//!     let h = FragmentHeader { message_id: 1, index, count: 3, total_bytes: 1000 };
//!     let piece = &body[fragment_range(index, 3, 1000)];
//!     assembled = r.insert(2, 7, false, h, piece, now).unwrap();
//! }
//! assert_eq!(assembled.unwrap().body, body);
//! assert_eq!(r.reserved_bytes(), 0);
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_core::NodeId;

use crate::stats::DropKind;
use crate::wire::{self, FragmentHeader, FragmentRequest};

/// A receiver asks for missing fragments once no fragment of the message arrived for
/// this long (pieces may still be on their way, reordered).
pub const REQUEST_AFTER_SILENCE: Duration = Duration::from_millis(10);
/// And then at most this often per message.
pub const REQUEST_INTERVAL: Duration = Duration::from_millis(30);
/// Bytes charged for one incomplete message's bookkeeping, besides its body and bitmap.
pub const PARTIAL_OVERHEAD_BYTES: usize = 128;
/// Message ids remembered per sender after their message completed or was dropped, so
/// late duplicates and resent fragments do not start a new reassembly.
pub const FINISHED_REMEMBERED: usize = 1024;

/// The receiving side's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// The largest assembled body accepted.
    pub message_bytes_max: usize,
    /// Bytes reserved for one peer's incomplete messages.
    pub per_peer_bytes_max: usize,
    /// Bytes reserved for all incomplete messages.
    pub total_bytes_max: usize,
    /// An incomplete message is dropped this long after its first fragment.
    pub timeout: Duration,
}

impl ReassemblyLimits {
    /// The limits of a config.
    pub fn of(config: &crate::NetConfig) -> ReassemblyLimits {
        ReassemblyLimits {
            message_bytes_max: config.message_bytes_max,
            per_peer_bytes_max: config.reassembly_bytes_per_peer_max,
            total_bytes_max: config.reassembly_bytes_total_max,
            timeout: Duration::from_millis(config.reassembly_timeout_ms),
        }
    }
}

/// A message whose fragments all arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The body: postcard, lz4-compressed if `compressed`.
    pub body: Vec<u8>,
    /// Whether the fragments said the body is compressed.
    pub compressed: bool,
    /// How many fragments it had.
    pub count: u32,
}

/// An incomplete message dropped, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abandoned {
    /// Its sender.
    pub sender: NodeId,
    /// Its id.
    pub message_id: u64,
    /// Fragments received.
    pub received: u32,
    /// Fragments it has.
    pub count: u32,
    /// Why: [`DropKind::ReassemblyTimeout`] or [`DropKind::ReassemblyFull`].
    pub kind: DropKind,
}

/// Who sent a message: (sender, sender's epoch, message id).
type Key = (NodeId, u64, u64);

#[derive(Debug)]
struct Partial {
    compressed: bool,
    count: u32,
    total_bytes: u32,
    body: Vec<u8>,
    /// Bit i set: fragment i arrived.
    have: Vec<u64>,
    received: u32,
    reserved_bytes: usize,
    first_at: Instant,
    last_at: Instant,
    requested_at: Option<Instant>,
}

impl Partial {
    fn has(&self, index: u32) -> bool {
        self.have[index as usize / 64] & (1 << (index % 64)) != 0
    }

    /// Runs of missing fragments, at most `max` of them.
    fn missing(&self, max: usize) -> Vec<(u32, u32)> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for i in 0..self.count {
            if self.has(i) {
                continue;
            }
            if let Some((first, n)) = runs.last_mut() {
                if *first + *n == i {
                    *n += 1;
                    continue;
                }
            }
            if runs.len() == max {
                break;
            }
            runs.push((i, 1));
        }
        runs
    }
}

#[derive(Debug, Default)]
struct Finished {
    epoch: u64,
    order: VecDeque<u64>,
    ids: HashSet<u64>,
}

impl Finished {
    fn contains(&self, epoch: u64, id: u64) -> bool {
        self.epoch == epoch && self.ids.contains(&id)
    }

    fn insert(&mut self, epoch: u64, id: u64) {
        if epoch != self.epoch {
            if epoch < self.epoch {
                return; // an older incarnation's message: nothing to remember
            }
            *self = Finished {
                epoch,
                ..Finished::default()
            };
        }
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > FINISHED_REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

/// Assembles fragmented messages within memory bounds. Owned by the processor thread.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partial: HashMap<Key, Partial>,
    per_peer_bytes: HashMap<NodeId, usize>,
    total_bytes: usize,
    finished: HashMap<NodeId, Finished>,
    evicted: u64,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new(limits: ReassemblyLimits) -> Reassembler {
        Reassembler {
            limits,
            partial: HashMap::new(),
            per_peer_bytes: HashMap::new(),
            total_bytes: 0,
            finished: HashMap::new(),
            evicted: 0,
        }
    }

    /// Bytes reserved by incomplete messages.
    pub fn reserved_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes reserved by `peer`'s incomplete messages.
    pub fn reserved_bytes_of(&self, peer: NodeId) -> usize {
        self.per_peer_bytes.get(&peer).copied().unwrap_or(0)
    }

    /// Incomplete messages.
    pub fn incomplete(&self) -> usize {
        self.partial.len()
    }

    /// Takes one fragment of message `header.message_id` from `sender` (whose datagram,
    /// already authenticated if the cluster is encrypted, carried `epoch` and the
    /// compression flag `compressed`). Returns the message once its last fragment
    /// arrives.
    ///
    /// # Errors
    /// The [`DropKind`] the fragment is dropped under: [`DropKind::FragmentInvalid`]
    /// (index out of range, count or length inconsistent with the message's first
    /// fragment or with `message_bytes_max`, a piece of the wrong length),
    /// [`DropKind::FragmentDuplicate`] or [`DropKind::ReassemblyFull`].
    pub fn insert(
        &mut self,
        sender: NodeId,
        epoch: u64,
        compressed: bool,
        header: FragmentHeader,
        piece: &[u8],
        now: Instant,
    ) -> Result<Option<Assembled>, DropKind> {
        let FragmentHeader {
            message_id,
            index,
            count,
            total_bytes,
        } = header;
        let total = total_bytes as usize;
        let count_max = total.div_ceil(wire::FRAGMENT_BYTES_MIN);
        if count < 2
            || index >= count
            || total > self.limits.message_bytes_max
            || count as usize > count_max
            || piece.len() != wire::fragment_range(index, count, total_bytes).len()
        {
            return Err(DropKind::FragmentInvalid);
        }
        let key = (sender, epoch, message_id);
        if !self.partial.contains_key(&key) {
            if self
                .finished
                .get(&sender)
                .is_some_and(|f| f.contains(epoch, message_id))
            {
                return Err(DropKind::FragmentDuplicate);
            }
            self.start(key, compressed, count, total_bytes, now)?;
        }
        let p = self.partial.get_mut(&key).expect("started above");
        if p.count != count || p.total_bytes != total_bytes || p.compressed != compressed {
            return Err(DropKind::FragmentInvalid);
        }
        if p.has(index) {
            return Err(DropKind::FragmentDuplicate);
        }
        p.have[index as usize / 64] |= 1 << (index % 64);
        p.received += 1;
        p.last_at = now;
        p.body[wire::fragment_range(index, count, total_bytes)].copy_from_slice(piece);
        if p.received < p.count {
            return Ok(None);
        }
        let p = self.remove(key).expect("present");
        Ok(Some(Assembled {
            body: p.body,
            compressed: p.compressed,
            count: p.count,
        }))
    }

    /// Reserves room for a new message, evicting the sender's oldest incomplete
    /// messages if its own budget is short.
    fn start(
        &mut self,
        key: Key,
        compressed: bool,
        count: u32,
        total_bytes: u32,
        now: Instant,
    ) -> Result<(), DropKind> {
        let sender = key.0;
        let reserved =
            total_bytes as usize + (count as usize).div_ceil(64) * 8 + PARTIAL_OVERHEAD_BYTES;
        if reserved > self.limits.per_peer_bytes_max {
            return Err(DropKind::ReassemblyFull);
        }
        while self.reserved_bytes_of(sender) + reserved > self.limits.per_peer_bytes_max {
            let oldest = self
                .partial
                .iter()
                .filter(|(k, _)| k.0 == sender)
                .min_by_key(|(_, p)| p.first_at)
                .map(|(k, _)| *k)
                .expect("a peer with reserved bytes has an incomplete message");
            if let Some(p) = self.remove(oldest) {
                log::debug!(
                    "reassembly: evicted message {} of n{sender} ({}/{} fragments) for a newer one: peer budget full",
                    oldest.2,
                    p.received,
                    p.count
                );
            }
            self.evicted += 1;
        }
        if self.total_bytes + reserved > self.limits.total_bytes_max {
            return Err(DropKind::ReassemblyFull);
        }
        self.partial.insert(
            key,
            Partial {
                compressed,
                count,
                total_bytes,
                body: vec![0; total_bytes as usize],
                have: vec![0; (count as usize).div_ceil(64)],
                received: 0,
                reserved_bytes: reserved,
                first_at: now,
                last_at: now,
                requested_at: None,
            },
        );
        *self.per_peer_bytes.entry(sender).or_default() += reserved;
        self.total_bytes += reserved;
        Ok(())
    }

    /// Removes a message (complete or not), releases its bytes and remembers its id.
    fn remove(&mut self, key: Key) -> Option<Partial> {
        let p = self.partial.remove(&key)?;
        self.total_bytes -= p.reserved_bytes;
        let peer = self.per_peer_bytes.get_mut(&key.0).expect("reserved");
        *peer -= p.reserved_bytes;
        if *peer == 0 {
            self.per_peer_bytes.remove(&key.0);
        }
        self.finished.entry(key.0).or_default().insert(key.1, key.2);
        Some(p)
    }

    /// Incomplete messages evicted for newer ones since the last call (each counts as
    /// [`DropKind::ReassemblyFull`]).
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    /// Drops messages whose first fragment is older than the timeout, and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Abandoned> {
        let timeout = self.limits.timeout;
        let expired: Vec<Key> = self
            .partial
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.first_at) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        expired
            .into_iter()
            .filter_map(|key| {
                let p = self.remove(key)?;
                Some(Abandoned {
                    sender: key.0,
                    message_id: key.2,
                    received: p.received,
                    count: p.count,
                    kind: DropKind::ReassemblyTimeout,
                })
            })
            .collect()
    }

    /// Requests for the missing fragments of every incomplete message that has been
    /// silent for [`REQUEST_AFTER_SILENCE`] and not asked about for
    /// [`REQUEST_INTERVAL`]; each names at most `ranges_max` runs of missing fragments.
    pub fn requests_due(&mut self, now: Instant, ranges_max: usize) -> Vec<FragmentRequest> {
        let mut out = Vec::new();
        for (&(sender, epoch, message_id), p) in &mut self.partial {
            let silent = now.saturating_duration_since(p.last_at) >= REQUEST_AFTER_SILENCE;
            let asked_lately = p
                .requested_at
                .is_some_and(|at| now.saturating_duration_since(at) < REQUEST_INTERVAL);
            if !silent || asked_lately {
                continue;
            }
            p.requested_at = Some(now);
            out.push(FragmentRequest {
                to: sender,
                epoch,
                message_id,
                ranges: p.missing(ranges_max.max(1)),
            });
        }
        out
    }

    /// When [`Reassembler::requests_due`] or [`Reassembler::expire`] next has work, if
    /// any message is incomplete.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.partial
            .values()
            .map(|p| {
                let request = match p.requested_at {
                    Some(at) => (at + REQUEST_INTERVAL).max(p.last_at + REQUEST_AFTER_SILENCE),
                    None => p.last_at + REQUEST_AFTER_SILENCE,
                };
                request.min(p.first_at + self.limits.timeout)
            })
            .min()
    }
}

/// A fragmented message as its sender keeps it, to send pieces again.
#[derive(Debug)]
pub struct FragmentedBody {
    /// The node it went to.
    pub to: NodeId,
    /// Its id in the sender's epoch.
    pub message_id: u64,
    /// Whether `body` is lz4-compressed.
    pub compressed: bool,
    /// The body (postcard, maybe compressed), before encryption.
    pub body: Vec<u8>,
    /// How many fragments it was cut into.
    pub count: u32,
}

impl FragmentedBody {
    /// The header of fragment `index`.
    pub fn header(&self, index: u32) -> FragmentHeader {
        FragmentHeader {
            message_id: self.message_id,
            index,
            count: self.count,
            total_bytes: self.body.len() as u32,
        }
    }

    /// The piece fragment `index` carries.
    pub fn piece(&self, index: u32) -> &[u8] {
        &self.body[wire::fragment_range(index, self.count, self.body.len() as u32)]
    }
}

/// The sender's recently fragmented messages, oldest first, within a byte budget and an
/// age limit (a receiver gives up on a message after its reassembly timeout anyway).
#[derive(Debug)]
pub struct ResendCache {
    bytes_max: usize,
    ttl: Duration,
    bytes: usize,
    entries: VecDeque<(Instant, Arc<FragmentedBody>)>,
}

impl ResendCache {
    /// An empty cache; `bytes_max` 0 keeps nothing.
    pub fn new(bytes_max: usize, ttl: Duration) -> ResendCache {
        ResendCache {
            bytes_max,
            ttl,
            bytes: 0,
            entries: VecDeque::new(),
        }
    }

    /// Keeps `body` (if it fits at all), dropping the oldest entries to make room.
    pub fn insert(&mut self, body: Arc<FragmentedBody>, now: Instant) {
        self.expire(now);
        let len = body.body.len();
        if len > self.bytes_max {
            return;
        }
        while self.bytes + len > self.bytes_max {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.body.len();
        }
        self.bytes += len;
        self.entries.push_back((now, body));
    }

    /// The message `message_id` sent to `to`, if still kept.
    pub fn get(
        &mut self,
        to: NodeId,
        message_id: u64,
        now: Instant,
    ) -> Option<Arc<FragmentedBody>> {
        self.expire(now);
        self.entries
            .iter()
            .find(|(_, b)| b.message_id == message_id && b.to == to)
            .map(|(_, b)| Arc::clone(b))
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, old)) = self.entries.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            self.bytes -= old.body.len();
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PEER: NodeId = 2;
    const EPOCH: u64 = 7;

    fn limits() -> ReassemblyLimits {
        ReassemblyLimits {
            message_bytes_max: 100_000,
            per_peer_bytes_max: 250_000,
            total_bytes_max: 400_000,
            timeout: Duration::from_secs(2),
        }
    }

    fn body(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn fragments(id: u64, body: &[u8], count: u32) -> Vec<(FragmentHeader, Vec<u8>)> {
        let total = body.len() as u32;
        (0..count)
            .map(|index| {
                let h = FragmentHeader {
                    message_id: id,
                    index,
                    count,
                    total_bytes: total,
                };
                (h, body[wire::fragment_range(index, count, total)].to_vec())
            })
            .collect()
    }

    fn put(
        r: &mut Reassembler,
        peer: NodeId,
        (h, piece): &(FragmentHeader, Vec<u8>),
        now: Instant,
    ) -> Result<Option<Assembled>, DropKind> {
        r.insert(peer, EPOCH, false, *h, piece, now)
    }

    #[test]
    fn hostile_fragments_are_dropped_under_their_kind_and_reserve_nothing_lasting() {
        let now = Instant::now();
        let mut r = Reassembler::new(limits());
        let b = body(10_000, 1);
        let frags = fragments(1, &b, 10);
        let mut bad = |h: FragmentHeader, piece: &[u8]| {
            r.insert(PEER, EPOCH, false, h, piece, now).unwrap_err()
        };
        let (h0, p0) = &frags[0];
        // Out-of-range index, a count below 2, a message over message_bytes_max, a
        // count that would make pieces tiny, a piece of the wrong length.
        assert_eq!(
            bad(FragmentHeader { index: 10, ..*h0 }, p0),
            DropKind::FragmentInvalid
        );
        assert_eq!(
            bad(
                FragmentHeader {
                    count: 1,
                    index: 0,
                    ..*h0
                },
                &b
            ),
            DropKind::FragmentInvalid
        );
        assert_eq!(
            bad(
                FragmentHeader {
                    total_bytes: 100_001,
                    count: 100,
                    ..*h0
                },
                &[0; 1000]
            ),
            DropKind::FragmentInvalid
        );
        assert_eq!(
            bad(
                FragmentHeader {
                    count: 5_000,
                    ..*h0
                },
                &p0[..2]
            ),
            DropKind::FragmentInvalid
        );
        assert_eq!(bad(*h0, &p0[1..]), DropKind::FragmentInvalid);
        assert_eq!(r.reserved_bytes(), 0);
        assert_eq!(r.incomplete(), 0);

        // A good start, then a duplicate, then fragments disagreeing with the first.
        assert_eq!(put(&mut r, PEER, &frags[0], now), Ok(None));
        let reserved = r.reserved_bytes();
        assert!(reserved >= 10_000);
        assert_eq!(
            put(&mut r, PEER, &frags[0], now),
            Err(DropKind::FragmentDuplicate)
        );
        let (h1, p1) = &frags[1];
        let lie = FragmentHeader { count: 9, ..*h1 };
        let piece = &b[wire::fragment_range(1, 9, 10_000)];
        assert_eq!(
            r.insert(PEER, EPOCH, false, lie, piece, now),
            Err(DropKind::FragmentInvalid)
        );
        assert_eq!(
            r.insert(PEER, EPOCH, true, *h1, p1, now),
            Err(DropKind::FragmentInvalid)
        );
        assert_eq!(r.reserved_bytes(), reserved);

        // The rest, in reverse order: the body comes out whole, memory is released.
        let mut done = None;
        for f in frags[1..].iter().rev() {
            done = put(&mut r, PEER, f, now).unwrap();
        }
        assert_eq!(done.unwrap().body, b);
        assert_eq!(r.reserved_bytes(), 0);
        // A late duplicate of a completed message starts nothing.
        assert_eq!(
            put(&mut r, PEER, &frags[3], now),
            Err(DropKind::FragmentDuplicate)
        );
        assert_eq!(r.incomplete(), 0);
    }

    #[test]
    fn a_flood_of_never_completed_messages_stays_within_the_peer_and_total_budgets() {
        let now = Instant::now();
        let mut r = Reassembler::new(limits());
        let b = body(90_000, 2);
        let mut evicted = 0;
        // Peer 2 floods: 1,000 message ids, one fragment each.
        for id in 1..=1_000 {
            let f = &fragments(id, &b, 100)[0];
            assert_eq!(put(&mut r, PEER, f, now), Ok(None));
            evicted += r.take_evicted();
            assert!(r.reserved_bytes_of(PEER) <= limits().per_peer_bytes_max);
        }
        assert_eq!(r.incomplete(), 2, "two 90 KB messages fit 250 KB");
        assert_eq!(evicted, 998);
        // Peers 3, 4 and 5 start messages too: the total budget (400 KB) refuses some.
        let mut full = 0;
        for peer in 3..=5 {
            for id in 1..=2 {
                match put(&mut r, peer, &fragments(id, &b, 100)[0], now) {
                    Ok(None) => {}
                    Err(DropKind::ReassemblyFull) => full += 1,
                    other => panic!("{other:?}"),
                }
                assert!(r.reserved_bytes() <= limits().total_bytes_max);
            }
        }
        assert_eq!(full, 4, "{} incomplete", r.incomplete());
        // Everything expires after the timeout and all memory comes back.
        assert!(r.expire(now + Duration::from_millis(1_999)).is_empty());
        let expired = r.expire(now + Duration::from_secs(2));
        assert_eq!(expired.len(), 4);
        assert!(expired
            .iter()
            .all(|a| a.kind == DropKind::ReassemblyTimeout));
        assert_eq!(r.reserved_bytes(), 0);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn requests_name_the_missing_runs_after_a_silence_and_not_more_often_than_the_interval() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(limits());
        let b = body(20_000, 3);
        let frags = fragments(5, &b, 20);
        for (i, f) in frags.iter().enumerate() {
            if ![3, 4, 9, 19].contains(&i) {
                put(&mut r, PEER, f, t0).unwrap();
            }
        }
        assert!(
            r.requests_due(t0, 16).is_empty(),
            "pieces may still be on their way"
        );
        let t1 = t0 + REQUEST_AFTER_SILENCE;
        assert_eq!(r.next_deadline(), Some(t1));
        let asked = r.requests_due(t1, 16);
        assert_eq!(
            asked,
            vec![FragmentRequest {
                to: PEER,
                epoch: EPOCH,
                message_id: 5,
                ranges: vec![(3, 2), (9, 1), (19, 1)]
            }]
        );
        assert_eq!(r.requests_due(t1, 2)[..], [], "asked lately");
        let t2 = t1 + REQUEST_INTERVAL;
        assert_eq!(
            r.requests_due(t2, 2)[0].ranges,
            vec![(3, 2), (9, 1)],
            "bounded"
        );
        for i in [3, 4, 9] {
            put(&mut r, PEER, &frags[i], t2).unwrap();
        }
        let done = put(&mut r, PEER, &frags[19], t2).unwrap().unwrap();
        assert_eq!(done.body, b);
    }

    #[test]
    fn the_resend_cache_keeps_recent_messages_within_its_budget_and_age() {
        let t0 = Instant::now();
        let mut c = ResendCache::new(250, Duration::from_secs(1));
        let msg = |id, to, len| {
            Arc::new(FragmentedBody {
                to,
                message_id: id,
                compressed: false,
                body: vec![0; len],
                count: 2,
            })
        };
        c.insert(msg(1, 2, 100), t0);
        c.insert(msg(2, 3, 100), t0);
        c.insert(msg(3, 2, 100), t0);
        assert!(c.get(2, 1, t0).is_none(), "evicted for room");
        assert!(c.get(2, 2, t0).is_none(), "sent to n3, not n2");
        assert!(c.get(3, 2, t0).is_some());
        assert!(c.bytes() <= 250);
        c.insert(msg(4, 2, 300), t0);
        assert!(c.get(2, 4, t0).is_none(), "larger than the whole cache");
        assert!(
            c.get(2, 3, t0 + Duration::from_secs(1)).is_none(),
            "too old"
        );
        assert_eq!(c.bytes(), 0);
    }

    proptest! {
        /// Any sequence of fragments, genuine (shuffled, duplicated, partial) or forged
        /// (random headers), never panics, never exceeds the budgets, and a message whose
        /// every genuine fragment arrived comes out whole.
        #[test]
        fn arbitrary_fragment_sequences_are_safe(
            len in 6_200usize..20_000,
            count in 2u32..24,
            order in proptest::collection::vec((0u32..64, any::<bool>()), 0..120),
            forged in proptest::collection::vec((any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), 0usize..3000), 0..40),
        ) {
            let small = ReassemblyLimits {
                message_bytes_max: 30_000,
                per_peer_bytes_max: 45_000,
                total_bytes_max: 60_000,
                timeout: Duration::from_secs(2),
            };
            let now = Instant::now();
            let mut r = Reassembler::new(small);
            let b = body(len, 9);
            let frags = fragments(1, &b, count);
            let mut seen = vec![false; count as usize];
            let mut forged = forged.into_iter();
            let mut assembled = None;
            for (i, forge) in order {
                if forge {
                    if let Some((id, index, count, total, piece_len)) = forged.next() {
                        let h = FragmentHeader { message_id: id % 4 + 2, index, count, total_bytes: total };
                        let _ = r.insert(3, EPOCH, false, h, &vec![0; piece_len], now);
                    }
                } else {
                    let i = (i % count) as usize;
                    match put(&mut r, PEER, &frags[i], now) {
                        Ok(Some(a)) => assembled = Some(a.body),
                        Ok(None) => {}
                        Err(kind) => prop_assert!(
                            seen[i] && kind == DropKind::FragmentDuplicate || assembled.is_some(),
                            "{kind}"
                        ),
                    }
                    seen[i] = true;
                }
                prop_assert!(r.reserved_bytes() <= small.total_bytes_max);
                prop_assert!(r.reserved_bytes_of(3) <= small.per_peer_bytes_max);
                let _ = r.take_evicted();
            }
            if seen.iter().all(|&s| s) {
                prop_assert_eq!(assembled, Some(b));
            } else {
                prop_assert!(assembled.is_none());
            }
            r.expire(now + Duration::from_secs(3));
            prop_assert_eq!(r.reserved_bytes(), 0);
        }
    }
}
