//! Snapshot transfer (§7): the leader sends a snapshot in chunks; a follower
//! reassembles, checks and hands it to the driver to install.

use super::*;

impl<L: Log> Raft<L> {
    /// A chunk of a snapshot from the leader. Chunks ahead of a gap are kept (within the
    /// leader's window) until the gap fills; every chunk is answered with the next
    /// offset needed, so the leader resumes after loss. The protocol holds no
    /// whole-snapshot buffer: each contiguous piece goes to the driver to write
    /// ([`Ready::snapshot_chunks`]) and into a running checksum. Once every byte is in and
    /// the checksum matches, the driver is asked to make the snapshot durable
    /// ([`Ready::received_snapshot`]); only when it says so ([`Raft::snapshot_received`])
    /// is it installed and acknowledged.
    pub(super) fn handle_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: Option<u32>,
    ) {
        if meta.last_index <= self.log.committed {
            // We already have everything it covers.
            if self.incoming.as_ref().is_some_and(|i| !i.received) {
                self.incoming = None;
            }
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: self.log.committed,
                    reject: None,
                },
            );
            return;
        }
        if self.incoming.as_ref().is_some_and(|i| i.received) {
            // The driver is making a received snapshot durable. Not answered: the leader
            // resends its last chunks at heartbeats until the snapshot is installed,
            // and is then told (the branch above).
            return;
        }
        if self.incoming.as_ref().map(|i| &i.meta) != Some(&meta) {
            let newer = self
                .incoming
                .as_ref()
                .is_none_or(|i| meta.last_index > i.meta.last_index);
            if offset != 0 && !newer {
                // A chunk of a transfer we do not have the start of: ask from 0.
                self.send(
                    leader,
                    MessageBody::SnapshotResponse {
                        last_index: meta.last_index,
                        next_offset: 0,
                    },
                );
                return;
            }
            log::info!(
                "n{} receiving a snapshot up to {}@{} from n{leader}",
                self.id,
                meta.last_index,
                meta.last_term
            );
            self.incoming = Some(IncomingSnapshot {
                meta: meta.clone(),
                have_bytes: 0,
                crc: crc32fast::Hasher::new(),
                ahead: BTreeMap::new(),
                ahead_bytes: 0,
                end: None,
                received: false,
            });
        }
        let bytes_max = self.config.snapshot_bytes_max;
        let window = self.config.inflight_bytes_max;
        let partial = self.broken(BrokenVariant::InstallPartialSnapshot);
        let incoming = self.incoming.as_mut().expect("set above");
        let len = data.len() as u64;
        if offset + len > bytes_max {
            log::error!(
                "n{} refusing a snapshot larger than snapshot_bytes_max ({bytes_max} bytes)",
                self.id
            );
            self.incoming = None;
            return;
        }
        if let Some(checksum) = done {
            incoming.end = Some((offset + len, checksum));
        }
        let have = incoming.have_bytes;
        if offset == have {
            incoming.take(data, &mut self.snapshot_writes);
            // The chunks that waited for this one follow it now.
            while let Some(entry) = incoming.ahead.first_entry() {
                let at = *entry.key();
                if at > incoming.have_bytes {
                    break;
                }
                let chunk = entry.remove();
                incoming.ahead_bytes -= chunk.len() as u64;
                if at == incoming.have_bytes {
                    incoming.take(chunk, &mut self.snapshot_writes);
                }
            }
        } else if offset > have
            && offset < have + window
            && incoming.ahead_bytes + len <= window
            && !incoming.ahead.contains_key(&offset)
        {
            // Within the leader's window past what we have: anything further is a
            // leftover of an earlier attempt and would only take the room.
            incoming.ahead.insert(offset, data);
            incoming.ahead_bytes += len;
        }
        let have = incoming.have_bytes;
        // Broken variant: the last chunk's arrival taken for the whole snapshot's.
        let complete = incoming.end.is_some_and(|(end, _)| have >= end || partial);
        if !complete {
            self.send(
                leader,
                MessageBody::SnapshotResponse {
                    last_index: meta.last_index,
                    next_offset: have,
                },
            );
            return;
        }
        let crc = incoming.crc.clone().finalize();
        if Some(crc) != incoming.end.map(|(_, checksum)| checksum) && !partial {
            log::warn!(
                "n{} snapshot up to {} failed its checksum; asking for it again",
                self.id,
                meta.last_index
            );
            self.incoming = None;
            self.send(
                leader,
                MessageBody::SnapshotResponse {
                    last_index: meta.last_index,
                    next_offset: 0,
                },
            );
            return;
        }
        log::info!(
            "n{} received a snapshot up to {}@{} ({have} bytes); storing it",
            self.id,
            meta.last_index,
            meta.last_term,
        );
        incoming.received = true;
        incoming.ahead.clear();
        incoming.ahead_bytes = 0;
        self.received_snapshot = Some(SnapshotInfo {
            meta,
            len_bytes: have,
            crc32: crc,
        });
    }

    /// The driver made the snapshot it was handed in [`Ready::received_snapshot`] durable
    /// (`stored`), or failed to. Stored and still needed (nothing newer was committed
    /// meanwhile), it is installed: the log's view moves to it, the next ready carries it
    /// in [`Ready::snapshot`] (for the driver to make it the log's stored snapshot, compact
    /// and restore the state machine from it) and acknowledges it to the leader, after
    /// that ready's sync. Returns whether it was installed; if not, the driver discards
    /// what it wrote. A failure (also while the chunks are still arriving: the driver
    /// could not write one) drops the transfer: the leader's next chunk restarts it.
    pub fn snapshot_received(&mut self, meta: SnapshotMeta, stored: bool) -> bool {
        let expected = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.meta == meta && (i.received || !stored));
        if !expected {
            log::debug!(
                "n{} was not waiting for the snapshot up to {} to be stored",
                self.id,
                meta.last_index
            );
            return false;
        }
        self.incoming = None;
        if !stored {
            log::warn!(
                "n{} could not store the snapshot up to {}; the leader will send it again",
                self.id,
                meta.last_index
            );
            return false;
        }
        if meta.last_index <= self.log.committed {
            return false; // committed past it meanwhile: nothing to install
        }
        log::info!(
            "n{} installing a snapshot up to {}@{}",
            self.id,
            meta.last_index,
            meta.last_term
        );
        let kept_suffix = self.log.matches(meta.last_index, meta.last_term);
        if let Err(e) = self.configs_from_snapshot(&meta, kept_suffix) {
            // Not installed: nothing changed, and the driver discards what it wrote.
            log::error!(
                "n{} refusing the snapshot up to {}: {e}",
                self.id,
                meta.last_index
            );
            self.counters.messages_ignored += 1;
            return false;
        }
        self.log.restore(meta.clone());
        self.pending_snapshot = Some(meta.clone());
        if let Some(leader) = self.leader {
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: meta.last_index,
                    reject: None,
                },
            );
        }
        true
    }

    /// The snapshot this follower is receiving or storing, if any: a driver that writes
    /// received chunks somewhere drops what it has for any other.
    pub fn receiving_snapshot(&self) -> Option<SnapshotMeta> {
        self.incoming.as_ref().map(|i| i.meta.clone())
    }

    /// The follower needs entry `needed` or earlier, which is compacted: send the stored
    /// snapshot instead.
    pub(super) fn start_snapshot_transfer(&mut self, to: NodeId, needed: LogIndex) {
        let chunks = match self.log.log.open_snapshot() {
            Ok(Some(s)) if s.info().meta.last_index >= needed => s,
            Ok(other) => {
                log::error!(
                    "n{} cannot catch n{to} up: entry {needed} is compacted and the stored \
                     snapshot ({:?}) does not cover it",
                    self.id,
                    other.map(|s| s.info().meta)
                );
                return;
            }
            Err(e) => {
                log::error!("n{} cannot read the snapshot for n{to}: {e}", self.id);
                return;
            }
        };
        let mut info = chunks.info();
        if info.meta.membership.is_none() {
            // Stored before configurations were kept with snapshots: the one in force at
            // its index here goes with it (a follower always learns who votes).
            info.meta.membership = Some(self.configs.at(info.meta.last_index).clone());
        }
        log::info!(
            "n{} sending n{to} a snapshot up to {}@{} ({} bytes)",
            self.id,
            info.meta.last_index,
            info.meta.last_term,
            info.len_bytes
        );
        self.progress
            .get_mut(&to)
            .expect("peer exists")
            .become_snapshot(info, chunks);
        self.send_snapshot_chunks(to);
    }

    /// Sends snapshot chunks to `to` while the in-flight byte window allows, each read
    /// from the log as it goes out. Not one more: every chunk is answered, so sending on
    /// a full window would keep the chunks in flight from ever decreasing. Lost chunks
    /// are resent when a heartbeat answer shows no progress (that rewinds `sent` to
    /// `acked`, which opens the window). If the snapshot cannot be read, the transfer
    /// stops and the follower is probed again, which starts a new one.
    pub(super) fn send_snapshot_chunks(&mut self, to: NodeId) {
        let chunk_max = self
            .config
            .snapshot_chunk_bytes
            .min(self.config.append_bytes_max);
        let window = self.config.inflight_bytes_max;
        let mut chunks = Vec::new();
        let mut failed = None;
        if let Some(o) = self.progress.get_mut(&to).and_then(|p| p.outgoing.as_mut()) {
            let len = o.info.len_bytes;
            let mut empty_sent = false;
            while (o.sent < len || (len == 0 && !empty_sent)) && o.sent - o.acked < window {
                let want = chunk_max.min(len - o.sent);
                let data = match o.chunks.read_chunk(o.sent, want) {
                    Ok(data) if data.len() as u64 == want => data,
                    Ok(data) => {
                        failed = Some(crate::StorageError::Corrupt {
                            index: o.info.meta.last_index,
                            detail: format!(
                                "{} bytes at offset {} of the snapshot, {want} expected",
                                data.len(),
                                o.sent
                            ),
                        });
                        break;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                let end = o.sent + want;
                let done = (end == len).then_some(o.info.crc32);
                chunks.push((o.info.meta.clone(), o.sent, data, done));
                o.sent = end;
                empty_sent = true;
            }
        }
        if let Some(e) = failed {
            log::warn!(
                "n{} stops sending n{to} its snapshot: {e}; probing it again",
                self.id
            );
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.become_probe();
            }
        }
        for (meta, offset, data, done) in chunks {
            self.send(
                to,
                MessageBody::InstallSnapshot {
                    meta,
                    offset,
                    data,
                    done,
                },
            );
        }
    }
}

/// A snapshot a follower is receiving, chunk by chunk: only its running length and
/// checksum, and the chunks that arrived ahead of a gap; the data goes to the driver.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    pub(super) meta: SnapshotMeta,
    /// Bytes received contiguously from offset 0 (and handed to the driver).
    pub(super) have_bytes: u64,
    /// Checksum of those bytes.
    pub(super) crc: crc32fast::Hasher,
    /// Chunks that arrived ahead of a gap (reordered), by offset, to be taken once
    /// the gap fills. Only chunks starting less than `inflight_bytes_max` bytes past
    /// `have_bytes` (the most a leader sends beyond what was acknowledged), and at most
    /// that many bytes.
    pub(super) ahead: BTreeMap<u64, Bytes>,
    pub(super) ahead_bytes: u64,
    /// From the last chunk: the snapshot's length and checksum.
    pub(super) end: Option<(u64, u32)>,
    /// Every byte is in and checked; the driver is making it durable.
    pub(super) received: bool,
}

impl IncomingSnapshot {
    /// Takes the next contiguous piece: into the checksum, and out to the driver.
    fn take(&mut self, data: Bytes, writes: &mut Vec<SnapshotChunk>) {
        self.crc.update(&data);
        writes.push(SnapshotChunk {
            meta: self.meta.clone(),
            offset: self.have_bytes,
            data: data.clone(),
        });
        self.have_bytes += data.len() as u64;
    }
}
