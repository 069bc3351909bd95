//! The data directory: created on first start, reused after.
//!
//! ```text
//! keyserver-data/
//!   keyserver.toml        commented configuration (defaults)
//!   ca.pem                development CA (give it to clients); its key was thrown away
//!                         once it signed the server certificate
//!   server.pem server.key server certificate for localhost and 127.0.0.1
//!   keyserver.db          SQLite database (when no database_url is set), which holds the
//!                         deployment's keyring: its data keys, wrapped (see `keys`)
//! keyserver-data.setup.key  with the `file` key provider: the key-encryption key (0600),
//!                         next to the data dir and not in it
//! ```
//!
//! The server's secrets are not in the data dir: they are in the keyring, in the database,
//! wrapped by the key provider's key. A data dir made before keyrings has a
//! `server-setup.sealed`; the first start imports it into the keyring and removes it.
//!
//! Creation is all-or-nothing: files are made in a temporary sibling directory that is
//! renamed into place at the end, so a crash never leaves a half-made data dir.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    files::{FileError, io, write_public},
    pki,
};

/// The files that make a data dir complete.
const REQUIRED: [&str; 4] = ["ca.pem", "server.pem", "server.key", "keyserver.toml"];

/// Whether `dir` holds a complete data dir.
pub fn is_initialised(dir: &Path) -> bool {
    REQUIRED.iter().all(|f| dir.join(f).is_file())
}

/// Creates the data dir at `dir` if it does not exist, with `config_text` as its
/// `keyserver.toml`. Returns whether it was created.
pub fn init(dir: &Path, config_text: &str) -> Result<bool, FileError> {
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
        write_public(&tmp.join("keyserver.toml"), config_text.as_bytes())
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
    use crate::config;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_makes_every_file_with_private_modes_and_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        assert!(init(&dir, config::TEMPLATE).unwrap());
        assert!(is_initialised(&dir));
        let mode = fs::metadata(dir.join("server.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let before = fs::read(dir.join("server.pem")).unwrap();
        assert!(!init(&dir, config::TEMPLATE).unwrap());
        assert_eq!(fs::read(dir.join("server.pem")).unwrap(), before);
        pki::load_server_identity(&dir).unwrap();
    }

    /// A copy of the data dir carries no key that unwraps or signs: not the development
    /// CA's private key (which could sign a certificate for any name), and no server secret.
    #[test]
    fn the_data_dir_holds_no_key_that_unseals_or_signs() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        init(&dir, config::TEMPLATE).unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.contains("setup") || n == "ca.key"),
            "{names:?}"
        );
    }

    #[test]
    fn refuses_to_complete_a_partial_data_dir() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("ca.pem"), b"x").unwrap();
        assert!(matches!(
            init(root.path(), config::TEMPLATE),
            Err(FileError::Invalid(..))
        ));
    }
}
