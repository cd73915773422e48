//! What a `SledLog` is opened with, what its syncs guarantee, and where their time goes.

use std::time::Duration;

use raft_core::{NodeId, StorageError};

#[cfg(doc)]
use super::SledLog;
#[cfg(doc)]
use raft_core::Log;

/// What [`Log::sync`] of a [`SledLog`] guarantees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// sled's flush, then `fdatasync` of sled's files and `fsync` of its directories when
    /// their listing changed: a synced write survives a process crash and a power loss.
    #[default]
    Fdatasync,
    /// sled's flush only (`pwrite` and `sync_file_range`): a synced write survives a
    /// process crash but NOT a power loss or kernel crash. For tests, benchmarks and
    /// clusters that accept losing the newest writes of every node at once.
    FlushOnly,
}

/// Where the time of [`SledLog`]'s syncs went, cumulative since it was opened: for
/// metrics, and to see what the durability point costs on a given disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Syncs that wrote something (a sync with nothing to write costs nothing).
    pub syncs: u64,
    /// Time in sled applying the batches (CPU: sled's per-key cost).
    pub apply: Duration,
    /// Time in sled's flush: `pwrite` and `sync_file_range` to the device.
    pub flush: Duration,
    /// Time making it durable: `fdatasync` of sled's files, directory `fsync`s.
    pub fsync: Duration,
}

/// How to open a [`SledLog`].
#[derive(Clone, Debug)]
pub struct SledLogOptions {
    /// The cluster the directory belongs to; a directory of another cluster is refused.
    pub cluster_id: String,
    /// This node's id (never 0); a directory of another node is refused.
    pub node_id: NodeId,
    /// The durability of [`Log::sync`].
    pub sync_mode: SyncMode,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// An append larger than this is split into several records of at most this size
    /// (a single larger entry gets a record of its own).
    ///
    /// Large enough that sled's per-key CPU cost (tens of µs) is paid once per batch of a
    /// few hundred small entries rather than per entry. Small enough that a sled leaf (up
    /// to 17 keys before sled splits it) stays under sled's blob threshold (2 MiB with the
    /// 8 MiB segments SledLog uses): a larger leaf goes to a new file under `blobs/`,
    /// which costs an extra `fdatasync` and a directory `fsync` in the next sync.
    pub record_bytes_max: usize,
    /// How many of the newest entries stay decoded in memory, so that the leader's
    /// replication of what it just appended does not read sled.
    pub tail_cache_entries_max: usize,
    /// The most bytes (`Entry::size_bytes`) those cached entries may hold: with large
    /// entries the count alone let the cache hold hundreds of MB (8192 x 50 KB), which
    /// broke the memory bound of issue 18. An entry larger than this is not cached.
    pub tail_cache_bytes_max: u64,
    /// How long `open` waits for the directory's lock. sled releases it only when its
    /// background threads let go of the database, a moment after the previous `SledLog`
    /// on the directory was dropped (a restart inside one process) or its process died.
    pub lock_wait_ms: u64,
    /// A record larger than this (a batch of many commands, or one large entry) is
    /// written to the value log, append-only segment files beside sled, and sled keeps a
    /// 33-byte reference. sled rewrites the values of a leaf page several times over and
    /// reclaims the space late (measured: 1 KB commands in 64 KiB records passed the disk
    /// budget by 10%); the value log writes a record once and deletes a segment whole
    /// once the log was compacted past it. Costs one more `fdatasync` in a sync that
    /// writes such a record.
    pub value_log_threshold_bytes: usize,
    /// The size at which the value log starts a new segment file. The value log takes
    /// at most its live records plus two segments.
    pub value_log_segment_bytes: u64,
}

impl SledLogOptions {
    /// Defaults for `cluster_id` and `node_id`: real durability, 64 MiB page cache,
    /// records up to 64 KiB, the newest 8192 entries (at most 16 MiB) cached, 5 s wait
    /// for the lock,
    /// records over 16 KiB in the value log's 16 MiB segments.
    pub fn new(cluster_id: impl Into<String>, node_id: NodeId) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
            sync_mode: SyncMode::default(),
            cache_capacity_bytes: 64 << 20,
            record_bytes_max: 64 << 10,
            tail_cache_entries_max: 8192,
            tail_cache_bytes_max: 16 << 20,
            lock_wait_ms: 5_000,
            value_log_threshold_bytes: 16 << 10,
            value_log_segment_bytes: 16 << 20,
        }
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`StorageError::Io`] describing the first invalid field.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid =
            |what: &str| Err(StorageError::Io(format!("invalid SledLog options: {what}")));
        if self.node_id == 0 {
            return invalid("node_id must not be 0");
        }
        if self.cluster_id.is_empty() {
            return invalid("cluster_id must not be empty");
        }
        if self.record_bytes_max == 0 {
            return invalid("record_bytes_max must be at least 1");
        }
        if self.value_log_segment_bytes == 0 {
            return invalid("value_log_segment_bytes must be at least 1");
        }
        Ok(())
    }
}
