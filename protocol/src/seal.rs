//! Sealing at rest, on the client: the storage key under the master key, and each secret
//! under the storage key.
//!
//! ```text
//! export_key (OPAQUE, client only)
//!   └─ master_key  = HKDF-SHA256(ikm = export_key, info = "keyserver/1 master key")
//!        └─ sealed storage_key  (32 random bytes made at registration)
//!             └─ sealed secret, AAD binds user, secret name and version
//! ```
//!
//! Both use XChaCha20-Poly1305 with a random 192-bit nonce: keys seal few messages over a
//! long life, and a random nonce of that size never needs a counter kept in sync anywhere.
//! The blob is `version (1 byte) || nonce (24) || ciphertext || tag (16)`.

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{
    limits::{MAX_SECRET, MAX_SECRET_NAME},
    names::{NameTag, SecretName, UserName},
    secret::{Key32, SecretBytes},
};

/// Format version of a sealed blob.
pub const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
pub use crate::limits::SEAL_OVERHEAD;
const _: () = assert!(SEAL_OVERHEAD == 1 + NONCE_LEN + TAG_LEN);

/// HKDF label of the master key.
pub const MASTER_KEY_LABEL: &[u8] = b"keyserver/1 master key";
const STORAGE_KEY_AAD: &[u8] = b"keyserver/1 storage key";
const SECRET_AAD: &[u8] = b"keyserver/1 secret";
/// HKDF label of the key that tags secret names.
pub const NAME_TAG_KEY_LABEL: &[u8] = b"keyserver/3 name tags";
/// HKDF label of the key that seals secret names.
pub const NAME_KEY_LABEL: &[u8] = b"keyserver/3 names";
const NAME_AAD: &[u8] = b"keyserver/3 name";

/// A sealed blob that did not open. One variant for every cause, so that it is no oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Wrong key, wrong associated data, altered bytes, or an unknown format.
    #[error("the sealed data failed its integrity check")]
    Integrity,
    /// The plaintext is larger than the protocol allows.
    #[error("the secret is larger than {MAX_SECRET} bytes")]
    TooLarge,
}

/// The client's master key: derived from OPAQUE's export key, never leaves the client.
#[derive(Debug)]
pub struct MasterKey(Key32);

impl MasterKey {
    /// Derives the master key from OPAQUE's `export_key`.
    pub fn derive(export_key: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, export_key);
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32; expand cannot fail.
        let _ = hk.expand(MASTER_KEY_LABEL, okm.as_mut());
        Self(Key32::from_bytes(*okm))
    }

    /// Seals the storage key; the user name is associated data.
    /// Seals the storage key for the account's `epoch`; the user name and the epoch are
    /// associated data. The epoch grows with every password change and key rotation, so a
    /// sealed key (and the OPAQUE record beside it) restored from before one of them does not
    /// open as the current one.
    pub fn seal_storage_key<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        user: &UserName,
        epoch: u64,
        storage_key: &StorageKey,
    ) -> Vec<u8> {
        let aad = storage_key_aad(user, epoch);
        seal(rng, &self.0, &aad, storage_key.0.expose_secret())
    }

    /// Opens a storage key sealed for `epoch`.
    pub fn open_storage_key(
        &self,
        user: &UserName,
        epoch: u64,
        sealed: &[u8],
    ) -> Result<StorageKey, SealError> {
        let aad = storage_key_aad(user, epoch);
        let plain = open(&self.0, &aad, sealed)?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Integrity)?;
        Ok(StorageKey(Key32::from_bytes(bytes)))
    }
}

/// The key that seals every secret of an account. Made at registration, re-sealed when the
/// password changes, replaced (every secret sealed again) by a key rotation.
#[derive(Debug, Clone)]
pub struct StorageKey(Key32);

impl StorageKey {
    /// A fresh random storage key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(k.as_mut());
        Self(Key32::from_bytes(*k))
    }

    /// A key for another purpose, derived from this one with HKDF-SHA256 (empty salt,
    /// `label` as info): what is derived from the storage key changes with it.
    pub(crate) fn derive(&self, label: &[u8]) -> Key32 {
        let hk = Hkdf::<Sha256>::new(None, self.0.expose_secret());
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32; expand cannot fail.
        let _ = hk.expand(label, okm.as_mut());
        Key32::from_bytes(*okm)
    }

    /// The tag the server knows `name` by: HMAC-SHA256 under a key derived from this storage
    /// key, so the server (which never has the key) can neither read nor guess the name.
    pub fn name_tag(&self, name: &SecretName) -> NameTag {
        use hmac::{Hmac, Mac};
        let k = self.derive(NAME_TAG_KEY_LABEL);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(k.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        m.update(name.as_str().as_bytes());
        NameTag(m.finalize().into_bytes().into())
    }

    /// Names the key that [`Self::name_tag`] uses, without revealing it: a client that
    /// remembers versions by tag can tell when the tags changed (a key rotation).
    pub fn tag_key_id(&self) -> [u8; 16] {
        use hmac::{Hmac, Mac};
        let k = self.derive(NAME_TAG_KEY_LABEL);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(k.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        m.update(b"keyserver/3 tag key id");
        let mut id = [0u8; 16];
        id.copy_from_slice(&m.finalize().into_bytes()[..16]);
        id
    }

    /// Seals `name` for the server to keep beside its tag (so that `list` gives it back);
    /// the user and the tag are associated data.
    pub fn seal_name<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        user: &UserName,
        name: &SecretName,
    ) -> Vec<u8> {
        let k = self.derive(NAME_KEY_LABEL);
        let aad = name_aad(user, &self.name_tag(name));
        // Padded to the longest name, so that every sealed name has the same size and the
        // server learns nothing of a name's length: its length (one byte), the name, zeros.
        let mut padded = Zeroizing::new(vec![0u8; 1 + MAX_SECRET_NAME]);
        let bytes = name.as_str().as_bytes();
        padded[0] = u8::try_from(bytes.len())
            .unwrap_or_else(|_| unreachable!("a secret name is at most 128 bytes"));
        padded[1..=bytes.len()].copy_from_slice(bytes);
        seal(rng, &k, &aad, &padded)
    }

    /// Opens a sealed name kept under `tag`: it must open for this user and tag, and be the
    /// name the tag is of (so a server cannot show one secret under another's name).
    pub fn open_name(
        &self,
        user: &UserName,
        tag: &NameTag,
        sealed: &[u8],
    ) -> Result<SecretName, SealError> {
        let k = self.derive(NAME_KEY_LABEL);
        let plain = open(&k, &name_aad(user, tag), sealed)?;
        let (len, rest) = plain.split_first().ok_or(SealError::Integrity)?;
        let len = usize::from(*len);
        if rest.len() != MAX_SECRET_NAME
            || len > MAX_SECRET_NAME
            || rest[len..].iter().any(|b| *b != 0)
        {
            return Err(SealError::Integrity);
        }
        let name = std::str::from_utf8(&rest[..len])
            .ok()
            .and_then(|s| SecretName::new(s).ok())
            .ok_or(SealError::Integrity)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &self.name_tag(&name).0[..],
            &tag.0[..],
        )) {
            return Err(SealError::Integrity);
        }
        Ok(name)
    }

    /// Seals a secret. `version` is the version this blob will be stored as.
    pub fn seal_secret<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        user: &UserName,
        name: &SecretName,
        version: u64,
        secret: &SecretBytes,
    ) -> Result<Vec<u8>, SealError> {
        if secret.len() > MAX_SECRET {
            return Err(SealError::TooLarge);
        }
        let aad = secret_aad(user, name, version);
        Ok(seal(rng, &self.0, &aad, secret.expose_secret()))
    }

    /// Opens a sealed secret; fails unless user, name and version are the ones it was
    /// sealed with, so the server cannot swap two secrets or pass an old version as new.
    pub fn open_secret(
        &self,
        user: &UserName,
        name: &SecretName,
        version: u64,
        sealed: &[u8],
    ) -> Result<SecretBytes, SealError> {
        let aad = secret_aad(user, name, version);
        open(&self.0, &aad, sealed).map(SecretBytes::from)
    }
}

/// Plaintext length of a sealed blob of `sealed_len` bytes (what `list` reports as size).
pub fn plaintext_len(sealed_len: usize) -> usize {
    sealed_len.saturating_sub(SEAL_OVERHEAD)
}

fn name_aad(user: &UserName, tag: &NameTag) -> Vec<u8> {
    let mut aad = Vec::with_capacity(128);
    push_field(&mut aad, NAME_AAD);
    push_field(&mut aad, user.as_str().as_bytes());
    aad.extend_from_slice(&tag.0);
    aad
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded far below u16::MAX (names are at most 128 bytes).
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// The storage key's associated data. Epoch 0 is an account whose key was sealed before
/// epochs existed: its associated data has no epoch, and its first password change or key
/// rotation moves it to epoch 1.
fn storage_key_aad(user: &UserName, epoch: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    push_field(&mut aad, STORAGE_KEY_AAD);
    push_field(&mut aad, user.as_str().as_bytes());
    if epoch != 0 {
        aad.extend_from_slice(&epoch.to_be_bytes());
    }
    aad
}

fn secret_aad(user: &UserName, name: &SecretName, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(200);
    push_field(&mut aad, SECRET_AAD);
    push_field(&mut aad, user.as_str().as_bytes());
    push_field(&mut aad, name.as_str().as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn seal<R: RngCore + CryptoRng>(rng: &mut R, key: &Key32, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.expose_secret().into());
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    // Encryption fails only for plaintexts over 256 GiB; ours are bounded by MAX_SECRET.
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open(key: &Key32, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let (version, rest) = sealed.split_first().ok_or(SealError::Integrity)?;
    if *version != SEAL_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Integrity);
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.expose_secret().into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn fixture() -> (StdRng, UserName, SecretName, StorageKey) {
        let mut rng = StdRng::seed_from_u64(7);
        let sk = StorageKey::generate(&mut rng);
        (
            rng,
            UserName::new("alice").unwrap(),
            SecretName::new("wallet").unwrap(),
            sk,
        )
    }

    #[test]
    fn a_sealed_secret_opens_with_the_same_user_name_and_version() {
        let (mut rng, user, name, sk) = fixture();
        let secret = SecretBytes::new(vec![0, 1, 2, 255]);
        let sealed = sk.seal_secret(&mut rng, &user, &name, 3, &secret).unwrap();
        assert_eq!(sealed.len(), 4 + SEAL_OVERHEAD);
        assert_eq!(plaintext_len(sealed.len()), 4);
        let opened = sk.open_secret(&user, &name, 3, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), secret.expose_secret());
    }

    #[test]
    fn refuses_a_secret_under_another_name_user_or_version() {
        let (mut rng, user, name, sk) = fixture();
        let sealed = sk
            .seal_secret(&mut rng, &user, &name, 3, &SecretBytes::new(vec![9]))
            .unwrap();
        let other = SecretName::new("other").unwrap();
        let bob = UserName::new("bob").unwrap();
        assert_eq!(
            sk.open_secret(&user, &other, 3, &sealed).unwrap_err(),
            SealError::Integrity
        );
        assert_eq!(
            sk.open_secret(&bob, &name, 3, &sealed).unwrap_err(),
            SealError::Integrity
        );
        assert_eq!(
            sk.open_secret(&user, &name, 2, &sealed).unwrap_err(),
            SealError::Integrity
        );
    }

    #[test]
    fn refuses_any_flipped_bit_and_truncation() {
        let (mut rng, user, name, sk) = fixture();
        let sealed = sk
            .seal_secret(&mut rng, &user, &name, 1, &SecretBytes::new(vec![5; 10]))
            .unwrap();
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 1;
            assert!(
                sk.open_secret(&user, &name, 1, &b).is_err(),
                "bit flip at {i}"
            );
        }
        for n in 0..sealed.len() {
            assert!(sk.open_secret(&user, &name, 1, &sealed[..n]).is_err());
        }
    }

    #[test]
    fn a_name_is_tagged_and_sealed_so_that_only_the_key_holder_reads_it() {
        let (mut rng, user, name, sk) = fixture();
        let tag = sk.name_tag(&name);
        // The same name, the same tag (the server looks secrets up by it); another key,
        // another tag.
        assert_eq!(tag, sk.name_tag(&name));
        assert_ne!(tag, StorageKey::generate(&mut rng).name_tag(&name));
        let other = SecretName::new("other").unwrap();
        assert_ne!(tag, sk.name_tag(&other));
        let sealed = sk.seal_name(&mut rng, &user, &name);
        assert!(
            !sealed
                .windows(name.as_str().len())
                .any(|w| w == name.as_str().as_bytes())
        );
        assert_eq!(sk.open_name(&user, &tag, &sealed).unwrap(), name);
        // Not under another tag (one secret shown under another's name), user or key.
        assert!(sk.open_name(&user, &sk.name_tag(&other), &sealed).is_err());
        let bob = UserName::new("bob").unwrap();
        assert!(sk.open_name(&bob, &tag, &sealed).is_err());
        assert!(
            StorageKey::generate(&mut rng)
                .open_name(&user, &tag, &sealed)
                .is_err()
        );
        // A name sealed under the tag of another name does not open as either.
        let k = sk.derive(NAME_KEY_LABEL);
        let padded = |n: &[u8]| {
            let mut p = vec![0u8; 1 + MAX_SECRET_NAME];
            p[0] = u8::try_from(n.len()).unwrap();
            p[1..=n.len()].copy_from_slice(n);
            p
        };
        let aad = name_aad(&user, &tag);
        let lie = seal(&mut rng, &k, &aad, &padded(other.as_str().as_bytes()));
        assert!(sk.open_name(&user, &tag, &lie).is_err());
        let honest = seal(&mut rng, &k, &aad, &padded(name.as_str().as_bytes()));
        assert_eq!(sk.open_name(&user, &tag, &honest).unwrap(), name);
        // Only the exact padding opens: not the bare name, not a short or stuffed pad.
        let bare = seal(&mut rng, &k, &aad, name.as_str().as_bytes());
        assert!(sk.open_name(&user, &tag, &bare).is_err());
        let mut stuffed = padded(name.as_str().as_bytes());
        stuffed[MAX_SECRET_NAME] = 1;
        assert!(
            sk.open_name(&user, &tag, &seal(&mut rng, &k, &aad, &stuffed))
                .is_err()
        );
        let mut long = padded(name.as_str().as_bytes());
        long[0] = 200;
        assert!(
            sk.open_name(&user, &tag, &seal(&mut rng, &k, &aad, &long))
                .is_err()
        );
    }

    #[test]
    fn every_sealed_name_has_the_same_size() {
        let (mut rng, user, _, sk) = fixture();
        for name in ["a", "wallet-main", &"x".repeat(MAX_SECRET_NAME)] {
            let name = SecretName::new(name).unwrap();
            let sealed = sk.seal_name(&mut rng, &user, &name);
            assert_eq!(sealed.len(), crate::limits::MAX_SEALED_NAME);
            assert_eq!(
                sk.open_name(&user, &sk.name_tag(&name), &sealed).unwrap(),
                name
            );
        }
    }

    #[test]
    fn the_storage_key_round_trips_under_the_master_key_and_only_for_its_user() {
        let (mut rng, user, _, sk) = fixture();
        let mk = MasterKey::derive(&[42u8; 64]);
        let sealed = mk.seal_storage_key(&mut rng, &user, 3, &sk);
        let back = mk.open_storage_key(&user, 3, &sealed).unwrap();
        assert_eq!(back.0.expose_secret(), sk.0.expose_secret());
        let bob = UserName::new("bob").unwrap();
        assert!(mk.open_storage_key(&bob, 3, &sealed).is_err());
        let other_mk = MasterKey::derive(&[43u8; 64]);
        assert!(other_mk.open_storage_key(&user, 3, &sealed).is_err());
        // A key sealed at an earlier epoch does not open as the current one.
        assert!(mk.open_storage_key(&user, 4, &sealed).is_err());
        assert!(mk.open_storage_key(&user, 2, &sealed).is_err());
    }

    #[test]
    fn the_master_key_matches_the_vector_in_the_spec() {
        let export_key: Vec<u8> = (0u8..64).collect();
        let mk = MasterKey::derive(&export_key);
        let v: &str = include_str!("../../spec/vectors/master-key.json");
        assert!(v.contains(&hex::encode(mk.0.expose_secret())));
    }

    #[test]
    fn refuses_to_seal_more_than_the_limit() {
        let (mut rng, user, name, sk) = fixture();
        let big = SecretBytes::new(vec![0; MAX_SECRET + 1]);
        assert_eq!(
            sk.seal_secret(&mut rng, &user, &name, 1, &big).unwrap_err(),
            SealError::TooLarge
        );
        let max = SecretBytes::new(vec![0; MAX_SECRET]);
        assert!(sk.seal_secret(&mut rng, &user, &name, 1, &max).is_ok());
    }
}
