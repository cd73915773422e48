//! Replay protection for authenticated datagrams.
//!
//! Each sender stamps its datagrams with `(epoch, seq)`: the epoch is the time its
//! transport started (µs since the Unix epoch), the sequence counts from 1. Both sit in
//! the MAC-covered header, so only a key holder can choose them. A receiver remembers,
//! per sender, the newest epoch and a 128-datagram sliding window of sequence numbers
//! (as IPsec and WireGuard do):
//!
//! - a newer epoch means the sender restarted: the window starts afresh;
//! - in the current epoch, a sequence number already seen, or 128 or more behind the
//!   newest, is a replay (or a datagram so late Raft would not miss it);
//! - an older epoch is a replay of an earlier incarnation, unless nothing was accepted
//!   from the sender for [`EPOCH_TAKEOVER`]: then the receiver takes the older epoch
//!   as current. That heals a sender whose clock stepped back across a restart, and
//!   lets an attacker only replay a silent (down) node's old, genuine messages, which
//!   Raft tolerates like any delayed duplicate.
//!
//! A receiver that restarts forgets its windows, so an attacker can replay captured
//! traffic to it once, until the genuine sender's next datagram moves the window past
//! it. Raft is safe under delayed and duplicated messages, so this costs at most some
//! wasted work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft_core::NodeId;

/// How many sequence numbers behind the newest are still accepted (once each).
pub const WINDOW_LEN: u64 = 128;
/// After this long without an accepted datagram from a sender, an older epoch from it
/// is accepted as its new current epoch.
pub const EPOCH_TAKEOVER: Duration = Duration::from_secs(10);
/// Senders remembered at most; authenticated senders are cluster members, so this is
/// only a backstop against a member with a runaway id space.
pub const SENDERS_MAX: usize = 4096;

/// Why a datagram was refused as a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// This `(epoch, seq)` was accepted before.
    Duplicate,
    /// The sequence number is [`WINDOW_LEN`] or more behind the newest.
    TooOld,
    /// The epoch is older than the sender's current one.
    OlderEpoch,
}

/// Accepted or not, and whether the sender's epoch changed (for logging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted within the current epoch (or the first datagram seen from the sender).
    Fresh,
    /// Accepted, and the sender's epoch changed: it restarted (or took over after
    /// [`EPOCH_TAKEOVER`] with an older epoch).
    NewEpoch,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    epoch: u64,
    /// The newest sequence number accepted in `epoch`.
    highest: u64,
    /// Bit `i` set: `highest - i` was accepted.
    seen: u128,
    last_accepted: Instant,
}

impl Window {
    fn new(epoch: u64, seq: u64, now: Instant) -> Window {
        Window {
            epoch,
            highest: seq,
            seen: 1,
            last_accepted: now,
        }
    }
}

/// Per-sender replay windows.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    windows: HashMap<NodeId, Window>,
}

impl ReplayGuard {
    /// Empty: the first datagram from each sender is accepted.
    pub fn new() -> ReplayGuard {
        ReplayGuard::default()
    }

    /// Checks and records one authenticated `(epoch, seq)` from `sender`.
    ///
    /// # Errors
    /// [`Replay`] says why the datagram must be dropped; nothing is recorded then.
    pub fn check(
        &mut self,
        sender: NodeId,
        epoch: u64,
        seq: u64,
        now: Instant,
    ) -> Result<Verdict, Replay> {
        if !self.windows.contains_key(&sender) && self.windows.len() >= SENDERS_MAX {
            // Forget the quietest sender; it restarts with a fresh window.
            if let Some((&quiet, _)) = self.windows.iter().min_by_key(|(_, w)| w.last_accepted) {
                self.windows.remove(&quiet);
            }
        }
        let Some(w) = self.windows.get_mut(&sender) else {
            self.windows.insert(sender, Window::new(epoch, seq, now));
            return Ok(Verdict::Fresh);
        };
        if epoch > w.epoch {
            *w = Window::new(epoch, seq, now);
            return Ok(Verdict::NewEpoch);
        }
        if epoch < w.epoch {
            if now.saturating_duration_since(w.last_accepted) < EPOCH_TAKEOVER {
                return Err(Replay::OlderEpoch);
            }
            *w = Window::new(epoch, seq, now);
            return Ok(Verdict::NewEpoch);
        }
        if seq > w.highest {
            let shift = seq - w.highest;
            w.seen = if shift >= WINDOW_LEN {
                0
            } else {
                w.seen << shift
            };
            w.seen |= 1;
            w.highest = seq;
        } else {
            let age = w.highest - seq;
            if age >= WINDOW_LEN {
                return Err(Replay::TooOld);
            }
            let bit = 1u128 << age;
            if w.seen & bit != 0 {
                return Err(Replay::Duplicate);
            }
            w.seen |= bit;
        }
        w.last_accepted = now;
        Ok(Verdict::Fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_each_sequence_once_and_tolerates_reordering() {
        let t = Instant::now();
        let mut g = ReplayGuard::new();
        // In order, then a duplicate.
        assert_eq!(g.check(1, 100, 1, t), Ok(Verdict::Fresh));
        assert_eq!(g.check(1, 100, 2, t), Ok(Verdict::Fresh));
        assert_eq!(g.check(1, 100, 2, t), Err(Replay::Duplicate));
        // Reordered within the window: 5 before 3 and 4; each once.
        assert_eq!(g.check(1, 100, 5, t), Ok(Verdict::Fresh));
        assert_eq!(g.check(1, 100, 4, t), Ok(Verdict::Fresh));
        assert_eq!(g.check(1, 100, 3, t), Ok(Verdict::Fresh));
        assert_eq!(g.check(1, 100, 3, t), Err(Replay::Duplicate));
        // A jump past the window forgets everything behind it.
        assert_eq!(g.check(1, 100, 5 + WINDOW_LEN, t), Ok(Verdict::Fresh));
        assert_eq!(g.check(1, 100, 5, t), Err(Replay::TooOld));
        assert_eq!(
            g.check(1, 100, 6, t),
            Ok(Verdict::Fresh),
            "127 behind is still inside"
        );
        // Senders are independent.
        assert_eq!(g.check(2, 100, 2, t), Ok(Verdict::Fresh));
    }

    #[test]
    fn a_restarted_sender_resets_and_its_old_epoch_is_refused() {
        let t = Instant::now();
        let mut g = ReplayGuard::new();
        assert_eq!(g.check(1, 100, 50, t), Ok(Verdict::Fresh));
        // Restart: new epoch, sequence back to 1.
        assert_eq!(g.check(1, 200, 1, t), Ok(Verdict::NewEpoch));
        // Replays of the old incarnation are refused while the new one is alive...
        assert_eq!(
            g.check(1, 100, 51, t + Duration::from_secs(1)),
            Err(Replay::OlderEpoch)
        );
        // ...and a duplicate of the new one too.
        assert_eq!(g.check(1, 200, 1, t), Err(Replay::Duplicate));
    }

    #[test]
    fn an_older_epoch_takes_over_after_silence() {
        // A sender whose clock stepped back across a restart gets through after
        // EPOCH_TAKEOVER without accepted traffic, instead of being locked out forever.
        let t = Instant::now();
        let mut g = ReplayGuard::new();
        assert_eq!(g.check(1, 200, 9, t), Ok(Verdict::Fresh));
        let later = t + EPOCH_TAKEOVER;
        assert_eq!(
            g.check(1, 150, 1, later - Duration::from_millis(1)),
            Err(Replay::OlderEpoch)
        );
        assert_eq!(g.check(1, 150, 1, later), Ok(Verdict::NewEpoch));
        assert_eq!(g.check(1, 150, 2, later), Ok(Verdict::Fresh));
        assert_eq!(
            g.check(1, 200, 10, later),
            Ok(Verdict::NewEpoch),
            "the newer epoch wins again"
        );
    }

    #[test]
    fn sender_table_is_bounded() {
        let t = Instant::now();
        let mut g = ReplayGuard::new();
        for id in 0..(SENDERS_MAX as u64 + 10) {
            g.check(id, 1, 1, t).unwrap();
        }
        assert_eq!(g.windows.len(), SENDERS_MAX);
    }
}
