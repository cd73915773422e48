//! raft-kv (under construction).
