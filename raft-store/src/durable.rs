//! The real durability point under sled.
//!
//! sled 0.34's `flush()` writes its buffers with `pwrite` and then calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on Linux. That pushes the data pages
//! to the device but neither flushes the device's volatile write cache nor persists the
//! file's metadata (its size, newly allocated extents), so a power loss can still lose a
//! "flushed" write. sled also writes large pages to separate files under `blobs/` with no
//! sync at all, and creates and renames snapshot files without syncing the directory.
//!
//! [`SledFiles::sync`] therefore follows every sled flush with `fdatasync` of every blob
//! file not yet synced, `fsync` of a directory whose list of names changed since the last
//! sync, and `fdatasync` of the main `db` file.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Handles on the files sled writes in one directory.
#[derive(Debug)]
pub(crate) struct SledFiles {
    dir: PathBuf,
    db: File,
    /// Names in `dir` at the last sync: a change means the directory must be synced.
    dir_names: BTreeSet<OsString>,
    /// Names in `dir/blobs` already synced.
    blob_names: BTreeSet<OsString>,
}

impl SledFiles {
    /// Opens sled's main file in `dir` and syncs every file and directory sled created,
    /// so that whatever sled did while opening (creating files, writing a snapshot) is
    /// durable before the first write.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        let db = File::open(dir.join("db"))?;
        let mut files = Self {
            dir: dir.to_path_buf(),
            db,
            dir_names: BTreeSet::new(),
            blob_names: BTreeSet::new(),
        };
        for name in list(dir)? {
            sync_file(&dir.join(&name))?;
        }
        files.sync()?;
        Ok(files)
    }

    /// Makes everything sled has written so far durable. Call after `Db::flush`.
    ///
    /// Blob files first: sled's log refers to them, so they must not become durable later
    /// than the log (sled wrote them, unsynced, before its flush returned).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        let blobs = self.dir.join("blobs");
        let blob_names = list(&blobs)?;
        if blob_names != self.blob_names {
            for name in blob_names.difference(&self.blob_names) {
                sync_file(&blobs.join(name))?;
            }
            sync_dir(&blobs)?;
            self.blob_names = blob_names;
        }
        let dir_names = list(&self.dir)?;
        if dir_names != self.dir_names {
            sync_dir(&self.dir)?;
            self.dir_names = dir_names;
        }
        self.db.sync_data()
    }
}

/// The names in `dir`, or none when it does not exist.
fn list(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut names = BTreeSet::new();
    for entry in read {
        names.insert(entry?.file_name());
    }
    Ok(names)
}

/// Syncs a regular file's data; a file sled removed meanwhile needs no sync.
fn sync_file(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) if f.metadata()?.is_file() => f.sync_data(),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Syncs a directory, which makes file creations, renames and removals in it durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
