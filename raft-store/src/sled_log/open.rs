//! Opening a `SledLog`: sled's lock (waited for), the owner record (another cluster's or
//! node's directory is refused), and recovery: the state record, every stored record
//! checked, the value log's references counted, the snapshot files cleaned up.

use super::*;

impl SledLog {
    /// Opens (or creates) the log in `dir` for node `node_id` of cluster `cluster_id`,
    /// with default [`SledLogOptions`].
    ///
    /// # Errors
    /// See [`SledLog::open_with`].
    pub fn open(
        dir: impl AsRef<Path>,
        cluster_id: &str,
        node_id: NodeId,
    ) -> Result<Self, StorageError> {
        Self::open_with(dir, SledLogOptions::new(cluster_id, node_id))
    }

    /// Opens (or creates) the log in `dir`, restoring hard state, entries and snapshot
    /// metadata, and checking every stored record.
    ///
    /// # Errors
    /// - [`StorageError::WrongOwner`] when another cluster or node wrote `dir`;
    /// - [`StorageError::Corrupt`] naming the first damaged index (0 for metadata) when
    ///   a synced record fails its checksum or the log has a hole;
    /// - [`StorageError::Io`] when the directory cannot be used (for example another
    ///   process still holds it open after [`SledLogOptions::lock_wait_ms`]) or the
    ///   options are invalid.
    pub fn open_with(dir: impl AsRef<Path>, options: SledLogOptions) -> Result<Self, StorageError> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let config = sled::Config::new()
            .path(&dir)
            .cache_capacity(options.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            // No background flusher: only `sync` writes to the files, so what a crash
            // leaves is always the state of some sync.
            .flush_every_ms(None)
            .segment_size(SLED_SEGMENT_BYTES);
        let db = open_db(&config, &dir, options.lock_wait_ms)?;
        let files = SledFiles::open(&dir).map_err(|e| io_err("cannot sync", &dir, e))?;
        let (marker, mark_on_open) = SyncMarker::open(&dir)
            .map_err(|e| io_err("cannot open the sync marker in", &dir, e))?;
        let reaper = Reaper::start(options.node_id);
        let mut log = Self {
            dir,
            db,
            files,
            marker,
            mark_on_open,
            seq: 0,
            stats: SyncStats::default(),
            options,
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            state_dirty: false,
            terms: VecDeque::new(),
            records: BTreeMap::new(),
            pending: BTreeMap::new(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            stored: BTreeMap::new(),
            values: None,
            snapshots: None,
            snapshot_file: None,
            pending_snapshot: None,
            uncertain_snapshots: Vec::new(),
            reaper,
        };
        let format_version = log.check_owner()?;
        log.restore(format_version)?;
        if format_version == FORMAT_VERSION_NO_CONFIG {
            // Upgrade in place, in one sled batch: the owner record names the current
            // format and the state record is rewritten in it (the snapshot metadata
            // with no configuration: `SnapshotMeta::membership` is `None`).
            let mut batch = sled::Batch::default();
            batch.insert(OWNER_KEY, encode_meta(OWNER_KEY, &log.me())?);
            log.write(batch)?;
            log::info!(
                "n{} upgraded sled log {} from format {FORMAT_VERSION_NO_CONFIG} to \
                 {FORMAT_VERSION} (its snapshot carries no configuration: the initial \
                 voters hold at it)",
                log.options.node_id,
                log.dir.display()
            );
        }
        log::info!(
            "n{} opened sled log {}: entries {}..={}, term {}, snapshot at {}",
            log.options.node_id,
            log.dir.display(),
            log.first_index(),
            log.last_index(),
            log.hard_state.term,
            log.snapshot.last_index
        );
        Ok(log)
    }

    pub(super) fn me(&self) -> Owner {
        Owner {
            format_version: FORMAT_VERSION,
            cluster_id: self.options.cluster_id.clone(),
            node_id: self.options.node_id,
        }
    }

    /// Claims a new directory, or checks that an existing one is ours. Returns the
    /// directory's format version: [`FORMAT_VERSION`], or [`FORMAT_VERSION_NO_CONFIG`]
    /// (read, then upgraded by [`SledLog::open`]).
    fn check_owner(&mut self) -> Result<u32, StorageError> {
        let me = self.me();
        match self.db.get(OWNER_KEY).map_err(sled_err)? {
            Some(bytes) => {
                let mut found: Owner = decode_meta(OWNER_KEY, &bytes)?;
                let version = found.format_version;
                if version == FORMAT_VERSION_NO_CONFIG {
                    found.format_version = FORMAT_VERSION;
                }
                if found.format_version != FORMAT_VERSION {
                    return Err(corrupt(
                        0,
                        format!(
                            "directory {} has format version {}, this build reads only {} \
                             and {FORMAT_VERSION_NO_CONFIG} (version 2 moved snapshots to \
                             files and large records to a value log); keep the directory for the older build, or move it \
                             away and let the node catch up from the cluster (a snapshot \
                             and the log)",
                            self.dir.display(),
                            found.format_version,
                            FORMAT_VERSION
                        ),
                    ));
                }
                if found != me {
                    return Err(StorageError::WrongOwner {
                        expected: me.describe(),
                        found: found.describe(),
                    });
                }
                Ok(version)
            }
            None => {
                let keys = self.db.len();
                if keys != 0 {
                    return Err(corrupt(
                        0,
                        format!("no owner record but {keys} other keys: not a SledLog directory, or damaged"),
                    ));
                }
                if let Some(mark) = self.mark_on_open {
                    return Err(corrupt(
                        0,
                        format!(
                            "sled holds nothing, but sync {} (entries up to {}) had completed: \
                             were sled's files removed or damaged?",
                            mark.seq, mark.last_index
                        ),
                    ));
                }
                let mut batch = sled::Batch::default();
                batch.insert(OWNER_KEY, encode_meta(OWNER_KEY, &me)?);
                self.write(batch)?;
                Ok(FORMAT_VERSION)
            }
        }
    }

    /// Rebuilds the in-memory state from the stored records, checking all of them;
    /// `format_version` says how the state record is laid out.
    fn restore(&mut self, format_version: u32) -> Result<(), StorageError> {
        let state: State = match self.db.get(STATE_KEY).map_err(sled_err)? {
            Some(bytes) if format_version == FORMAT_VERSION_NO_CONFIG => {
                decode_meta::<StateV2>(STATE_KEY, &bytes)?.upgrade()
            }
            Some(bytes) => decode_meta(STATE_KEY, &bytes)?,
            None => return Err(corrupt(0, "the state record is missing".into())),
        };
        if state.last_index < state.snapshot.last_index {
            return Err(corrupt(
                0,
                format!(
                    "state record says the log ends at {}, before its snapshot at {}",
                    state.last_index, state.snapshot.last_index
                ),
            ));
        }
        if let Some(mark) = self.mark_on_open.filter(|m| m.seq > state.seq) {
            // sled stops recovering at the first damaged message of its own log, so a
            // damaged byte in the middle of its file looks like an older, consistent state.
            return Err(corrupt(
                state.last_index + 1,
                format!(
                    "sled recovered up to sync {} (entries up to {}), but sync {} (entries up \
                     to {}) had completed: the file is damaged at or after the write of entry {}",
                    state.seq,
                    state.last_index,
                    mark.seq,
                    mark.last_index,
                    state.last_index + 1
                ),
            ));
        }
        let mut snapshots = SnapshotDir::open(
            &self.dir,
            self.options.node_id,
            self.options.sync_mode == SyncMode::Fdatasync,
            state.snapshot_file.as_ref(),
        )?;
        snapshots.set_remover(self.reaper.remover());
        self.snapshots = Some(snapshots);
        self.snapshot_file = state.snapshot_file;
        self.seq = state.seq;
        self.hard_state = state.hard_state;
        self.snapshot = state.snapshot;
        let mut values = ValueLog::open(
            &self.dir,
            self.options.node_id,
            self.options.sync_mode == SyncMode::Fdatasync,
            self.options.value_log_segment_bytes,
        )?;
        let first_index = self.first_index();
        let synced_last = state.last_index;
        let mut next: Option<LogIndex> = None;
        let mut discard = Vec::new();
        for item in RecordScan::new(self.db.scan_prefix([RECORD_PREFIX])) {
            let (first, chunks, mut value) = item?;
            if chunks == 1 && ValueRef::is_ref(&value) {
                let r = ValueRef::decode(first, &value)?;
                self.stored.insert(first, Stored::Value(r));
                if first <= synced_last {
                    value = values.read(first, &r)?;
                    values.add_ref(r.seq);
                }
            } else {
                self.stored.insert(first, Stored::Chunks(chunks));
            }
            if first > synced_last {
                // Only a sync writes records, together with the state record in one atomic
                // batch, so this cannot come from a sync that completed.
                log::warn!(
                    "n{} discarding record at {first} past the last synced index {synced_last}",
                    self.options.node_id
                );
                discard.push(first);
                continue;
            }
            let record = Record::parse(first, value)?;
            let last = record.last();
            if last < first_index {
                if let Some(Stored::Value(r)) = self.stored.get(&first) {
                    values.drop_ref(r.seq);
                }
                discard.push(first);
                continue;
            }
            if last > synced_last {
                return Err(corrupt(
                    synced_last + 1,
                    format!("record at {first} runs to {last}, past the last synced index {synced_last}"),
                ));
            }
            let expected = next.unwrap_or(first_index);
            if next.is_none() && first > first_index || next.is_some() && first > expected {
                return Err(corrupt(
                    expected,
                    format!("entries {expected}..{first} are missing"),
                ));
            }
            if next.is_some() && first < expected {
                return Err(corrupt(
                    first,
                    format!(
                        "record at {first} overlaps the one before, which ends at {}",
                        expected - 1
                    ),
                ));
            }
            let mut entries = Vec::new();
            record.read(
                first.max(first_index),
                last + 1,
                &mut ByteBudget::unlimited(),
                &mut entries,
            )?;
            // Terms are not checked for order here: `append` does not check them across
            // calls either, and the checksums already vouch for every entry.
            for e in entries {
                self.terms.push_back(e.term);
                self.push_tail(e);
            }
            self.records.insert(first, last);
            next = Some(last + 1);
        }
        let last = self.last_index();
        if last < synced_last {
            return Err(corrupt(
                last + 1,
                format!("the log ends at {last} but the last sync wrote up to {synced_last}"),
            ));
        }
        if last > self.snapshot.last_index && self.terms.back() != Some(&state.last_term) {
            return Err(corrupt(
                last,
                format!(
                    "last entry has term {:?}, the state record says {}",
                    self.terms.back(),
                    state.last_term
                ),
            ));
        }
        if !discard.is_empty() {
            let mut batch = sled::Batch::default();
            for first in discard {
                let chunks = self.stored.remove(&first).map_or(1, |s| s.keys());
                for chunk in 0..chunks {
                    batch.remove(&record_key(first, chunk)[..]);
                }
            }
            self.write(batch)?;
        } else if self.mark_on_open.map(|m| m.seq) != Some(self.seq) {
            // The marker lags (it is not synced, so a power loss can leave it behind).
            self.write_mark();
        }
        // Only now that no stored record names them may unreferenced segments go.
        values.remove_unreferenced();
        values.set_remover(self.reaper.remover());
        self.values = Some(values);
        Ok(())
    }
}

/// Opens sled, waiting up to `lock_wait_ms` for the directory's lock.
fn open_db(config: &sled::Config, dir: &Path, lock_wait_ms: u64) -> Result<sled::Db, StorageError> {
    let deadline = Instant::now() + Duration::from_millis(lock_wait_ms);
    let mut backoff = Duration::from_millis(1);
    loop {
        // sled 0.34 may panic on some damaged files; a damaged directory must be an
        // error, never a crash of the node.
        let error = match catch_unwind(AssertUnwindSafe(|| config.open())) {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(corrupt(
                    0,
                    format!("sled panicked while recovering {}", dir.display()),
                ))
            }
        };
        let locked = matches!(&error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"));
        if locked && Instant::now() < deadline {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
            continue;
        }
        return Err(match sled_err(error) {
            StorageError::Io(msg) if locked => StorageError::Io(format!(
                "cannot open {}: {msg} (is another process using it?)",
                dir.display()
            )),
            StorageError::Io(msg) => {
                StorageError::Io(format!("cannot open {}: {msg}", dir.display()))
            }
            other => other,
        });
    }
}

/// Reassembles records from sled's scan of their chunks, in key order: yields
/// `(first index, chunk count, record bytes)`.
struct RecordScan<I: Iterator> {
    inner: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> RecordScan<I> {
    fn new(inner: I) -> Self {
        Self {
            inner: inner.peekable(),
        }
    }
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Iterator for RecordScan<I> {
    type Item = Result<(LogIndex, u32, Bytes), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = match self.inner.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(sled_err(e))),
        };
        let Some((first, chunk)) = parse_record_key(&key) else {
            return Some(Err(corrupt(0, format!("unexpected key {key:?}"))));
        };
        if chunk != 0 {
            return Some(Err(corrupt(
                first,
                format!("the record at {first} starts at chunk {chunk}, not 0"),
            )));
        }
        let mut chunks = 1u32;
        let mut joined: Option<Vec<u8>> = None;
        let same_record = |item: &sled::Result<(sled::IVec, sled::IVec)>| matches!(item, Ok((k, _)) if parse_record_key(k).map(|(f, _)| f) == Some(first));
        while let Some(Ok((next_key, part))) = self.inner.next_if(same_record) {
            if parse_record_key(&next_key) != Some((first, chunks)) {
                return Some(Err(corrupt(
                    first,
                    format!("the record at {first} lacks chunk {chunks}"),
                )));
            }
            joined
                .get_or_insert_with(|| value.to_vec())
                .extend_from_slice(&part);
            chunks += 1;
        }
        let bytes = match joined {
            Some(all) => Bytes::from(all),
            None => Bytes::from_owner(value),
        };
        Some(Ok((first, chunks, bytes)))
    }
}
