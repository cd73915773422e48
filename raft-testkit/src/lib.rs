//! raft-testkit: real-cluster helpers (the simulator is on its way).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
