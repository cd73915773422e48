//! Client authentication and encryption on an encrypted cluster: the client port asks
//! for proof that the client knows the cluster password before it answers anything, and
//! then both directions of the connection are encrypted and authenticated.
//!
//! Handshake (client protocol v2):
//! 1. the node greets with a random 32-byte nonce `Ns`;
//! 2. the client answers with its own random nonce `Nc` and
//!    `proof = HMAC-SHA256(key, "raft-kv client auth v2" ‖ Ns ‖ Nc)`, where
//!    `key = PBKDF2-HMAC-SHA256(password, "raft-kv client:" + cluster name, iterations)`
//!    (the Raft transport's iteration count, a different salt, so the two keys are
//!    unrelated). The node checks it in constant time and answers `Done` or
//!    `Unauthorized` in the clear;
//! 3. from then on every frame is sealed with session keys from
//!    `secret = HMAC-SHA256(key, "raft-kv session v2" ‖ Ns ‖ Nc)`: one key pair per
//!    direction (AES-256-CBC + HMAC-SHA256, encrypt-then-MAC, `raft_net::ClusterKeys`),
//!    each frame authenticated with its sequence number in that direction, so a frame
//!    replayed, dropped, reordered or reflected back fails and closes the connection.
//!
//! The password never crosses the wire; a recorded handshake is useless against another
//! nonce; a man in the middle without the password can neither answer the challenge nor
//! read or forge a frame (a node that does not know the key cannot produce frames the
//! client accepts, so the client's first request fails against an impostor).

use hmac::{Hmac, Mac};
use raft_net::ClusterKeys;
use sha2::Sha256;

/// The key a client proves knowledge of.
#[derive(Clone)]
pub struct ClientKey([u8; 32]);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(<redacted>)")
    }
}

const CONTEXT: &[u8] = b"raft-kv client auth v2";
const SESSION_CONTEXT: &[u8] = b"raft-kv session v2";

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

    fn mac(&self, context: &[u8], server_nonce: &[u8], client_nonce: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(context);
        mac.update(server_nonce);
        mac.update(client_nonce);
        mac
    }

    /// The answer to the node's `server_nonce`, bound to the client's `client_nonce`.
    pub fn prove(&self, server_nonce: &[u8], client_nonce: &[u8]) -> [u8; 32] {
        self.mac(CONTEXT, server_nonce, client_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` answers the two nonces (constant time).
    pub fn verify(&self, server_nonce: &[u8], client_nonce: &[u8], proof: &[u8]) -> bool {
        self.mac(CONTEXT, server_nonce, client_nonce)
            .verify_slice(proof)
            .is_ok()
    }

    /// The connection's session keys, for both ends: `(client to node, node to client)`.
    pub fn session(&self, server_nonce: &[u8], client_nonce: &[u8]) -> (ClusterKeys, ClusterKeys) {
        let secret: [u8; 32] = self
            .mac(SESSION_CONTEXT, server_nonce, client_nonce)
            .finalize()
            .into_bytes()
            .into();
        (
            ClusterKeys::from_secret(&secret, "raft-kv client to node"),
            ClusterKeys::from_secret(&secret, "raft-kv node to client"),
        )
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
    fn only_the_right_key_answers_the_nonces() {
        let key = ClientKey::derive("correct horse", "c", 10);
        let (ns, nc) = (nonce(), nonce());
        let proof = key.prove(&ns, &nc);
        assert!(key.verify(&ns, &nc, &proof));
        assert!(
            !key.verify(&nonce(), &nc, &proof),
            "a proof is bound to the node's nonce"
        );
        assert!(!key.verify(&ns, &nonce(), &proof), "and to the client's");
        assert!(!ClientKey::derive("wrong horse", "c", 10).verify(&ns, &nc, &proof));
        assert!(!ClientKey::derive("correct horse", "other", 10).verify(&ns, &nc, &proof));
        assert!(!key.verify(&ns, &nc, &proof[..31]));
        assert_eq!(format!("{key:?}"), "ClientKey(<redacted>)");
    }

    #[test]
    fn session_keys_agree_per_direction_and_differ_per_connection() {
        let key = ClientKey::derive("pw", "c", 10);
        let (ns, nc) = (nonce(), nonce());
        let (c2n, n2c) = key.session(&ns, &nc);
        let (c2n_node, n2c_node) = key.session(&ns, &nc);
        let sealed = c2n.seal(b"0", b"put");
        assert_eq!(c2n_node.open(b"0", &sealed).as_deref(), Some(&b"put"[..]));
        assert!(
            n2c_node.open(b"0", &sealed).is_none(),
            "directions have their own keys"
        );
        assert!(n2c.open(b"0", &n2c_node.seal(b"0", b"ok")).is_some());
        let (other, _) = key.session(&nonce(), &nc);
        assert!(
            other.open(b"0", &sealed).is_none(),
            "each connection has its own keys"
        );
        let (wrong, _) = ClientKey::derive("wrong", "c", 10).session(&ns, &nc);
        assert!(wrong.open(b"0", &sealed).is_none());
    }
}
