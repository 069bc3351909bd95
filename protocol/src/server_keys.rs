//! The server's key schedule: every key the server uses besides the OPAQUE setup.
//!
//! A deployment keeps one data key per purpose, each wrapped by a key-encryption key in a
//! KMS or a key file (`keyserver::keys`), and derives the rest:
//!
//! ```text
//! session-vault data key = vault key: seals session keys in the shared database
//! login-names data key   = fake seed (below)
//!   └─ credential key    = HKDF-SHA256(ikm = login-names data key,
//!                                      info = "keyserver/2 credential ids")
//! server-held-keys data key: wraps the private keys the server holds and signs with
//! ```
//!
//! A deployment made before data keys derived them all from the OPAQUE setup
//! ([`ServerKeys::derive`]); when it is imported, its vault key and fake seed become its
//! data keys, so that its sessions and its answers for unknown names do not change:
//!
//! ```text
//! OPAQUE setup (OPRF seed, AKE key pair; serialized, 128 bytes)
//!   ├─ vault key      = HKDF-SHA256(ikm = setup, info = "keyserver/1 sessions at rest")
//!   │                   seals session keys in the shared database (session::vault)
//!   ├─ fake seed      = HKDF-SHA256(ikm = setup, info = "keyserver/1 fake records")
//!   │    ├─ fake record of a name     = see handshake::login::fake_record
//!   │    ├─ unknown-name key of name  = HMAC-SHA256(fake seed, "keyserver/1 unknown login" || name)
//!   │    └─ fake credential id of name = HMAC-SHA256(fake seed,
//!   │                                      "keyserver/2 unknown credential id" || name)
//!   └─ credential key = HKDF-SHA256(ikm = setup, info = "keyserver/2 credential ids")
//!        └─ next credential id of a password change
//!                       = HMAC-SHA256(credential key, "keyserver/2 next credential id" ||
//!                                     session id (16) || current epoch (u64 BE))
//! ```
//!
//! A registration takes a random credential identifier (the keyserver draws it); a password
//! change takes the one derived here, unpredictable to anyone without the setup and the same
//! for both steps of the change, so the server needs to remember nothing between them.
//!
//! Every instance of a fleet shares the setup, so every instance derives the same keys
//! without another secret to distribute. Nothing here can fail: a key that could not be
//! derived would be a bug, never an all-zero key.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{
    ServerSetup,
    handshake::{HandshakeError, login},
    names::UserName,
    secret::Key32,
    session::{SessionId, vault::SessionVault},
};

/// HKDF label of the key that seals session keys at rest.
pub const VAULT_LABEL: &[u8] = b"keyserver/1 sessions at rest";
/// HKDF label of the seed of fake records and unknown-name keys.
pub const FAKE_SEED_LABEL: &[u8] = b"keyserver/1 fake records";
/// HMAC label of an unknown name's key.
pub const UNKNOWN_NAME_LABEL: &[u8] = b"keyserver/1 unknown login";
/// HMAC label of an unknown name's fake credential identifier.
pub const UNKNOWN_CREDENTIAL_LABEL: &[u8] = b"keyserver/2 unknown credential id";
/// HKDF label of the key that derives the credential identifiers of password changes.
pub const CREDENTIAL_KEY_LABEL: &[u8] = b"keyserver/2 credential ids";
/// HMAC label of a password change's credential identifier.
pub const NEXT_CREDENTIAL_LABEL: &[u8] = b"keyserver/2 next credential id";

/// HKDF label of the server-held keys' wrapping key of a deployment made before data keys.
pub const LEGACY_HELD_KEYS_LABEL: &[u8] = b"keyserver/4 server-held keys";

/// The server's keys besides the OPAQUE setup.
pub struct ServerKeys {
    vault: Key32,
    fake_seed: Key32,
    credentials: Key32,
    held: Key32,
}

/// The data keys of a deployment, one per purpose (see the module's documentation).
pub struct DataKeys {
    /// Seals session keys at rest.
    pub session_vault: Key32,
    /// Fake records, unknown-name keys and credential identifiers.
    pub login_names: Key32,
    /// Wraps the private keys the server holds.
    pub server_held_keys: Key32,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeys(REDACTED)")
    }
}

/// Derives the credential identifiers of password changes (see [`ServerKeys`]).
pub struct CredentialIds(Key32);

impl std::fmt::Debug for CredentialIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialIds(REDACTED)")
    }
}

impl CredentialIds {
    /// The credential identifier a password change in session `session` makes, for an
    /// account now at `epoch`.
    pub fn next(&self, session: &SessionId, epoch: u64) -> [u8; 32] {
        hmac(
            &self.0,
            &[NEXT_CREDENTIAL_LABEL, &session.0, &epoch.to_be_bytes()],
        )
    }
}

fn hmac(key: &Key32, parts: &[&[u8]]) -> [u8; 32] {
    // ring's HMAC takes a key of any length, so this cannot fail.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.expose_secret());
    let mut ctx = ring::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

fn hkdf(ikm: &[u8], label: &[u8]) -> Key32 {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit of 255 * 32: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, ikm).expand(label, out.as_mut());
    Key32::from_bytes(*out)
}

impl ServerKeys {
    /// The keys of a deployment with data keys `d`.
    pub fn from_data_keys(d: DataKeys) -> Self {
        Self {
            credentials: hkdf(d.login_names.expose_secret(), CREDENTIAL_KEY_LABEL),
            vault: d.session_vault,
            fake_seed: d.login_names,
            held: d.server_held_keys,
        }
    }

    /// The keys of a deployment imported from one made before data keys: its data keys
    /// (see [`Self::legacy_data_keys`]) with the credential key it had, derived from the
    /// setup, so that a password change begun before the import finishes after it with the
    /// credential identifier its first step used.
    pub fn imported(d: DataKeys, setup: &ServerSetup) -> Self {
        let ikm = Zeroizing::new(setup.serialize().to_vec());
        Self {
            credentials: hkdf(&ikm, CREDENTIAL_KEY_LABEL),
            ..Self::from_data_keys(d)
        }
    }

    /// The data keys a deployment made before data keys had, derived from its OPAQUE
    /// setup: its vault key and fake seed as they were (a server-held keys' key, which it
    /// did not have, is derived the same way).
    pub fn legacy_data_keys(setup: &ServerSetup) -> DataKeys {
        let ikm = Zeroizing::new(setup.serialize().to_vec());
        DataKeys {
            session_vault: hkdf(&ikm, VAULT_LABEL),
            login_names: hkdf(&ikm, FAKE_SEED_LABEL),
            server_held_keys: hkdf(&ikm, LEGACY_HELD_KEYS_LABEL),
        }
    }

    /// Every key derived from the serialized OPAQUE setup, as a deployment made before
    /// data keys did (its credential key too). For that deployment's import and for tests.
    pub fn derive(setup: &ServerSetup) -> Self {
        let ikm = Zeroizing::new(setup.serialize().to_vec());
        let d = Self::legacy_data_keys(setup);
        Self {
            vault: d.session_vault,
            fake_seed: d.login_names,
            credentials: hkdf(&ikm, CREDENTIAL_KEY_LABEL),
            held: d.server_held_keys,
        }
    }

    /// The key that wraps the private keys the server holds.
    pub fn server_held_keys(&self) -> &Key32 {
        &self.held
    }

    /// The vault that seals session keys at rest.
    pub fn vault(&self) -> SessionVault {
        SessionVault::new(self.vault.clone())
    }

    /// The fake registration record answered for `user` when no such account exists (see
    /// [`login::fake_record`]).
    pub fn fake_record(&self, user: &UserName) -> Result<Vec<u8>, HandshakeError> {
        login::fake_record(self.fake_seed.expose_secret(), user)
    }

    /// Names an unknown user in the guess-counter table without writing the name down: a
    /// database reader learns neither which names were tried nor how often each was.
    pub fn unknown_name_key(&self, user: &UserName) -> [u8; 32] {
        hmac(
            &self.fake_seed,
            &[UNKNOWN_NAME_LABEL, user.as_str().as_bytes()],
        )
    }

    /// The credential identifier answered for `user` when no such account exists: stable
    /// per name, like the fake record it goes with.
    pub fn unknown_credential_id(&self, user: &UserName) -> [u8; 32] {
        hmac(
            &self.fake_seed,
            &[UNKNOWN_CREDENTIAL_LABEL, user.as_str().as_bytes()],
        )
    }

    /// The credential identifier a password change in session `session` makes, for an
    /// account now at `epoch`.
    pub fn next_credential_id(&self, session: &SessionId, epoch: u64) -> [u8; 32] {
        self.credential_ids().next(session, epoch)
    }

    /// The derivation of password changes' credential identifiers alone, to hand to code
    /// that must own what it uses (a database job).
    pub fn credential_ids(&self) -> CredentialIds {
        CredentialIds(self.credentials.clone())
    }

    /// The seed of fake records, for the vector test and the benchmarks.
    #[doc(hidden)]
    pub fn fake_seed(&self) -> &Key32 {
        &self.fake_seed
    }

    /// The vault key, for the vector test.
    #[doc(hidden)]
    pub fn vault_key(&self) -> &Key32 {
        &self.vault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(v: &serde_json::Value, key: &str) -> Vec<u8> {
        hex::decode(v[key].as_str().unwrap()).unwrap()
    }

    fn vector() -> serde_json::Value {
        serde_json::from_str(include_str!("../../spec/vectors/server-keys.json")).unwrap()
    }

    #[test]
    fn every_key_matches_the_vector_in_the_spec() {
        let v = vector();
        let setup = ServerSetup::deserialize(&hex(&v, "setup")).unwrap();
        let keys = ServerKeys::derive(&setup);
        assert_eq!(keys.vault.expose_secret().to_vec(), hex(&v, "vault_key"));
        assert_eq!(
            keys.fake_seed.expose_secret().to_vec(),
            hex(&v, "fake_seed")
        );
        let alice = UserName::new("alice").unwrap();
        assert_eq!(
            keys.unknown_name_key(&alice).to_vec(),
            hex(&v, "unknown_name_key_alice")
        );
        assert_eq!(
            keys.fake_record(&alice).unwrap(),
            hex(&v, "fake_record_alice")
        );
    }

    #[test]
    fn an_imported_deployment_keeps_every_key_it_derived() {
        let setup = ServerSetup::deserialize(&hex(&vector(), "setup")).unwrap();
        let old = ServerKeys::derive(&setup);
        let new = ServerKeys::imported(ServerKeys::legacy_data_keys(&setup), &setup);
        for (a, b) in [
            (&old.vault, &new.vault),
            (&old.fake_seed, &new.fake_seed),
            (&old.credentials, &new.credentials),
            (&old.held, &new.held),
        ] {
            assert_eq!(a.expose_secret(), b.expose_secret());
        }
    }

    #[test]
    fn data_keys_give_the_credential_key_of_the_vector() {
        let v = vector();
        let key = |k: &str| Key32::from_bytes(hex(&v, k).try_into().unwrap());
        let keys = ServerKeys::from_data_keys(DataKeys {
            session_vault: key("vault_key"),
            login_names: key("fake_seed"),
            server_held_keys: Key32::from_bytes([3; 32]),
        });
        assert_eq!(
            keys.credentials.expose_secret().to_vec(),
            hex(&v, "data_keys_credential_key")
        );
        // The same login-names key answers unknown names as the setup it came from did.
        let alice = UserName::new("alice").unwrap();
        assert_eq!(
            keys.unknown_name_key(&alice).to_vec(),
            hex(&v, "unknown_name_key_alice")
        );
    }

    #[test]
    fn keys_differ_by_purpose_and_by_name() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let setup = ServerSetup::new(&mut rng);
        let k = ServerKeys::derive(&setup);
        assert_ne!(k.vault.expose_secret(), k.fake_seed.expose_secret());
        let (a, b) = (UserName::new("a").unwrap(), UserName::new("b").unwrap());
        assert_ne!(k.unknown_name_key(&a), k.unknown_name_key(&b));
        assert_ne!(k.fake_record(&a).unwrap(), k.fake_record(&b).unwrap());
        assert_ne!(k.unknown_credential_id(&a), k.unknown_credential_id(&b));
        assert_ne!(k.unknown_credential_id(&a), k.unknown_name_key(&a));
        let s = SessionId([1; 16]);
        assert_ne!(k.next_credential_id(&s, 1), k.next_credential_id(&s, 2));
        assert_ne!(
            k.next_credential_id(&s, 1),
            k.next_credential_id(&SessionId([2; 16]), 1)
        );
    }
}
