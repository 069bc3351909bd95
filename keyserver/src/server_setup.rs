//! The server's long-term OPAQUE setup (OPRF seed, AKE key pair), the one secret it holds.
//!
//! At rest it is sealed with ChaCha20-Poly1305 under a 32-byte setup key:
//! `server-setup.sealed` = `version (1) || nonce (12) || AEAD(setup, aad = label)`.
//! Where the setup key lives is a [`SetupKeySource`]: outside an enclave a file (mode 0600,
//! ideally on another volume than the database, so that a stolen database or backup alone
//! does not carry it); inside a Nitro Enclave the key is released by KMS to the attested
//! enclave only. Whoever holds the setup key and the database can run offline guessing on
//! every account, so the key must never sit next to database backups.

use std::path::{Path, PathBuf};

use rand::{RngCore, rngs::OsRng};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use keyserver_protocol::ServerSetup;

use crate::files::{FileError, read_bounded, write_private};

const VERSION: u8 = 1;
const AAD: &[u8] = b"keyserver/1 server setup";
const SETUP_FILE: &str = "server-setup.sealed";
const KEY_FILE: &str = "setup.key";

/// Where the key that seals the OPAQUE setup comes from.
#[derive(Debug, Clone)]
pub enum SetupKeySource {
    /// A file of 32 random bytes, mode 0600.
    File(PathBuf),
}

impl SetupKeySource {
    /// The default: `setup.key` in the data dir.
    pub fn default_for(dir: &Path) -> Self {
        Self::File(dir.join(KEY_FILE))
    }

    fn create(&self) -> Result<Zeroizing<[u8; 32]>, FileError> {
        let Self::File(path) = self;
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        write_private(path, key.as_ref())?;
        Ok(key)
    }

    fn load(&self) -> Result<Zeroizing<[u8; 32]>, FileError> {
        let Self::File(path) = self;
        let bytes = Zeroizing::new(read_bounded(path, 64)?);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            FileError::Invalid(
                path.display().to_string(),
                "a setup key is exactly 32 bytes".into(),
            )
        })?;
        Ok(Zeroizing::new(key))
    }
}

fn cipher(key: &[u8; 32]) -> Result<LessSafeKey, FileError> {
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .map_err(|_| FileError::Crypto("cannot load the setup key".into()))
}

/// Makes a new OPAQUE setup and seals it into `dir`.
pub fn create(dir: &Path, source: &SetupKeySource) -> Result<(), FileError> {
    let key = source.create()?;
    let setup = ServerSetup::new(&mut OsRng);
    let mut buf = Zeroizing::new(setup.serialize().to_vec());
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    cipher(&key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut *buf,
        )
        .map_err(|_| FileError::Crypto("cannot seal the server setup".into()))?;
    let mut out = Vec::with_capacity(1 + 12 + buf.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    write_private(&dir.join(SETUP_FILE), &out)
}

/// Opens the sealed OPAQUE setup in `dir`.
pub fn load(dir: &Path, source: &SetupKeySource) -> Result<ServerSetup, FileError> {
    let path = dir.join(SETUP_FILE);
    let invalid = |why: &str| FileError::Invalid(path.display().to_string(), why.to_string());
    let key = source.load()?;
    let sealed = read_bounded(&path, 4096)?;
    let (version, rest) = sealed.split_first().ok_or_else(|| invalid("empty file"))?;
    if *version != VERSION || rest.len() < 12 + 16 {
        return Err(invalid("unknown format"));
    }
    let (nonce, ct) = rest.split_at(12);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid("bad nonce"))?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let plain = cipher(&key)?
        .open_in_place(nonce, Aad::from(AAD), &mut buf)
        .map_err(|_| {
            invalid("does not open with the setup key (wrong key, or the file was altered)")
        })?;
    ServerSetup::deserialize(plain).map_err(|_| invalid("sealed contents are not an OPAQUE setup"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_setup_loads_and_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let src = SetupKeySource::default_for(dir.path());
        create(dir.path(), &src).unwrap();
        let a = load(dir.path(), &src).unwrap();
        let b = load(dir.path(), &src).unwrap();
        assert_eq!(a.serialize(), b.serialize());
        // Another key does not open it.
        std::fs::write(dir.path().join(KEY_FILE), [7u8; 32]).unwrap();
        assert!(matches!(
            load(dir.path(), &src),
            Err(FileError::Invalid(..))
        ));
    }

    #[test]
    fn an_altered_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = SetupKeySource::default_for(dir.path());
        create(dir.path(), &src).unwrap();
        let p = dir.path().join(SETUP_FILE);
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(load(dir.path(), &src).is_err());
    }

    #[test]
    fn the_sealed_file_does_not_contain_the_setup_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let src = SetupKeySource::default_for(dir.path());
        create(dir.path(), &src).unwrap();
        let setup = load(dir.path(), &src).unwrap().serialize().to_vec();
        let file = std::fs::read(dir.path().join(SETUP_FILE)).unwrap();
        assert!(!file.windows(32).any(|w| w == &setup[..32]));
    }
}
