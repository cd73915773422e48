//! The simulator's replicated state machine: a key/value map with client sessions.
//!
//! Commands are bytes in the log. Each carries the id of the client operation that
//! issued it, and the state machine applies an operation id at most once: a proposal
//! can reach the log twice (the network duplicated a forwarded proposal, or a client
//! retried after a lost answer), and Raft itself cannot tell (thesis §6.3).
//!
//! A snapshot ([`KvState::snapshot`]) holds the map, the applied index and the table of
//! applied operation ids: without that table a node restored from a snapshot would apply
//! a duplicate of an operation the snapshot already contains a second time.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft_core::LogIndex;

const TAG_PUT: u8 = 1;
const PUT_LEN: usize = 25;

/// A command for the key/value state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// Set `key` to `value`, on behalf of operation `op`.
    Put {
        /// The client operation's unique id.
        op: u64,
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
}

impl KvCommand {
    /// The command as log entry bytes.
    pub fn encode(&self) -> Bytes {
        let KvCommand::Put { op, key, value } = *self;
        let mut b = Vec::with_capacity(PUT_LEN);
        b.push(TAG_PUT);
        b.extend_from_slice(&op.to_le_bytes());
        b.extend_from_slice(&key.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
        b.into()
    }

    /// Decodes entry bytes; `None` for anything that is not a command.
    pub fn decode(data: &[u8]) -> Option<KvCommand> {
        if data.len() != PUT_LEN || data[0] != TAG_PUT {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        Some(KvCommand::Put {
            op: word(1),
            key: word(9),
            value: word(17),
        })
    }
}

/// One node's key/value state machine, rebuilt from its snapshot and the log after a
/// restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    map: BTreeMap<u64, u64>,
    /// Operation id -> the index where it took effect.
    applied_ops: BTreeMap<u64, LogIndex>,
    applied_index: LogIndex,
}

impl KvState {
    /// An empty map that has applied nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the entry at `index` (its data, possibly empty for a no-op).
    ///
    /// # Panics
    /// If `index` is not the next one: the driver must apply in order.
    pub fn apply(&mut self, index: LogIndex, data: &[u8]) {
        assert_eq!(
            index,
            self.applied_index + 1,
            "applying {index} after {}: entries must be applied in order",
            self.applied_index
        );
        self.applied_index = index;
        if let Some(KvCommand::Put { op, key, value }) = KvCommand::decode(data) {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.applied_ops.entry(op) {
                slot.insert(index);
                self.map.insert(key, value);
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }

    /// Whether operation `op` has taken effect.
    pub fn has_applied_op(&self, op: u64) -> bool {
        self.applied_ops.contains_key(&op)
    }

    /// The index at which operation `op` took effect, if it did.
    pub fn applied_at(&self, op: u64) -> Option<LogIndex> {
        self.applied_ops.get(&op).copied()
    }

    /// The last index applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// How many keys have a value.
    pub fn key_count(&self) -> usize {
        self.map.len()
    }

    /// How many operations have taken effect.
    pub fn operation_count(&self) -> usize {
        self.applied_ops.len()
    }

    /// The whole state as bytes: applied index, then the map, then the applied operation
    /// table, each as a count followed by little-endian `u64` pairs.
    pub fn snapshot(&self) -> Bytes {
        let words = 3 + 2 * (self.map.len() + self.applied_ops.len());
        let mut b = Vec::with_capacity(8 * words);
        b.extend_from_slice(&self.applied_index.to_le_bytes());
        for table in [&self.map, &self.applied_ops] {
            b.extend_from_slice(&(table.len() as u64).to_le_bytes());
            for (k, v) in table {
                b.extend_from_slice(&k.to_le_bytes());
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b.into()
    }

    /// A broken snapshot that leaves out the applied operation table, for proving
    /// that the simulator checks what a restore produces.
    pub fn snapshot_without_sessions(&self) -> Bytes {
        KvState {
            applied_ops: BTreeMap::new(),
            ..self.clone()
        }
        .snapshot()
    }

    /// The state a [`KvState::snapshot`] holds.
    ///
    /// # Errors
    /// Bytes that are not a whole snapshot (truncated, trailing bytes, bad counts).
    pub fn restore(data: &[u8]) -> Result<KvState, String> {
        let mut words = data.chunks(8).map(|w| {
            w.try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| format!("snapshot of {} bytes is not whole words", data.len()))
        });
        let mut next = || {
            words
                .next()
                .unwrap_or_else(|| Err("snapshot truncated".into()))
        };
        let applied_index = next()?;
        let mut tables = [BTreeMap::new(), BTreeMap::new()];
        for table in &mut tables {
            let len = next()?;
            for _ in 0..len {
                let k = next()?;
                table.insert(k, next()?);
            }
        }
        if words.next().is_some() {
            return Err("trailing bytes after the snapshot".into());
        }
        let [map, applied_ops] = tables;
        Ok(KvState {
            map,
            applied_ops,
            applied_index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_apply_once() {
        let cmd = KvCommand::Put {
            op: 7,
            key: 3,
            value: 99,
        };
        assert_eq!(KvCommand::decode(&cmd.encode()), Some(cmd));
        assert_eq!(KvCommand::decode(b""), None);
        let mut kv = KvState::new();
        kv.apply(1, &[]);
        kv.apply(2, &cmd.encode());
        let later = KvCommand::Put {
            op: 8,
            key: 3,
            value: 100,
        };
        kv.apply(3, &later.encode());
        // A duplicate of op 7 does not take effect again.
        kv.apply(4, &cmd.encode());
        assert_eq!(kv.get(3), Some(100));
        assert_eq!(kv.applied_at(7), Some(2));
        assert_eq!(kv.applied_index(), 4);
    }

    #[test]
    fn a_snapshot_restores_the_map_and_the_operation_table() {
        let put = |op, key, value| KvCommand::Put { op, key, value }.encode();
        let mut kv = KvState::new();
        kv.apply(1, &put(7, 3, 99));
        kv.apply(2, &put(8, 4, 100));
        let mut restored = KvState::restore(&kv.snapshot()).unwrap();
        assert_eq!(restored, kv);
        // The operation table travelled: a duplicate of op 7 after the restore is a no-op.
        restored.apply(3, &put(7, 3, 99));
        restored.apply(4, &put(9, 3, 5));
        restored.apply(5, &put(7, 3, 99));
        assert_eq!(
            (restored.get(3), restored.applied_at(7)),
            (Some(5), Some(1))
        );
        assert_eq!(
            KvState::restore(&KvState::new().snapshot()),
            Ok(KvState::new())
        );
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let mut kv = KvState::new();
        kv.apply(
            1,
            &KvCommand::Put {
                op: 1,
                key: 2,
                value: 3,
            }
            .encode(),
        );
        let bytes = kv.snapshot();
        assert!(KvState::restore(&bytes[..bytes.len() - 8]).is_err());
        assert!(KvState::restore(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0; 8]);
        assert!(KvState::restore(&longer).is_err());
    }
}
