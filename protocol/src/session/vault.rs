//! Session keys at rest: sealed for the shared database, so that any instance of a fleet
//! (or this one after a restart) can carry a session on, while a database reader learns
//! nothing.
//!
//! `blob = nonce (12) || ChaCha20-Poly1305(vault key, nonce, c2s key || s2c key, aad)` with
//! `aad = "keyserver/3 session at rest" || session id (16) || account (i64 BE) ||
//! user name length (u16 BE) || user name || created (i64 BE, Unix seconds) ||
//! account epoch (u64 BE)`.
//! The associated data binds what the row says about the session: a database writer who
//! points a session at another account or user, or moves its creation time (to extend its
//! life), gets a blob that no longer opens. The epoch is the account's when the session
//! was sealed (a password change or key rotation re-seals the session that made it): a
//! session row that such a change deleted, put back afterwards, does not open. The nonce is random: the vault key seals one
//! blob per login over the server's life, far below the 2^32 messages at which random
//! 96-bit nonces start to risk a collision.

use rand::{CryptoRng, RngCore};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::{
    names::UserName,
    secret::Key32,
    session::keys::{SessionId, SessionKeys},
};

const NONCE_LEN: usize = 12;
const LABEL: &[u8] = b"keyserver/3 session at rest";

/// What a stored session says about itself, bound into its sealed keys.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    /// The account it belongs to (the server's internal id).
    pub account: i64,
    /// The account's user name.
    pub user: &'a UserName,
    /// When it was opened (Unix seconds).
    pub created: i64,
    /// The account's epoch the session lives in.
    pub epoch: u64,
}

fn aad(id: SessionId, b: &Binding<'_>) -> Vec<u8> {
    let name = b.user.as_str().as_bytes();
    let mut a = Vec::with_capacity(LABEL.len() + 16 + 8 + 2 + name.len() + 8 + 8);
    a.extend_from_slice(LABEL);
    a.extend_from_slice(&id.0);
    a.extend_from_slice(&b.account.to_be_bytes());
    // User names are at most 64 bytes.
    a.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
    a.extend_from_slice(name);
    a.extend_from_slice(&b.created.to_be_bytes());
    a.extend_from_slice(&b.epoch.to_be_bytes());
    a
}

/// Seals and opens session keys under the server's vault key
/// ([`crate::server_keys::ServerKeys::vault`]).
pub struct SessionVault(Key32);

impl std::fmt::Debug for SessionVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionVault(REDACTED)")
    }
}

fn cipher(key: &Key32) -> Option<LessSafeKey> {
    // ChaCha20-Poly1305 takes exactly the 32 bytes a Key32 holds: this never fails.
    UnboundKey::new(&CHACHA20_POLY1305, key.expose_secret())
        .ok()
        .map(LessSafeKey::new)
}

impl SessionVault {
    /// A vault over `key`.
    pub fn new(key: Key32) -> Self {
        Self(key)
    }

    /// Seals a session's keys, bound to what its row says.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        keys: &SessionKeys,
        binding: &Binding<'_>,
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut buf = Zeroizing::new(Vec::with_capacity(64 + 16));
        buf.extend_from_slice(keys.c2s.expose_secret());
        buf.extend_from_slice(keys.s2c.expose_secret());
        let sealed = cipher(&self.0).is_some_and(|c| {
            c.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(keys.id, binding)),
                &mut *buf,
            )
            .is_ok()
        });
        if !sealed {
            // Unreachable (see `cipher`); an empty blob never opens, so it fails closed.
            return Vec::new();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Opens the sealed keys of session `id`, whose row says `binding`; `None` if they do
    /// not open (another server's vault, another session's blob, a row that was changed, or
    /// altered bytes).
    pub fn open(&self, id: SessionId, binding: &Binding<'_>, blob: &[u8]) -> Option<SessionKeys> {
        let (nonce, ct) = blob.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = cipher(&self.0)?
            .open_in_place(nonce, Aad::from(aad(id, binding)), &mut buf)
            .ok()?;
        let (c2s, s2c) = plain.split_at_checked(32)?;
        Some(SessionKeys {
            id,
            c2s: Key32::from_bytes(c2s.try_into().ok()?),
            s2c: Key32::from_bytes(s2c.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sealed_session_keys_open_only_under_their_id_binding_and_vault() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let vault = SessionVault::new(Key32::from_bytes([1; 32]));
        let k = SessionKeys::derive(&[1u8; 64]);
        let alice = UserName::new("alice").unwrap();
        let b = Binding {
            account: 7,
            user: &alice,
            created: 1_700_000_000,
            epoch: 3,
        };
        let blob = vault.seal(&mut rng, &k, &b);
        let back = vault.open(k.id, &b, &blob).unwrap();
        assert_eq!(back.c2s.expose_secret(), k.c2s.expose_secret());
        assert_eq!(back.s2c.expose_secret(), k.s2c.expose_secret());
        assert!(
            vault
                .open(SessionKeys::derive(&[2u8; 64]).id, &b, &blob)
                .is_none()
        );
        let other = SessionVault::new(Key32::from_bytes([2; 32]));
        assert!(other.open(k.id, &b, &blob).is_none());
        assert!(!blob.windows(32).any(|w| w == k.c2s.expose_secret()));
        // A row pointed at another account or user, made younger, or from another epoch,
        // does not open.
        let mallory = UserName::new("mallory").unwrap();
        for changed in [
            Binding { account: 8, ..b },
            Binding {
                user: &mallory,
                ..b
            },
            Binding {
                created: b.created + 3600,
                ..b
            },
            Binding { epoch: 4, ..b },
        ] {
            assert!(vault.open(k.id, &changed, &blob).is_none(), "{changed:?}");
        }
        for i in 0..blob.len() {
            let mut x = blob.clone();
            x[i] ^= 1;
            assert!(vault.open(k.id, &b, &x).is_none(), "bit {i}");
        }
        assert!(vault.open(k.id, &b, &blob[..blob.len() - 1]).is_none());
    }
}
