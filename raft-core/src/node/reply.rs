//! A one-shot reply slot: how the apply thread (or the WaitLoop) answers one proposer.
//!
//! A proposer thread waits on it right after proposing, so waiting must be cheap: it
//! parks at once on a condition variable. (A crossbeam channel spins and then yields
//! the CPU four times before parking; with dozens of waiting proposers on a machine
//! with few cores, those yields cost more than the rest of a commit.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::NodeError;

struct Slot<T> {
    value: Mutex<Option<Result<T, NodeError>>>,
    filled: Condvar,
}

/// The answering half. Dropping it unanswered answers [`NodeError::Stopped`] (the
/// node went away), as a dropped channel sender would.
pub(crate) struct ReplySender<T> {
    slot: Option<Arc<Slot<T>>>,
}

/// The waiting half.
pub(crate) struct ReplyReceiver<T> {
    slot: Arc<Slot<T>>,
}

/// A new empty slot.
pub(crate) fn reply_slot<T>() -> (ReplySender<T>, ReplyReceiver<T>) {
    let slot = Arc::new(Slot {
        value: Mutex::new(None),
        filled: Condvar::new(),
    });
    (
        ReplySender {
            slot: Some(slot.clone()),
        },
        ReplyReceiver { slot },
    )
}

impl<T> ReplySender<T> {
    /// Answers the waiter (at most once: the sender is consumed).
    pub(crate) fn send(mut self, value: Result<T, NodeError>) {
        if let Some(slot) = self.slot.take() {
            fill(&slot, value);
        }
    }
}

fn fill<T>(slot: &Slot<T>, value: Result<T, NodeError>) {
    *slot.value.lock() = Some(value);
    slot.filled.notify_one();
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            fill(&slot, Err(NodeError::Stopped));
        }
    }
}

impl<T> ReplyReceiver<T> {
    /// Waits up to `timeout` for the answer; `None` if it did not come in time.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<Result<T, NodeError>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut value = self.slot.value.lock();
        loop {
            if let Some(v) = value.take() {
                return Some(v);
            }
            match deadline {
                Some(deadline) => {
                    if self
                        .slot
                        .filled
                        .wait_until(&mut value, deadline)
                        .timed_out()
                    {
                        return value.take();
                    }
                }
                None => self.slot.filled.wait(&mut value),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_before_or_while_waiting_dropped_or_never() {
        let (tx, rx) = reply_slot::<u32>();
        tx.send(Ok(7));
        assert_eq!(rx.wait(Duration::ZERO).unwrap().unwrap(), 7);

        let (tx, rx) = reply_slot::<u32>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(Ok(8));
        });
        assert_eq!(rx.wait(Duration::from_secs(10)).unwrap().unwrap(), 8);
        t.join().unwrap();

        let (tx, rx) = reply_slot::<u32>();
        drop(tx);
        assert!(matches!(
            rx.wait(Duration::ZERO),
            Some(Err(NodeError::Stopped))
        ));

        let (_tx, rx) = reply_slot::<u32>();
        assert!(rx.wait(Duration::from_millis(5)).is_none());
    }
}
