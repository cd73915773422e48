//! `KvStore<K, V>`: a typed replicated map (the original's `IConsensus<TKey, TValue>`).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::NodeError;
use super::state_machine::{RestoreError, StateMachine};
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
/// ```
/// use raft_core::node::{KvCommand, KvResponse, KvStore, StateMachine};
/// let mut kv = KvStore::<String, u32>::new();
/// let put = KvCommand::Put { key: "a".to_string(), value: 1u32 }.encode();
/// assert_eq!(kv.apply(1, &put), KvResponse::Previous(None));
/// assert_eq!(kv.get(&"a".to_string()), Some(&1));
/// assert!(matches!(kv.apply(2, b"\xff\xff"), KvResponse::Invalid(_)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore<K: Ord, V> {
    map: BTreeMap<K, V>,
    last_applied: LogIndex,
    _marker: PhantomData<fn() -> V>,
}

impl<K: Ord, V> KvStore<K, V> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            map: BTreeMap::new(),
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

impl<K, V> StateMachine for KvStore<K, V>
where
    K: Ord + Serialize + DeserializeOwned + Send + 'static,
    V: Clone + PartialEq + Serialize + DeserializeOwned + Send + 'static,
{
    type Response = KvResponse<V>;

    fn snapshot(&self) -> Option<Vec<u8>> {
        postcard::to_allocvec(&(&self.map, self.last_applied)).ok()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let (map, last_applied): (BTreeMap<K, V>, LogIndex) =
            postcard::from_bytes(data).map_err(|e| RestoreError(e.to_string()))?;
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
    K: Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    V: Clone + PartialEq + Serialize + DeserializeOwned + Send + 'static,
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
