//! The `StateMachine` trait: what a node replicates.

use std::io::{self, Read, Write};

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
    /// The simple path, for small states: the default [`StateMachine::snapshot_source`]
    /// calls it on the apply thread (the writers wait while it runs) and the default
    /// [`StateMachine::restore_from`] reads the bytes back whole into
    /// [`StateMachine::restore`]. A big state overrides those two instead.
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

    /// A frozen view of the state as it is now, to be serialized later on another thread
    /// (the runtime's snapshot storer, straight into the snapshot file). `None`: this
    /// state machine does not snapshot.
    ///
    /// Called on the apply thread between two `apply` calls, with the state machine
    /// locked: it must be cheap (a copy-on-write view, an `Arc` clone of a persistent
    /// structure), because no command is applied while it runs. The view must not change
    /// when later commands are applied. The default wraps [`StateMachine::snapshot`]'s
    /// bytes, which is right for small states only.
    ///
    /// What the view writes is read back by [`StateMachine::restore_from`]; override the
    /// two together.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::sync::Arc;
    /// use raft_core::node::{RestoreError, SnapshotSource, StateMachine};
    ///
    /// /// An append-only list of numbers, shared with its snapshots through an `Arc`
    /// /// (a persistent structure such as `imbl::Vector` avoids even the copy on write).
    /// #[derive(Default)]
    /// struct Numbers(Arc<Vec<u64>>);
    ///
    /// struct NumbersView(Arc<Vec<u64>>);
    ///
    /// impl SnapshotSource for NumbersView {
    ///     fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
    ///         for n in self.0.iter() {
    ///             out.write_all(&n.to_le_bytes())?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// impl StateMachine for Numbers {
    ///     type Response = ();
    ///     fn apply(&mut self, _index: u64, command: &[u8]) {
    ///         // Copies the vector only if a snapshot still holds it.
    ///         Arc::make_mut(&mut self.0).push(command.len() as u64);
    ///     }
    ///     fn snapshot_source(&self) -> Option<Box<dyn SnapshotSource>> {
    ///         Some(Box::new(NumbersView(self.0.clone())))
    ///     }
    ///     fn restore_from(&mut self, input: &mut dyn Read) -> Result<(), RestoreError> {
    ///         let mut numbers = Vec::new();
    ///         let mut word = [0u8; 8];
    ///         loop {
    ///             match input.read_exact(&mut word) {
    ///                 Ok(()) => numbers.push(u64::from_le_bytes(word)),
    ///                 Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
    ///                 Err(e) => return Err(RestoreError(e.to_string())),
    ///             }
    ///         }
    ///         self.0 = Arc::new(numbers);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let mut a = Numbers::default();
    /// a.apply(1, b"abc");
    /// let view = a.snapshot_source().unwrap();
    /// a.apply(2, b"later, not in the view");
    /// let mut bytes = Vec::new();
    /// view.write_to(&mut bytes).unwrap();
    /// let mut b = Numbers::default();
    /// b.restore_from(&mut &bytes[..]).unwrap();
    /// assert_eq!(*b.0, vec![3]);
    /// ```
    fn snapshot_source(&self) -> Option<Box<dyn SnapshotSource>> {
        self.snapshot()
            .map(|bytes| Box::new(BytesSource(bytes)) as Box<dyn SnapshotSource>)
    }

    /// Replaces the whole state with one that a [`StateMachine::snapshot_source`] view
    /// wrote (on this or another node), read from `input` to its end. The default reads
    /// everything into memory and calls [`StateMachine::restore`].
    ///
    /// The stream may be damaged or forged: read it through a
    /// [`SnapshotReader`](super::SnapshotReader), which bounds every length before it
    /// allocates and turns a short or malformed stream into a [`RestoreError`].
    ///
    /// # Errors
    /// A stream that is not a valid snapshot, or that fails to read; the node then
    /// refuses to go on rather than run with a state it cannot trust.
    fn restore_from(&mut self, input: &mut dyn Read) -> Result<(), RestoreError> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| RestoreError(format!("cannot read the snapshot: {e}")))?;
        self.restore(&data)
    }
}

/// A frozen view of a state machine's state, taken cheaply on the apply thread by
/// [`StateMachine::snapshot_source`] and serialized on another thread.
pub trait SnapshotSource: Send + 'static {
    /// Writes the state to `out`, in the form [`StateMachine::restore_from`] reads.
    ///
    /// `out` is buffered and checksummed by the runtime; it may be a file being written,
    /// so this may take long and must not lock the state machine.
    ///
    /// # Errors
    /// `out` failed (the snapshot is then not stored; the log keeps the previous one).
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()>;
}

/// The default [`SnapshotSource`]: bytes [`StateMachine::snapshot`] produced.
struct BytesSource(Vec<u8>);

impl SnapshotSource for BytesSource {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.0)
    }
}

/// A snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot restore the state machine from a snapshot: {0}")]
pub struct RestoreError(pub String);
