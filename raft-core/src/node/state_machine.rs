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
}
