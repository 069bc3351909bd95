//! The embedded backend: one SQLite file in WAL mode, written with group commit.
//!
//! Every write job goes to one writer thread that owns the only writing connection. It
//! takes every job waiting for it (up to [`MAX_BATCH`]), runs each inside its own savepoint
//! of one transaction (a job that fails is rolled back alone), commits once, and only then
//! answers all of them. `synchronous = FULL` for a batch holding any [`Durability::Disk`]
//! job: the commit is on disk before any of its jobs is acknowledged, so neither a killed
//! process nor a power cut loses an acknowledged change, and a change is never half
//! applied. One fsync serves the whole batch, so throughput grows with the number of
//! requests in flight instead of being the disk's fsync rate.
//!
//! The writer uses rusqlite on a plain thread: its statements run where the data is, where
//! an async driver would hand every statement to a worker thread and back (≈ 15 µs each
//! here, most of a batch's time). A job is an `async` block over [`Tx`] (the rules above
//! are written once for both backends), but nothing in this backend ever waits: the writer
//! polls a job once and it is done. Read jobs run on a small pool of read-only connections
//! on blocking threads, and see the last committed state.
//!
//! Schema migrations run with sqlx at start; rusqlite and sqlx link the same
//! `libsqlite3-sys`, so one SQLite library is in the process.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use async_trait::async_trait;
use keyserver_protocol::{
    KeyName, NameTag, UserName, audit_chain::AuditEvent, ops::StoredCheckpoint,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    AccountId, AccountRow, Backend, Credentials, Durability, Guesses, HeldKeyRow, Job, KeyUsage,
    NewAccount, RawAccount, RawEvent, RawHeldKey, RequestId, SecretListing, SecretRow, SessionRow,
    SessionState, StagedRow, StorageError, StoredSession, Tx, UnknownRow, account_columns,
    checkpoint_of, hash_of, held_key_columns, i64_of, limit_of, tag_of, u64_of, user_of,
};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The versions of every migration this server knows (a backup with another is refused).
pub fn known_migrations() -> Vec<i64> {
    MIGRATOR.iter().map(|m| m.version).collect()
}

/// Most jobs committed together.
pub const MAX_BATCH: usize = 1024;

/// The page size of a new database file.
const PAGE_SIZE: u32 = 1024;

/// The writer's page cache, KiB.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Jobs that may wait for the writer; senders wait beyond that.
const QUEUE: usize = 4096;

/// Read-only connections, each used by one read job at a time.
const READERS: usize = 4;

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => Self::Corrupt(e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// The SQLite backend.
#[derive(Debug)]
pub struct SqliteBackend {
    jobs: mpsc::Sender<WriteJob>,
    readers: Readers,
    observer: Arc<std::sync::OnceLock<super::CommitObserver>>,
}

impl SqliteBackend {
    /// Opens (creating if needed, owner-only) the database at `path` and applies
    /// migrations.
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
        create_private(path)?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Applies to a new file only. Rows here are small and land on pages scattered
            // by account, so every change dirties a few pages and every commit writes them
            // whole to the WAL: 1 KiB pages write a quarter of what 4 KiB pages do.
            .page_size(PAGE_SIZE);
        let migrate = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        MIGRATOR
            .run(&migrate)
            .await
            .map_err(|e| StorageError::Unavailable(format!("migration failed: {e}")))?;
        migrate.close().await;
        let observer = Arc::new(std::sync::OnceLock::new());
        Ok(Self {
            jobs: start_writer(path, observer.clone())?,
            readers: Readers::new(path.to_path_buf()),
            observer,
        })
    }
}

/// Creates the database file with mode 0600 before SQLite does, so that it and the `-wal`
/// and `-shm` files SQLite makes beside it (with the database file's mode) are private from
/// their first byte: they hold OPAQUE records and ciphertexts.
fn create_private(path: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StorageError::Unavailable(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn write(&self, durability: Durability, job: Job) -> Result<(), StorageError> {
        let (done, answer) = oneshot::channel();
        let stopped = || StorageError::Unavailable("the database writer has stopped".into());
        self.jobs
            .send(WriteJob {
                durability,
                job,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn read(&self, job: Job) -> Result<(), StorageError> {
        self.readers.run(job).await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn observe_commits(&self, observer: super::CommitObserver) {
        let _ = self.observer.set(observer);
    }
}

/// Runs a job that never waits (every primitive of [`SqliteTx`] is synchronous) to its end.
fn run_now(job: Job, tx: &mut SqliteTx) -> Result<(), StorageError> {
    let mut fut = job(tx);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(StorageError::Unavailable(
            "a database job waited on something outside the database".into(),
        )),
    }
}

/// Runs a job, turning a panic into an error: a job has no business panicking, and if one
/// does it fails alone and the thread lives on.
fn run_caught(job: Job, tx: &mut SqliteTx) -> Result<(), StorageError> {
    catch_unwind(AssertUnwindSafe(|| run_now(job, tx))).unwrap_or_else(|_| {
        Err(StorageError::Unavailable(
            "a database job failed unexpectedly".into(),
        ))
    })
}

/// The read-only connections.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
    slots: Semaphore,
}

impl Readers {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Arc::new(Mutex::new(Vec::new())),
            slots: Semaphore::new(READERS),
        }
    }

    async fn run(&self, job: Job) -> Result<(), StorageError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| StorageError::Unavailable("the readers are closed".into()))?;
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let (path, idle) = (self.path.clone(), self.idle.clone());
        tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => open_reader(&path)?,
            };
            let mut tx = SqliteTx::new(conn);
            exec(&tx.conn, "BEGIN")?;
            let r = run_caught(job, &mut tx);
            // A read transaction has nothing to commit; ending it frees its snapshot.
            exec(&tx.conn, "COMMIT")?;
            idle.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(tx.conn);
            r
        })
        .await
        .map_err(|_| StorageError::Unavailable("a read job failed unexpectedly".into()))?
    }
}

fn open_reader(path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// An account's live secrets in name order: its own statement, so that it can use the
/// index of live secrets (a condition with a parameter in it could not).
const LIST_LIVE: &str = "SELECT tag, sealed_name, version, length(sealed), created_at \
    FROM secrets WHERE account_id = ?1 AND sealed IS NOT NULL AND tag > ?2 ORDER BY tag LIMIT ?3";

/// A session's state and its account's columns ([`account_columns`], from column 2 on).
/// The inner select names the columns once; SQLite flattens it into two key lookups.
const SESSION_STATE: &str = concat!(
    "SELECT s.reauthed_at, s.epoch, a.* FROM sessions s JOIN (SELECT ",
    account_columns!(),
    " FROM accounts) a ON a.id = s.account_id WHERE s.id = ?1"
);

/// An account's secrets, live and deleted, in name order.
const LIST_ALL: &str = "SELECT tag, sealed_name, version, length(sealed), created_at \
    FROM secrets WHERE account_id = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3";

/// One write job for the writer thread.
struct WriteJob {
    durability: Durability,
    job: Job,
    done: oneshot::Sender<Result<(), StorageError>>,
}

fn start_writer(
    path: &Path,
    observer: Arc<std::sync::OnceLock<super::CommitObserver>>,
) -> Result<mpsc::Sender<WriteJob>, StorageError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Unavailable(format!(
            "the database refused WAL mode ({mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer reads the pages it changes: keep them in memory (at most this many KiB)
    // rather than read them back from the file.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Checkpoints (copying the WAL back into the database file, two fsyncs) would run
    // inside the writer's commits every 1000 pages and stall every change waiting behind
    // them; a thread of their own runs them beside the writer instead.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let checkpoints = Connection::open(path)?;
    checkpoints.busy_timeout(Duration::from_secs(10))?;
    checkpoints.pragma_update(None, "synchronous", "FULL")?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || checkpoint_loop(&checkpoints, &stopped))
        .map_err(|e| StorageError::Unavailable(format!("cannot start checkpoints: {e}")))?;
    let (jobs, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            write_loop(SqliteTx::new(conn), rx, &observer);
            // The last change is committed: one more checkpoint, then the thread ends.
            drop(stop);
        })
        .map_err(|e| StorageError::Unavailable(format!("cannot start the writer: {e}")))?;
    Ok(jobs)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL size beyond which a checkpoint also truncates it (waiting for the writer), KiB.
const WAL_TRUNCATE_KIB: u64 = 64 * 1024;

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] without blocking
/// the writer or readers (PASSIVE), and truncates it when it has grown past
/// [`WAL_TRUNCATE_KIB`]; ends with a last checkpoint when the writer is gone.
fn checkpoint_loop(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let last = match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        let mode = if last || wal_kib(conn) > WAL_TRUNCATE_KIB {
            "TRUNCATE"
        } else {
            "PASSIVE"
        };
        // (busy, WAL frames, frames checkpointed); a failure is retried next time.
        let done = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(0)
        });
        if let Err(e) = done {
            tracing::warn!(error = %e, "checkpoint failed");
        }
        if last {
            return;
        }
    }
}

/// The WAL's size, KiB (0 if it cannot be read).
fn wal_kib(conn: &Connection) -> u64 {
    conn.path()
        .map(|p| format!("{p}-wal"))
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len() / 1024)
}

fn write_loop(
    mut tx: SqliteTx,
    mut rx: mpsc::Receiver<WriteJob>,
    observer: &std::sync::OnceLock<super::CommitObserver>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut synced = Durability::Disk;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // The batch is as durable as its most demanding job.
        let needed = if batch.iter().any(|j| j.durability == Durability::Disk) {
            Durability::Disk
        } else {
            Durability::Process
        };
        if needed != synced {
            let level = if needed == Durability::Disk {
                "FULL"
            } else {
                "NORMAL"
            };
            match tx.conn.pragma_update(None, "synchronous", level) {
                Ok(()) => synced = needed,
                Err(e) => {
                    // Never commit a change with less than it needs: fail this batch.
                    fail(&mut batch, &e.to_string());
                    continue;
                }
            }
        }
        let (jobs, started) = (batch.len(), crate::clock::Stopwatch::start());
        commit_batch(&mut tx, &mut batch);
        if let Some(o) = observer.get() {
            (o.0)(started.elapsed(), jobs);
        }
    }
}

/// Answers every job of `batch` with an error, running none.
fn fail(batch: &mut Vec<WriteJob>, why: &str) {
    tracing::warn!(error = why, "database batch not run");
    for j in batch.drain(..) {
        let _ = j.done.send(Err(StorageError::Unavailable(format!(
            "the batch could not start: {why}"
        ))));
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs every job of `batch` in one transaction, one savepoint each, commits, answers.
fn commit_batch(tx: &mut SqliteTx, batch: &mut Vec<WriteJob>) {
    let mut answers = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        exec(&tx.conn, "BEGIN IMMEDIATE")?;
        for WriteJob { job, done, .. } in batch.drain(..) {
            exec(&tx.conn, "SAVEPOINT job")?;
            tx.seen = None;
            let result = run_caught(job, tx);
            if result.is_err() {
                exec(&tx.conn, "ROLLBACK TO job")?;
            }
            exec(&tx.conn, "RELEASE job")?;
            answers.push((done, result));
        }
        exec(&tx.conn, "COMMIT")
    })();
    // Jobs not run (an error above stopped the batch) drop their senders: their callers
    // hear that the writer stopped, and nothing of theirs was committed.
    batch.clear();
    let failure = outcome.err().map(|e| e.to_string());
    if failure.is_some() && !tx.conn.is_autocommit() {
        let _ = tx.conn.execute_batch("ROLLBACK");
    }
    for (done, result) in answers {
        let answer = match &failure {
            Some(e) => Err(StorageError::Unavailable(format!("commit failed: {e}"))),
            None => result,
        };
        let _ = done.send(answer);
    }
}

/// A connection running a job: the writer's (inside a savepoint of the batch) or a
/// reader's (inside a read transaction).
struct SqliteTx {
    conn: Connection,
    /// The account row this job last read or saved. Nothing but the job's own statements
    /// changes what it sees (the writer's transaction holds the database's only write lock;
    /// a reader's transaction reads one snapshot), and the only one of them that writes
    /// the row's columns is [`Tx::save_account`], which keeps what it saved: reading the
    /// row again (a handler's own read, the audit position every answer carries) needs no
    /// statement. Cleared before every job.
    seen: Option<AccountRow>,
}

impl SqliteTx {
    const fn new(conn: Connection) -> Self {
        Self { conn, seen: None }
    }

    /// Keeps `row` as the account this job last saw.
    fn keep(&mut self, row: Option<&AccountRow>) {
        if let Some(r) = row {
            self.seen = Some(r.clone());
        }
    }
}

fn account_row(r: &Row<'_>) -> rusqlite::Result<RawAccount> {
    account_row_at(r, 0)
}

/// The account columns ([`account_columns`]) of `r`, from its column `at` on.
fn account_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<RawAccount> {
    Ok(RawAccount {
        id: r.get(at)?,
        user: r.get(at + 1)?,
        failed: r.get(at + 2)?,
        last_attempt: r.get(at + 3)?,
        audit_seq: r.get(at + 4)?,
        audit_head: r.get(at + 5)?,
        live_secrets: r.get(at + 6)?,
        epoch: r.get(at + 7)?,
        lockout_logged: r.get(at + 8)?,
    })
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        seq: r.get(0)?,
        time: r.get(1)?,
        kind: r.get(2)?,
        secret: r.get(3)?,
        outcome: r.get(4)?,
        hash: r.get(5)?,
        version: r.get(6)?,
        key: r.get(7)?,
        digest: r.get(8)?,
    })
}

fn held_key_row(r: &Row<'_>) -> rusqlite::Result<RawHeldKey> {
    Ok(RawHeldKey {
        name: r.get(0)?,
        algorithm: r.get(1)?,
        public_key: r.get(2)?,
        sealed_key: r.get(3)?,
        exportable: r.get::<_, i64>(4)? != 0,
        created: r.get(5)?,
        signatures: r.get(6)?,
        window_start: r.get(7)?,
        window_count: r.get(8)?,
    })
}

#[async_trait]
impl Tx for SqliteTx {
    async fn insert_account(
        &mut self,
        new: &NewAccount<'_>,
    ) -> Result<Option<AccountRow>, StorageError> {
        let row = self
            .conn
            .prepare_cached(concat!(
                "INSERT INTO accounts (user_name, record, credential_id, sealed_storage_key, \
                 created_at, audit_head, epoch) VALUES (?1, ?2, ?3, ?4, ?5, X'', 1) \
                 ON CONFLICT (user_name) DO NOTHING RETURNING ",
                account_columns!()
            ))?
            .query_row(
                params![
                    new.user.as_str(),
                    new.record,
                    new.credential_id,
                    new.sealed_storage_key,
                    new.created
                ],
                account_row,
            )
            .optional()?;
        let row = row.map(RawAccount::check).transpose()?;
        self.keep(row.as_ref());
        Ok(row)
    }

    async fn account_by_name(
        &mut self,
        user: &UserName,
    ) -> Result<Option<AccountRow>, StorageError> {
        let row = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE user_name = ?1"
            ))?
            .query_row(params![user.as_str()], account_row)
            .optional()?;
        let row = row.map(RawAccount::check).transpose()?;
        self.keep(row.as_ref());
        Ok(row)
    }

    async fn account(&mut self, id: AccountId) -> Result<Option<AccountRow>, StorageError> {
        if let Some(seen) = self.seen.as_ref().filter(|a| a.id == id) {
            return Ok(Some(seen.clone()));
        }
        let row = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id = ?1"
            ))?
            .query_row(params![id], account_row)
            .optional()?;
        let row = row.map(RawAccount::check).transpose()?;
        self.keep(row.as_ref());
        Ok(row)
    }

    async fn save_account(&mut self, a: &AccountRow) -> Result<(), StorageError> {
        let head: &[u8] = a.audit_head.as_ref().map_or(&[], |h| &h[..]);
        self.conn
            .prepare_cached(
                "UPDATE accounts SET failed_logins = ?1, last_login_attempt = ?2, \
                 audit_seq = ?3, audit_head = ?4, live_secrets = ?5, epoch = ?6, \
                 lockout_logged = ?7 WHERE id = ?8",
            )?
            .execute(params![
                i64_of(a.guesses.failed)?,
                a.guesses.last_attempt,
                i64_of(a.audit_seq)?,
                head,
                i64_of(a.live_secrets)?,
                i64_of(a.epoch)?,
                i64::from(a.guesses.lockout_logged),
                a.id,
            ])?;
        if self.seen.as_ref().is_some_and(|s| s.id == a.id) {
            self.seen = Some(a.clone());
        }
        Ok(())
    }

    async fn credentials(&mut self, id: AccountId) -> Result<Option<Credentials>, StorageError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT record, credential_id, sealed_storage_key FROM accounts WHERE id = ?1",
            )?
            .query_row(params![id], |r| {
                Ok(Credentials {
                    record: r.get(0)?,
                    credential_id: r.get(1)?,
                    sealed_storage_key: r.get(2)?,
                })
            })
            .optional()?)
    }

    async fn set_credentials(
        &mut self,
        id: AccountId,
        c: &Credentials,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "UPDATE accounts SET record = ?1, credential_id = ?2, sealed_storage_key = ?3 \
                 WHERE id = ?4",
            )?
            .execute(params![c.record, c.credential_id, c.sealed_storage_key, id])?;
        Ok(())
    }

    async fn insert_event(
        &mut self,
        account: AccountId,
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit_events (account_id, seq, time, kind, secret, outcome, hash, \
                 version, key_name, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                account,
                i64_of(e.seq)?,
                e.time,
                e.body.kind as i64,
                e.body.secret.as_ref().map(|t| &t.0[..]),
                e.body.outcome as i64,
                &e.hash[..],
                e.body.version.map(i64_of).transpose()?,
                e.body.key.as_ref().map(KeyName::as_str),
                e.body.digest.as_ref().map(|d| &d[..]),
            ])?;
        Ok(())
    }

    async fn events(
        &mut self,
        account: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StorageError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time, kind, secret, outcome, hash, version, key_name, digest \
             FROM audit_events WHERE account_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![account, i64_of(after)?, limit_of(limit)], event_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(RawEvent::check).collect()
    }

    async fn secret(
        &mut self,
        account: AccountId,
        tag: &NameTag,
    ) -> Result<Option<SecretRow>, StorageError> {
        let row: Option<(Vec<u8>, i64, Option<Vec<u8>>, i64)> = self
            .conn
            .prepare_cached(
                "SELECT sealed_name, version, sealed, created_at FROM secrets \
                 WHERE account_id = ?1 AND tag = ?2",
            )?
            .query_row(params![account, &tag.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        row.map(|(sealed_name, version, sealed, created)| {
            Ok(SecretRow {
                sealed_name,
                version: u64_of(version)?,
                sealed,
                created,
            })
        })
        .transpose()
    }

    async fn put_secret(
        &mut self,
        account: AccountId,
        tag: &NameTag,
        row: &SecretRow,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO secrets (account_id, tag, sealed_name, version, sealed, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (account_id, tag) DO UPDATE SET sealed_name = excluded.sealed_name, \
                 version = excluded.version, sealed = excluded.sealed, \
                 created_at = excluded.created_at",
            )?
            .execute(params![
                account,
                &tag.0[..],
                row.sealed_name,
                i64_of(row.version)?,
                row.sealed,
                row.created
            ])?;
        Ok(())
    }

    async fn secrets(
        &mut self,
        account: AccountId,
        after: Option<&NameTag>,
        limit: usize,
        deleted: bool,
    ) -> Result<Vec<SecretListing>, StorageError> {
        let mut stmt = self
            .conn
            .prepare_cached(if deleted { LIST_ALL } else { LIST_LIVE })?;
        let rows = stmt
            .query_map(
                params![
                    account,
                    after.map_or(&[][..], |t| &t.0[..]),
                    limit_of(limit)
                ],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(tag, sealed_name, version, len, created)| {
                Ok(SecretListing {
                    tag: tag_of(&tag)?,
                    sealed_name,
                    version: u64_of(version)?,
                    sealed_len: len.map(u64_of).transpose()?,
                    created,
                })
            })
            .collect()
    }

    async fn count_secret_rows(&mut self, account: AccountId) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM secrets WHERE account_id = ?1")?
            .query_row(params![account], |r| r.get(0))?;
        u64_of(n)
    }

    async fn held_key(
        &mut self,
        account: AccountId,
        name: &KeyName,
    ) -> Result<Option<HeldKeyRow>, StorageError> {
        let row = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                held_key_columns!(),
                " FROM held_keys WHERE account_id = ?1 AND name = ?2"
            ))?
            .query_row(params![account, name.as_str()], held_key_row)
            .optional()?;
        row.map(RawHeldKey::check).transpose()
    }

    async fn insert_held_key(
        &mut self,
        account: AccountId,
        row: &HeldKeyRow,
    ) -> Result<bool, StorageError> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO held_keys (account_id, name, algorithm, public_key, sealed_key, \
                 exportable, created_at, signatures, window_start, window_count) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (account_id, name) DO NOTHING",
            )?
            .execute(params![
                account,
                row.name.as_str(),
                i64::from(row.algorithm.code()),
                row.public_key,
                row.sealed_key,
                i64::from(row.exportable),
                row.created,
                i64_of(row.usage.signatures)?,
                row.usage.window_start,
                i64_of(row.usage.window_count)?,
            ])?;
        Ok(n == 1)
    }

    async fn save_key_usage(
        &mut self,
        account: AccountId,
        name: &KeyName,
        usage: &KeyUsage,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "UPDATE held_keys SET signatures = ?1, window_start = ?2, window_count = ?3 \
                 WHERE account_id = ?4 AND name = ?5",
            )?
            .execute(params![
                i64_of(usage.signatures)?,
                usage.window_start,
                i64_of(usage.window_count)?,
                account,
                name.as_str(),
            ])?;
        Ok(())
    }

    async fn delete_held_key(
        &mut self,
        account: AccountId,
        name: &KeyName,
    ) -> Result<bool, StorageError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM held_keys WHERE account_id = ?1 AND name = ?2")?
            .execute(params![account, name.as_str()])?;
        Ok(n == 1)
    }

    async fn held_keys(
        &mut self,
        account: AccountId,
        after: Option<&KeyName>,
        limit: usize,
    ) -> Result<Vec<HeldKeyRow>, StorageError> {
        // TEXT compares with the BINARY collation: bytewise, as the contract says.
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            held_key_columns!(),
            " FROM held_keys WHERE account_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![account, after.map_or("", KeyName::as_str), limit_of(limit)],
                held_key_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(RawHeldKey::check).collect()
    }

    async fn count_held_keys(&mut self, account: AccountId) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM held_keys WHERE account_id = ?1")?
            .query_row(params![account], |r| r.get(0))?;
        u64_of(n)
    }

    async fn signatures_in_window(
        &mut self,
        account: AccountId,
        window_start: i64,
    ) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(SUM(window_count), 0) FROM held_keys \
                 WHERE account_id = ?1 AND window_start >= ?2",
            )?
            .query_row(params![account, window_start], |r| r.get(0))?;
        u64_of(n)
    }

    async fn recorded(&mut self, req: RequestId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT response FROM session_responses WHERE session_id = ?1 AND seq = ?2",
            )?
            .query_row(params![&req.session[..], i64_of(req.seq)?], |r| r.get(0))
            .optional()?)
    }

    async fn record(
        &mut self,
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO session_responses (session_id, seq, response, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&req.session[..], i64_of(req.seq)?, response, now])?;
        Ok(())
    }

    async fn purge_responses(&mut self, before: i64) -> Result<u64, StorageError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM session_responses WHERE created_at < ?1")?
            .execute(params![before])?;
        Ok(n as u64)
    }

    async fn insert_session(&mut self, s: &SessionRow) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (id, account_id, sealed_keys, created_at, last_used, \
                 reauthed_at, epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                &s.id[..],
                s.account,
                s.sealed_keys,
                s.created,
                s.last_used,
                s.reauthed_at,
                i64_of(s.epoch)?,
            ])?;
        Ok(())
    }

    async fn session(&mut self, id: [u8; 16]) -> Result<Option<StoredSession>, StorageError> {
        type Raw = (i64, String, Vec<u8>, i64, i64, Option<i64>, i64, i64);
        let row: Option<Raw> = self
            .conn
            .prepare_cached(
                "SELECT s.account_id, a.user_name, s.sealed_keys, s.created_at, s.last_used, \
                 s.reauthed_at, a.epoch, s.epoch FROM sessions s \
                 JOIN accounts a ON a.id = s.account_id WHERE s.id = ?1",
            )?
            .query_row(params![&id[..]], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .optional()?;
        row.map(
            |(account, user, sealed_keys, created, last_used, reauthed_at, epoch, own)| {
                Ok(StoredSession {
                    row: SessionRow {
                        id,
                        account,
                        sealed_keys,
                        created,
                        last_used,
                        reauthed_at,
                        epoch: u64_of(own)?,
                    },
                    user: user_of(user)?,
                    epoch: u64_of(epoch)?,
                })
            },
        )
        .transpose()
    }

    async fn session_state(&mut self, id: [u8; 16]) -> Result<Option<SessionState>, StorageError> {
        // The session's account comes with it, kept for the job (the operation reads it
        // next, and again for the audit position its answer carries).
        let row: Option<(Option<i64>, i64, RawAccount)> = self
            .conn
            .prepare_cached(SESSION_STATE)?
            .query_row(params![&id[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, account_row_at(r, 2)?))
            })
            .optional()?;
        let Some((reauthed_at, epoch, account)) = row else {
            return Ok(None);
        };
        let account = account.check()?;
        let state = SessionState {
            reauthed_at,
            epoch: u64_of(epoch)?,
            account_epoch: account.epoch,
        };
        self.keep(Some(&account));
        Ok(Some(state))
    }

    async fn set_session_epoch(
        &mut self,
        id: [u8; 16],
        epoch: u64,
        sealed_keys: &[u8],
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached("UPDATE sessions SET epoch = ?1, sealed_keys = ?2 WHERE id = ?3")?
            .execute(params![i64_of(epoch)?, sealed_keys, &id[..]])?;
        Ok(())
    }

    async fn set_session_reauth(
        &mut self,
        id: [u8; 16],
        at: Option<i64>,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached("UPDATE sessions SET reauthed_at = ?1 WHERE id = ?2")?
            .execute(params![at, &id[..]])?;
        Ok(())
    }

    async fn delete_other_sessions(
        &mut self,
        account: AccountId,
        keep: [u8; 16],
    ) -> Result<u64, StorageError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM sessions WHERE account_id = ?1 AND id != ?2")?
            .execute(params![account, &keep[..]])?;
        Ok(n as u64)
    }

    async fn count_sessions(&mut self, account: AccountId) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM sessions WHERE account_id = ?1")?
            .query_row(params![account], |r| r.get(0))?;
        u64_of(n)
    }

    async fn touch_session(&mut self, id: [u8; 16], now: i64) -> Result<bool, StorageError> {
        let n = self
            .conn
            .prepare_cached("UPDATE sessions SET last_used = ?1 WHERE id = ?2")?
            .execute(params![now, &id[..]])?;
        Ok(n > 0)
    }

    async fn delete_session(&mut self, id: [u8; 16]) -> Result<bool, StorageError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
            .execute(params![&id[..]])?;
        Ok(n > 0)
    }

    async fn purge_sessions(
        &mut self,
        created_before: i64,
        used_before: i64,
    ) -> Result<u64, StorageError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM sessions WHERE created_at < ?1 OR last_used < ?2")?
            .execute(params![created_before, used_before])?;
        Ok(n as u64)
    }

    async fn stage_secret(
        &mut self,
        session: [u8; 16],
        account: AccountId,
        row: &StagedRow,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO staged_secrets (session_id, account_id, tag, new_tag, sealed_name, \
                 version, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (session_id, tag) DO UPDATE SET new_tag = excluded.new_tag, \
                 sealed_name = excluded.sealed_name, version = excluded.version, \
                 sealed = excluded.sealed",
            )?
            .execute(params![
                &session[..],
                account,
                &row.tag.0[..],
                &row.new_tag.0[..],
                row.sealed_name,
                i64_of(row.version)?,
                row.sealed
            ])?;
        Ok(())
    }

    async fn staged_count(&mut self, session: [u8; 16]) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM staged_secrets WHERE session_id = ?1")?
            .query_row(params![&session[..]], |r| r.get(0))?;
        u64_of(n)
    }

    async fn staged_mismatches(
        &mut self,
        session: [u8; 16],
        account: AccountId,
    ) -> Result<u64, StorageError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT \
                 (SELECT COUNT(*) FROM secrets s WHERE s.account_id = ?2 \
                  AND NOT EXISTS (SELECT 1 FROM staged_secrets t WHERE t.session_id = ?1 \
                  AND t.tag = s.tag AND t.version = s.version \
                  AND (t.sealed IS NULL) = (s.sealed IS NULL))) + \
                 (SELECT COUNT(*) FROM staged_secrets t WHERE t.session_id = ?1 \
                  AND NOT EXISTS (SELECT 1 FROM secrets s WHERE s.account_id = ?2 \
                  AND s.tag = t.tag AND s.version = t.version \
                  AND (t.sealed IS NULL) = (s.sealed IS NULL)))",
            )?
            .query_row(params![&session[..], account], |r| r.get(0))?;
        u64_of(n)
    }

    async fn apply_staged(
        &mut self,
        session: [u8; 16],
        account: AccountId,
    ) -> Result<u64, StorageError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE secrets SET tag = t.new_tag, sealed_name = t.sealed_name, \
                 sealed = t.sealed FROM staged_secrets t \
                 WHERE t.session_id = ?1 AND secrets.account_id = ?2 \
                 AND t.tag = secrets.tag AND t.version = secrets.version",
            )?
            .execute(params![&session[..], account])?;
        Ok(n as u64)
    }

    async fn delete_staged(&mut self, session: [u8; 16]) -> Result<u64, StorageError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM staged_secrets WHERE session_id = ?1")?
            .execute(params![&session[..]])?;
        Ok(n as u64)
    }

    async fn purge_staged(&mut self) -> Result<u64, StorageError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM staged_secrets WHERE session_id NOT IN (SELECT id FROM sessions)",
            )?
            .execute([])?;
        Ok(n as u64)
    }

    async fn event_hash(
        &mut self,
        account: AccountId,
        seq: u64,
    ) -> Result<Option<[u8; 32]>, StorageError> {
        let h: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM audit_events WHERE account_id = ?1 AND seq = ?2")?
            .query_row(params![account, i64_of(seq)?], |r| r.get(0))
            .optional()?;
        h.as_deref().map(hash_of).transpose()
    }

    async fn put_checkpoint(
        &mut self,
        account: AccountId,
        c: &StoredCheckpoint,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO checkpoints (account_id, seq, head, mac, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (account_id, seq) DO NOTHING",
            )?
            .execute(params![
                account,
                i64_of(c.checkpoint.position.seq)?,
                &c.checkpoint.position.head[..],
                &c.checkpoint.mac[..],
                c.time,
            ])?;
        Ok(())
    }

    async fn keyring(&mut self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let row = self
            .conn
            .prepare_cached("SELECT generation, body FROM keyring WHERE id = 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .optional()?;
        row.map(|(g, body)| Ok((u64_of(g)?, body))).transpose()
    }

    async fn has_accounts(&mut self) -> Result<bool, StorageError> {
        Ok(self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts)")?
            .query_row([], |r| r.get::<_, bool>(0))?)
    }

    async fn put_keyring(
        &mut self,
        previous: Option<u64>,
        generation: u64,
        body: &[u8],
    ) -> Result<bool, StorageError> {
        let n = match previous {
            None => self
                .conn
                .prepare_cached(
                    "INSERT INTO keyring (id, generation, body) VALUES (1, ?1, ?2) \
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![i64_of(generation)?, body])?,
            Some(p) => self
                .conn
                .prepare_cached(
                    "UPDATE keyring SET generation = ?1, body = ?2 WHERE id = 1 AND generation = ?3",
                )?
                .execute(params![i64_of(generation)?, body, i64_of(p)?])?,
        };
        Ok(n == 1)
    }

    async fn checkpoints(
        &mut self,
        account: AccountId,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StorageError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, head, mac, created FROM checkpoints WHERE account_id = ?1 \
             ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![account, limit_of(limit)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, head, mac, time)| checkpoint_of(seq, &head, &mac, time))
            .collect()
    }

    async fn prune_checkpoints(
        &mut self,
        account: AccountId,
        keep: usize,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "DELETE FROM checkpoints WHERE account_id = ?1 AND seq NOT IN \
                 (SELECT seq FROM checkpoints WHERE account_id = ?1 ORDER BY seq DESC LIMIT ?2)",
            )?
            .execute(params![account, limit_of(keep)])?;
        Ok(())
    }

    async fn delete_checkpoints(&mut self, account: AccountId) -> Result<(), StorageError> {
        self.conn
            .prepare_cached("DELETE FROM checkpoints WHERE account_id = ?1")?
            .execute(params![account])?;
        Ok(())
    }

    async fn unknown_name(&mut self, name_key: &[u8; 32]) -> Result<UnknownRow, StorageError> {
        let row: Option<(i64, i64, i64, Option<Vec<u8>>, i64)> = self
            .conn
            .prepare_cached(
                "SELECT failed_logins, last_login_attempt, events, head, lockout_logged \
                 FROM unknown_logins WHERE name_key = ?1",
            )?
            .query_row(params![&name_key[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        // The writer holds the database's one write lock for its whole batch, so a row read
        // here cannot change under it: none needs creating to be locked.
        let Some((failed, last, seq, head, logged)) = row else {
            return Ok(UnknownRow::default());
        };
        Ok(UnknownRow {
            guesses: Guesses {
                failed: u64_of(failed)?,
                last_attempt: (last != 0).then_some(last),
                lockout_logged: logged != 0,
            },
            seq: u64_of(seq)?,
            head: head.as_deref().map(hash_of).transpose()?,
        })
    }

    async fn save_unknown_name(
        &mut self,
        name_key: &[u8; 32],
        row: &UnknownRow,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO unknown_logins (name_key, failed_logins, last_login_attempt, \
                 events, head, lockout_logged) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (name_key) DO UPDATE SET failed_logins = excluded.failed_logins, \
                 last_login_attempt = excluded.last_login_attempt, \
                 events = excluded.events, head = excluded.head, \
                 lockout_logged = excluded.lockout_logged",
            )?
            .execute(params![
                &name_key[..],
                i64_of(row.guesses.failed)?,
                row.guesses.last_attempt.unwrap_or(0),
                i64_of(row.seq)?,
                row.head.as_ref().map(|h| &h[..]),
                i64::from(row.guesses.lockout_logged),
            ])?;
        Ok(())
    }

    async fn insert_unknown_event(
        &mut self,
        name_key: &[u8; 32],
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(
                "INSERT INTO unknown_events (name_key, seq, time, kind, outcome, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &name_key[..],
                i64_of(e.seq)?,
                e.time,
                e.body.kind as i64,
                e.body.outcome as i64,
                &e.hash[..],
            ])?;
        Ok(())
    }

    async fn purge_unknown_names(&mut self, before: i64) -> Result<u64, StorageError> {
        self.conn
            .prepare_cached(
                "DELETE FROM unknown_events WHERE name_key IN \
                 (SELECT name_key FROM unknown_logins WHERE last_login_attempt < ?1)",
            )?
            .execute(params![before])?;
        let n = self
            .conn
            .prepare_cached("DELETE FROM unknown_logins WHERE last_login_attempt < ?1")?
            .execute(params![before])?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> Option<(super::super::Storage, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("test.db"))
            .await
            .unwrap();
        Some((super::super::Storage::new(Arc::new(b)), dir))
    }

    #[tokio::test]
    async fn the_database_and_its_wal_are_private_from_the_start() {
        use std::os::unix::fs::PermissionsExt;
        let (s, dir) = fresh().await.unwrap();
        // A write makes the WAL exist.
        s.write(Durability::Disk, |tx| {
            Box::pin(async move { tx.purge_responses(0).await })
        })
        .await
        .unwrap();
        for f in ["test.db", "test.db-wal", "test.db-shm"] {
            let p = dir.path().join(f);
            if !p.exists() {
                continue;
            }
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert!(dir.path().join("test.db-wal").exists());
    }

    /// The writer never checkpoints; the checkpoint thread copies its WAL back into the
    /// database file (which only a checkpoint makes grow) within a few of its periods.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(
        clippy::disallowed_methods,
        reason = "a deadline in real time: the checkpoint thread runs on it"
    )]
    async fn the_wal_is_copied_back_beside_the_writer() {
        let (s, dir) = fresh().await.unwrap();
        let db = dir.path().join("test.db");
        let before = std::fs::metadata(&db).unwrap().len();
        let user = UserName::new("alice").unwrap();
        let id = s
            .write(Durability::Disk, move |tx| {
                Box::pin(async move {
                    let new = NewAccount {
                        user: &user,
                        record: b"record",
                        credential_id: b"credential",
                        sealed_storage_key: b"key",
                        created: 1,
                    };
                    Ok(tx.insert_account(&new).await?.unwrap().id)
                })
            })
            .await
            .unwrap();
        for i in 0..64u64 {
            s.write(Durability::Disk, move |tx| {
                Box::pin(async move {
                    let name = NameTag([u8::try_from(i).unwrap(); 32]);
                    let row = SecretRow {
                        sealed_name: vec![1; 60],
                        version: 1,
                        sealed: Some(vec![7u8; 4096]),
                        created: 2,
                    };
                    tx.put_secret(id, &name, &row).await
                })
            })
            .await
            .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&db).unwrap().len() < before + 64 * 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file did not grow: no checkpoint ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Listing walks only live secrets, whatever number of deleted ones the account keeps.
    #[tokio::test]
    async fn a_list_of_live_secrets_walks_the_index_of_live_secrets() {
        let (_s, dir) = fresh().await.unwrap();
        let conn = Connection::open(dir.path().join("test.db")).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LIST_LIVE}"))
            .unwrap()
            .query_map(params![1, &[][..], 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|p| p.contains("USING INDEX secrets_live")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn a_session_and_its_account_are_read_by_their_keys() {
        let (_s, dir) = fresh().await.unwrap();
        let conn = Connection::open(dir.path().join("test.db")).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {SESSION_STATE}"))
            .unwrap()
            .query_map(params![&[0u8; 16][..]], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(plan.len(), 2, "{plan:?}");
        assert!(plan.iter().all(|p| p.starts_with("SEARCH")), "{plan:?}");
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_writer_lives_on() {
        let (s, _dir) = fresh().await.unwrap();
        let r: Result<(), _> = s
            .write(Durability::Disk, |_tx| {
                Box::pin(async move {
                    #[allow(clippy::panic)]
                    {
                        panic!("a bug in a job")
                    }
                })
            })
            .await;
        assert!(matches!(r, Err(StorageError::Unavailable(_))));
        let n = s
            .write(Durability::Disk, |tx| {
                Box::pin(async move { tx.purge_responses(0).await })
            })
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
