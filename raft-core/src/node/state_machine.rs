//! The `StateMachine` trait: what a node replicates.

use crate::types::LogIndex;

/// The user's replicated state machine. Every node applies the same commands in the
/// same order, so every copy goes through the same states.
///
/// `apply` must be deterministic: same state and command, same result, on every node.
/// It must not panic on a command it does not understand (a peer running another
/// version may send one): return an error value in `Response` instead.
///
/// ```
/// use raft_core::node::StateMachine;
///
/// /// Sums the numbers it is sent.
/// #[derive(Default)]
/// struct Counter(u64);
///
/// impl StateMachine for Counter {
///     type Response = u64;
///     fn apply(&mut self, _index: u64, command: &[u8]) -> u64 {
///         let n = command.first().copied().unwrap_or(0);
///         self.0 += u64::from(n);
///         self.0
///     }
/// }
/// ```
pub trait StateMachine: Send + 'static {
    /// What applying a command answers to its proposer.
    type Response: Send + 'static;

    /// Applies the committed command at `index`.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Self::Response;

    /// The whole state as bytes, for a snapshot. `None` (the default) means this state
    /// machine does not snapshot: the log is then never compacted, and a node that was
    /// away catches up from the log.
    ///
    /// Called on the apply thread between two `apply` calls; the runtime stores the
    /// bytes, compacts the log behind them and streams them to followers that need them.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Replaces the whole state with one produced by [`StateMachine::snapshot`] (on this
    /// or another node, possibly of an earlier version).
    ///
    /// # Errors
    /// Bytes that are not a valid snapshot; the node then refuses to go on rather than
    /// run with a state it cannot trust.
    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let _ = data;
        Err(RestoreError(
            "this state machine does not support snapshots".to_string(),
        ))
    }
}

/// A snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot restore the state machine from a snapshot: {0}")]
pub struct RestoreError(pub String);
