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

/// Identifies one command submitted through a [`super::Submitter`]: its completion
/// carries the same ticket. Tickets of one submitter increase in submission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub(crate) u64);

impl Ticket {
    /// The ticket's number (the command's request id on this node).
    pub fn id(self) -> u64 {
        self.0
    }
}

/// One submitted command's outcome: its ticket and the state machine's response or why
/// it did not take effect.
pub type Completion<R> = (Ticket, Result<R, NodeError>);

/// The completions of one submitter: the apply thread pushes a whole batch's at once,
/// the submitter takes everything queued at once, so a burst of results costs one
/// wake-up.
pub(crate) struct CompletionQueue<T> {
    state: Mutex<CompletionState<T>>,
    ready: Condvar,
}

struct CompletionState<T> {
    items: Vec<Completion<T>>,
    /// The submitter is parked (so a push must wake it).
    waiting: bool,
}

impl<T> CompletionQueue<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(CompletionState {
                items: Vec::new(),
                waiting: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// Queues `completions`, waking the submitter once if it is parked.
    pub(crate) fn push_all(&self, completions: impl IntoIterator<Item = Completion<T>>) {
        let mut state = self.state.lock();
        state.items.extend(completions);
        let wake = state.waiting && !state.items.is_empty();
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Moves everything queued to the end of `out`, first waiting until `deadline`
    /// (`None`: not at all) for something to come. Returns how many it moved.
    pub(crate) fn take_all(
        &self,
        out: &mut Vec<Completion<T>>,
        deadline: Option<Instant>,
    ) -> usize {
        let mut state = self.state.lock();
        if let Some(deadline) = deadline {
            while state.items.is_empty() {
                state.waiting = true;
                let timed_out = self.ready.wait_until(&mut state, deadline).timed_out();
                state.waiting = false;
                if timed_out {
                    break;
                }
            }
        }
        let n = state.items.len();
        out.append(&mut state.items);
        n
    }
}

/// A submitter's command waiting for its outcome. Dropping it unanswered queues
/// [`NodeError::Stopped`], so every ticket is answered exactly once.
pub(crate) struct QueueWaiter<T> {
    queue: Option<Arc<CompletionQueue<T>>>,
    ticket: Ticket,
}

impl<T> QueueWaiter<T> {
    pub(crate) fn new(queue: Arc<CompletionQueue<T>>, ticket: Ticket) -> Self {
        Self {
            queue: Some(queue),
            ticket,
        }
    }

    /// The queue and the ticket, for the caller to answer (the waiter is spent).
    pub(crate) fn into_parts(mut self) -> (Arc<CompletionQueue<T>>, Ticket) {
        let queue = self.queue.take().expect("a waiter is answered once");
        (queue, self.ticket)
    }

    /// Forgets the waiter without answering: its command was never submitted.
    pub(crate) fn cancel(mut self) {
        self.queue = None;
    }
}

impl<T> Drop for QueueWaiter<T> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.push_all([(self.ticket, Err(NodeError::Stopped))]);
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
