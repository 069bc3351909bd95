//! Checkpoints: an audit position that a client verified, left on the server for the
//! account's other devices, authenticated with a key derived from the storage key.
//!
//! A client that has verified the account's chain up to a position leaves a checkpoint of
//! it. A client with no memory of the account (a new device) starts from the newest
//! checkpoint that verifies instead of trusting the server's history blindly: a server
//! that went back behind it is caught. The server stores checkpoints but cannot make one
//! (it never has the storage key); it can withhold them, which leaves a new device where it
//! would be without them.
//!
//! ```text
//! checkpoint key = HKDF-SHA256(ikm = storage key, info = "keyserver/3 checkpoints")
//! mac = HMAC-SHA256(checkpoint key, "keyserver/3 checkpoint" ||
//!                   u16 BE length of user name || user name || seq (u64 BE) || head (32))
//! ```
//!
//! A key rotation replaces the storage key, and with it the checkpoint key: the server drops
//! the account's checkpoints with the old key.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{audit_chain::AuditPosition, names::UserName, seal::StorageKey};

/// HKDF label of the checkpoint key.
pub const CHECKPOINT_KEY_LABEL: &[u8] = b"keyserver/3 checkpoints";
/// HMAC label of a checkpoint.
pub const CHECKPOINT_LABEL: &[u8] = b"keyserver/3 checkpoint";

/// A verified audit position and its MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The position.
    pub position: AuditPosition,
    /// Its MAC under the checkpoint key.
    pub mac: [u8; 32],
}

fn mac(key: &StorageKey, user: &UserName, position: &AuditPosition) -> [u8; 32] {
    let k = key.derive(CHECKPOINT_KEY_LABEL);
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(k.expose_secret())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    m.update(CHECKPOINT_LABEL);
    let name = user.as_str().as_bytes();
    // User names are at most 64 bytes.
    m.update(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
    m.update(name);
    m.update(&position.seq.to_be_bytes());
    m.update(&position.head);
    m.finalize().into_bytes().into()
}

impl Checkpoint {
    /// A checkpoint of `position` of `user`'s chain, under `key`.
    pub fn new(key: &StorageKey, user: &UserName, position: AuditPosition) -> Self {
        Self {
            position,
            mac: mac(key, user, &position),
        }
    }

    /// Whether this checkpoint was made under `key` for `user` (constant time).
    pub fn verifies(&self, key: &StorageKey, user: &UserName) -> bool {
        bool::from(mac(key, user, &self.position).ct_eq(&self.mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn a_checkpoint_verifies_only_under_its_key_user_and_position() {
        let mut rng = StdRng::seed_from_u64(1);
        let key = StorageKey::generate(&mut rng);
        let alice = UserName::new("alice").unwrap();
        let p = AuditPosition {
            seq: 7,
            head: [3; 32],
        };
        let c = Checkpoint::new(&key, &alice, p);
        assert!(c.verifies(&key, &alice));
        assert!(!c.verifies(&StorageKey::generate(&mut rng), &alice));
        assert!(!c.verifies(&key, &UserName::new("bob").unwrap()));
        let moved = Checkpoint {
            position: AuditPosition { seq: 8, ..p },
            ..c
        };
        assert!(!moved.verifies(&key, &alice));
        let other_head = Checkpoint {
            position: AuditPosition { head: [4; 32], ..p },
            ..c
        };
        assert!(!other_head.verifies(&key, &alice));
    }
}
