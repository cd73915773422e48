//! Node runtime configuration: the protocol's config plus how ticks map to time, how
//! hard to look for the cluster at start, and batch limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};

/// Default of [`NodeConfig::snapshot_receive_buffer_bytes`]: 4 MiB, a few hundred
/// milliseconds of even a slow disk, far below any state worth a snapshot.
pub const SNAPSHOT_RECEIVE_BUFFER_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;

/// Configuration of a running node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The protocol's configuration (id, voters, timeouts in ticks, limits).
    pub protocol: Config,
    /// Milliseconds per protocol tick. The only place ticks meet the clock.
    pub tick_interval_ms: u64,
    /// How many times to look for the cluster at start before reporting
    /// [`crate::node::NodeError::ClusterNotFound`] (the original's join retry attempts).
    pub join_attempts: u32,
    /// How long the first attempt lasts, in milliseconds.
    pub join_attempt_interval_ms: u64,
    /// Each later attempt lasts this many times longer than the one before (1 = fixed).
    pub join_backoff_factor: u32,
    /// Most inbox messages or proposals handled in one WaitLoop turn (one sync).
    pub batch_messages_max: usize,
    /// Capacity of the proposal queue; a full queue refuses proposals with `Busy`.
    pub proposal_queue_max: usize,
    /// Seed of the protocol's RNG (election timeouts). `None`: drawn at start.
    pub seed: Option<u64>,
    /// Take a snapshot after this many entries were applied since the last one (0: never
    /// by count). Only for state machines that implement `StateMachine::snapshot`.
    pub snapshot_after_entries: u64,
    /// Take a snapshot after this many bytes of commands were applied since the last one
    /// (0: never by size), and never after fewer bytes than the stored snapshot has, so a
    /// big state is written at most once per as many bytes of log. Both thresholds are
    /// stretched by a random 0 to [`crate::node::SNAPSHOT_STRETCH_PERCENT_MAX`] percent
    /// per snapshot, so the nodes of a cluster do not all snapshot at the same moment.
    pub snapshot_after_log_bytes: u64,
    /// Entries kept in the log behind a snapshot, so slightly slow followers catch up
    /// from the log rather than by snapshot.
    pub snapshot_trailing_entries: u64,
    /// Most bytes of a snapshot being received that may wait in memory for the disk:
    /// chunks handed to the snapshot storer thread and not yet written. While this many
    /// wait, the WaitLoop holds further `InstallSnapshot` messages back unacknowledged
    /// (at most `protocol.inflight_bytes_max` of them, more are dropped as lost) and steps
    /// them as the storer drains, so a slow disk slows the transfer down instead of
    /// filling memory. A transfer holds at most this plus twice the leader's window
    /// (`protocol.inflight_bytes_max`: in the buffer, and held back). A chunk larger than
    /// the limit is still taken when nothing waits, so the transfer always progresses.
    pub snapshot_receive_buffer_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            protocol: Config {
                election_timeout_ticks: 15,
                heartbeat_interval_ticks: 3,
                ..Config::default()
            },
            tick_interval_ms: 10,
            join_attempts: 5,
            join_attempt_interval_ms: 5_000,
            join_backoff_factor: 1,
            batch_messages_max: 4096,
            proposal_queue_max: 65_536,
            seed: None,
            snapshot_after_entries: 100_000,
            snapshot_after_log_bytes: 64 * 1024 * 1024,
            snapshot_trailing_entries: 10_000,
            snapshot_receive_buffer_bytes: SNAPSHOT_RECEIVE_BUFFER_BYTES_DEFAULT,
        }
    }
}

impl NodeConfig {
    /// Defaults for node `id` of a cluster of `voters`.
    ///
    /// ```
    /// let c = raft_core::node::NodeConfig::new(1, [1, 2, 3]);
    /// assert!(c.validate().is_ok());
    /// assert_eq!(c.join_retry_time().as_secs(), 25); // 5 attempts of 5 s, as the original
    /// ```
    pub fn new(id: u64, voters: impl IntoIterator<Item = u64>) -> Self {
        let mut c = Self::default();
        c.protocol.id = id;
        c.protocol.voters = voters.into_iter().collect();
        c
    }

    /// The tick as a duration.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_interval_ms)
    }

    /// How long attempt `k` (from 0) of looking for the cluster lasts.
    pub fn join_attempt_duration(&self, k: u32) -> Duration {
        let factor = u64::from(self.join_backoff_factor.max(1)).saturating_pow(k);
        Duration::from_millis(self.join_attempt_interval_ms.saturating_mul(factor))
    }

    /// The total time spent looking for the cluster before giving up (the original's
    /// "retry time", derived from the attempts).
    pub fn join_retry_time(&self) -> Duration {
        (0..self.join_attempts)
            .map(|k| self.join_attempt_duration(k))
            .sum()
    }

    /// Checks for nonsense.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first wrong field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.protocol.validate()?;
        if self.tick_interval_ms == 0 {
            return Err(ConfigError::new("tick_interval_ms", "must be positive"));
        }
        if self.join_attempts == 0 {
            return Err(ConfigError::new("join_attempts", "must be at least 1"));
        }
        if self.join_attempt_interval_ms == 0 {
            return Err(ConfigError::new(
                "join_attempt_interval_ms",
                "must be positive",
            ));
        }
        if self.join_backoff_factor == 0 || self.join_backoff_factor > 10 {
            return Err(ConfigError::new(
                "join_backoff_factor",
                "must be between 1 and 10",
            ));
        }
        if self.batch_messages_max == 0 {
            return Err(ConfigError::new("batch_messages_max", "must be positive"));
        }
        if self.snapshot_receive_buffer_bytes == 0 {
            return Err(ConfigError::new(
                "snapshot_receive_buffer_bytes",
                "must be positive",
            ));
        }
        if self.proposal_queue_max == 0 {
            return Err(ConfigError::new("proposal_queue_max", "must be positive"));
        }
        Ok(())
    }
}
