//! The key file of the `file` key provider, and the sealed OPAQUE setup of data dirs made
//! before keyrings.
//!
//! With the `file` provider the deployment's data keys (see `keys`) are wrapped by a 32-byte
//! key: whoever holds it and a copy of the database can unwrap the OPAQUE setup and run
//! offline guessing on every account, so it is never kept beside the database. Where it
//! lives is a [`SetupKeySource`]: by default a file *next to* the data dir
//! (`<data dir>.setup.key`, mode 0600), so that a copy or backup of the data dir does not
//! carry it; wherever the operator says (`setup_key_file`, `--setup-key`); or the key itself
//! from the environment (`KEYSERVER_SETUP_KEY`) for secret managers that inject it. A
//! deployment that must not depend on a file uses a KMS provider instead.
//!
//! Data dirs made before keyrings kept the setup in `server-setup.sealed` =
//! `version (1) || nonce (12) || ChaCha20-Poly1305(setup, aad = label)` under this key;
//! [`load`] opens it once, to import it into the keyring.

use std::path::{Component, Path, PathBuf};

use rand::{RngCore, rngs::OsRng};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use keyserver_protocol::ServerSetup;

use crate::files::{FileError, read_bounded, write_private};

const VERSION: u8 = 1;
const AAD: &[u8] = b"keyserver/1 server setup";
/// The sealed setup of a data dir made before keyrings (imported at its first start).
pub const SETUP_FILE: &str = "server-setup.sealed";
/// Where data dirs made before the key left them kept it.
const LEGACY_KEY_FILE: &str = "setup.key";
/// The environment variable that may hold the setup key itself (64 hex digits).
pub const KEY_ENV: &str = "KEYSERVER_SETUP_KEY";

/// Where the key that seals the OPAQUE setup comes from.
#[derive(Clone)]
pub enum SetupKeySource {
    /// A file of 32 random bytes, mode 0600 (made when the data dir is, if missing).
    File(PathBuf),
    /// The key itself, given by the environment; never written anywhere.
    Inline(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for SetupKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Inline(_) => f.write_str("Inline(REDACTED)"),
        }
    }
}

/// `p` made absolute, without `.` and `..` (lexically).
fn normalized(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl SetupKeySource {
    /// The key file of data dir `dir` when nothing says otherwise: next to the data dir,
    /// not in it (`./keyserver-data` → `./keyserver-data.setup.key`). A data dir made
    /// before this rule keeps the `setup.key` inside it, and [`Self::is_inside`] says so.
    pub fn default_for(dir: &Path) -> Self {
        // `.`, `..` and `d/.` name a directory whose file name is not in the path itself.
        let dir = normalized(dir);
        let legacy = dir.join(LEGACY_KEY_FILE);
        if legacy.is_file() {
            return Self::File(legacy);
        }
        let mut name = dir
            .file_name()
            .map_or_else(|| "keyserver-data".into(), |n| n.to_os_string());
        name.push(".setup.key");
        Self::File(dir.with_file_name(name))
    }

    /// The key given as 64 hex digits (the `KEYSERVER_SETUP_KEY` environment variable).
    pub fn from_hex(hex: &str) -> Result<Self, FileError> {
        let bad = || {
            FileError::Invalid(
                KEY_ENV.into(),
                "the setup key must be 64 hex digits (32 bytes)".into(),
            )
        };
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Self::Inline(key))
    }

    /// Whether the key is a file inside data dir `dir`, at any depth (where a copy of the
    /// data dir carries it together with the database). Paths are compared made absolute
    /// and without `.` and `..`, however they were written (symbolic links are not
    /// followed: the data dir may not exist yet).
    pub fn is_inside(&self, dir: &Path) -> bool {
        matches!(self, Self::File(p) if normalized(p).starts_with(normalized(dir)))
    }

    /// Where the key is, for messages (never the key itself).
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Inline(_) => format!("the {KEY_ENV} environment variable"),
        }
    }

    /// The key, made (and written, for a file) if there is none yet.
    fn load_or_create(&self) -> Result<Zeroizing<[u8; 32]>, FileError> {
        match self {
            Self::File(path) if !path.exists() => {
                let mut key = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(key.as_mut());
                write_private(path, key.as_ref())?;
                Ok(key)
            }
            _ => self.load(),
        }
    }

    fn load(&self) -> Result<Zeroizing<[u8; 32]>, FileError> {
        let path = match self {
            Self::Inline(key) => return Ok(key.clone()),
            Self::File(path) => path,
        };
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

/// Makes a new OPAQUE setup and seals it into `dir` as a data dir made before keyrings did,
/// under the key of `source` (made now if it is a file that does not exist yet). For tests
/// of the import.
pub fn create(dir: &Path, source: &SetupKeySource) -> Result<(), FileError> {
    let key = source.load_or_create()?;
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
            FileError::Invalid(
                path.display().to_string(),
                format!(
                    "does not open with the setup key in {} (wrong key, or the file was \
                     altered)",
                    source.describe()
                ),
            )
        })?;
    ServerSetup::deserialize(plain).map_err(|_| invalid("sealed contents are not an OPAQUE setup"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path) -> SetupKeySource {
        SetupKeySource::File(dir.join("k"))
    }

    #[test]
    fn a_created_setup_loads_and_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        create(dir.path(), &src).unwrap();
        let a = load(dir.path(), &src).unwrap();
        let b = load(dir.path(), &src).unwrap();
        assert_eq!(a.serialize(), b.serialize());
        // Another key does not open it.
        let other = SetupKeySource::from_hex(&"07".repeat(32)).unwrap();
        assert!(matches!(
            load(dir.path(), &other),
            Err(FileError::Invalid(..))
        ));
    }

    #[test]
    fn an_altered_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
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
        let src = source(dir.path());
        create(dir.path(), &src).unwrap();
        let setup = load(dir.path(), &src).unwrap().serialize().to_vec();
        let file = std::fs::read(dir.path().join(SETUP_FILE)).unwrap();
        assert!(!file.windows(32).any(|w| w == &setup[..32]));
    }

    #[test]
    fn the_default_key_file_is_next_to_the_data_dir_not_in_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keyserver-data");
        let SetupKeySource::File(p) = SetupKeySource::default_for(&dir) else {
            panic!()
        };
        assert_eq!(p, root.path().join("keyserver-data.setup.key"));
        assert!(!SetupKeySource::default_for(&dir).is_inside(&dir));
        // A data dir made before keeps its key where it was, and is told so.
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(LEGACY_KEY_FILE), [1u8; 32]).unwrap();
        assert!(SetupKeySource::default_for(&dir).is_inside(&dir));
    }

    /// However the data dir is written (`d/.`, `x/../d`, relative), the default key is
    /// next to it, and a key anywhere under it is inside it.
    #[test]
    fn the_default_key_is_next_to_the_data_dir_however_it_is_written() {
        let root = tempfile::tempdir().unwrap();
        let expected = root.path().join("keyserver-data.setup.key");
        for dir in [
            root.path().join("keyserver-data/."),
            root.path().join("elsewhere/../keyserver-data"),
            root.path().join("./keyserver-data/"),
        ] {
            let SetupKeySource::File(p) = SetupKeySource::default_for(&dir) else {
                panic!()
            };
            assert_eq!(p, expected, "{}", dir.display());
            assert!(!SetupKeySource::default_for(&dir).is_inside(&dir));
        }
        let dir = root.path().join("keyserver-data");
        let deep = SetupKeySource::File(root.path().join("keyserver-data/./keys/../keys/k"));
        assert!(deep.is_inside(&dir));
        assert!(deep.is_inside(&root.path().join("x/../keyserver-data/.")));
        assert!(!SetupKeySource::File(expected).is_inside(&dir));
    }

    #[test]
    fn a_key_from_the_environment_is_64_hex_digits_and_never_printed() {
        let k = SetupKeySource::from_hex(&"5a".repeat(32)).unwrap();
        assert_eq!(format!("{k:?}"), "Inline(REDACTED)");
        assert!(!k.describe().contains("5a5a"));
        for bad in [
            "",
            "ab",
            &"zz".repeat(32),
            &"ab".repeat(33),
            &"é".repeat(32),
        ] {
            assert!(SetupKeySource::from_hex(bad).is_err(), "{bad}");
        }
    }
}
