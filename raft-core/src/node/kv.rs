//! `KvStore<K, V>`: a typed replicated map (the original's `IConsensus<TKey, TValue>`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::NodeError;
use super::snapshot_reader::SnapshotReader;
use super::state_machine::{RestoreError, SnapshotSource, StateMachine};
use super::Node;
use crate::types::LogIndex;

/// A command for a [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand<K, V> {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: K,
        /// The new value.
        value: V,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: K,
    },
    /// Sets `key` to `new` (`None`: removes it) only if its value is `expected`.
    CompareAndSet {
        /// The key.
        key: K,
        /// The value it must have (`None`: absent).
        expected: Option<V>,
        /// The value to set (`None`: remove).
        new: Option<V>,
    },
}

impl<K: Serialize, V: Serialize> KvCommand<K, V> {
    /// The command's bytes, as proposed.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serializing to a Vec cannot fail")
    }
}

/// What a [`KvStore`] answers to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse<V> {
    /// Put or delete: the value the key had before.
    Previous(Option<V>),
    /// Compare-and-set: whether it swapped, and the value the key has now.
    Swapped {
        /// Whether the expected value matched.
        swapped: bool,
        /// The key's value after the command.
        current: Option<V>,
    },
    /// The command's bytes were not a valid command (logged; the store is unchanged).
    Invalid(String),
}

/// A replicated map from `K` to `V`.
///
/// The map is a persistent B-tree ([`imbl::OrdMap`]): taking a snapshot is an O(1) clone
/// on the apply thread, and the storer thread serializes that clone while later commands
/// change the live map (each change copies only the path to its key while a snapshot
/// shares it).
///
/// ```
/// use raft_core::node::{KvCommand, KvResponse, KvStore, StateMachine};
/// let mut kv = KvStore::<String, u32>::new();
/// let put = KvCommand::Put { key: "a".to_string(), value: 1u32 }.encode();
/// assert_eq!(kv.apply(1, &put), KvResponse::Previous(None));
/// assert_eq!(kv.get(&"a".to_string()), Some(&1));
/// assert!(matches!(kv.apply(2, b"\xff\xff"), KvResponse::Invalid(_)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore<K: Ord + Clone, V: Clone> {
    map: imbl::OrdMap<K, V>,
    last_applied: LogIndex,
    _marker: PhantomData<fn() -> V>,
}

impl<K: Ord + Clone, V: Clone> KvStore<K, V> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            map: imbl::OrdMap::new(),
            last_applied: 0,
            _marker: PhantomData,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The index of the last command applied.
    pub fn last_applied(&self) -> LogIndex {
        self.last_applied
    }
}

/// The first byte of a [`KvStore`] snapshot stream.
const STREAM_FORMAT: u8 = 2;
/// The most bytes one encoded (key, value) record of a snapshot stream may claim: bad
/// input is refused before it allocates more.
const STREAM_RECORD_BYTES_MAX: u32 = 256 << 20;

/// A [`KvStore`]'s snapshot view: a clone of the persistent map, serialized later.
///
/// Stream format: `format u8 = 2 | last_applied u64 LE | count u64 LE`, then `count`
/// records `len u32 LE | postcard (key, value)`, and nothing after them.
struct KvView<K: Ord + Clone, V: Clone> {
    map: imbl::OrdMap<K, V>,
    last_applied: LogIndex,
}

impl<K, V> SnapshotSource for KvView<K, V>
where
    K: Ord + Clone + Serialize + Send + Sync + 'static,
    V: Clone + Serialize + Send + Sync + 'static,
{
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&[STREAM_FORMAT])?;
        out.write_all(&self.last_applied.to_le_bytes())?;
        out.write_all(&(self.map.len() as u64).to_le_bytes())?;
        let mut record = Vec::new();
        for (k, v) in self.map.iter() {
            record.clear();
            record = postcard::to_extend(&(k, v), record).map_err(std::io::Error::other)?;
            let len = u32::try_from(record.len())
                .ok()
                .filter(|len| *len <= STREAM_RECORD_BYTES_MAX)
                .ok_or_else(|| {
                    std::io::Error::other(format!(
                        "a key and value of {} bytes (a snapshot record holds at most {STREAM_RECORD_BYTES_MAX})",
                        record.len()
                    ))
                })?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&record)?;
        }
        Ok(())
    }
}

impl<K, V> StateMachine for KvStore<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Response = KvResponse<V>;

    /// The whole map as one record (the format of earlier builds' snapshots; the runtime
    /// uses [`StateMachine::snapshot_source`]).
    fn snapshot(&self) -> Option<Vec<u8>> {
        let map: BTreeMap<&K, &V> = self.map.iter().collect();
        postcard::to_allocvec(&(map, self.last_applied)).ok()
    }

    /// Restores from [`StateMachine::snapshot`]'s record (snapshots of earlier builds).
    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let (map, last_applied): (BTreeMap<K, V>, LogIndex) =
            postcard::from_bytes(data).map_err(|e| RestoreError(e.to_string()))?;
        self.map = map.into_iter().collect();
        self.last_applied = last_applied;
        Ok(())
    }

    /// O(1): a clone of the persistent map.
    fn snapshot_source(&self) -> Option<Box<dyn SnapshotSource>> {
        Some(Box::new(KvView {
            map: self.map.clone(),
            last_applied: self.last_applied,
        }))
    }

    /// Reads the stream [`KvStore`]'s snapshot view writes, one record at a time.
    fn restore_from(&mut self, input: &mut dyn Read) -> Result<(), RestoreError> {
        let mut r = SnapshotReader::new(input, "kv store snapshot");
        r.expect_format(STREAM_FORMAT)?;
        let last_applied = r.u64()?;
        let count = r.u64()?;
        let mut map = imbl::OrdMap::new();
        let mut record = Vec::new();
        for _ in 0..count {
            let len = r.u32()?;
            let (k, v): (K, V) = r.decode_with(
                &mut record,
                u64::from(len),
                u64::from(STREAM_RECORD_BYTES_MAX),
                "a record",
            )?;
            map.insert(k, v);
        }
        r.finish()?;
        self.map = map;
        self.last_applied = last_applied;
        Ok(())
    }

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> KvResponse<V> {
        self.last_applied = index;
        let command: KvCommand<K, V> = match postcard::from_bytes(command) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("kv store: entry {index} is not a valid command: {e}");
                return KvResponse::Invalid(e.to_string());
            }
        };
        match command {
            KvCommand::Put { key, value } => KvResponse::Previous(self.map.insert(key, value)),
            KvCommand::Delete { key } => KvResponse::Previous(self.map.remove(&key)),
            KvCommand::CompareAndSet { key, expected, new } => {
                let current = self.map.get(&key);
                if current != expected.as_ref() {
                    return KvResponse::Swapped {
                        swapped: false,
                        current: current.cloned(),
                    };
                }
                match new.clone() {
                    Some(v) => {
                        self.map.insert(key, v);
                    }
                    None => {
                        self.map.remove(&key);
                    }
                }
                KvResponse::Swapped {
                    swapped: true,
                    current: new,
                }
            }
        }
    }
}

/// Typed operations on a node that replicates a [`KvStore`].
impl<K, V> Node<KvStore<K, V>>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Sets `key` to `value`; returns the previous value. One attempt.
    ///
    /// # Errors
    /// As [`Node::propose`] and [`super::Proposal::wait`].
    pub fn put(&self, key: K, value: V, timeout: Duration) -> Result<Option<V>, NodeError> {
        let cmd = KvCommand::Put { key, value }.encode();
        previous(self.propose_wait(cmd, timeout)?)
    }

    /// Sets `key` to `value`, retrying while no leader is known; returns the previous value.
    ///
    /// # Errors
    /// As [`Node::propose_with_retry`].
    pub fn put_with_retry(
        &self,
        key: K,
        value: V,
        timeout: Duration,
    ) -> Result<Option<V>, NodeError> {
        let cmd = KvCommand::Put { key, value }.encode();
        previous(self.propose_with_retry(cmd, timeout)?)
    }

    /// Removes `key`; returns the previous value.
    ///
    /// # Errors
    /// As [`Node::propose_with_retry`].
    pub fn delete(&self, key: K, timeout: Duration) -> Result<Option<V>, NodeError> {
        let cmd = KvCommand::<K, V>::Delete { key }.encode();
        previous(self.propose_with_retry(cmd, timeout)?)
    }

    /// Sets `key` to `new` if its value is `expected`; returns whether it swapped and
    /// the value after.
    ///
    /// # Errors
    /// As [`Node::propose_with_retry`].
    pub fn compare_and_set(
        &self,
        key: K,
        expected: Option<V>,
        new: Option<V>,
        timeout: Duration,
    ) -> Result<(bool, Option<V>), NodeError> {
        let cmd = KvCommand::CompareAndSet { key, expected, new }.encode();
        match self.propose_with_retry(cmd, timeout)? {
            KvResponse::Swapped { swapped, current } => Ok((swapped, current)),
            other => Err(invalid(other)),
        }
    }

    /// A linearizable read of `key`.
    ///
    /// # Errors
    /// As [`Node::read`].
    pub fn get(&self, key: &K, timeout: Duration) -> Result<Option<V>, NodeError> {
        self.read(timeout, |kv| kv.get(key).cloned())
    }

    /// A possibly stale read of `key` from this node's copy.
    pub fn get_stale(&self, key: &K) -> Option<V> {
        self.read_stale(|kv| kv.get(key).cloned())
    }
}

fn previous<V>(r: KvResponse<V>) -> Result<Option<V>, NodeError> {
    match r {
        KvResponse::Previous(v) => Ok(v),
        other => Err(invalid(other)),
    }
}

fn invalid<V>(r: KvResponse<V>) -> NodeError {
    match r {
        KvResponse::Invalid(e) => NodeError::StateMachine(e),
        _ => NodeError::StateMachine("unexpected response kind".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: u32) -> Vec<u8> {
        KvCommand::Put {
            key: k.to_string(),
            value: v,
        }
        .encode()
    }

    #[test]
    fn a_snapshot_view_is_frozen_and_streams_back() {
        let mut kv = KvStore::<String, u32>::new();
        for i in 0..1_000u32 {
            kv.apply(u64::from(i) + 1, &put(&format!("k{i}"), i));
        }
        let view = kv.snapshot_source().unwrap();
        kv.apply(1_001, &put("k0", 77)); // changes the live map, not the view
        kv.apply(
            1_002,
            &KvCommand::<String, u32>::Delete { key: "k1".into() }.encode(),
        );
        let mut bytes = Vec::new();
        view.write_to(&mut bytes).unwrap();
        let mut other = KvStore::<String, u32>::new();
        other.restore_from(&mut &bytes[..]).unwrap();
        assert_eq!(other.len(), 1_000);
        assert_eq!(other.get(&"k0".to_string()), Some(&0));
        assert_eq!(other.get(&"k1".to_string()), Some(&1));
        assert_eq!(other.last_applied(), 1_000);
        assert_eq!(kv.get(&"k0".to_string()), Some(&77));
        // Cut short, trailing bytes, another format, a huge record length: refused.
        assert!(other.restore_from(&mut &bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(1);
        assert!(other.restore_from(&mut &trailing[..]).is_err());
        assert!(other.restore_from(&mut &b"\x09"[..]).is_err());
        let mut huge = bytes[..17].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(other.restore_from(&mut &huge[..]).is_err());
        // The record format of earlier builds still restores.
        let old = kv.snapshot().unwrap();
        let mut again = KvStore::<String, u32>::new();
        again.restore(&old).unwrap();
        assert_eq!(again, kv);
    }
}
