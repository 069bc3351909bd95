//! Key schedule of a session.
//!
//! ```text
//! session_key (64 bytes, OPAQUE)
//!   ├─ session id  = HKDF-SHA256(ikm = session_key, info = "keyserver/1 session id")[..16]
//!   ├─ c2s key     = HKDF-SHA256(ikm = session_key, info = "keyserver/1 client to server")
//!   └─ s2c key     = HKDF-SHA256(ikm = session_key, info = "keyserver/1 server to client")
//! ```

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secret::Key32;

/// HKDF label of the session id.
pub const SESSION_ID_LABEL: &[u8] = b"keyserver/1 session id";
/// HKDF label of the client-to-server key.
pub const C2S_LABEL: &[u8] = b"keyserver/1 client to server";
/// HKDF label of the server-to-client key.
pub const S2C_LABEL: &[u8] = b"keyserver/1 server to client";

/// A session's public name. Derived from the session key, so it names the session without
/// revealing anything about its keys and needs no extra message to agree on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to correlate logs; the id is not secret but need not be whole.
        write!(
            f,
            "SessionId({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Everything derived from one `session_key`.
#[derive(Debug)]
pub struct SessionKeys {
    /// The session's id.
    pub id: SessionId,
    /// Key for requests, client to server.
    pub c2s: Key32,
    /// Key for responses, server to client.
    pub s2c: Key32,
}

impl SessionKeys {
    /// Derives the session's id and keys from OPAQUE's `session_key`.
    pub fn derive(session_key: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, session_key);
        let mut id = [0u8; 16];
        let mut c2s = Zeroizing::new([0u8; 32]);
        let mut s2c = Zeroizing::new([0u8; 32]);
        // Output lengths are far below HKDF's limit; expand cannot fail.
        let _ = hk.expand(SESSION_ID_LABEL, &mut id);
        let _ = hk.expand(C2S_LABEL, c2s.as_mut());
        let _ = hk.expand(S2C_LABEL, s2c.as_mut());
        Self {
            id: SessionId(id),
            c2s: Key32::from_bytes(*c2s),
            s2c: Key32::from_bytes(*s2c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_outputs_differ_and_are_deterministic() {
        let a = SessionKeys::derive(&[1u8; 64]);
        let b = SessionKeys::derive(&[1u8; 64]);
        assert_eq!(a.id, b.id);
        assert_eq!(a.c2s.expose_secret(), b.c2s.expose_secret());
        assert_ne!(a.c2s.expose_secret(), a.s2c.expose_secret());
        assert_ne!(&a.c2s.expose_secret()[..16], &a.id.0);
        let c = SessionKeys::derive(&[2u8; 64]);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn matches_the_vector_in_the_spec() {
        // spec/vectors/session-keys.json
        let k = SessionKeys::derive(&[0u8; 64]);
        let v: &str = include_str!("../../../spec/vectors/session-keys.json");
        assert!(v.contains(&hex::encode(k.id.0)), "session id");
        assert!(v.contains(&hex::encode(k.c2s.expose_secret())), "c2s");
        assert!(v.contains(&hex::encode(k.s2c.expose_secret())), "s2c");
    }
}
