//! The runtime's snapshot format: the state machine's bytes plus the runtime state that
//! must travel with them (the de-duplication table), so a node restored from a snapshot
//! makes exactly the decisions the others make.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::dedup::Dedup;
use super::state_machine::RestoreError;

#[derive(Serialize, Deserialize)]
struct Stored {
    /// Format version, for future changes.
    version: u8,
    dedup: Dedup,
    state: Bytes,
}

const VERSION: u8 = 1;

/// Packs the state machine's bytes with the runtime's state.
pub(crate) fn pack(dedup: &Dedup, state: Vec<u8>) -> Bytes {
    #[derive(Serialize)]
    struct StoredRef<'a> {
        version: u8,
        dedup: &'a Dedup,
        state: Bytes,
    }
    let bytes = postcard::to_allocvec(&StoredRef {
        version: VERSION,
        dedup,
        state: Bytes::from(state),
    })
    .expect("serializing to a Vec cannot fail");
    Bytes::from(bytes)
}

/// Unpacks a snapshot into the runtime's state and the state machine's bytes.
pub(crate) fn unpack(data: &[u8]) -> Result<(Dedup, Bytes), RestoreError> {
    let stored: Stored = postcard::from_bytes(data)
        .map_err(|e| RestoreError(format!("bad snapshot envelope: {e}")))?;
    if stored.version != VERSION {
        return Err(RestoreError(format!(
            "snapshot format version {} is not supported (this build reads {VERSION})",
            stored.version
        )));
    }
    Ok((stored.dedup, stored.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut d = Dedup::default();
        assert!(d.first_time(7, 1, 1));
        let packed = pack(&d, b"state".to_vec());
        let (d2, state) = unpack(&packed).unwrap();
        assert_eq!(&state[..], b"state");
        assert!(d2.was_applied(7, 1));
        assert!(unpack(b"\xff\x00garbage").is_err());
    }
}
