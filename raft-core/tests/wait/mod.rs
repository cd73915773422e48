//! Waiting on a condition with a deadline, for the tests that run real nodes on threads
//! (never a fixed sleep: they must pass on a loaded machine).

use std::time::{Duration, Instant};

/// Polls `cond` every 5 ms until it holds; panics naming `what` if `timeout` passes first.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
