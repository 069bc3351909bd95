//! Online backup of the embedded SQLite database, and its restore into a stopped data dir.
//!
//! A backup is `VACUUM INTO` a new file from a read-only connection: one consistent
//! snapshot of every committed transaction (WAL included) while the server keeps serving,
//! written into a file made private (0600) before a byte goes in, synced, then renamed into
//! place. It holds what the database holds: wrapped keys and sealed secrets, never the
//! key-encryption key (a key file, or a KMS key), which must be kept apart.
//!
//! A restore checks the file first (it opens, passes SQLite's integrity check, and every
//! migration it records is one this server knows), takes the data dir's lock (so no server
//! is running on it), moves the current database aside as `keyserver.db.before-restore`,
//! and puts the copy in its place.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};

use crate::files::{FileError, io, write_private};

/// The data dir's database.
pub const DB_FILE: &str = "keyserver.db";
/// Where the database replaced by a restore is kept.
pub const BEFORE_RESTORE: &str = "keyserver.db.before-restore";
/// The lock a running server holds on its data dir.
pub const LOCK_FILE: &str = "keyserver.lock";

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file.
    #[error(transparent)]
    File(#[from] FileError),
    /// SQLite refused.
    #[error("{path}: {why}")]
    Sqlite {
        /// The database.
        path: String,
        /// What SQLite said.
        why: String,
    },
    /// The backup cannot be restored by this server.
    #[error("{path} cannot be restored: {why}")]
    Unusable {
        /// The backup.
        path: String,
        /// Why.
        why: String,
    },
    /// A server holds the data dir.
    #[error("a server is running on {0}: stop it before restoring")]
    Running(String),
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> BackupError + '_ {
    move |e| BackupError::Sqlite {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

fn read_only(path: &Path) -> Result<Connection, BackupError> {
    if !path.is_file() {
        return Err(BackupError::Sqlite {
            path: path.display().to_string(),
            why: "no such database".into(),
        });
    }
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err(path))?;
    c.busy_timeout(Duration::from_secs(30))
        .map_err(sqlite_err(path))?;
    Ok(c)
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Copies the database of `data_dir` to `to` (which must not exist) while it serves.
pub fn backup(data_dir: &Path, to: &Path) -> Result<(), BackupError> {
    let db = data_dir.join(DB_FILE);
    let source = read_only(&db)?;
    if to.exists() {
        return Err(FileError::Invalid(
            to.display().to_string(),
            "exists; a backup never overwrites a file".into(),
        )
        .into());
    }
    let dir = parent_of(to);
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{:016x}", rand::random::<u64>()));
    let partial = dir.join(name);
    // Private before SQLite writes into it (VACUUM INTO takes an empty file).
    write_private(&partial, b"")?;
    let done = (|| {
        let target = partial
            .to_str()
            .ok_or_else(|| FileError::Invalid(partial.display().to_string(), "not UTF-8".into()))?;
        source
            .execute("VACUUM INTO ?1", [target])
            .map_err(sqlite_err(&db))?;
        fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io(&partial))?;
        fs::rename(&partial, to).map_err(io(to))?;
        sync_dir(&dir)?;
        Ok(())
    })();
    if done.is_err() {
        let _ = fs::remove_file(&partial);
    }
    done
}

/// The data dir's lock, held while a server runs on it (see [`LOCK_FILE`]).
pub fn lock(data_dir: &Path) -> Result<Option<fs::File>, FileError> {
    let path = data_dir.join(LOCK_FILE);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// Checks that `backup` is a database this server can open: SQLite's integrity check
/// passes and every migration it records is one `known` holds.
pub fn check(backup: &Path, known: &[i64]) -> Result<(), BackupError> {
    let unusable = |why: String| BackupError::Unusable {
        path: backup.display().to_string(),
        why,
    };
    let c = read_only(backup)?;
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| unusable(format!("not a SQLite database ({e})")))?;
    if ok != "ok" {
        return Err(unusable(format!("integrity check: {ok}")));
    }
    let mut s = c
        .prepare("SELECT version FROM _sqlx_migrations WHERE success")
        .map_err(|_| unusable("not a keyserver database (no migrations)".into()))?;
    let versions = s
        .query_map([], |r| r.get::<_, i64>(0))
        .and_then(Iterator::collect::<Result<Vec<i64>, _>>)
        .map_err(|e| unusable(e.to_string()))?;
    if versions.is_empty() {
        return Err(unusable("not a keyserver database (no migrations)".into()));
    }
    if let Some(v) = versions.iter().find(|v| !known.contains(v)) {
        return Err(unusable(format!(
            "it has migration {v}, which this server does not know (made by a newer one?)"
        )));
    }
    Ok(())
}

/// Puts `from` (checked against the `known` migrations) in place of the database of the
/// stopped data dir `data_dir`; the database it replaces is kept as [`BEFORE_RESTORE`].
pub fn restore(data_dir: &Path, from: &Path, known: &[i64]) -> Result<(), BackupError> {
    check(from, known)?;
    let Some(_lock) = lock(data_dir)? else {
        return Err(BackupError::Running(data_dir.display().to_string()));
    };
    let db = data_dir.join(DB_FILE);
    let before = data_dir.join(BEFORE_RESTORE);
    if before.exists() {
        return Err(FileError::Invalid(
            before.display().to_string(),
            "exists from an earlier restore: move it away first".into(),
        )
        .into());
    }
    let incoming = data_dir.join(format!(
        "{DB_FILE}.restoring-{:016x}",
        rand::random::<u64>()
    ));
    let copied = (|| {
        write_private(&incoming, b"")?;
        fs::copy(from, &incoming).map_err(io(&incoming))?;
        fs::File::open(&incoming)
            .and_then(|f| f.sync_all())
            .map_err(io(&incoming))
    })();
    if let Err(e) = copied {
        let _ = fs::remove_file(&incoming);
        return Err(e.into());
    }
    if db.exists() {
        // Fold the current database's WAL into it, so that the file moved aside is whole
        // and no WAL is left to be replayed into the restored one.
        let c = Connection::open(&db).map_err(sqlite_err(&db))?;
        c.busy_timeout(Duration::from_secs(30))
            .map_err(sqlite_err(&db))?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sqlite_err(&db))?;
        c.pragma_update(None, "journal_mode", "DELETE")
            .map_err(sqlite_err(&db))?;
        drop(c);
        fs::rename(&db, &before).map_err(io(&db))?;
    }
    for stale in ["-wal", "-shm"] {
        let p = data_dir.join(format!("{DB_FILE}{stale}"));
        if p.exists() {
            fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    fs::rename(&incoming, &db).map_err(io(&db))?;
    sync_dir(data_dir)?;
    Ok(())
}
