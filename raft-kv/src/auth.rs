//! Client authentication on an encrypted cluster: the client port asks for proof that the
//! client knows the cluster password before it answers anything.
//!
//! Challenge-response: on connect the node sends a random 32-byte nonce; the client
//! answers `HMAC-SHA256(key, "raft-kv client auth v1" || nonce)`, where
//! `key = PBKDF2-HMAC-SHA256(password, "raft-kv client:" + cluster name, iterations)` (the
//! same iteration count as the Raft transport's, a different salt, so the two keys are
//! unrelated). The node checks the answer in constant time. The password never crosses
//! the wire, and a recorded answer is useless against another nonce. Requests and
//! answers themselves are not encrypted: keep client addresses on trusted networks.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key a client proves knowledge of.
#[derive(Clone)]
pub struct ClientKey([u8; 32]);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

const CONTEXT: &[u8] = b"raft-kv client auth v1";

impl ClientKey {
    /// Derives the key from the cluster password (slow on purpose: `iterations` rounds).
    pub fn derive(password: &str, cluster_name: &str, iterations: u32) -> Self {
        let salt = format!("raft-kv client:{cluster_name}");
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(
            password.as_bytes(),
            salt.as_bytes(),
            iterations.max(1),
            &mut key,
        );
        Self(key)
    }

    fn mac(&self, nonce: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(CONTEXT);
        mac.update(nonce);
        mac
    }

    /// The answer to `nonce`.
    pub fn prove(&self, nonce: &[u8]) -> [u8; 32] {
        self.mac(nonce).finalize().into_bytes().into()
    }

    /// Whether `proof` answers `nonce` (constant time).
    pub fn verify(&self, nonce: &[u8], proof: &[u8]) -> bool {
        self.mac(nonce).verify_slice(proof).is_ok()
    }
}

/// A fresh random nonce.
pub fn nonce() -> [u8; 32] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_key_answers_the_nonce() {
        let key = ClientKey::derive("correct horse", "c", 10);
        let n = nonce();
        let proof = key.prove(&n);
        assert!(key.verify(&n, &proof));
        assert!(
            !key.verify(&nonce(), &proof),
            "a proof is bound to its nonce"
        );
        assert!(!ClientKey::derive("wrong horse", "c", 10).verify(&n, &proof));
        assert!(!ClientKey::derive("correct horse", "other", 10).verify(&n, &proof));
        assert!(!key.verify(&n, &proof[..31]));
        assert_eq!(format!("{key:?}"), "ClientKey(<redacted>)");
    }
}
