//! raft-store (under construction).
