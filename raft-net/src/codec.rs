//! Message <-> datagram: postcard, lz4, AES-256-CBC, HMAC-SHA256.
//!
//! A [`Codec`] holds what both directions share (cluster id, keys, limits). The sender
//! thread owns a [`Sealer`], the processor thread an [`Opener`]; each reuses its buffers,
//! so the steady state allocates only what the decoded message itself owns.
//!
//! ```
//! use raft_core::{Message, MessageBody};
//! use raft_net::{Codec, NetConfig};
//!
//! let mut config = NetConfig::new(1, "demo", "127.0.0.1:0");
//! config.password = Some("secret".into());
//! config.kdf_iterations = 1_000; // keep the doctest quick; use the default in production
//! let codec = Codec::new(&config);
//! let msg = Message { from: 1, to: 2, term: 3, body: MessageBody::Heartbeat { commit: 4, read_round: 0 } };
//! let datagram = codec.sealer(1).seal(&msg).unwrap().to_vec();
//! let opened = codec.opener().open(&datagram, std::time::Instant::now()).unwrap();
//! assert_eq!(opened.message, msg);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use raft_core::{Message, NodeId};

use crate::fragment::FragmentedBody;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::config::NetConfig;
use crate::crypto::ClusterKeys;
use crate::replay::{Replay, ReplayGuard, Verdict};
use crate::stats::DropKind;
use crate::wire::{self, Header};

/// Why a message could not be sealed into a datagram.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The datagram would exceed the configured maximum (or its body UDP's limit).
    #[error("message needs a {bytes}-byte datagram, the maximum is {max}")]
    TooLarge {
        /// What the datagram would have needed.
        bytes: usize,
        /// The configured maximum.
        max: usize,
    },
    /// postcard could not encode the message.
    #[error("encoding failed: {0}")]
    Encode(#[from] postcard::Error),
}

/// Why a datagram was refused, with what the logs need to name the culprit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The counter it goes under.
    pub kind: DropKind,
    /// The protocol version it claimed, once magic matched.
    pub version: Option<u8>,
    /// The sender id it claimed, once the header was readable (authenticated only if
    /// `kind` comes after the MAC check: replayed, decode error).
    pub sender: Option<NodeId>,
    /// The cluster id it claimed, once the header was readable.
    pub cluster_id: Option<u64>,
    /// Set for [`DropKind::Replayed`].
    pub replay: Option<Replay>,
}

impl Rejected {
    fn new(kind: DropKind) -> Rejected {
        Rejected {
            kind,
            version: None,
            sender: None,
            cluster_id: None,
            replay: None,
        }
    }

    fn from_header(kind: DropKind, header: &Header) -> Rejected {
        Rejected {
            kind,
            version: Some(header.version),
            sender: Some(header.sender),
            cluster_id: Some(header.cluster_id),
            replay: None,
        }
    }
}

/// A datagram that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Its header (sender, epoch, sequence number, flags).
    pub header: Header,
    /// The decoded message; `message.from == header.sender`.
    pub message: Message,
    /// Whether the sender's replay epoch changed with this datagram (it restarted).
    pub new_epoch: bool,
}

#[derive(Debug)]
struct Shared {
    cluster_id: u64,
    keys: Option<ClusterKeys>,
    compress_bytes_min: Option<usize>,
    datagram_bytes_max: usize,
    message_bytes_max: usize,
}

/// What a node's sealer and opener share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Codec {
    shared: Arc<Shared>,
}

impl Codec {
    /// A codec for `config`'s cluster; runs the password KDF if a password is set
    /// (slow by design: once per transport). Does not validate `config`.
    pub fn new(config: &NetConfig) -> Codec {
        let keys = config
            .password
            .as_deref()
            .map(|pw| ClusterKeys::derive(pw, &config.cluster_name, config.kdf_iterations));
        Codec::with_keys(
            &config.cluster_name,
            keys,
            config.datagram_bytes_max,
            config.compress_bytes_min,
        )
        .with_message_bytes_max(config.message_bytes_max)
    }

    /// The same codec with another [`NetConfig::message_bytes_max`] (the default is
    /// [`NetConfig::MESSAGE_BYTES_MAX_DEFAULT`]). Call before making sealers and
    /// openers: they keep the value they were made with.
    pub fn with_message_bytes_max(self, message_bytes_max: usize) -> Codec {
        let s = &self.shared;
        Codec {
            shared: Arc::new(Shared {
                cluster_id: s.cluster_id,
                keys: s.keys.clone(),
                compress_bytes_min: s.compress_bytes_min,
                datagram_bytes_max: s.datagram_bytes_max,
                message_bytes_max: message_bytes_max.max(wire::MAX_UDP_PAYLOAD_BYTES),
            }),
        }
    }

    /// The largest message body sealed or accepted.
    pub fn message_bytes_max(&self) -> usize {
        self.shared.message_bytes_max
    }

    /// The largest command ([`raft_core::Entry::data`] bytes) one message carries, alone
    /// in an append, fragmented if need be.
    pub fn max_entry_bytes(&self) -> u64 {
        (self.shared.message_bytes_max as u64)
            .saturating_sub(wire::APPEND_OVERHEAD_BYTES as u64 + raft_core::Entry::OVERHEAD_BYTES)
    }

    /// A codec from already-derived keys (`None`: plaintext).
    pub fn with_keys(
        cluster_name: &str,
        keys: Option<ClusterKeys>,
        datagram_bytes_max: usize,
        compress_bytes_min: Option<usize>,
    ) -> Codec {
        Codec {
            shared: Arc::new(Shared {
                cluster_id: wire::cluster_id(cluster_name),
                keys,
                compress_bytes_min,
                datagram_bytes_max: datagram_bytes_max.min(wire::MAX_UDP_PAYLOAD_BYTES),
                message_bytes_max: NetConfig::MESSAGE_BYTES_MAX_DEFAULT,
            }),
        }
    }

    /// Whether datagrams are encrypted and authenticated.
    pub fn is_encrypted(&self) -> bool {
        self.shared.keys.is_some()
    }

    /// The cluster id written into and expected in every header.
    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id
    }

    /// The largest datagram a [`Sealer`] produces.
    pub fn datagram_bytes_max(&self) -> usize {
        self.shared.datagram_bytes_max
    }

    /// See [`wire::max_append_bytes`].
    pub fn max_append_bytes(&self) -> u64 {
        wire::max_append_bytes(self.shared.datagram_bytes_max, self.is_encrypted())
    }

    /// The ranges one fragment request may carry within a datagram.
    pub fn request_ranges_max(&self) -> usize {
        let crypto = if self.shared.keys.is_some() {
            wire::ENCRYPTION_OVERHEAD_BYTES
        } else {
            0
        };
        wire::FragmentRequest::ranges_max(
            self.shared.datagram_bytes_max - wire::HEADER_BYTES - crypto,
        )
    }

    /// A sealer for datagrams from `sender`, with a fresh epoch.
    pub fn sealer(&self, sender: NodeId) -> Sealer {
        Sealer {
            shared: Arc::clone(&self.shared),
            header: Header {
                version: wire::PROTOCOL_VERSION,
                flags: 0,
                cluster_id: self.shared.cluster_id,
                sender,
                epoch: next_epoch(),
                seq: 0,
            },
            out: Vec::with_capacity(self.shared.datagram_bytes_max),
            lz4: Vec::new(),
            rng: StdRng::from_entropy(),
            message_id: 0,
        }
    }

    /// An opener with empty replay windows.
    pub fn opener(&self) -> Opener {
        Opener {
            shared: Arc::clone(&self.shared),
            replay: ReplayGuard::new(),
            plain: Vec::new(),
            inflated: Vec::new(),
        }
    }
}

/// Microseconds since the Unix epoch, strictly increasing within this process (two
/// sealers never share an epoch, even when made in the same microsecond).
fn next_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Turns messages into datagrams, reusing one output buffer.
#[derive(Debug)]
pub struct Sealer {
    shared: Arc<Shared>,
    /// The next datagram's header, but for `seq` (incremented first) and `flags`.
    header: Header,
    out: Vec<u8>,
    lz4: Vec<u8>,
    rng: StdRng,
    /// The last fragmented message's id in this epoch.
    message_id: u64,
}

impl Sealer {
    /// Encodes, maybe compresses, maybe encrypts and authenticates `msg`. The returned
    /// datagram is valid until the next call.
    ///
    /// # Errors
    /// [`SealError::TooLarge`] if it does not fit the configured maximum.
    pub fn seal(&mut self, msg: &Message) -> Result<&[u8], SealError> {
        let (body_start, iv) = self.encode(msg)?;
        self.finish(body_start, &iv)
    }

    /// Seals `msg` into one datagram, or into fragments if its body (after compression)
    /// does not fit one: `emit` gets each datagram in turn. A fragmented message's body
    /// is returned, for [`crate::fragment::ResendCache`].
    ///
    /// # Errors
    /// [`SealError::TooLarge`] if the body exceeds [`NetConfig::message_bytes_max`].
    pub fn seal_into(
        &mut self,
        msg: &Message,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<Arc<FragmentedBody>>, SealError> {
        let (body_start, iv) = self.encode(msg)?;
        let total = self.compress_and_measure(body_start)?;
        if total <= self.shared.datagram_bytes_max {
            emit(self.encrypt_and_finish(body_start, &iv, total));
            return Ok(None);
        }
        let encrypted = self.shared.keys.is_some();
        let piece_max = wire::fragment_piece_bytes_max(self.shared.datagram_bytes_max, encrypted);
        let body = self.out[body_start..].to_vec();
        let count = wire::fragment_count(body.len(), piece_max);
        debug_assert!(
            count >= 2,
            "a body that does not fit one datagram needs two"
        );
        self.message_id += 1;
        let fragmented = FragmentedBody {
            to: msg.to,
            message_id: self.message_id,
            compressed: self.header.flags & wire::FLAG_COMPRESSED != 0,
            body,
            count: count as u32,
        };
        for index in 0..fragmented.count {
            emit(self.seal_fragment(&fragmented, index));
        }
        Ok(Some(Arc::new(fragmented)))
    }

    /// Seals fragment `index` of `fragmented` (again, or for the first time) with a new
    /// sequence number and IV.
    pub fn seal_fragment(&mut self, fragmented: &FragmentedBody, index: u32) -> &[u8] {
        let compressed = if fragmented.compressed {
            wire::FLAG_COMPRESSED
        } else {
            0
        };
        let (body_start, iv) = self.start_datagram(wire::FLAG_FRAGMENT | compressed);
        fragmented.header(index).write(&mut self.out);
        self.out.extend_from_slice(fragmented.piece(index));
        self.seal_started(body_start, &iv)
    }

    /// Seals a request for missing fragments.
    pub fn seal_request(&mut self, request: &wire::FragmentRequest) -> &[u8] {
        let (body_start, iv) = self.start_datagram(wire::FLAG_FRAGMENT_REQUEST);
        request.write(&mut self.out);
        self.seal_started(body_start, &iv)
    }

    /// This sealer's epoch (in every header it writes).
    pub fn epoch(&self) -> u64 {
        self.header.epoch
    }

    /// Starts a datagram with `flags`: header and IV written, body to follow.
    fn start_datagram(&mut self, flags: u8) -> (usize, [u8; wire::IV_BYTES]) {
        self.header.seq += 1;
        self.header.flags = flags;
        self.out.clear();
        self.header.write(&mut self.out);
        let mut iv = [0u8; wire::IV_BYTES];
        if self.shared.keys.is_some() {
            self.rng.fill_bytes(&mut iv);
            self.out.extend_from_slice(&iv);
        }
        (self.out.len(), iv)
    }

    /// Encrypts and authenticates a started datagram if the cluster is encrypted.
    fn seal_started(&mut self, body_start: usize, iv: &[u8; wire::IV_BYTES]) -> &[u8] {
        let keys = self.shared.keys.clone();
        if let Some(keys) = &keys {
            self.encrypt_and_tag(keys, body_start, iv);
        }
        &self.out
    }

    /// Writes the header, the IV and the postcard body into `out`.
    fn encode(&mut self, msg: &Message) -> Result<(usize, [u8; wire::IV_BYTES]), SealError> {
        let (body_start, iv) = self.start_datagram(0);
        let out = std::mem::take(&mut self.out);
        let encoded = postcard::to_extend(msg, out);
        self.out = match encoded {
            Ok(out) => out,
            Err(e) => return Err(SealError::Encode(e)),
        };
        Ok((body_start, iv))
    }

    /// Seals arbitrary body bytes as if they were an encoded message, with the given
    /// flag for compression. For fuzzing and tests of the receive path: it lets hostile
    /// bodies past the MAC.
    #[doc(hidden)]
    pub fn seal_raw_body(&mut self, body: &[u8], compressed: bool) -> &[u8] {
        let flags = if compressed { wire::FLAG_COMPRESSED } else { 0 };
        let (body_start, iv) = self.start_datagram(flags);
        self.out.extend_from_slice(body);
        self.seal_started(body_start, &iv)
    }

    /// Seals arbitrary body bytes under arbitrary flags (the encryption flag is set as
    /// the keys say). For tests of the receive path: hostile fragments and fragment
    /// requests past the MAC.
    #[doc(hidden)]
    pub fn seal_raw(&mut self, flags: u8, body: &[u8]) -> &[u8] {
        let (body_start, iv) = self.start_datagram(flags & !wire::FLAG_ENCRYPTED);
        self.out.extend_from_slice(body);
        self.seal_started(body_start, &iv)
    }

    /// Compresses the body at `out[body_start..]` if worthwhile, checks the size, then
    /// encrypts and appends the MAC.
    fn finish(&mut self, body_start: usize, iv: &[u8; wire::IV_BYTES]) -> Result<&[u8], SealError> {
        let total = self.compress_and_measure(body_start)?;
        if total > self.shared.datagram_bytes_max {
            return Err(SealError::TooLarge {
                bytes: total,
                max: self.shared.datagram_bytes_max,
            });
        }
        Ok(self.encrypt_and_finish(body_start, iv, total))
    }

    /// Checks the body against `message_bytes_max`, compresses it if worthwhile, and
    /// returns the length of the one datagram it would make.
    fn compress_and_measure(&mut self, body_start: usize) -> Result<usize, SealError> {
        let body_len = self.out.len() - body_start;
        if body_len > self.shared.message_bytes_max {
            // Receivers bound decompression and reassembly by this.
            return Err(SealError::TooLarge {
                bytes: body_len,
                max: self.shared.message_bytes_max,
            });
        }
        if self
            .shared
            .compress_bytes_min
            .is_some_and(|min| body_len >= min)
        {
            self.compress(body_start);
        }
        let body_len = self.out.len() - body_start;
        let encrypted = self.shared.keys.is_some();
        Ok(if encrypted {
            body_start + padded_len(body_len) + wire::MAC_BYTES
        } else {
            body_start + body_len
        })
    }

    /// Encrypts and tags the body the datagram of length `total` will carry.
    fn encrypt_and_finish(
        &mut self,
        body_start: usize,
        iv: &[u8; wire::IV_BYTES],
        total: usize,
    ) -> &[u8] {
        let encrypted = self.shared.keys.is_some();
        if encrypted {
            self.header.flags |= wire::FLAG_ENCRYPTED;
        }
        self.out[5] = self.header.flags;
        let keys = self.shared.keys.clone();
        if let Some(keys) = &keys {
            self.encrypt_and_tag(keys, body_start, iv);
        }
        debug_assert_eq!(self.out.len(), total);
        &self.out
    }

    /// Replaces the body with `decompressed length (u32 LE) ‖ lz4 block` if shorter.
    fn compress(&mut self, body_start: usize) {
        let body = &self.out[body_start..];
        let needed = 4 + lz4_flex::block::get_maximum_output_size(body.len());
        if self.lz4.len() < needed {
            self.lz4.resize(needed, 0);
        }
        let Ok(n) = lz4_flex::block::compress_into(body, &mut self.lz4[4..]) else {
            return; // cannot happen with a buffer of the maximum size; send uncompressed
        };
        if 4 + n >= body.len() {
            return;
        }
        self.lz4[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        self.out.truncate(body_start);
        self.out.extend_from_slice(&self.lz4[..4 + n]);
        self.header.flags |= wire::FLAG_COMPRESSED;
    }

    fn encrypt_and_tag(
        &mut self,
        keys: &ClusterKeys,
        body_start: usize,
        iv: &[u8; wire::IV_BYTES],
    ) {
        self.out[5] = self.header.flags | wire::FLAG_ENCRYPTED;
        let body_len = self.out.len() - body_start;
        self.out.resize(body_start + padded_len(body_len), 0);
        keys.encrypt_in_place(iv, &mut self.out[body_start..], body_len);
        let tag = keys.tag(&self.out);
        self.out.extend_from_slice(&tag);
    }
}

/// PKCS#7: always at least one byte of padding, up to a whole block.
fn padded_len(len: usize) -> usize {
    (len / wire::BLOCK_BYTES + 1) * wire::BLOCK_BYTES
}

/// Turns datagrams into messages, checking everything; keeps the replay windows.
#[derive(Debug)]
pub struct Opener {
    shared: Arc<Shared>,
    replay: ReplayGuard,
    /// Decryption happens here (the datagram itself is borrowed).
    plain: Vec<u8>,
    /// Decompression target; grows once to at most UDP's limit.
    inflated: Vec<u8>,
}

impl Opener {
    /// Whether this opener requires encrypted datagrams.
    pub fn is_encrypted(&self) -> bool {
        self.shared.keys.is_some()
    }

    /// Checks, in this order: size, magic, version, header, cluster, encryption flag,
    /// MAC (constant time), replay window, decryption, decompression, decoding, and
    /// that the body's sender matches the header's. `now` drives the replay windows.
    /// For single-datagram messages only: a fragment or a fragment request is refused
    /// as [`DropKind::DecodeError`] ([`Opener::open_any`] takes every kind).
    ///
    /// Allocation is bounded by the datagram and [`NetConfig::message_bytes_max`]:
    /// buffers grow to at most that, and postcard never pre-allocates more elements
    /// than bytes remain (serde further caps any pre-allocation at 1 MiB).
    ///
    /// # Errors
    /// [`Rejected`] names the check that failed.
    pub fn open(&mut self, datagram: &[u8], now: Instant) -> Result<Opened, Rejected> {
        match self.open_any(datagram, now)? {
            Unsealed::Message(opened) => Ok(opened),
            Unsealed::Fragment { header, .. } | Unsealed::Request { header, .. } => {
                Err(Rejected::from_header(DropKind::DecodeError, &header))
            }
        }
    }

    /// As [`Opener::open`], for every kind of datagram: a whole message, a fragment of
    /// one (to give to a [`crate::fragment::Reassembler`], then
    /// [`Opener::decode_assembled`]), or a request for missing fragments.
    ///
    /// # Errors
    /// [`Rejected`] names the check that failed; a fragment or request whose own header
    /// is malformed is a [`DropKind::FragmentInvalid`].
    pub fn open_any<'a>(
        &'a mut self,
        datagram: &'a [u8],
        now: Instant,
    ) -> Result<Unsealed<'a>, Rejected> {
        if datagram.len() > wire::MAX_UDP_PAYLOAD_BYTES {
            return Err(Rejected::new(DropKind::Oversized));
        }
        if datagram.len() < wire::PREFIX_BYTES {
            return Err(Rejected::new(DropKind::Truncated));
        }
        if datagram[..4] != wire::MAGIC {
            return Err(Rejected::new(DropKind::WrongMagic));
        }
        let version = datagram[4];
        if !wire::SUPPORTED_VERSIONS.contains(&version) {
            return Err(Rejected {
                version: Some(version),
                ..Rejected::new(DropKind::WrongVersion)
            });
        }
        let Some(head) = datagram.first_chunk::<{ wire::HEADER_BYTES }>() else {
            return Err(Rejected {
                version: Some(version),
                ..Rejected::new(DropKind::Truncated)
            });
        };
        let header = Header::read(head);
        let reject = |kind| Err(Rejected::from_header(kind, &header));
        if header.cluster_id != self.shared.cluster_id {
            return reject(DropKind::WrongCluster);
        }
        let pieces = wire::FLAG_FRAGMENT | wire::FLAG_FRAGMENT_REQUEST;
        if header.flags & !wire::KNOWN_FLAGS != 0
            || head[6..8] != [0, 0]
            || header.flags & pieces == pieces
        {
            return reject(DropKind::DecodeError);
        }
        let encrypted = header.flags & wire::FLAG_ENCRYPTED != 0;
        if encrypted != self.shared.keys.is_some() {
            return reject(DropKind::SecurityMismatch);
        }
        let mut new_epoch = false;
        let body: &[u8] = match &self.shared.keys {
            None => &datagram[wire::HEADER_BYTES..],
            Some(keys) => {
                let cipher_len = datagram
                    .len()
                    .saturating_sub(wire::HEADER_BYTES + wire::IV_BYTES + wire::MAC_BYTES);
                if datagram.len() < wire::MIN_ENCRYPTED_BYTES
                    || !cipher_len.is_multiple_of(wire::BLOCK_BYTES)
                {
                    return reject(DropKind::Truncated);
                }
                let (signed, tag) = datagram.split_at(datagram.len() - wire::MAC_BYTES);
                if !keys.verify(signed, tag) {
                    return reject(DropKind::BadMac);
                }
                match self
                    .replay
                    .check(header.sender, header.epoch, header.seq, now)
                {
                    Ok(verdict) => new_epoch = verdict == Verdict::NewEpoch,
                    Err(replay) => {
                        return Err(Rejected {
                            replay: Some(replay),
                            ..Rejected::from_header(DropKind::Replayed, &header)
                        })
                    }
                }
                let iv: &[u8; wire::IV_BYTES] = signed[wire::HEADER_BYTES..][..wire::IV_BYTES]
                    .try_into()
                    .expect("length checked");
                self.plain.clear();
                self.plain
                    .extend_from_slice(&signed[wire::HEADER_BYTES + wire::IV_BYTES..]);
                match keys.decrypt_in_place(iv, &mut self.plain) {
                    Some(n) => &self.plain[..n],
                    // Only a sender with our keys and a bug gets here: the MAC passed.
                    None => return reject(DropKind::DecodeError),
                }
            }
        };
        let compressed = header.flags & wire::FLAG_COMPRESSED != 0;
        if header.flags & wire::FLAG_FRAGMENT != 0 {
            let Some((fragment, piece)) = wire::FragmentHeader::read(body) else {
                return reject(DropKind::FragmentInvalid);
            };
            return Ok(Unsealed::Fragment {
                header,
                new_epoch,
                compressed,
                fragment,
                piece,
            });
        }
        if header.flags & wire::FLAG_FRAGMENT_REQUEST != 0 {
            if compressed {
                return reject(DropKind::DecodeError);
            }
            let Some(request) = wire::FragmentRequest::read(body) else {
                return reject(DropKind::FragmentInvalid);
            };
            return Ok(Unsealed::Request { header, request });
        }
        let message = decode_body(
            &mut self.inflated,
            self.shared.message_bytes_max,
            &header,
            compressed,
            body,
        )?;
        Ok(Unsealed::Message(Opened {
            header,
            message,
            new_epoch,
        }))
    }

    /// Decompresses (if `compressed`) and decodes a body assembled from fragments whose
    /// datagrams carried `header` (any of them: they share the sender), and checks the
    /// body's sender against it.
    ///
    /// # Errors
    /// [`DropKind::DecodeError`] if it does not decode or names another sender.
    pub fn decode_assembled(
        &mut self,
        header: &Header,
        compressed: bool,
        body: &[u8],
    ) -> Result<Message, Rejected> {
        decode_body(
            &mut self.inflated,
            self.shared.message_bytes_max,
            header,
            compressed,
            body,
        )
    }
}

/// Decompresses within `message_bytes_max` and decodes a message body.
fn decode_body(
    inflated: &mut Vec<u8>,
    message_bytes_max: usize,
    header: &Header,
    compressed: bool,
    body: &[u8],
) -> Result<Message, Rejected> {
    let reject = |kind| Err(Rejected::from_header(kind, header));
    let body: &[u8] = if compressed {
        let Some((len, block)) = body.split_first_chunk::<4>() else {
            return reject(DropKind::DecodeError);
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > message_bytes_max {
            return reject(DropKind::DecodeError);
        }
        if inflated.len() < len {
            inflated.resize(len, 0);
        }
        match lz4_flex::block::decompress_into(block, &mut inflated[..len]) {
            Ok(n) if n == len => &inflated[..len],
            _ => return reject(DropKind::DecodeError),
        }
    } else {
        body
    };
    let message = match postcard::take_from_bytes::<Message>(body) {
        Ok((message, [])) => message,
        _ => return reject(DropKind::DecodeError),
    };
    if message.from != header.sender {
        return reject(DropKind::DecodeError);
    }
    Ok(message)
}

/// What a datagram that passed every check carried.
#[derive(Debug)]
pub enum Unsealed<'a> {
    /// A whole message.
    Message(Opened),
    /// One fragment of a larger message.
    Fragment {
        /// The datagram's header.
        header: Header,
        /// Whether the sender's replay epoch changed with this datagram.
        new_epoch: bool,
        /// Whether the assembled body is compressed.
        compressed: bool,
        /// Where the piece belongs.
        fragment: wire::FragmentHeader,
        /// The piece of the body.
        piece: &'a [u8],
    },
    /// A peer asks for fragments it misses.
    Request {
        /// The datagram's header.
        header: Header,
        /// What it asks for.
        request: wire::FragmentRequest,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{Entry, EntryKind, MessageBody};

    fn codec(password: Option<&str>, compress: Option<usize>) -> Codec {
        let keys = password.map(|pw| ClusterKeys::derive(pw, "test", 10));
        Codec::with_keys("test", keys, NetConfig::LAN_DATAGRAM_BYTES, compress)
    }

    fn append(n: usize, len: usize) -> Message {
        let entries = (0..n)
            .map(|i| Entry {
                term: 2,
                index: i as u64 + 1,
                kind: EntryKind::Command,
                data: format!("{:0>width$}", i, width = len).into_bytes().into(),
            })
            .collect();
        Message {
            from: 1,
            to: 2,
            term: 2,
            body: MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries,
                commit: 0,
            },
        }
    }

    #[test]
    fn round_trip_in_every_mode_and_compression_is_flagged() {
        for password in [None, Some("pw")] {
            for compress in [None, Some(0), Some(1024)] {
                let c = codec(password, compress);
                let msg = append(64, 100);
                let mut sealer = c.sealer(1);
                let datagram = sealer.seal(&msg).unwrap().to_vec();
                let flags = datagram[5];
                assert_eq!(flags & wire::FLAG_ENCRYPTED != 0, password.is_some());
                assert_eq!(
                    flags & wire::FLAG_COMPRESSED != 0,
                    compress.is_some(),
                    "{compress:?}"
                );
                let opened = c.opener().open(&datagram, Instant::now()).unwrap();
                assert_eq!(opened.message, msg);
                assert_eq!(opened.header.seq, 1);
            }
        }
    }

    #[test]
    fn incompressible_bodies_are_sent_plain() {
        let c = codec(None, Some(0));
        let mut msg = append(1, 0);
        if let MessageBody::Append { entries, .. } = &mut msg.body {
            let mut rng = StdRng::seed_from_u64(1);
            let mut data = vec![0u8; 2000];
            rng.fill_bytes(&mut data);
            entries[0].data = data.into();
        }
        let datagram = c.sealer(1).seal(&msg).unwrap().to_vec();
        assert_eq!(datagram[5] & wire::FLAG_COMPRESSED, 0);
        assert_eq!(
            c.opener().open(&datagram, Instant::now()).unwrap().message,
            msg
        );
    }

    #[test]
    fn encrypted_datagram_hides_the_payload() {
        let c = codec(Some("pw"), None);
        let mut msg = append(1, 0);
        if let MessageBody::Append { entries, .. } = &mut msg.body {
            entries[0].data = b"top secret payload".to_vec().into();
        }
        let datagram = c.sealer(1).seal(&msg).unwrap().to_vec();
        assert!(!datagram.windows(10).any(|w| w == b"top secret"));
        // Same message twice: different IVs, different ciphertexts.
        let mut s = c.sealer(1);
        let a = s.seal(&msg).unwrap().to_vec();
        let b = s.seal(&msg).unwrap().to_vec();
        assert_ne!(a[wire::HEADER_BYTES..], b[wire::HEADER_BYTES..]);
    }

    #[test]
    fn too_large_is_an_error_not_a_panic() {
        let keys = Some(ClusterKeys::derive("pw", "test", 10));
        let c = Codec::with_keys("test", keys, 1_400, None);
        let err = c.sealer(1).seal(&append(20, 100)).unwrap_err();
        assert!(
            matches!(err, SealError::TooLarge { max: 1_400, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_mac_covers_the_header() {
        let c = codec(Some("pw"), None);
        let datagram = c.sealer(1).seal(&append(1, 10)).unwrap().to_vec();
        // Flip one bit in each header byte that is not checked before the MAC.
        for at in [5, 16, 24, 32] {
            let mut bad = datagram.clone();
            bad[at] ^= 0x01;
            let kind = c.opener().open(&bad, Instant::now()).unwrap_err().kind;
            assert!(
                matches!(
                    kind,
                    DropKind::BadMac | DropKind::SecurityMismatch | DropKind::DecodeError
                ),
                "byte {at}: {kind}"
            );
        }
        let mut bad = datagram.clone();
        bad[16] ^= 0x01; // sender id
        assert_eq!(
            c.opener().open(&bad, Instant::now()).unwrap_err().kind,
            DropKind::BadMac
        );
    }
}
