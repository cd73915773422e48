//! The runtime's envelope around each command: who proposed it, so exactly the right
//! waiter is answered when it is applied, on whichever node proposed it.
//!
//! Layout: `origin: u64 LE | request_id: u64 LE | command bytes`. `origin` is random per
//! node start (an incarnation), so request ids of an earlier run never match waiters of
//! this one, even when old entries are replayed.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes the envelope adds to each command.
pub const ENVELOPE_BYTES: usize = 16;

/// Wraps `command` for proposal.
pub(crate) fn wrap(origin: u64, request_id: u64, command: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(ENVELOPE_BYTES + command.len());
    b.put_u64_le(origin);
    b.put_u64_le(request_id);
    b.put_slice(command);
    b.freeze()
}

/// Wraps each of `commands` (request id, command) as [`wrap`] does, all into one buffer
/// that the results share: one allocation for the batch instead of one (and a second
/// at the first clone) per command. The buffer lives until the last result is dropped.
pub(crate) fn wrap_batch(origin: u64, commands: &[(u64, Bytes)]) -> Vec<Bytes> {
    let total = commands.iter().map(|(_, c)| ENVELOPE_BYTES + c.len()).sum();
    let mut b = BytesMut::with_capacity(total);
    for (request_id, command) in commands {
        b.put_u64_le(origin);
        b.put_u64_le(*request_id);
        b.put_slice(command);
    }
    let buffer = b.freeze();
    let mut at = 0;
    commands
        .iter()
        .map(|(_, c)| {
            let end = at + ENVELOPE_BYTES + c.len();
            let one = buffer.slice(at..end);
            at = end;
            one
        })
        .collect()
}

/// Splits an entry's data into (origin, request id) and the command. `None` for data too
/// short to hold an envelope (not written by this runtime).
pub(crate) fn unwrap(data: &[u8]) -> Option<(u64, u64, &[u8])> {
    if data.len() < ENVELOPE_BYTES {
        return None;
    }
    let origin = u64::from_le_bytes(data[0..8].try_into().ok()?);
    let request_id = u64::from_le_bytes(data[8..16].try_into().ok()?);
    Some((origin, request_id, &data[ENVELOPE_BYTES..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let w = wrap(7, 9, b"cmd");
        assert_eq!(unwrap(&w), Some((7, 9, &b"cmd"[..])));
        assert_eq!(unwrap(b"short"), None);
    }

    #[test]
    fn a_batch_wraps_each_command_as_wrap_does() {
        let commands = vec![
            (3, Bytes::from_static(b"one")),
            (4, Bytes::new()),
            (5, Bytes::from(vec![9; 300])),
        ];
        let wrapped = wrap_batch(7, &commands);
        assert_eq!(wrapped.len(), 3);
        for ((id, c), w) in commands.iter().zip(&wrapped) {
            assert_eq!(*w, wrap(7, *id, c));
        }
        assert!(wrap_batch(7, &[]).is_empty());
    }
}
