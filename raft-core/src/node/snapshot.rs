//! The runtime's snapshot format: the state machine's bytes plus the runtime state that
//! must travel with them (the de-duplication table), so a node restored from a snapshot
//! makes exactly the decisions the others make.
//!
//! Format 2, a stream (written by the storer thread straight into the snapshot file):
//!
//! ```text
//! version u8 = 2 | dedup_len u64 LE | dedup (postcard) | state machine stream, to the end
//! ```
//!
//! Format 1 (read only, snapshots stored by earlier builds): one postcard record
//! `(version = 1, dedup, state bytes)`, restored through [`StateMachine::restore`].

use std::io::{self, Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::dedup::Dedup;
use super::snapshot_reader::SnapshotReader;
use super::state_machine::{RestoreError, SnapshotSource, StateMachine};

/// Format 1: the whole snapshot as one postcard record.
const VERSION_RECORD: u8 = 1;
/// Format 2: a header, then the state machine's stream.
const VERSION_STREAM: u8 = 2;
/// The most bytes a dedup table may claim in a snapshot: far above what its bounds
/// allow (32 origins x 16,384 ids), far below what would exhaust memory on bad input.
const DEDUP_BYTES_MAX: u64 = 64 << 20;

#[derive(Deserialize)]
struct StoredV1 {
    version: u8,
    dedup: Dedup,
    state: Bytes,
}

/// A snapshot taken on the apply thread, not yet serialized: the runtime's state
/// (encoded there, small and bounded) and the state machine's frozen view.
pub(crate) struct PackedSource {
    dedup: Vec<u8>,
    state: Box<dyn SnapshotSource>,
}

impl PackedSource {
    /// Packs the runtime's state with the state machine's view.
    pub(crate) fn new(dedup: &Dedup, state: Box<dyn SnapshotSource>) -> Self {
        #[derive(Serialize)]
        struct DedupRef<'a>(&'a Dedup);
        let dedup =
            postcard::to_allocvec(&DedupRef(dedup)).expect("serializing to a Vec cannot fail");
        Self { dedup, state }
    }

    /// Writes the whole snapshot (format 2) to `out`.
    ///
    /// # Errors
    /// `out` failed, or the state machine's view did.
    pub(crate) fn write_to(self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&[VERSION_STREAM])?;
        out.write_all(&(self.dedup.len() as u64).to_le_bytes())?;
        out.write_all(&self.dedup)?;
        self.state.write_to(out)
    }

    /// The whole snapshot in memory (for logs that keep snapshots in memory, and tests).
    ///
    /// # Errors
    /// The state machine's view failed.
    pub(crate) fn into_bytes(self) -> io::Result<Bytes> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(Bytes::from(out))
    }
}

/// Restores `sm` from a stored snapshot read from `input`, and returns the runtime's
/// state that travelled with it.
///
/// # Errors
/// A stream that is not a snapshot of a known format, fails to read, or that the state
/// machine refuses.
pub(crate) fn restore_from<S: StateMachine>(
    sm: &mut S,
    input: &mut dyn Read,
) -> Result<Dedup, RestoreError> {
    let mut r = SnapshotReader::new(input, "snapshot envelope");
    match r.u8()? {
        VERSION_STREAM => {
            let len = r.u64()?;
            let dedup: Dedup = r.decode(len, DEDUP_BYTES_MAX, "the dedup table")?;
            sm.restore_from(r.rest())?;
            Ok(dedup)
        }
        VERSION_RECORD => {
            let mut data = vec![VERSION_RECORD];
            r.rest()
                .read_to_end(&mut data)
                .map_err(|e| RestoreError(format!("cannot read the snapshot: {e}")))?;
            let stored: StoredV1 = postcard::from_bytes(&data)
                .map_err(|e| RestoreError(format!("bad snapshot envelope: {e}")))?;
            debug_assert_eq!(stored.version, VERSION_RECORD);
            sm.restore(&stored.state)?;
            Ok(stored.dedup)
        }
        v => Err(RestoreError(format!(
            "snapshot format version {v} is not supported (this build reads {VERSION_RECORD} and {VERSION_STREAM})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the last command it was sent.
    #[derive(Default)]
    struct Last(Vec<u8>);

    impl StateMachine for Last {
        type Response = ();
        fn apply(&mut self, _index: u64, command: &[u8]) {
            self.0 = command.to_vec();
        }
        fn snapshot(&self) -> Option<Vec<u8>> {
            Some(self.0.clone())
        }
        fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
            self.0 = data.to_vec();
            Ok(())
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let mut d = Dedup::default();
        assert!(d.first_time(7, 1, 1));
        let mut sm = Last::default();
        sm.apply(1, b"state");
        let packed = PackedSource::new(&d, sm.snapshot_source().unwrap())
            .into_bytes()
            .unwrap();
        let mut restored = Last::default();
        let d2 = restore_from(&mut restored, &mut &packed[..]).unwrap();
        assert_eq!(restored.0, b"state");
        assert!(d2.was_applied(7, 1));
        assert!(restore_from(&mut restored, &mut &b"\xff\x00garbage"[..]).is_err());
        assert!(restore_from(&mut restored, &mut &b""[..]).is_err());
        // A header claiming a huge table is refused before anything is allocated.
        let mut huge = vec![VERSION_STREAM];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(restore_from(&mut restored, &mut &huge[..]).is_err());
        // Cut short inside the table.
        assert!(restore_from(&mut restored, &mut &packed[..5]).is_err());
    }

    #[test]
    fn reads_format_1() {
        #[derive(Serialize)]
        struct StoredRef<'a> {
            version: u8,
            dedup: &'a Dedup,
            state: Bytes,
        }
        let mut d = Dedup::default();
        assert!(d.first_time(3, 9, 4));
        let v1 = postcard::to_allocvec(&StoredRef {
            version: VERSION_RECORD,
            dedup: &d,
            state: Bytes::from_static(b"old"),
        })
        .unwrap();
        let mut restored = Last::default();
        let d2 = restore_from(&mut restored, &mut &v1[..]).unwrap();
        assert_eq!(restored.0, b"old");
        assert!(d2.was_applied(3, 9));
    }
}
