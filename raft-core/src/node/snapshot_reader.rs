//! Reading a snapshot stream without trusting it: fixed-width integers, length-prefixed
//! parts bounded before anything is allocated, and a clear [`RestoreError`] naming the
//! stream and the part for every way the bytes can be wrong.
//!
//! A snapshot file can be truncated by a crash of an older build, damaged on disk, or
//! (received over the network) forged; a [`StateMachine::restore_from`] that reads a
//! length and allocates it, or that reads past a short stream, turns that into an abort or
//! an out-of-memory kill. [`SnapshotReader`] is the small set of checked reads every
//! streaming restore needs; the runtime's envelope, [`KvStore`] and raft-kv use it.
//!
//! [`StateMachine::restore_from`]: super::StateMachine::restore_from
//! [`KvStore`]: super::KvStore

use std::io::{self, Read};

use serde::de::DeserializeOwned;

use super::state_machine::RestoreError;

/// Checked reads from a snapshot stream.
///
/// Every error names the stream (`what`, e.g. `"kv store snapshot"`) and, for a
/// length-prefixed part, the part (`part`, e.g. `"a record"`: errors read "cut short in
/// a record", "a record does not decode: ..."), so the log line says what was wrong where.
///
/// # Example
///
/// A stream `format u8 = 1 | count u64 LE | count x (len u32 LE | postcard u64)`:
///
/// ```
/// use raft_core::node::{RestoreError, SnapshotReader};
///
/// fn read_numbers(input: &mut dyn std::io::Read) -> Result<Vec<u64>, RestoreError> {
///     let mut r = SnapshotReader::new(input, "numbers snapshot");
///     r.expect_format(1)?;
///     let count = r.u64()?;
///     let mut numbers = Vec::new();
///     for _ in 0..count {
///         let len = r.u32()?;
///         numbers.push(r.decode(u64::from(len), 16, "a number")?);
///     }
///     r.finish()?;
///     Ok(numbers)
/// }
///
/// let mut stream = vec![1u8];
/// stream.extend_from_slice(&2u64.to_le_bytes());
/// for n in [7u64, 300] {
///     let record = postcard::to_allocvec(&n).unwrap();
///     stream.extend_from_slice(&(record.len() as u32).to_le_bytes());
///     stream.extend_from_slice(&record);
/// }
/// assert_eq!(read_numbers(&mut stream.as_slice()).unwrap(), vec![7, 300]);
///
/// // Cut short, or claiming a part larger than its bound: an error, never a panic.
/// let err = read_numbers(&mut &stream[..stream.len() - 1]).unwrap_err();
/// assert!(err.0.contains("cut short in a number"), "{err}");
/// ```
pub struct SnapshotReader<'a> {
    input: &'a mut dyn Read,
    what: &'static str,
}

impl<'a> SnapshotReader<'a> {
    /// Reads from `input`; `what` names the stream in errors.
    pub fn new(input: &'a mut dyn Read, what: &'static str) -> Self {
        Self { input, what }
    }

    fn io(&self, e: &io::Error) -> RestoreError {
        RestoreError(format!("{}: {e}", self.what))
    }

    fn exact<const N: usize>(&mut self) -> Result<[u8; N], RestoreError> {
        let mut bytes = [0u8; N];
        self.input
            .read_exact(&mut bytes)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => RestoreError(format!("{}: cut short", self.what)),
                _ => self.io(&e),
            })?;
        Ok(bytes)
    }

    /// One byte.
    ///
    /// # Errors
    /// The stream ended or failed to read.
    pub fn u8(&mut self) -> Result<u8, RestoreError> {
        Ok(self.exact::<1>()?[0])
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    /// The stream ended or failed to read.
    pub fn u32(&mut self) -> Result<u32, RestoreError> {
        Ok(u32::from_le_bytes(self.exact()?))
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    /// The stream ended or failed to read.
    pub fn u64(&mut self) -> Result<u64, RestoreError> {
        Ok(u64::from_le_bytes(self.exact()?))
    }

    /// Reads the format byte and refuses any other than `format`.
    ///
    /// # Errors
    /// The stream ended, failed, or is of another format.
    pub fn expect_format(&mut self, format: u8) -> Result<(), RestoreError> {
        match self.u8()? {
            f if f == format => Ok(()),
            f => Err(RestoreError(format!(
                "{}: unknown format {f} (this build reads {format})",
                self.what
            ))),
        }
    }

    /// Reads exactly `len` bytes of `part` into `buf` (cleared first, so one buffer
    /// serves many records), refusing a `len` over `len_max` before reading any.
    ///
    /// # Errors
    /// `len > len_max`, or the stream ended or failed before `len` bytes.
    pub fn read_part(
        &mut self,
        buf: &mut Vec<u8>,
        len: u64,
        len_max: u64,
        part: &str,
    ) -> Result<(), RestoreError> {
        if len > len_max {
            return Err(RestoreError(format!(
                "{}: {part} of {len} bytes (at most {len_max})",
                self.what
            )));
        }
        buf.clear();
        (&mut *self.input)
            .take(len)
            .read_to_end(buf)
            .map_err(|e| self.io(&e))?;
        if buf.len() as u64 != len {
            return Err(RestoreError(format!("{}: cut short in {part}", self.what)));
        }
        Ok(())
    }

    /// Reads `len` bytes of `part` (at most `len_max`) and decodes them with postcard.
    ///
    /// # Errors
    /// As [`SnapshotReader::read_part`], or the bytes are not a `T`.
    pub fn decode<T: DeserializeOwned>(
        &mut self,
        len: u64,
        len_max: u64,
        part: &str,
    ) -> Result<T, RestoreError> {
        let mut buf = Vec::new();
        self.decode_with(&mut buf, len, len_max, part)
    }

    /// [`SnapshotReader::decode`] through a buffer the caller reuses across records.
    ///
    /// # Errors
    /// As [`SnapshotReader::decode`].
    pub fn decode_with<T: DeserializeOwned>(
        &mut self,
        buf: &mut Vec<u8>,
        len: u64,
        len_max: u64,
        part: &str,
    ) -> Result<T, RestoreError> {
        self.read_part(buf, len, len_max, part)?;
        postcard::from_bytes(buf)
            .map_err(|e| RestoreError(format!("{}: {part} does not decode: {e}", self.what)))
    }

    /// The rest of the stream, for a part another reader owns (an inner state machine's
    /// stream).
    pub fn rest(&mut self) -> &mut dyn Read {
        &mut *self.input
    }

    /// Checks that the stream ends here.
    ///
    /// # Errors
    /// Bytes follow, or the stream failed to read.
    pub fn finish(self) -> Result<(), RestoreError> {
        let mut byte = [0u8; 1];
        match self.input.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(RestoreError(format!(
                "{}: bytes after the end of the snapshot",
                self.what
            ))),
            Err(e) => Err(self.io(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that fails on its second call.
    struct FailsLater(u32);
    impl Read for FailsLater {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0 += 1;
            if self.0 > 1 {
                return Err(io::Error::other("disk gone"));
            }
            buf[0] = 1;
            Ok(1)
        }
    }

    #[test]
    fn every_bad_stream_is_an_error_naming_stream_and_part() {
        let e = |r: Result<(), RestoreError>| r.unwrap_err().0;
        // Empty.
        let mut empty: &[u8] = &[];
        assert_eq!(
            e(SnapshotReader::new(&mut empty, "s").expect_format(1)),
            "s: cut short"
        );
        // Wrong format.
        let mut two: &[u8] = &[2];
        assert_eq!(
            e(SnapshotReader::new(&mut two, "s").expect_format(1)),
            "s: unknown format 2 (this build reads 1)"
        );
        // A part over its bound is refused before it is read.
        let mut buf = Vec::new();
        let mut big: &[u8] = &[0; 4];
        assert_eq!(
            e(SnapshotReader::new(&mut big, "s").read_part(&mut buf, u64::MAX, 10, "a record")),
            format!("s: a record of {} bytes (at most 10)", u64::MAX)
        );
        // Cut short inside a part.
        let mut short: &[u8] = &[0; 3];
        assert_eq!(
            e(SnapshotReader::new(&mut short, "s").read_part(&mut buf, 4, 10, "a record")),
            "s: cut short in a record"
        );
        // Undecodable part.
        let mut bad: &[u8] = &[0xff; 3];
        let r: Result<u64, _> = SnapshotReader::new(&mut bad, "s").decode(3, 10, "a number");
        assert!(r
            .unwrap_err()
            .0
            .starts_with("s: a number does not decode: "));
        // Trailing bytes.
        let mut trailing: &[u8] = &[1, 9];
        let mut r = SnapshotReader::new(&mut trailing, "s");
        r.expect_format(1).unwrap();
        assert_eq!(e(r.finish()), "s: bytes after the end of the snapshot");
        // A failing source.
        let mut failing = FailsLater(0);
        let mut r = SnapshotReader::new(&mut failing, "s");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(e(r.u64().map(drop)), "s: disk gone");
    }

    #[test]
    fn reads_integers_parts_and_hands_on_the_rest() {
        let mut stream = vec![3u8];
        stream.extend_from_slice(&7u32.to_le_bytes());
        stream.extend_from_slice(&9u64.to_le_bytes());
        stream.extend_from_slice(&postcard::to_allocvec(&"key").unwrap());
        stream.extend_from_slice(b"tail");
        let mut input = stream.as_slice();
        let mut r = SnapshotReader::new(&mut input, "s");
        r.expect_format(3).unwrap();
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), 9);
        let key: String = r.decode(4, 4, "key").unwrap();
        assert_eq!(key, "key");
        let mut tail = Vec::new();
        r.rest().read_to_end(&mut tail).unwrap();
        assert_eq!(tail, b"tail");
        r.finish().unwrap();
    }
}
