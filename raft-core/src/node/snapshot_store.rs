//! Snapshots on the WaitLoop's side: the storer thread that writes taken and received
//! snapshots through the log's `SnapshotWriter` off the WaitLoop, the bounded buffer of
//! received chunks waiting for it, and the WaitLoop's steps that hand snapshots to it,
//! hold chunks back while it is full, and adopt what it wrote.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use super::apply::ApplyTask;
use super::snapshot::PackedSource;
use super::state_machine::StateMachine;
use super::wait_loop::WaitLoop;
use crate::message::{Message, MessageBody};
use crate::protocol::Ready;
use crate::storage::Log;
use crate::types::{LogIndex, NodeId, Snapshot, SnapshotMeta};
use crate::WrittenSnapshot;

/// A received snapshot made durable (or not).
pub(crate) type ReceivedResult = (SnapshotMeta, Result<Stored, crate::StorageError>);

/// Where a follower writes a snapshot it receives.
pub(crate) enum Receiving {
    /// Into memory, for a log without a snapshot writer (or without a storer thread).
    InMemory(crate::ReceivedInMemory),
    /// Streamed to the storer thread, which writes it through the log's
    /// [`crate::SnapshotWriter`] (a temporary file, synced and renamed at the end).
    Streamed(Sender<ReceivedPiece>),
}

/// A piece of a received snapshot on its way to the storer thread.
pub(crate) enum ReceivedPiece {
    /// The next bytes, counted in the receive buffer until dropped.
    Data(HeldBytes),
    /// That was all: `len_bytes` in total. The storer makes it durable.
    End { len_bytes: u64 },
}

/// The received snapshot data handed to the storer thread and not yet written (or
/// dropped), in bytes, shared by the WaitLoop (which adds) and whoever drops the data
/// (which subtracts, see [`HeldBytes`]).
///
/// Invariant: `bytes` is the sum of the lengths of the live [`HeldBytes`] of this buffer;
/// `high_water_bytes >= bytes` at every moment it is read by the WaitLoop.
#[derive(Debug)]
pub(crate) struct ReceiveBuffer {
    pub(super) bytes: AtomicU64,
    pub(super) high_water_bytes: AtomicU64,
    /// Set by the WaitLoop while it holds chunks back: the next piece written (or
    /// dropped) wakes it through `drained`.
    pub(super) waiting: std::sync::atomic::AtomicBool,
    pub(super) drained: Sender<()>,
    /// The WaitLoop's end of `drained` (capacity 1: one wake-up is enough).
    pub(crate) drained_rx: Receiver<()>,
}

impl Default for ReceiveBuffer {
    fn default() -> Self {
        let (drained, drained_rx) = crossbeam_channel::bounded(1);
        Self {
            bytes: AtomicU64::new(0),
            high_water_bytes: AtomicU64::new(0),
            waiting: std::sync::atomic::AtomicBool::new(false),
            drained,
            drained_rx,
        }
    }
}

impl ReceiveBuffer {
    /// Whether a chunk of `len_bytes` may be taken with `limit_bytes` at most waiting:
    /// when it fits, or when nothing waits (so a chunk larger than the limit passes).
    pub(super) fn admits(&self, len_bytes: u64, limit_bytes: u64) -> bool {
        self.admits_more(0, len_bytes, limit_bytes)
    }

    /// [`ReceiveBuffer::admits`], counting `pending_bytes` taken but not yet handed over.
    pub(super) fn admits_more(&self, pending_bytes: u64, len_bytes: u64, limit_bytes: u64) -> bool {
        let held = self.bytes.load(Ordering::Acquire) + pending_bytes;
        held == 0 || held.saturating_add(len_bytes) <= limit_bytes
    }

    /// Counts `data` as waiting until the returned value is dropped.
    pub(super) fn hold(self: &Arc<Self>, data: Bytes) -> HeldBytes {
        let len = data.len() as u64;
        let now = self.bytes.fetch_add(len, Ordering::AcqRel) + len;
        self.high_water_bytes.fetch_max(now, Ordering::AcqRel);
        HeldBytes {
            data,
            buffer: Arc::clone(self),
        }
    }

    /// Bytes waiting now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// The most bytes that waited at once.
    pub(super) fn high_water_bytes(&self) -> u64 {
        self.high_water_bytes.load(Ordering::Acquire)
    }
}

/// Received snapshot data counted in a [`ReceiveBuffer`] while it lives: written by the
/// storer thread, or dropped with a transfer that was abandoned, it leaves the count.
pub(crate) struct HeldBytes {
    pub(super) data: Bytes,
    pub(super) buffer: Arc<ReceiveBuffer>,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        let len = self.data.len() as u64;
        let before = self.buffer.bytes.fetch_sub(len, Ordering::AcqRel);
        debug_assert!(before >= len, "receive buffer count went below zero");
        if self.buffer.waiting.swap(false, Ordering::AcqRel) {
            let _ = self.buffer.drained.try_send(());
        }
    }
}

/// A snapshot the storer thread stored (whether it was received from the leader, what it
/// covers), or why it did not.
pub(super) type Written = (bool, SnapshotMeta, Result<Stored, crate::StorageError>);

/// What the storer thread made of a snapshot.
pub(crate) enum Stored {
    /// Written durably by the log's [`crate::SnapshotWriter`]: to adopt.
    Written(WrittenSnapshot),
    /// Serialized into memory, for a log without a writer ([`crate::MemLog`]): to save
    /// with `Log::save_snapshot`.
    InMemory(Snapshot),
}

/// Work for the storer thread.
pub(super) enum Job {
    /// A snapshot this node took: what it covers, and its unserialized data.
    Take(SnapshotMeta, PackedSource),
    /// A snapshot received from the leader, its data arriving on the channel.
    Receive(SnapshotMeta, Receiver<ReceivedPiece>),
}

/// The snapshot storer: a thread that serializes each snapshot the apply thread took
/// (the state machine's frozen view, see `StateMachine::snapshot_source`) straight into
/// the log's [`crate::SnapshotWriter`], one at a time, so that a snapshot of any size
/// stalls neither the WaitLoop nor the writers. A log without a writer gets the bytes in
/// memory. The WaitLoop adopts (or saves) each result and compacts behind it.
pub(crate) struct SnapshotStorer {
    pub(super) to_write: Option<Sender<Job>>,
    pub(super) written: Receiver<Written>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    /// Whether a write is in progress (at most one at a time).
    pub(super) writing: bool,
    /// A snapshot was adopted and the log compacted behind it since the last sync: the
    /// next regular sync makes both durable, or an idle tick's (see
    /// `WaitLoop::adopt_written`).
    pub(super) unsynced: bool,
    /// The newest snapshot taken while a write was in progress: written next; an older
    /// one waiting here is superseded.
    pub(super) next: Option<Job>,
    /// A received snapshot whose transfer started while a write was in progress: written
    /// before `next` (its chunks queue meanwhile).
    pub(super) next_receive: Option<Job>,
    /// Whether the log has a snapshot writer (else snapshots are serialized to memory).
    pub(super) has_writer: bool,
    /// Received snapshot data on its way to the writer: bounded by
    /// `NodeConfig::snapshot_receive_buffer_bytes` (see `WaitLoop::defer_chunk`).
    pub(super) buffer: Arc<ReceiveBuffer>,
}

impl SnapshotStorer {
    /// Starts the storer thread of node `id`.
    pub(super) fn start(id: NodeId, log: &dyn Log, idle_max: Duration) -> Option<Self> {
        let mut writer = log.snapshot_writer();
        let has_writer = writer.is_some();
        let (to_write, jobs) = crossbeam_channel::bounded::<Job>(1);
        let (done, written) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name(format!("raft-snap-n{id}"))
            .spawn(move || {
                for job in jobs {
                    let (meta, source) = match job {
                        Job::Take(meta, source) => (meta, source),
                        Job::Receive(meta, pieces) => {
                            let result =
                                receive(writer.as_deref_mut(), meta.clone(), &pieces, idle_max);
                            if done.send((true, meta, result)).is_err() {
                                break;
                            }
                            continue;
                        }
                    };
                    let started = Instant::now();
                    let result = store(writer.as_deref_mut(), meta.clone(), source);
                    if let Ok(stored) = &result {
                        let bytes = match stored {
                            Stored::Written(w) => w.size_bytes,
                            Stored::InMemory(s) => s.data.len() as u64,
                        };
                        log::debug!(
                            "n{id} serialized the snapshot at {} ({bytes} bytes) in {:?}",
                            meta.last_index,
                            started.elapsed()
                        );
                    }
                    if done.send((false, meta, result)).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(thread) => Some(Self {
                to_write: Some(to_write),
                written,
                thread: Some(thread),
                writing: false,
                unsynced: false,
                next: None,
                next_receive: None,
                has_writer,
                buffer: Arc::default(),
            }),
            Err(e) => {
                log::warn!("n{id} cannot start the snapshot storer ({e}); storing snapshots on the WaitLoop");
                None
            }
        }
    }

    /// Queues a snapshot for writing: now if the thread is idle, else after the write
    /// in progress (replacing an older one waiting).
    pub(super) fn submit(&mut self, job: Job) {
        if self.writing {
            match job {
                Job::Take(..) => self.next = Some(job),
                Job::Receive(..) => self.next_receive = Some(job),
            }
            return;
        }
        if let Some(tx) = &self.to_write {
            self.writing = tx.send(job).is_ok();
        }
    }

    /// A write finished: start the next one, if any.
    pub(super) fn finished(&mut self) {
        self.writing = false;
        if let Some(next) = self.next_receive.take().or_else(|| self.next.take()) {
            self.submit(next);
        }
    }

    /// Lets a write in progress finish and stops the thread.
    pub(super) fn stop(&mut self) {
        self.to_write = None;
        self.next = None;
        self.next_receive = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serializes `source` through `writer` (durably, streamed), or into memory without one.
pub(super) fn store(
    writer: Option<&mut dyn crate::SnapshotWriter>,
    meta: SnapshotMeta,
    source: PackedSource,
) -> Result<Stored, crate::StorageError> {
    let serialize_err =
        |e: std::io::Error| crate::StorageError::Io(format!("cannot serialize the snapshot: {e}"));
    match writer {
        Some(writer) => {
            let mut source = Some(source);
            let mut fill = |out: &mut dyn std::io::Write| match source.take() {
                Some(source) => source.write_to(out),
                None => Err(std::io::Error::other(
                    "a snapshot's data can be written once",
                )),
            };
            writer.write(meta, &mut fill).map(Stored::Written)
        }
        None => {
            let data = source.into_bytes().map_err(serialize_err)?;
            Ok(Stored::InMemory(Snapshot { meta, data }))
        }
    }
}

/// Writes a snapshot received from the leader through `writer` as its pieces arrive,
/// durably once the last one is in (the writer syncs and renames its file). Fails if the
/// transfer is abandoned (the sender dropped) or stalls for `idle_max`, or if the pieces
/// do not add up to the announced length; the writer then removes what it wrote.
pub(super) fn receive(
    writer: Option<&mut dyn crate::SnapshotWriter>,
    meta: SnapshotMeta,
    pieces: &Receiver<ReceivedPiece>,
    idle_max: Duration,
) -> Result<Stored, crate::StorageError> {
    let Some(writer) = writer else {
        return Err(crate::StorageError::Io(
            "no snapshot writer to receive a snapshot with".into(),
        ));
    };
    let mut fill = |out: &mut dyn std::io::Write| {
        let mut written_bytes = 0u64;
        loop {
            match pieces.recv_timeout(idle_max) {
                Ok(ReceivedPiece::Data(held)) => {
                    out.write_all(&held.data)?;
                    written_bytes += held.data.len() as u64;
                    // Written: it leaves the receive buffer (`held` drops here).
                }
                Ok(ReceivedPiece::End { len_bytes }) if len_bytes == written_bytes => {
                    return Ok(());
                }
                Ok(ReceivedPiece::End { len_bytes }) => {
                    return Err(std::io::Error::other(format!(
                        "received {written_bytes} bytes of a snapshot of {len_bytes}"
                    )))
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::other(format!(
                        "no snapshot data for {idle_max:?}: transfer abandoned"
                    )))
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other("transfer abandoned"))
                }
            }
        }
    };
    writer.write(meta, &mut fill).map(Stored::Written)
}

impl<S: StateMachine> WaitLoop<S> {
    /// Holds snapshot chunk `m` back (returns `None`) while the received snapshot data
    /// waiting for the disk is at `NodeConfig::snapshot_receive_buffer_bytes`, or while
    /// earlier chunks are held (they keep their order); returns it to step otherwise.
    /// Never blocks. A held chunk is not stepped, so not acknowledged: the leader, whose
    /// chunks in flight are bounded by `inflight_bytes_max`, stops sending, and resumes
    /// as soon as the chunks are stepped ([`WaitLoop::release_held_chunks`], woken when
    /// the storer thread has written some). Held chunks are bounded by the same window:
    /// past it (the leader resending at a heartbeat) they are dropped, which to the
    /// protocol is loss. Heartbeats, appends and votes are never held, so a slow disk
    /// slows the transfer, not the cluster.
    pub(super) fn defer_chunk(&mut self, m: Message) -> Option<Message> {
        let MessageBody::InstallSnapshot { data, .. } = &m.body else {
            return Some(m);
        };
        let Some(storer) = self.storer.as_ref() else {
            return Some(m);
        };
        let len = data.len() as u64;
        let limit = self.config.snapshot_receive_buffer_bytes;
        if self.held_chunks.is_empty() && storer.buffer.admits(len, limit) {
            return Some(m);
        }
        self.counters.snapshot_chunks_deferred += 1;
        if self.held_chunks.is_empty() {
            log::debug!(
                "n{} holds snapshot chunks from n{}: {} bytes wait for the disk (limit {limit})",
                self.shared.id,
                m.from,
                storer.buffer.bytes()
            );
        }
        if self.held_chunk_bytes + len <= self.config.protocol.inflight_bytes_max {
            storer.buffer.waiting.store(true, Ordering::Release);
            self.held_chunk_bytes += len;
            self.held_chunks.push_back(m);
        }
        // A wake-up may have been missed between the check and `waiting`: look again.
        self.release_held_chunks();
        None
    }

    /// Steps the held snapshot chunks, in order, while the receive buffer admits them
    /// (counting those stepped here, which reach the buffer with the turn's readies).
    pub(super) fn release_held_chunks(&mut self) {
        let limit = self.config.snapshot_receive_buffer_bytes;
        let mut stepped_bytes = 0u64;
        while let Some(m) = self.held_chunks.front() {
            let len = match &m.body {
                MessageBody::InstallSnapshot { data, .. } => data.len() as u64,
                _ => 0,
            };
            let Some(buffer) = self.storer.as_ref().map(|s| Arc::clone(&s.buffer)) else {
                return;
            };
            if !buffer.admits_more(stepped_bytes, len, limit) {
                buffer.waiting.store(true, Ordering::Release);
                // Drained between the check and `waiting`: no wake-up will come.
                if !buffer.admits_more(stepped_bytes, len, limit) {
                    return;
                }
            }
            let m = self.held_chunks.pop_front().expect("front exists");
            self.held_chunk_bytes -= len;
            stepped_bytes += len;
            self.step_message(m);
        }
    }

    /// Hands a snapshot the apply thread took at `index` to the storer thread, which
    /// serializes and writes it; `adopt_snapshot` then compacts the log behind it. Only
    /// when the storer thread could not be started is it stored here, on the WaitLoop.
    pub(super) fn store_snapshot(&mut self, index: LogIndex, source: PackedSource) {
        // With the configuration in force at `index` (see `Raft::snapshot_meta_at`).
        let Some(meta) = self.raft.snapshot_meta_at(index) else {
            return; // already compacted past it (a newer snapshot was installed)
        };
        if let Some(storer) = self.storer.as_mut() {
            storer.submit(Job::Take(meta, source));
            return;
        }
        let result = store(None, meta.clone(), source);
        self.adopt_written(meta, result);
    }

    /// Adopts a snapshot the storer thread wrote and compacts the log behind it: fast
    /// (metadata), so the WaitLoop is never held up by a snapshot's size. A failure is
    /// logged, not fatal: the log simply stays longer.
    pub(super) fn adopt_snapshot(
        &mut self,
        meta: SnapshotMeta,
        result: Result<Stored, crate::StorageError>,
    ) {
        self.adopt_written(meta, result);
        // The next write starts only now: the log's clean-up at adoption removes files
        // no one adopted, and must not race a write in progress.
        if let Some(storer) = self.storer.as_mut() {
            storer.finished();
        }
    }

    pub(super) fn adopt_written(
        &mut self,
        meta: SnapshotMeta,
        result: Result<Stored, crate::StorageError>,
    ) {
        let id = self.shared.id;
        let stored = match result {
            Ok(w) => w,
            Err(e) => {
                log::error!(
                    "n{id} could not write the snapshot at {}: {e}",
                    meta.last_index
                );
                return;
            }
        };
        // A snapshot installed from the leader meanwhile may already cover it.
        if meta.last_index <= self.snapshot_index
            || self.raft.term_at(meta.last_index) != Some(meta.last_term)
        {
            log::debug!(
                "n{id} drops the snapshot it wrote at {}: the log moved past it",
                meta.last_index
            );
            return;
        }
        let (size_bytes, how) = match &stored {
            Stored::Written(w) => (w.size_bytes, "written off the WaitLoop"),
            Stored::InMemory(s) => (s.data.len() as u64, "in memory"),
        };
        let result = (|| {
            // No sync here: a sync that waits for a disk busy with snapshot files cost
            // the WaitLoop 150-320 ms per snapshot (issue 18). Adoption and compaction
            // become durable with the next regular sync, or an idle tick's. Crash-safe:
            // the log is written in order and a crash keeps a prefix of what came after
            // the last sync (the `Log` contract; for `SledLog`, one atomic batch per
            // sync), so the compaction is never durable without the snapshot adopted
            // before it; losing both leaves the previous snapshot and every entry after
            // it, which is where the node was. Nothing sent depends on them being durable.
            let log = self.raft.log_mut();
            match &stored {
                Stored::Written(w) => log.adopt_snapshot(w)?,
                Stored::InMemory(s) => log.save_snapshot(s)?,
            }
            self.compact_behind(meta.last_index)
        })();
        if let Some(storer) = self.storer.as_mut() {
            storer.unsynced = true;
        }
        match result {
            Ok(()) => {
                self.shared.metrics.snapshot_taken(size_bytes);
                self.apply.send(ApplyTask::SnapshotStored { size_bytes });
                self.snapshot_index = meta.last_index;
                log::info!(
                    "n{id} stored a snapshot at {} ({size_bytes} bytes, {how}); log now starts at {}",
                    meta.last_index,
                    self.raft.log().first_index()
                );
                self.publish_status();
            }
            Err(e) => log::error!(
                "n{id} could not adopt the snapshot at {}: {e}",
                meta.last_index
            ),
        }
    }

    /// Compacts the log behind a snapshot at `index` that the log stores (written before
    /// this compaction, so never durable after it), keeping `snapshot_trailing_entries`.
    pub(super) fn compact_behind(&mut self, index: LogIndex) -> Result<(), crate::StorageError> {
        let keep = self.config.snapshot_trailing_entries;
        if let Some(meta) = self.raft.compaction_meta(index.saturating_sub(keep)) {
            self.raft.log_mut().compact(meta.clone())?;
        }
        Ok(())
    }

    /// The storer thread made a received snapshot durable (or failed to): tell the
    /// protocol, which installs it with its next ready if it still needs it.
    pub(super) fn on_received_stored(
        &mut self,
        meta: SnapshotMeta,
        result: Result<Stored, crate::StorageError>,
    ) {
        self.received_stored(meta, result);
        // The next write starts once this one is adopted (`persist`), if it is: adoption
        // removes the files no one adopted, and must not race a write in progress.
        if self.received.is_none() {
            if let Some(storer) = self.storer.as_mut() {
                storer.finished();
            }
        }
    }

    pub(super) fn received_stored(
        &mut self,
        meta: SnapshotMeta,
        result: Result<Stored, crate::StorageError>,
    ) {
        if let Err(e) = &result {
            log::warn!(
                "n{} could not store the snapshot up to {} it received: {e}",
                self.shared.id,
                meta.last_index
            );
        }
        if self.raft.snapshot_received(meta.clone(), result.is_ok()) {
            if let Ok(stored) = result {
                self.received = Some((meta, stored));
            }
        }
    }

    /// Writes the received snapshot data of a ready, and hands a complete snapshot on to
    /// be made durable (off the WaitLoop when the log has a writer).
    pub(super) fn write_received(&mut self, ready: &Ready) {
        for chunk in &ready.snapshot_chunks {
            if chunk.offset == 0 {
                let to = match self.storer.as_mut() {
                    Some(storer) if storer.has_writer => {
                        let (tx, rx) = crossbeam_channel::unbounded();
                        storer.submit(Job::Receive(chunk.meta.clone(), rx));
                        Receiving::Streamed(tx)
                    }
                    _ => Receiving::InMemory(crate::ReceivedInMemory::default()),
                };
                self.receiving = Some((chunk.meta.clone(), to));
            }
            let written = match &mut self.receiving {
                Some((meta, to)) if *meta == chunk.meta => match to {
                    Receiving::InMemory(m) => m.write(chunk).map_err(|e| e.to_string()),
                    Receiving::Streamed(tx) => {
                        let buffer = self.storer.as_ref().map(|s| Arc::clone(&s.buffer));
                        let buffer = buffer.unwrap_or_default();
                        tx.send(ReceivedPiece::Data(buffer.hold(chunk.data.clone())))
                            .map_err(|_| "the storer thread dropped it".to_string())
                    }
                },
                _ => Err("its start was not written".to_string()),
            };
            if let Err(e) = written {
                log::warn!(
                    "n{} cannot write the snapshot up to {} it receives ({e}); the leader will send it again",
                    self.shared.id,
                    chunk.meta.last_index
                );
                self.receiving = None;
                self.raft.snapshot_received(chunk.meta.clone(), false);
                break;
            }
        }
        if let Some(info) = &ready.received_snapshot {
            match self.receiving.take() {
                Some((meta, Receiving::InMemory(mut m))) if meta == info.meta => {
                    // Told to the protocol once this ready is advanced (`handle_readies`).
                    self.received_in_memory = Some((meta, m.finish(info).map(Stored::InMemory)));
                }
                Some((meta, Receiving::Streamed(tx))) if meta == info.meta => {
                    // The storer answers with the durable file (`on_received_stored`).
                    if tx
                        .send(ReceivedPiece::End {
                            len_bytes: info.len_bytes,
                        })
                        .is_err()
                    {
                        self.raft.snapshot_received(meta, false);
                    }
                }
                _ => {
                    self.raft.snapshot_received(info.meta.clone(), false);
                }
            }
        }
        // A transfer the protocol gave up (a newer one, or entries that overtook it):
        // dropping the sender makes the storer remove its partial file.
        if self
            .receiving
            .as_ref()
            .is_some_and(|(meta, _)| self.raft.receiving_snapshot().as_ref() != Some(meta))
        {
            self.receiving = None;
        }
    }
}
