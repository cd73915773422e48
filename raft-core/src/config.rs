//! Protocol configuration: sizes and timeouts in ticks, with `validate()`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// A configuration that makes no sense, with the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config field `{field}`: {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// Why it is wrong.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// The leader confirms it still leads with a heartbeat round (Raft thesis §6.4).
    #[default]
    ReadIndex,
    /// The leader serves reads while its lease lasts, without a round trip. Needs
    /// check-quorum; relies on clocks drifting less than `lease_drift_ticks`.
    Lease,
}

/// Configuration of one node's protocol. Times are in ticks; the runtime maps ticks to
/// milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The cluster's initial voters: the configuration in force until the log or a
    /// snapshot holds a configuration (membership changes, see `docs/architecture.md`).
    /// A node joining an existing cluster is not among them: it does not campaign and
    /// learns the configuration from the leader.
    pub voters: BTreeSet<NodeId>,
    /// Base election timeout T: a follower campaigns after a random timeout in [T, 2T).
    pub election_timeout_ticks: u32,
    /// The leader sends heartbeats this often. Must be shorter than the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Pre-vote (thesis §9.6): a node first asks whether it could win before raising terms.
    pub pre_vote: bool,
    /// Check-quorum: a leader that hears from no majority within an election timeout
    /// steps down, and followers that heard from a leader recently ignore vote requests.
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// How much shorter than the election timeout the read lease is, to absorb clock drift.
    pub lease_drift_ticks: u32,
    /// Most bytes of entries (by [`crate::Entry::size_bytes`]) in one append message:
    /// the batching limit, kept near one datagram so ordinary appends stay one datagram.
    /// An entry larger than this is sent alone, in an append of its own.
    pub append_bytes_max: u64,
    /// The largest command a proposal may carry, in bytes of its data (etcd's request
    /// limit is 1.5 MiB). Larger proposals are refused with
    /// [`crate::ProposeError::TooLarge`] naming this limit. The node runtime lowers it to
    /// what its transport can carry in one message ([`crate::Transport::max_entry_bytes`]).
    /// Also accepted as `max_entry_bytes` in config files.
    #[serde(alias = "max_entry_bytes")]
    pub entry_bytes_max: u64,
    /// Most append messages in flight to one follower.
    pub inflight_messages_max: u32,
    /// Most entry bytes in flight to one follower; keep well under the receiver's socket buffer.
    pub inflight_bytes_max: u64,
    /// Most appends in flight to one follower that are small (under
    /// [`Config::big_append_bytes_min`], half of `append_bytes_max` or 4 KiB): beyond it, new
    /// entries that do not fill an append wait for an answer and then go in one append
    /// (batching, like Nagle's algorithm). 1 batches the most; `inflight_messages_max`
    /// turns batching off. Full and big appends (a follower catching up, large entries)
    /// are never held back and do not count.
    pub inflight_small_appends_max: u32,
    /// Most uncommitted entries the leader holds before it refuses new proposals with
    /// `Busy` (bounds memory when followers cannot keep up).
    pub uncommitted_entries_max: u64,
    /// Bytes of snapshot data per InstallSnapshot message; `append_bytes_max` caps it.
    pub snapshot_chunk_bytes: u64,
    /// The largest snapshot a follower accepts, so a hostile or broken peer cannot make
    /// it allocate without bound.
    pub snapshot_bytes_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            id: 1,
            voters: [1].into_iter().collect(),
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::ReadIndex,
            lease_drift_ticks: 2,
            append_bytes_max: 60 * 1024,
            entry_bytes_max: Self::ENTRY_BYTES_MAX_DEFAULT,
            inflight_messages_max: 64,
            inflight_bytes_max: 2 * 1024 * 1024,
            inflight_small_appends_max: 1,
            uncommitted_entries_max: 100_000,
            snapshot_chunk_bytes: 48 * 1024,
            snapshot_bytes_max: 4 * 1024 * 1024 * 1024,
        }
    }
}

impl Config {
    /// The largest election timeout accepted: randomized timeouts are drawn in [T, 2T),
    /// which must not overflow, and a million ticks is already hours at any sane tick.
    pub const ELECTION_TIMEOUT_TICKS_MAX: u32 = 1_000_000;

    /// The default [`Config::entry_bytes_max`]: 1 MiB.
    pub const ENTRY_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;

    /// The smallest append that counts as big, whatever `append_bytes_max`: below it
    /// batching still saves a datagram and a sync per entry, which is what it is for.
    pub const BIG_APPEND_BYTES_FLOOR: u64 = 4096;

    /// Entry bytes from which an append is big: half of `append_bytes_max`, and at least
    /// [`Config::BIG_APPEND_BYTES_FLOOR`]. A big append goes out at once, even while
    /// small ones are unanswered (`inflight_small_appends_max`), since waiting would let
    /// it carry at most as much again.
    ///
    /// ```
    /// let mut c = raft_core::Config::default();
    /// assert_eq!(c.big_append_bytes_min(), c.append_bytes_max / 2);
    /// c.append_bytes_max = 1400;
    /// assert_eq!(c.big_append_bytes_min(), raft_core::Config::BIG_APPEND_BYTES_FLOOR);
    /// ```
    pub fn big_append_bytes_min(&self) -> u64 {
        (self.append_bytes_max / 2).max(Self::BIG_APPEND_BYTES_FLOOR)
    }

    /// A default config for node `id` in a cluster of `voters`.
    ///
    /// ```
    /// let c = raft_core::Config::new(1, [1, 2, 3]);
    /// assert!(c.validate().is_ok());
    /// ```
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            id,
            voters: voters.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Checks the config for nonsense.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first wrong field.
    ///
    /// ```
    /// let mut c = raft_core::Config::new(1, [1, 2, 3]);
    /// c.heartbeat_interval_ticks = c.election_timeout_ticks;
    /// assert_eq!(c.validate().unwrap_err().field, "heartbeat_interval_ticks");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::new(
                "id",
                "node id 0 is reserved for \"nobody\"",
            ));
        }
        if self.voters.contains(&0) {
            return Err(ConfigError::new("voters", "node id 0 is reserved"));
        }
        if self.voters.is_empty() {
            return Err(ConfigError::new("voters", "at least one voter is needed"));
        }
        if !(2..=Self::ELECTION_TIMEOUT_TICKS_MAX).contains(&self.election_timeout_ticks) {
            return Err(ConfigError::new(
                "election_timeout_ticks",
                format!("must be between 2 and {}", Self::ELECTION_TIMEOUT_TICKS_MAX),
            ));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError::new(
                "heartbeat_interval_ticks",
                "must be positive",
            ));
        }
        if self.heartbeat_interval_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::new(
                "heartbeat_interval_ticks",
                format!(
                    "heartbeat interval ({}) must be shorter than the election timeout ({})",
                    self.heartbeat_interval_ticks, self.election_timeout_ticks
                ),
            ));
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return Err(ConfigError::new(
                "read_mode",
                "lease reads need check_quorum, or a deposed leader could serve stale reads",
            ));
        }
        if self.lease_drift_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::new(
                "lease_drift_ticks",
                "the drift bound must be shorter than the election timeout",
            ));
        }
        if self.append_bytes_max < crate::Entry::OVERHEAD_BYTES {
            return Err(ConfigError::new(
                "append_bytes_max",
                format!(
                    "must be at least the per-entry overhead of {} bytes",
                    crate::Entry::OVERHEAD_BYTES
                ),
            ));
        }
        if self.entry_bytes_max == 0 {
            return Err(ConfigError::new(
                "entry_bytes_max",
                "must be positive (it is the largest command a proposal may carry)",
            ));
        }
        if self.inflight_messages_max == 0 {
            return Err(ConfigError::new(
                "inflight_messages_max",
                "must be positive",
            ));
        }
        if self.inflight_small_appends_max == 0
            || self.inflight_small_appends_max > self.inflight_messages_max
        {
            return Err(ConfigError::new(
                "inflight_small_appends_max",
                "must be between 1 and inflight_messages_max",
            ));
        }
        if self.inflight_bytes_max < self.append_bytes_max {
            return Err(ConfigError::new(
                "inflight_bytes_max",
                "must hold at least one full append (append_bytes_max)",
            ));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::new("snapshot_chunk_bytes", "must be positive"));
        }
        if self.snapshot_bytes_max == 0 {
            return Err(ConfigError::new("snapshot_bytes_max", "must be positive"));
        }
        if self.uncommitted_entries_max == 0 {
            return Err(ConfigError::new(
                "uncommitted_entries_max",
                "must be positive",
            ));
        }
        Ok(())
    }

    /// Checks a list of node ids for duplicates, for callers that build `voters` from a
    /// list (a config file).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the duplicate.
    pub fn check_unique_ids(ids: &[NodeId]) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for id in ids {
            if !seen.insert(*id) {
                return Err(ConfigError::new(
                    "voters",
                    format!("node id {id} appears twice"),
                ));
            }
        }
        Ok(())
    }
}
