//! The node runtime's errors.

use crate::config::ConfigError;
use crate::protocol::ProposeError;
use crate::storage::StorageError;
use crate::transport::TransportError;
use crate::types::NodeId;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No leader is known right now (an election may be under way); retry shortly.
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// This node is not the leader, and the request (a membership change) must be made
    /// on the leader: `hint` is the leader this node knows of. Nothing was changed.
    #[error("this node is not the leader; ask {}", match .hint { Some(id) => format!("n{id}"), None => "again once a leader is elected".to_string() })]
    NotLeader {
        /// The leader this node knows of, if any.
        hint: Option<NodeId>,
    },
    /// This node's id was removed from the cluster's configuration: it may not take part
    /// again under that id (start a new node with a new id and add it).
    #[error("n{0} was removed from the cluster; start a new node with a new id and add it")]
    Removed(NodeId),
    /// The leader refused or lost the proposal, or leadership changed under it; retry.
    #[error("not accepted by the leader: {0}")]
    Rejected(ProposeError),
    /// The proposal was placed in the log but overwritten by a new leader: it did not
    /// and will not take effect. Safe to retry.
    #[error("the proposal was dropped by a leader change; it did not take effect")]
    Dropped,
    /// The command took effect, but its response was not kept: this node caught up by
    /// snapshot past it. Do not retry.
    #[error("the command took effect but its response was lost (caught up by snapshot)")]
    ResponseLost,
    /// No answer within the timeout. The command may or may not take effect.
    #[error("timed out after {0:?}; the command may still take effect")]
    Timeout(std::time::Duration),
    /// The node is stopped (or stopping).
    #[error("the node is stopped")]
    Stopped,
    /// The proposal queue is full; retry shortly.
    #[error("the node is overloaded; retry shortly")]
    Busy,
    /// The node looked for its cluster for every join attempt and heard from neither a
    /// leader nor a majority.
    #[error("did not find the cluster after {attempts} attempts (heard from {heard:?})")]
    ClusterNotFound {
        /// Attempts made.
        attempts: u32,
        /// Peers heard from, if any.
        heard: Vec<NodeId>,
    },
    /// The state machine refused the command.
    #[error("the state machine refused the command: {0}")]
    StateMachine(String),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage failed; the node stops rather than risk its promises.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A builder was missing a part.
    #[error("node builder is missing its {0}")]
    Missing(&'static str),
    /// Starting a thread failed.
    #[error("spawning a thread failed: {0}")]
    Spawn(std::io::Error),
}
