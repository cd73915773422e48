//! # raft-store
//!
//! Log storage for [`raft_core`]: two implementations of [`raft_core::Log`].
//!
//! - [`MemLog`] (re-exported from raft-core): in memory, gone when the process ends (the
//!   original's "ephemeral storage"). For tests, caches and clusters that accept losing
//!   a node's state on restart.
//! - [`SledLog`]: on disk, on sled 0.34. [`Log::sync`] is a real durability point
//!   (sled's flush, then `fdatasync` of sled's files); every record is checksummed;
//!   reopening the directory restores hard state, entries and snapshot metadata; a
//!   directory written by another cluster or node is refused. Snapshots are files beside
//!   sled (`<dir>/snapshots/`, the current one and the one before it), so the disk a
//!   node takes stays within `2 x (live log + snapshot) + 64 MiB` (`docs/operations.md`).
//!
//! Both pass the same conformance suite (`raft-store/tests/conformance.rs`).
//! `docs/operations.md` ("Storage and durability") says exactly what survives a process
//! crash and a power loss, and what a sync costs.
//!
//! ```
//! use raft_core::{Entry, EntryKind, HardState, Log, StorageError};
//! use raft_store::{MemLog, SledLog};
//!
//! fn persist(log: &mut impl Log, entries: &[Entry], hs: HardState) -> Result<(), StorageError> {
//!     log.append(entries)?;
//!     log.set_hard_state(hs)?;
//!     log.sync() // group commit: one durability point for the whole batch
//! }
//!
//! let batch: Vec<Entry> = (1..=3)
//!     .map(|index| Entry { index, term: 1, kind: EntryKind::Command, data: "cmd".into() })
//!     .collect();
//! let hs = HardState { term: 1, vote: Some(1), commit: 3 };
//!
//! let mut mem = MemLog::new();
//! persist(&mut mem, &batch, hs)?;
//!
//! let dir = tempfile::tempdir()?;
//! let mut disk = SledLog::open(dir.path(), "my-cluster", 1)?;
//! persist(&mut disk, &batch, hs)?;
//! assert_eq!(disk.entries(1, 4, u64::MAX)?, mem.entries(1, 4, u64::MAX)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod durable;
mod marker;
mod reaper;
mod record;
mod sled_log;
mod snapfile;
mod vlog;

#[doc(no_inline)]
pub use raft_core::{Log, MemLog, StorageError};
pub use sled_log::{SledLog, SledLogOptions, SyncMode, SyncStats};

/// Bytes of every regular file under `path`, recursively (apparent sizes): how much
/// disk a [`SledLog`] directory takes, sled's files and the snapshot files together.
///
/// # Errors
/// A directory that cannot be listed or a file that cannot be inspected (a file
/// removed while listing counts as 0).
pub fn dir_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            total += match dir_bytes(&entry.path()) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                other => other?,
            };
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}
