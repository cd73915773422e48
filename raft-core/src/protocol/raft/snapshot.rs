//! Snapshot transfer (§7): the leader sends a snapshot in chunks; a follower
//! reassembles, checks and hands it to the driver to install.

use super::*;

impl<L: Log> Raft<L> {
    /// A chunk of a snapshot from the leader. Chunks ahead of a gap are kept (within the
    /// leader's window) until the gap fills; every chunk is answered with the next
    /// offset needed, so the leader resumes after loss.
    pub(super) fn handle_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: Option<u32>,
    ) {
        if meta.last_index <= self.log.committed {
            // We already have everything it covers.
            self.incoming = None;
            self.send(
                leader,
                MessageBody::AppendResponse {
                    index: self.log.committed,
                    reject: None,
                },
            );
            return;
        }
        if self.incoming.as_ref().map(|i| i.meta) != Some(meta) {
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
                meta,
                data: Vec::new(),
                ahead: BTreeMap::new(),
                ahead_bytes: 0,
                end: None,
            });
        }
        let bytes_max = self.config.snapshot_bytes_max;
        let window = self.config.inflight_bytes_max;
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
        let have = incoming.data.len() as u64;
        if offset == have {
            incoming.data.extend_from_slice(data);
            // The chunks that waited for this one follow it now.
            while let Some(entry) = incoming.ahead.first_entry() {
                let at = *entry.key();
                if at > incoming.data.len() as u64 {
                    break;
                }
                let chunk = entry.remove();
                incoming.ahead_bytes -= chunk.len() as u64;
                if at == incoming.data.len() as u64 {
                    incoming.data.extend_from_slice(&chunk);
                }
            }
        } else if offset > have
            && offset < have + window
            && incoming.ahead_bytes + len <= window
            && !incoming.ahead.contains_key(&offset)
        {
            // Within the leader's window past what we have: anything further is a
            // leftover of an earlier attempt and would only take the room.
            incoming.ahead.insert(offset, Bytes::copy_from_slice(data));
            incoming.ahead_bytes += len;
        }
        let have = incoming.data.len() as u64;
        let complete = incoming.end.is_some_and(|(end, _)| have >= end);
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
        let incoming = self.incoming.take().expect("set above");
        if Some(crc32fast::hash(&incoming.data)) != incoming.end.map(|(_, checksum)| checksum) {
            log::warn!(
                "n{} snapshot up to {} failed its checksum; asking for it again",
                self.id,
                meta.last_index
            );
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
            "n{} installing a snapshot up to {}@{} ({} bytes)",
            self.id,
            meta.last_index,
            meta.last_term,
            incoming.data.len()
        );
        self.log.restore(meta);
        self.pending_snapshot = Some(Snapshot {
            meta,
            data: incoming.data.into(),
        });
        self.send(
            leader,
            MessageBody::AppendResponse {
                index: meta.last_index,
                reject: None,
            },
        );
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
        let info = chunks.info();
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
            .become_snapshot(chunks);
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
                chunks.push((o.info.meta, o.sent, data, done));
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

/// A snapshot a follower is receiving, chunk by chunk.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    pub(super) meta: SnapshotMeta,
    /// The bytes received contiguously from offset 0.
    pub(super) data: Vec<u8>,
    /// Chunks that arrived ahead of a gap (reordered), by offset, to be appended once
    /// the gap fills. Only chunks starting less than `inflight_bytes_max` bytes past
    /// `data` (the most a leader sends beyond what was acknowledged), and at most that
    /// many bytes.
    pub(super) ahead: BTreeMap<u64, Bytes>,
    pub(super) ahead_bytes: u64,
    /// From the last chunk: the snapshot's length and checksum.
    pub(super) end: Option<(u64, u32)>,
}
