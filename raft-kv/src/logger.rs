//! The developer log: a `log::Log` that keeps the latest records in a bounded ring for
//! the terminal UI's log pane, and also writes them to stderr or a file when asked (a
//! headless node). The level changes live with [`set_level`] (`log::set_max_level`),
//! as the original's Debug Log tab did with its drop-down.
//!
//! Records from the raft crates (`raft_core`, `raft_net`, `raft_store`, `raft_kv`) pass
//! at the chosen level; other crates' only at warn and above, so a trace level shows
//! the consensus traffic rather than a dependency's internals.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

/// Lines the ring keeps by default.
pub const LINES_KEPT_DEFAULT: usize = 2_000;

/// The levels a user can pick, most to least severe.
pub const LEVELS: [LevelFilter; 5] = [
    LevelFilter::Error,
    LevelFilter::Warn,
    LevelFilter::Info,
    LevelFilter::Debug,
    LevelFilter::Trace,
];

/// One captured record.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// Sequence number since start, to tell new lines from seen ones.
    pub seq: u64,
    /// Seconds since the logger was installed.
    pub elapsed_s: f64,
    /// The record's level.
    pub level: Level,
    /// The record's target (module path).
    pub target: String,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:9.3} {:5} {}",
            self.elapsed_s, self.level, self.message
        )
    }
}

/// Where records go besides the ring.
#[derive(Debug, Default)]
pub struct Sinks {
    /// Also write each record to stderr (headless).
    pub stderr: bool,
    /// Also append each record to this file.
    pub file: Option<File>,
}

/// The logger. Install once per process with [`install`].
pub struct RingLogger {
    started: Instant,
    capacity: usize,
    ring: Mutex<Ring>,
    sinks: Mutex<Sinks>,
}

struct Ring {
    lines: VecDeque<LogLine>,
    next_seq: u64,
}

static LOGGER: OnceLock<&'static RingLogger> = OnceLock::new();

/// Installs the process's logger at `level` (first call wins; later calls update the
/// sinks and the level) and returns it.
pub fn install(level: LevelFilter, sinks: Sinks) -> &'static RingLogger {
    let logger = *LOGGER.get_or_init(|| {
        let logger: &'static RingLogger = Box::leak(Box::new(RingLogger::new(LINES_KEPT_DEFAULT)));
        // Fails only if another logger was installed first (a test harness): then our
        // ring stays empty, which is harmless.
        let _ = log::set_logger(logger);
        logger
    });
    *logger.sinks.lock() = sinks;
    set_level(level);
    logger
}

/// The installed logger, if any.
pub fn get() -> Option<&'static RingLogger> {
    LOGGER.get().copied()
}

/// Changes the level live: records below it are no longer formatted at all.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// The current level.
pub fn level() -> LevelFilter {
    log::max_level()
}

/// The next level in [`LEVELS`] (more verbose), wrapping from trace to error.
pub fn next_level(level: LevelFilter) -> LevelFilter {
    let i = LEVELS.iter().position(|l| *l == level).unwrap_or(2);
    LEVELS[(i + 1) % LEVELS.len()]
}

/// The previous level in [`LEVELS`] (less verbose), wrapping from error to trace.
pub fn previous_level(level: LevelFilter) -> LevelFilter {
    let i = LEVELS.iter().position(|l| *l == level).unwrap_or(2);
    LEVELS[(i + LEVELS.len() - 1) % LEVELS.len()]
}

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`, `off`).
///
/// # Errors
/// An unknown name, with the known ones.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse::<LevelFilter>()
        .map_err(|_| format!("unknown log level {s:?}: use error, warn, info, debug or trace"))
}

/// `HH:MM:SS.mmmZ` (UTC), enough to line up the logs of nodes on one machine.
fn utc_time_of_day(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

fn is_ours(target: &str) -> bool {
    ["raft_core", "raft_net", "raft_store", "raft_kv"]
        .iter()
        .any(|c| target.starts_with(c))
}

impl RingLogger {
    /// A logger keeping the last `capacity` lines, with no other sink.
    pub fn new(capacity: usize) -> Self {
        Self {
            started: Instant::now(),
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                lines: VecDeque::with_capacity(capacity.min(4096)),
                next_seq: 0,
            }),
            sinks: Mutex::new(Sinks::default()),
        }
    }

    /// The last `n` lines kept, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.ring.lock();
        let skip = ring.lines.len().saturating_sub(n);
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// Lines with a sequence number of at least `seq`, oldest first.
    pub fn since(&self, seq: u64) -> Vec<LogLine> {
        let ring = self.ring.lock();
        ring.lines
            .iter()
            .filter(|l| l.seq >= seq)
            .cloned()
            .collect()
    }

    /// Captures a line (also used by the UI for its own notices).
    pub fn push(&self, level: Level, target: &str, message: String) {
        let line = {
            let mut ring = self.ring.lock();
            let line = LogLine {
                seq: ring.next_seq,
                elapsed_s: self.started.elapsed().as_secs_f64(),
                level,
                target: target.to_string(),
                message,
            };
            ring.next_seq += 1;
            if ring.lines.len() >= self.capacity {
                ring.lines.pop_front();
            }
            ring.lines.push_back(line.clone());
            line
        };
        let mut sinks = self.sinks.lock();
        if sinks.stderr || sinks.file.is_some() {
            let text = format!(
                "{} {:5} {}\n",
                utc_time_of_day(SystemTime::now()),
                line.level,
                line.message
            );
            if sinks.stderr {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
            if let Some(f) = sinks.file.as_mut() {
                let _ = f.write_all(text.as_bytes());
            }
        }
    }
}

impl Log for RingLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
            && (is_ours(metadata.target()) || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        self.push(record.level(), record.target(), record.args().to_string());
    }

    fn flush(&self) {
        if let Some(f) = self.sinks.lock().file.as_mut() {
            let _ = f.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_ordered() {
        let logger = RingLogger::new(3);
        for i in 0..5 {
            logger.push(Level::Info, "raft_kv", format!("line {i}"));
        }
        let tail = logger.tail(10);
        let messages: Vec<&str> = tail.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["line 2", "line 3", "line 4"]);
        assert_eq!(logger.since(4).len(), 1);
    }

    #[test]
    fn wall_clock_is_utc_time_of_day() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(86_400_000 + 3_723_045);
        assert_eq!(utc_time_of_day(t), "01:02:03.045Z");
    }

    #[test]
    fn levels_cycle_and_parse() {
        assert_eq!(next_level(LevelFilter::Info), LevelFilter::Debug);
        assert_eq!(next_level(LevelFilter::Trace), LevelFilter::Error);
        assert_eq!(previous_level(LevelFilter::Error), LevelFilter::Trace);
        assert_eq!(parse_level("TRACE").unwrap(), LevelFilter::Trace);
        assert!(parse_level("loud").unwrap_err().contains("debug"));
    }

    #[test]
    fn other_crates_pass_only_warnings() {
        let logger = RingLogger::new(10);
        log::set_max_level(LevelFilter::Trace);
        let m = |target, level| Metadata::builder().target(target).level(level).build();
        assert!(logger.enabled(&m("raft_core::protocol", Level::Trace)));
        assert!(!logger.enabled(&m("sled::pagecache", Level::Debug)));
        assert!(logger.enabled(&m("sled::pagecache", Level::Warn)));
    }
}
