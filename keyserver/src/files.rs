//! Reading and writing the server's own files: bounded reads, and new files written whole,
//! fsynced and with the mode they need from their first byte.

use std::{
    fs,
    io::{Read, Write},
    path::Path,
};

/// What went wrong with a file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file exists but its contents are wrong.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// A file is larger than it can legitimately be.
    #[error("{0}: file is larger than {1} bytes")]
    TooLarge(String, u64),
    /// Certificate generation failed.
    #[error("cannot create the development PKI: {0}")]
    Pki(String),
    /// Sealing or opening failed.
    #[error("{0}")]
    Crypto(String),
}

/// The error maker for I/O on `path`.
pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a whole file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let f = fs::File::open(path).map_err(io(path))?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).map_err(io(path))?;
    if buf.len() as u64 > max {
        return Err(FileError::TooLarge(path.display().to_string(), max));
    }
    Ok(buf)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes a new file readable by its owner only (0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_mode(path, bytes, 0o600)
}

/// Writes a new file anyone may read (0644).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_mode(path, bytes, 0o644)
}

/// Replaces the file `path` (following a symbolic link to it) with `bytes` atomically: a
/// reader sees the old file or the new one, never a part (written beside it with the old
/// file's mode, synced, renamed over it).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    let path = fs::canonicalize(path).map_err(io(path))?;
    let mode = fs::metadata(&path).map_err(io(&path))?.permissions().mode() & 0o7777;
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".new-{:016x}", rand::random::<u64>()));
    let tmp = std::path::PathBuf::from(tmp);
    write_mode(&tmp, bytes, mode)?;
    // The umask may have narrowed the mode: set it exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(&path)(e)
    })?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bounded_refuses_large_files() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("f");
        fs::write(&p, vec![0u8; 11]).unwrap();
        assert!(matches!(read_bounded(&p, 10), Err(FileError::TooLarge(..))));
        assert_eq!(read_bounded(&p, 11).unwrap().len(), 11);
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_its_link() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real.toml");
        write_private(&real, b"old").unwrap();
        let link = root.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        replace_file(&link, b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_private_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("k");
        write_private(&p, b"x").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_private(&p, b"y").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }
}
