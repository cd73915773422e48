//! raft-net (under construction).
