//! raft-testkit (under construction).
