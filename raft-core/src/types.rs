//! Plain data types shared by every layer: ids, terms, indexes, entries, hard state.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node's id in the cluster. Never 0: 0 means "nobody" on the wire and in hard state.
pub type NodeId = u64;
/// A Raft term. Starts at 0 and only ever grows on a node (persisted in [`HardState`]).
pub type Term = u64;
/// A log position. The first real entry has index 1; index 0 is the empty log's sentinel.
pub type LogIndex = u64;

/// What an [`Entry`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A user command for the state machine.
    Command,
    /// The empty entry a new leader appends to commit everything before it (Raft §8).
    Noop,
    /// A cluster configuration ([`Membership`], postcard-encoded in the data), in force
    /// on every node from the moment the node appends it (Raft thesis §4.1). Never
    /// applied to the state machine. Added after the others so stored logs stay
    /// readable.
    Membership,
}

/// One log entry.
///
/// Invariant: within a log, indexes are contiguous and terms never decrease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log, from 1.
    pub index: LogIndex,
    /// Command or no-op.
    pub kind: EntryKind,
    /// The command's bytes; empty for a no-op.
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry costs on the wire and in byte-limited reads, an upper bound:
    /// the payload plus a fixed allowance for term, index, kind and length prefixes.
    ///
    /// ```
    /// use raft_core::{Entry, EntryKind};
    /// let e = Entry { term: 1, index: 1, kind: EntryKind::Command, data: vec![0; 100].into() };
    /// assert_eq!(e.size_bytes(), 100 + Entry::OVERHEAD_BYTES);
    /// ```
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + Self::OVERHEAD_BYTES
    }

    /// The fixed per-entry allowance used by [`Entry::size_bytes`]: three varint
    /// `u64`s (at most 10 bytes each) and a kind tag, plus the length prefix of the data.
    pub const OVERHEAD_BYTES: u64 = 40;
}

/// State that must be durable before a node answers anything that depends on it.
///
/// Invariant on one node across restarts: `term` never decreases, and `vote` changes
/// only together with a larger `term`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Who this node voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
    /// The highest index known committed. Persisted so a restarted node can replay its
    /// committed entries at once (the original's OnNewCommitedEntry on load). Written
    /// with every change but made durable only by the next sync that other writes need
    /// (see `Ready::must_sync_after`), so after a crash it may lag: the entries past it
    /// are replayed once the leader is heard from.
    pub commit: LogIndex,
}

/// Where a snapshot ends, and the configuration in force there: the log below and at
/// `last_index` is covered by it. As etcd-io/raft keeps its `ConfState` in the snapshot
/// metadata, the configuration travels and is stored with the snapshot's metadata, never
/// inside the state machine's bytes, so a node that installs or restarts from a snapshot
/// knows who votes although the configuration entry itself was compacted away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers (0: no snapshot).
    pub last_index: LogIndex,
    /// The term of the entry at `last_index`.
    pub last_term: Term,
    /// The configuration in force at `last_index` (Raft thesis §4.1: the latest one in
    /// the log up to it). `None` only for a snapshot stored before configurations were
    /// kept with snapshots (raft-store's format 2, say): the initial configuration
    /// (`Config::voters`) then holds at it. A leader always sends one.
    pub membership: Option<Membership>,
}

impl SnapshotMeta {
    /// A position without a configuration (a compaction point, or a snapshot stored
    /// before configurations were kept with snapshots).
    pub const fn at(last_index: LogIndex, last_term: Term) -> Self {
        SnapshotMeta {
            last_index,
            last_term,
            membership: None,
        }
    }

    /// Whether `self` and `other` end at the same index and term (whatever their
    /// configurations).
    pub fn same_position(&self, other: &SnapshotMeta) -> bool {
        self.last_index == other.last_index && self.last_term == other.last_term
    }
}

/// A stored snapshot without its data: what a leader needs to send it in chunks read
/// from storage ([`crate::Log::snapshot_info`], [`crate::Log::open_snapshot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotInfo {
    /// Where it ends.
    pub meta: SnapshotMeta,
    /// Bytes of its data.
    pub len_bytes: u64,
    /// CRC-32 (`crc32fast`) of its data, which the follower checks.
    pub crc32: u32,
}

/// A snapshot of the state machine: everything up to and including `meta.last_index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where it ends.
    pub meta: SnapshotMeta,
    /// The state machine's bytes (opaque to the protocol).
    pub data: Bytes,
}

/// A cluster's membership: who votes, who only receives the log, and, during a joint
/// change (Raft thesis §4.3), the voters of the configuration being left.
///
/// Invariants (checked by [`Membership::validate`]): `voters` is not empty; ids are
/// never 0; `learners` shares no id with `voters` or `outgoing_voters`. While
/// `outgoing_voters` is not empty the configuration is joint: elections and commits need
/// a majority of `voters` AND a majority of `outgoing_voters`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The voters (in a joint configuration: the incoming voters).
    pub voters: std::collections::BTreeSet<NodeId>,
    /// In a joint configuration, the voters of the configuration being left; empty
    /// otherwise.
    pub outgoing_voters: std::collections::BTreeSet<NodeId>,
    /// Non-voting members: they receive the log and snapshots, never vote and never
    /// count toward a quorum or a commit.
    pub learners: std::collections::BTreeSet<NodeId>,
    /// Where members can be reached (`host:port`), as given when they were added. Opaque
    /// to the protocol: quorums, votes and changes never look at it. The runtime hands
    /// it to the transport when the configuration comes into force, so every node can
    /// reach a member added after it started. Only members have an entry.
    pub addresses: std::collections::BTreeMap<NodeId, String>,
}
