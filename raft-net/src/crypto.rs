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
        let subkey = |label: &[u8]| -> [u8; 32] {
            let mut mac =
                <HmacSha256 as Mac>::new_from_slice(&master).expect("hmac takes any key length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        let enc_key = subkey(b"raft-net aes-256-cbc key");
        let mac_key = subkey(b"raft-net hmac-sha256 key");
        ClusterKeys {
            cipher: Aes256::new(&enc_key.into()),
            mac: <HmacSha256 as Mac>::new_from_slice(&mac_key).expect("hmac takes any key length"),
        }
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
    fn debug_hides_keys() {
        let k = ClusterKeys::derive("pw", "c", 1);
        assert_eq!(format!("{k:?}"), "ClusterKeys(<redacted>)");
    }
}
