//! Deleting dropped files on a thread of their own.
//!
//! Unlinking a large file is not free: ext4 frees its extents (and, mounted with
//! `discard`, trims them) inside the call. Measured on the development machine's disk
//! (2026-12-06): 16 ms for a 64 MiB file, 87 ms for a 480 MiB one. The log drops such
//! files on the thread that syncs it (the node's WaitLoop): the previous snapshot file
//! when a new one is adopted, and value log segments once compaction left no record in
//! them. With a 1 GB state that was ~180 ms of one sync plus ~90 ms of the adoption, so
//! writes stalled for up to 328 ms, past raft-kv's 300 ms election timeout (issue 18).
//!
//! A dropped file is named by nothing durable any more, so *when* it goes does not matter
//! for crash safety: a file whose deletion was queued, still running or not yet durable
//! when the process died is unreferenced at the next open, which removes it (the value
//! log's and the snapshot directory's `open`). Paths are never reused within a process
//! (segment sequence numbers and snapshot ids only grow), so a late unlink cannot hit a
//! newer file of the same name.
//!
//! Invariant: [`Remover::remove`] never blocks on the file system; a remover whose thread
//! could not be started deletes in place (as before), so a file is never left behind for
//! lack of a thread. Dropping the [`Reaper`] waits for every queued deletion.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};
use raft_core::NodeId;

enum Job {
    Remove(PathBuf),
    /// Answered once every earlier job is done.
    Flush(Sender<()>),
    Stop,
}

/// The thread that deletes files; owned by the log. Dropping it finishes the queue.
#[derive(Debug)]
pub(crate) struct Reaper {
    remover: Remover,
    thread: Option<JoinHandle<()>>,
}

/// A cheap handle that queues deletions for the [`Reaper`]'s thread.
#[derive(Clone, Debug)]
pub(crate) struct Remover {
    node_id: NodeId,
    /// `None` when the thread could not be started: deletions then run in place.
    tx: Option<Sender<Job>>,
}

impl Reaper {
    /// Starts the thread `raft-reaper-n<node_id>`.
    pub(crate) fn start(node_id: NodeId) -> Self {
        let (tx, rx) = unbounded();
        let spawned = std::thread::Builder::new()
            .name(format!("raft-reaper-n{node_id}"))
            .spawn(move || run(node_id, &rx));
        match spawned {
            Ok(thread) => Self {
                remover: Remover {
                    node_id,
                    tx: Some(tx),
                },
                thread: Some(thread),
            },
            Err(e) => {
                log::warn!(
                    "n{node_id} cannot start the file reaper thread ({e}): dropped files are \
                     deleted on the syncing thread"
                );
                Self {
                    remover: Remover { node_id, tx: None },
                    thread: None,
                }
            }
        }
    }

    /// A reaper whose thread deletes nothing until `gate` receives a message: for tests
    /// that show a caller does not delete in place.
    #[cfg(test)]
    pub(crate) fn start_gated(node_id: NodeId) -> (Self, Sender<()>) {
        let (tx, rx) = unbounded();
        let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let _ = gate_rx.recv();
            run(node_id, &rx);
        });
        let reaper = Self {
            remover: Remover {
                node_id,
                tx: Some(tx),
            },
            thread: Some(thread),
        };
        (reaper, gate_tx)
    }

    /// Waits until every deletion queued so far is done.
    pub(crate) fn flush(&self) {
        self.remover.flush();
    }

    /// A handle for the parts of the log that drop files.
    pub(crate) fn remover(&self) -> Remover {
        self.remover.clone()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(tx) = &self.remover.tx {
            let _ = tx.send(Job::Stop);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("n{} the file reaper thread panicked", self.remover.node_id);
            }
        }
    }
}

impl Remover {
    /// Deletes `path` soon, off this thread (in place if the reaper has no thread). A
    /// path that does not exist is fine; any other failure is logged, and the file is
    /// removed by the next open of the log.
    pub(crate) fn remove(&self, path: PathBuf) {
        let path = match &self.tx {
            Some(tx) => match tx.send(Job::Remove(path)) {
                Ok(()) => return,
                Err(e) => match e.into_inner() {
                    Job::Remove(path) => path,
                    _ => return,
                },
            },
            None => path,
        };
        remove_now(self.node_id, &path);
    }

    /// Waits until every deletion queued so far is done (for measuring the disk).
    pub(crate) fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        if tx.send(Job::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }

    /// A remover that deletes in place: what the value log and the snapshot directory
    /// use while the log opens (a clean-up before the first write), and in tests.
    pub(crate) fn inline(node_id: NodeId) -> Self {
        Self { node_id, tx: None }
    }
}

fn run(node_id: NodeId, rx: &Receiver<Job>) {
    for job in rx {
        match job {
            Job::Remove(path) => remove_now(node_id, &path),
            Job::Flush(done) => {
                let _ = done.send(());
            }
            Job::Stop => break,
        }
    }
}

fn remove_now(node_id: NodeId, path: &Path) {
    let started = Instant::now();
    match fs::remove_file(path) {
        Ok(()) => log::debug!(
            "n{node_id} removed {} in {:?}",
            path.display(),
            started.elapsed()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!(
            "n{node_id} cannot remove {}: {e}; the log removes it when next opened",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_files_are_gone_after_a_flush_and_after_a_drop() {
        let dir = tempfile::tempdir().unwrap();
        let reaper = Reaper::start(7);
        let remover = reaper.remover();
        let paths: Vec<PathBuf> = (0..20).map(|i| dir.path().join(format!("f{i}"))).collect();
        for p in &paths {
            fs::write(p, vec![1u8; 4096]).unwrap();
        }
        for p in &paths[..10] {
            remover.remove(p.clone());
        }
        remover.flush();
        assert!(paths[..10].iter().all(|p| !p.exists()));
        assert!(paths[10..].iter().all(|p| p.exists()));
        for p in &paths[10..] {
            remover.remove(p.clone());
        }
        // A missing file is no error.
        remover.remove(dir.path().join("never-there"));
        drop(reaper);
        assert!(paths.iter().all(|p| !p.exists()));
        // Once the thread is gone, a late removal still happens, in place.
        let late = dir.path().join("late");
        fs::write(&late, b"x").unwrap();
        remover.remove(late.clone());
        assert!(!late.exists());
    }

    #[test]
    fn an_inline_remover_deletes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"x").unwrap();
        Remover::inline(1).remove(p.clone());
        assert!(!p.exists());
    }
}
