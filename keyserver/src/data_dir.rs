//! The data directory: created on first start, reused after.
//!
//! ```text
//! keyserver-data/
//!   keyserver.toml        commented configuration (defaults)
//!   ca.pem                development CA (give it to clients); its key was thrown away
//!                         once it signed the server certificate
//!   server.pem server.key server certificate for localhost and 127.0.0.1
//!   server-setup.sealed   the sealed OPAQUE setup (0600)
//!   keyserver.db          SQLite database (when no database_url is set)
//! keyserver-data.setup.key  the key sealing the OPAQUE setup (0600), next to the data dir
//!                         and not in it (see `server_setup`)
//! ```
//!
//! Creation is all-or-nothing: files are made in a temporary sibling directory that is
//! renamed into place at the end, so a crash never leaves a half-made data dir.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    config,
    files::{FileError, io, write_public},
    pki, server_setup,
};

/// The files that make a data dir complete.
const REQUIRED: [&str; 5] = [
    "ca.pem",
    "server.pem",
    "server.key",
    "server-setup.sealed",
    "keyserver.toml",
];

/// Whether `dir` holds a complete data dir.
pub fn is_initialised(dir: &Path) -> bool {
    REQUIRED.iter().all(|f| dir.join(f).is_file())
}

/// Creates the data dir at `dir` if it does not exist, its OPAQUE setup sealed under the
/// key of `key` (made now if it is a file that does not exist). Returns whether it was
/// created.
pub fn init(dir: &Path, key: &server_setup::SetupKeySource) -> Result<bool, FileError> {
    if is_initialised(dir) {
        return Ok(false);
    }
    if dir.exists() && fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        let missing: Vec<_> = REQUIRED
            .iter()
            .filter(|f| !dir.join(f).is_file())
            .copied()
            .collect();
        return Err(FileError::Invalid(
            dir.display().to_string(),
            format!(
                "exists but is incomplete (missing {}); refusing to overwrite it",
                missing.join(", ")
            ),
        ));
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = tempdir_in(&parent)?;
    let made = (|| {
        pki::create_dev_pki(&tmp)?;
        server_setup::create(&tmp, key)?;
        write_public(&tmp.join("keyserver.toml"), config::TEMPLATE.as_bytes())
    })();
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        // An empty directory (for example a mount point): move the files in one by one.
        for f in fs::read_dir(&tmp).map_err(io(&tmp))? {
            let f = f.map_err(io(&tmp))?;
            fs::rename(f.path(), dir.join(f.file_name())).map_err(io(dir))?;
        }
        let _ = fs::remove_dir(&tmp);
    } else {
        fs::rename(&tmp, dir).map_err(io(dir))?;
    }
    Ok(true)
}

fn tempdir_in(parent: &Path) -> Result<PathBuf, FileError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut rnd = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
    let p = parent.join(format!(".keyserver-init-{:016x}", u64::from_le_bytes(rnd)));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&p)
        .map_err(io(&p))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_setup::SetupKeySource;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_makes_every_file_with_private_modes_and_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let key = SetupKeySource::default_for(&dir);
        assert!(init(&dir, &key).unwrap());
        assert!(is_initialised(&dir));
        let key_file = root.path().join("data.setup.key");
        for f in [
            dir.join("server-setup.sealed"),
            dir.join("server.key"),
            key_file.clone(),
        ] {
            let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let before = fs::read(&key_file).unwrap();
        assert!(!init(&dir, &SetupKeySource::default_for(&dir)).unwrap());
        assert_eq!(fs::read(&key_file).unwrap(), before);
        pki::load_server_identity(&dir).unwrap();
    }

    /// A copy of the data dir carries neither the key that unseals the OPAQUE setup nor
    /// the development CA's private key (which could sign a certificate for any name).
    #[test]
    fn the_data_dir_holds_no_key_that_unseals_or_signs() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        init(&dir, &SetupKeySource::default_for(&dir)).unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("setup.key") || n == "ca.key"),
            "{names:?}"
        );
        let key = fs::read(root.path().join("data.setup.key")).unwrap();
        for f in fs::read_dir(&dir).unwrap() {
            let bytes = fs::read(f.unwrap().path()).unwrap();
            assert!(!bytes.windows(32).any(|w| w == key.as_slice()));
        }
    }

    #[test]
    fn a_key_from_the_environment_is_written_nowhere() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let key = SetupKeySource::from_hex(&"5a".repeat(32)).unwrap();
        init(&dir, &key).unwrap();
        assert!(!root.path().join("data.setup.key").exists());
        server_setup::load(&dir, &key).unwrap();
    }

    #[test]
    fn refuses_to_complete_a_partial_data_dir() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("ca.pem"), b"x").unwrap();
        let key = SetupKeySource::default_for(root.path());
        assert!(matches!(
            init(root.path(), &key),
            Err(FileError::Invalid(..))
        ));
    }
}
