//! The replicated state machine of raft-kv: raft-core's [`KvStore`] plus the list of
//! committed entries, so every node can show its copy of the log (the original's
//! `OnNewCommitedEntry` list, replayed entries included).
//!
//! The list lives in the state machine rather than being collected from `Applied`
//! events because a node replays its stored entries as soon as it starts, before a
//! subscriber could attach: the state machine sees every entry, in order, always.
//!
//! Snapshots carry the map and the list, so a node brought up to date by a snapshot
//! (after the leader compacted its log) shows the same committed entries as the others.

use std::io::{Read, Write};

use raft_core::node::{
    KvCommand, KvResponse, KvStore, RestoreError, SnapshotReader, SnapshotSource, StateMachine,
};
use raft_core::LogIndex;
use serde::{Deserialize, Serialize};

/// The most committed entries a node keeps for display; older ones are dropped from the
/// list (not from the store or the Raft log). It bounds memory and snapshot size.
pub const ENTRIES_KEPT_MAX: usize = 1_000;

/// One committed entry, as the UI and `raft-kv entries` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedEntry {
    /// Its index in the Raft log.
    pub index: LogIndex,
    /// What it did.
    pub op: Op,
    /// Whether it was replayed from this node's own storage at start (rather than
    /// committed while the node ran).
    pub replayed: bool,
}

/// A key/value operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `key` set to `value`.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// `key` removed.
    Delete {
        /// The key.
        key: String,
    },
    /// A compare-and-set on `key`.
    CompareAndSet {
        /// The key.
        key: String,
        /// The value it set (`None`: removal), if it matched.
        new: Option<String>,
    },
    /// Bytes that were not a valid command.
    Invalid,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "{key} = {value}"),
            Op::Delete { key } => write!(f, "del {key}"),
            Op::CompareAndSet { key, new: Some(v) } => write!(f, "{key} =? {v}"),
            Op::CompareAndSet { key, new: None } => write!(f, "del? {key}"),
            Op::Invalid => write!(f, "(invalid command)"),
        }
    }
}

/// The commands raft-kv replicates: string keys and values.
pub type Command = KvCommand<String, String>;

/// The state machine: a string map and the list of committed entries.
#[derive(Debug, Default)]
pub struct KvLog {
    kv: KvStore<String, String>,
    /// A persistent vector, so a snapshot view of it is an O(1) clone.
    entries: imbl::Vector<CommittedEntry>,
    /// Entries dropped from the front of `entries` to bound it.
    entries_dropped: u64,
    /// Entries up to here were committed before this start (replayed from storage).
    replay_to: LogIndex,
}

impl KvLog {
    /// An empty store. Entries up to `replay_to` are marked as replayed from storage.
    pub fn new(replay_to: LogIndex) -> Self {
        Self {
            replay_to,
            ..Self::default()
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.kv.get(&key.to_string())
    }

    /// The map.
    pub fn map(&self) -> &KvStore<String, String> {
        &self.kv
    }

    /// The committed entries kept, oldest first.
    pub fn entries(&self) -> &imbl::Vector<CommittedEntry> {
        &self.entries
    }

    /// The last `n` committed entries, oldest first.
    pub fn last_entries(&self, n: usize) -> Vec<CommittedEntry> {
        let skip = self.entries.len().saturating_sub(n);
        self.entries.iter().skip(skip).cloned().collect()
    }

    /// How many committed commands this node applied since it started (replays
    /// included), kept or not.
    pub fn entries_total(&self) -> u64 {
        self.entries_dropped + self.entries.len() as u64
    }
}

/// The first byte of a [`KvLog`] snapshot stream.
const STREAM_FORMAT: u8 = 2;
/// The most bytes the entry list may claim in a snapshot stream (bad input is refused
/// before it allocates more).
const STREAM_ENTRIES_BYTES_MAX: u64 = 1 << 30;

/// A [`KvLog`]'s snapshot view (O(1) to take): the map's view and the entry list.
///
/// Stream: `format u8 = 2 | entries_dropped u64 LE | list_len u64 LE | list (postcard)`,
/// then the map's own stream.
struct KvLogView {
    kv: Box<dyn SnapshotSource>,
    entries: imbl::Vector<CommittedEntry>,
    entries_dropped: u64,
}

impl SnapshotSource for KvLogView {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
        let entries: Vec<&CommittedEntry> = self.entries.iter().collect();
        let list = postcard::to_allocvec(&entries).map_err(std::io::Error::other)?;
        out.write_all(&[STREAM_FORMAT])?;
        out.write_all(&self.entries_dropped.to_le_bytes())?;
        out.write_all(&(list.len() as u64).to_le_bytes())?;
        out.write_all(&list)?;
        self.kv.write_to(out)
    }
}

/// What a snapshot of a [`KvLog`] holds, besides the map's own snapshot (the format of
/// earlier builds, restored through [`StateMachine::restore`]).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    map: Vec<u8>,
    entries: Vec<CommittedEntry>,
    entries_dropped: u64,
}

impl StateMachine for KvLog {
    type Response = KvResponse<String>;

    fn snapshot(&self) -> Option<Vec<u8>> {
        let snapshot = Snapshot {
            map: self.kv.snapshot()?,
            entries: self.entries.iter().cloned().collect(),
            entries_dropped: self.entries_dropped,
        };
        postcard::to_allocvec(&snapshot).ok()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let snapshot: Snapshot =
            postcard::from_bytes(data).map_err(|e| RestoreError(format!("raft-kv: {e}")))?;
        self.kv.restore(&snapshot.map)?;
        let keep = snapshot.entries.len().saturating_sub(ENTRIES_KEPT_MAX);
        self.entries_dropped = snapshot.entries_dropped + keep as u64;
        self.entries = snapshot.entries.into_iter().skip(keep).collect();
        Ok(())
    }

    fn snapshot_source(&self) -> Option<Box<dyn SnapshotSource>> {
        Some(Box::new(KvLogView {
            kv: self.kv.snapshot_source()?,
            entries: self.entries.clone(),
            entries_dropped: self.entries_dropped,
        }))
    }

    fn restore_from(&mut self, input: &mut dyn Read) -> Result<(), RestoreError> {
        let mut r = SnapshotReader::new(input, "raft-kv snapshot");
        r.expect_format(STREAM_FORMAT)?;
        let entries_dropped = r.u64()?;
        let list_len = r.u64()?;
        let entries: Vec<CommittedEntry> =
            r.decode(list_len, STREAM_ENTRIES_BYTES_MAX, "the entry list")?;
        self.kv.restore_from(r.rest())?;
        let keep = entries.len().saturating_sub(ENTRIES_KEPT_MAX);
        self.entries_dropped = entries_dropped + keep as u64;
        self.entries = entries.into_iter().skip(keep).collect();
        Ok(())
    }

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> KvResponse<String> {
        let op = match postcard::from_bytes::<Command>(command) {
            Ok(Command::Put { key, value }) => Op::Put { key, value },
            Ok(Command::Delete { key }) => Op::Delete { key },
            Ok(Command::CompareAndSet { key, new, .. }) => Op::CompareAndSet { key, new },
            Err(_) => Op::Invalid,
        };
        let response = self.kv.apply(index, command);
        if self.entries.len() == ENTRIES_KEPT_MAX {
            self.entries.pop_front();
            self.entries_dropped += 1;
        }
        self.entries.push_back(CommittedEntry {
            index,
            op,
            replayed: index <= self.replay_to,
        });
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_every_command_and_marks_replays() {
        let mut sm = KvLog::new(1);
        let put = Command::Put {
            key: "Hello".into(),
            value: "World".into(),
        };
        assert_eq!(sm.apply(1, &put.encode()), KvResponse::Previous(None));
        let del = Command::Delete {
            key: "Hello".into(),
        };
        assert_eq!(
            sm.apply(2, &del.encode()),
            KvResponse::Previous(Some("World".into()))
        );
        assert!(matches!(sm.apply(3, b"\xff"), KvResponse::Invalid(_)));
        let e = sm.entries();
        assert_eq!(e.len(), 3);
        assert!(e[0].replayed && !e[1].replayed);
        assert_eq!(e[0].op.to_string(), "Hello = World");
        assert_eq!(e[1].op.to_string(), "del Hello");
        assert_eq!(e[2].op, Op::Invalid);
        assert_eq!(sm.get("Hello"), None);
    }

    #[test]
    fn snapshots_carry_the_map_and_the_entries() {
        let mut sm = KvLog::new(0);
        for i in 1..=3u64 {
            let put = Command::Put {
                key: format!("k{i}"),
                value: format!("v{i}"),
            };
            sm.apply(i, &put.encode());
        }
        let bytes = sm.snapshot().unwrap();
        let mut other = KvLog::new(0);
        other.restore(&bytes).unwrap();
        assert_eq!(other.get("k2").map(String::as_str), Some("v2"));
        assert_eq!(other.entries(), sm.entries());
        assert_eq!(other.entries_total(), 3);
        assert!(other.restore(b"junk").is_err());
    }

    #[test]
    fn streamed_snapshots_hold_the_view_taken() {
        let mut sm = KvLog::new(0);
        let put = |i: u64| {
            Command::Put {
                key: format!("k{i}"),
                value: format!("v{i}"),
            }
            .encode()
        };
        for i in 1..=3u64 {
            sm.apply(i, &put(i));
        }
        let view = sm.snapshot_source().unwrap();
        sm.apply(4, &put(4)); // after the view: not in it
        let mut bytes = Vec::new();
        view.write_to(&mut bytes).unwrap();
        let mut other = KvLog::new(0);
        other.restore_from(&mut &bytes[..]).unwrap();
        assert_eq!(other.get("k3").map(String::as_str), Some("v3"));
        assert_eq!(other.get("k4"), None);
        assert_eq!(other.entries_total(), 3);
        assert_eq!(other.map().last_applied(), 3);
        assert!(other.restore_from(&mut &b"junk"[..]).is_err());
        assert!(other.restore_from(&mut &bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(other.restore_from(&mut &trailing[..]).is_err());
    }
}
