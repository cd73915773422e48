//! Keys from the cluster password, and the AES-256-CBC / HMAC-SHA256 primitives the
//! codec uses (encrypt-then-MAC).

use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::Aes256;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{IV_BYTES, MAC_BYTES};

type HmacSha256 = Hmac<Sha256>;
type CbcEncryptor = cbc::Encryptor<Aes256>;
type CbcDecryptor = cbc::Decryptor<Aes256>;

/// The cluster's encryption and MAC keys, derived once from the password.
///
/// Derivation: `master = PBKDF2-HMAC-SHA256(password, salt, iterations, 32 bytes)` with
/// `salt = "raft-net kdf v1\0" ‖ cluster name`; then two independent keys,
/// `enc = HMAC-SHA256(master, "raft-net aes-256-cbc key")` and
/// `mac = HMAC-SHA256(master, "raft-net hmac-sha256 key")`, so the cipher and the MAC
/// never share a key. Holds expanded key schedules, so cloning it is cheap.
#[derive(Clone)]
pub struct ClusterKeys {
    cipher: Aes256,
    mac: HmacSha256,
}

impl ClusterKeys {
    /// Runs the password KDF. Deliberately slow (hundreds of milliseconds at the
    /// default iteration count): call once, at start.
    pub fn derive(password: &str, cluster_name: &str, iterations: u32) -> ClusterKeys {
        let mut salt = b"raft-net kdf v1\0".to_vec();
        salt.extend_from_slice(cluster_name.as_bytes());
        let mut master = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut master);
        ClusterKeys::from_secret(&master, "raft-net")
    }

    /// Two independent keys from a 32-byte secret (no KDF: the secret must already be
    /// high-entropy, e.g. a key derived by [`ClusterKeys::derive`] or a session secret):
    /// `enc = HMAC-SHA256(secret, label ‖ " aes-256-cbc key")`,
    /// `mac = HMAC-SHA256(secret, label ‖ " hmac-sha256 key")`. Different labels give
    /// unrelated keys, so one secret can key both directions of a connection.
    pub fn from_secret(secret: &[u8; 32], label: &str) -> ClusterKeys {
        let subkey = |purpose: &[u8]| -> [u8; 32] {
            let mut mac =
                <HmacSha256 as Mac>::new_from_slice(secret).expect("hmac takes any key length");
            mac.update(label.as_bytes());
            mac.update(purpose);
            mac.finalize().into_bytes().into()
        };
        let enc_key = subkey(b" aes-256-cbc key");
        let mac_key = subkey(b" hmac-sha256 key");
        ClusterKeys {
            cipher: Aes256::new(&enc_key.into()),
            mac: <HmacSha256 as Mac>::new_from_slice(&mac_key).expect("hmac takes any key length"),
        }
    }

    /// Encrypts and authenticates `plain` (encrypt-then-MAC, a random IV): returns
    /// `iv ‖ ciphertext ‖ HMAC(aad ‖ iv ‖ ciphertext)`. `aad` is authenticated but not
    /// sent (e.g. a sequence number both ends count, which makes a replayed, dropped or
    /// reordered message fail [`ClusterKeys::open`]).
    ///
    /// ```
    /// use raft_net::ClusterKeys;
    /// let keys = ClusterKeys::from_secret(&[7; 32], "example");
    /// let sealed = keys.seal(&1u64.to_be_bytes(), b"hello");
    /// assert_eq!(keys.open(&1u64.to_be_bytes(), &sealed).as_deref(), Some(&b"hello"[..]));
    /// assert!(keys.open(&2u64.to_be_bytes(), &sealed).is_none(), "another sequence number");
    /// ```
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let iv: [u8; IV_BYTES] = rand::random();
        let padded = (plain.len() / IV_BYTES + 1) * IV_BYTES;
        let mut out = Vec::with_capacity(IV_BYTES + padded + MAC_BYTES);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plain);
        out.resize(IV_BYTES + padded, 0);
        let ct_len = self.encrypt_in_place(&iv, &mut out[IV_BYTES..], plain.len());
        out.truncate(IV_BYTES + ct_len);
        let mut mac = self.mac.clone();
        mac.update(aad);
        mac.update(&out);
        let tag: [u8; MAC_BYTES] = mac.finalize().into_bytes().into();
        out.extend_from_slice(&tag);
        out
    }

    /// Checks the tag of a [`ClusterKeys::seal`]ed message against `aad` (in constant
    /// time) and only then decrypts. `None` for anything wrong: too short, a bad tag
    /// (another key, another `aad`, tampering), bad padding.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let body_len = sealed.len().checked_sub(MAC_BYTES)?;
        let ct_len = body_len.checked_sub(IV_BYTES)?;
        if ct_len == 0 || ct_len % IV_BYTES != 0 {
            return None;
        }
        let (body, tag) = sealed.split_at(body_len);
        let mut mac = self.mac.clone();
        mac.update(aad);
        mac.update(body);
        mac.verify_slice(tag).ok()?;
        let iv: [u8; IV_BYTES] = body[..IV_BYTES].try_into().ok()?;
        let mut buf = body[IV_BYTES..].to_vec();
        let n = self.decrypt_in_place(&iv, &mut buf)?;
        buf.truncate(n);
        Some(buf)
    }

    /// Encrypts `buf[..plain_len]` in place with PKCS#7 padding; `buf` must be at least
    /// `plain_len` rounded up to the next whole block (a full block if already whole).
    /// Returns the ciphertext length.
    pub(crate) fn encrypt_in_place(
        &self,
        iv: &[u8; IV_BYTES],
        buf: &mut [u8],
        plain_len: usize,
    ) -> usize {
        CbcEncryptor::inner_iv_init(self.cipher.clone(), iv.into())
            .encrypt_padded_mut::<Pkcs7>(buf, plain_len)
            .expect("caller sized the buffer for the padding")
            .len()
    }

    /// Decrypts `buf` (whole blocks) in place; returns the plaintext length, or `None`
    /// if the padding is invalid.
    pub(crate) fn decrypt_in_place(&self, iv: &[u8; IV_BYTES], buf: &mut [u8]) -> Option<usize> {
        CbcDecryptor::inner_iv_init(self.cipher.clone(), iv.into())
            .decrypt_padded_mut::<Pkcs7>(buf)
            .ok()
            .map(|plain| plain.len())
    }

    /// HMAC-SHA256 of `data` with the MAC key.
    pub(crate) fn tag(&self, data: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC of `data`, compared in constant time.
    pub(crate) fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKeys(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_password_and_cluster() {
        let a = ClusterKeys::derive("pw", "c1", 10);
        let b = ClusterKeys::derive("pw", "c1", 10);
        let other_pw = ClusterKeys::derive("pw2", "c1", 10);
        let other_cluster = ClusterKeys::derive("pw", "c2", 10);
        assert_eq!(a.tag(b"x"), b.tag(b"x"));
        assert_ne!(a.tag(b"x"), other_pw.tag(b"x"));
        assert_ne!(a.tag(b"x"), other_cluster.tag(b"x"));
        assert!(a.verify(b"x", &b.tag(b"x")));
        assert!(!a.verify(b"y", &b.tag(b"x")));
    }

    #[test]
    fn encrypt_then_decrypt_round_trips_every_length() {
        let k = ClusterKeys::derive("pw", "c", 10);
        let iv = [7u8; IV_BYTES];
        for len in 0..50 {
            let plain: Vec<u8> = (0..len as u8).collect();
            let mut buf = plain.clone();
            buf.resize((len / 16 + 1) * 16, 0);
            let ct_len = k.encrypt_in_place(&iv, &mut buf, len);
            assert_eq!(ct_len, buf.len());
            if len > 0 {
                assert_ne!(&buf[..len], &plain[..], "len {len} was not encrypted");
            }
            let n = k.decrypt_in_place(&iv, &mut buf).unwrap();
            assert_eq!(&buf[..n], &plain[..]);
        }
    }

    #[test]
    fn sealed_messages_open_only_with_the_same_keys_and_aad() {
        let k = ClusterKeys::from_secret(&[1; 32], "a");
        for len in [0, 1, 15, 16, 17, 1000] {
            let plain = vec![9u8; len];
            let sealed = k.seal(b"aad", &plain);
            assert_eq!(k.open(b"aad", &sealed), Some(plain.clone()));
            assert!(k.open(b"other", &sealed).is_none());
            assert!(ClusterKeys::from_secret(&[1; 32], "b")
                .open(b"aad", &sealed)
                .is_none());
            assert!(ClusterKeys::from_secret(&[2; 32], "a")
                .open(b"aad", &sealed)
                .is_none());
            for i in [0, IV_BYTES, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 1;
                assert!(k.open(b"aad", &bad).is_none(), "flipped byte {i}");
            }
            for cut in [0, 1, IV_BYTES, sealed.len() - 1] {
                assert!(k.open(b"aad", &sealed[..cut]).is_none());
            }
        }
        assert_ne!(k.seal(b"", b"x"), k.seal(b"", b"x"), "a fresh IV each time");
    }

    #[test]
    fn derive_keeps_its_keys_through_from_secret() {
        // The subkey labels are part of the wire format: "raft-net aes-256-cbc key" and
        // "raft-net hmac-sha256 key", HMAC-keyed with the PBKDF2 master key.
        let mut salt = b"raft-net kdf v1\0".to_vec();
        salt.extend_from_slice(b"c");
        let mut master = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pw", &salt, 10, &mut master);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&master).unwrap();
        mac.update(b"raft-net hmac-sha256 key");
        let mac_key: [u8; 32] = mac.finalize().into_bytes().into();
        let mut expected = <HmacSha256 as Mac>::new_from_slice(&mac_key).unwrap();
        expected.update(b"x");
        let expected: [u8; 32] = expected.finalize().into_bytes().into();
        assert_eq!(ClusterKeys::derive("pw", "c", 10).tag(b"x"), expected);
    }

    #[test]
    fn debug_hides_keys() {
        let k = ClusterKeys::derive("pw", "c", 1);
        assert_eq!(format!("{k:?}"), "ClusterKeys(<redacted>)");
    }
}
