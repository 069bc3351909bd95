//! The embedded backend: one SQLite file in WAL mode, written with group commit.
//!
//! Every change goes to one writer thread that owns the only writing connection. It takes
//! every change waiting for it (up to [`MAX_BATCH`]), runs each inside its own savepoint
//! of one transaction (a change that fails is rolled back alone), commits once, and only
//! then answers all of them. `synchronous = FULL`: the commit is on disk before any of its
//! changes is acknowledged, so neither a killed process nor a power cut loses an
//! acknowledged change, and a change is never half applied. One fsync serves the whole
//! batch, so throughput grows with the number of requests in flight instead of being the
//! disk's fsync rate.
//!
//! The writer uses rusqlite on a plain thread: its statements run where the data is, where
//! sqlx's SQLite driver hands every statement to a worker thread and back (≈ 15 µs each
//! here, most of a batch's time). Both link the same `libsqlite3-sys`, so one SQLite library
//! is in the process. Schema migrations and reads stay on sqlx; reads use their own
//! connections and see the last committed state.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    time::Duration,
};

use async_trait::async_trait;
use keyserver_protocol::{
    SecretName, UserName,
    audit_chain::{self, AuditEvent, EventBody, EventKind, Outcome},
    ops::SecretEntry,
    seal::plaintext_len,
};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::{mpsc, oneshot};

use super::{
    Account, Done, Encode, LockoutPolicy, LoginGate, LoginStart, MAX_SECRETS_PER_ACCOUNT,
    NewSecret, NewSession, RequestId, Storage, StorageError, StoreOutcome, StoredSecret,
    StoredSession,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Most changes committed together.
pub const MAX_BATCH: usize = 1024;

/// The page size of a new database file.
const PAGE_SIZE: u32 = 1024;

/// The writer's page cache, KiB.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Changes that may wait for the writer; senders wait beyond that.
const QUEUE: usize = 4096;

/// The SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteStorage {
    writer: Writer,
    read: SqlitePool,
    quota: u64,
}

fn u64_of(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative count {v}")))
}

fn i64_of(v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::Corrupt(format!("count {v} out of range")))
}

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

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StorageError> {
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
            .connect_with(opts.clone())
            .await?;
        MIGRATOR
            .run(&migrate)
            .await
            .map_err(|e| StorageError::Unavailable(format!("migration failed: {e}")))?;
        migrate.close().await;
        let writer = Writer::start(path)?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        // The database holds OPAQUE records and ciphertexts: owner-only.
        restrict_mode(path);
        Ok(Self {
            writer,
            read,
            quota: MAX_SECRETS_PER_ACCOUNT,
        })
    }
}

impl SqliteStorage {
    /// The most secrets one account may hold (default [`MAX_SECRETS_PER_ACCOUNT`]).
    #[must_use]
    pub fn with_secret_quota(mut self, quota: u64) -> Self {
        self.quota = quota;
        self
    }
}

fn restrict_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// Hands a job's result to its caller once the batch's commit is known: `None` if the
/// batch committed, else why it did not.
type Deliver = Box<dyn FnOnce(Option<StorageError>) + Send>;

/// How far a change must have reached before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// On disk (fsync): survives a power cut. Every change a client or the guess limit
    /// relies on: accounts, logins, sessions, secrets, recorded responses.
    Disk,
    /// Written to the file (the kernel holds it): survives a crash or kill of the process,
    /// and reaches the disk with the next `Disk` commit or checkpoint. Only for events that
    /// record a read (retrieve, list) and for bookkeeping (session last use, purges): a
    /// power cut may lose the newest of those, never a change.
    Process,
}

/// Runs one change inside its savepoint and says whether to keep it.
type Run = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;

/// One change for the writer.
struct Job {
    durability: Durability,
    run: Run,
}

/// The handle to the writer thread.
#[derive(Clone, Debug)]
struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    fn start(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Unavailable(format!(
                "the database refused WAL mode ({mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The writer reads the pages it changes: keep them in memory (at most this many
        // KiB) rather than read them back from the file.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        conn.set_prepared_statement_cache_capacity(64);
        // Checkpoints (copying the WAL back into the database file, two fsyncs) would run
        // inside the writer's commits every 1000 pages and stall every change waiting
        // behind them; a thread of their own runs them beside the writer instead.
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
                write_loop(&conn, rx);
                // The last change is committed: one more checkpoint, then the thread ends.
                drop(stop);
            })
            .map_err(|e| StorageError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next batch; its result once that batch is committed. `f` failing
    /// rolls back its own changes only.
    async fn run<T, F>(&self, durability: Durability, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |c: &Connection| -> (bool, Deliver) {
            match f(c) {
                Ok(v) => (
                    true,
                    Box::new(move |failed| {
                        let _ = tx.send(failed.map_or(Ok(v), Err));
                    }),
                ),
                Err(e) => (
                    false,
                    Box::new(move |_| {
                        let _ = tx.send(Err(e));
                    }),
                ),
            }
        });
        let stopped = || StorageError::Unavailable("the database writer has stopped".into());
        self.jobs
            .send(Job { durability, run })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// [`Self::run`] for a change that must be on disk before it is acknowledged.
    async fn change<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        self.run(Durability::Disk, f).await
    }
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

fn write_loop(conn: &Connection, mut rx: mpsc::Receiver<Job>) {
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
            match conn.pragma_update(None, "synchronous", level) {
                Ok(()) => synced = needed,
                Err(e) => {
                    // Never commit a change with less than it needs: fail this batch.
                    fail(&mut batch, &e.to_string());
                    continue;
                }
            }
        }
        commit_batch(conn, &mut batch);
    }
}

/// Answers every job of `batch` with an error, running none.
fn fail(batch: &mut Vec<Job>, why: &str) {
    // Dropping a job drops its sender: its caller hears that the writer stopped.
    batch.clear();
    tracing::warn!(error = why, "database batch not run");
}

fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs every job of `batch` in one transaction, one savepoint each, commits, answers.
fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) {
    let mut delivers: Vec<Deliver> = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        exec(conn, "BEGIN IMMEDIATE")?;
        for job in batch.drain(..) {
            exec(conn, "SAVEPOINT job")?;
            // A job has no business panicking; if one does, it fails alone (its caller
            // hears that the writer stopped) and the writer lives on.
            let run = job.run;
            let (keep, deliver) = catch_unwind(AssertUnwindSafe(|| run(conn)))
                .unwrap_or_else(|_| (false, Box::new(|_| ()) as Deliver));
            delivers.push(deliver);
            if !keep {
                exec(conn, "ROLLBACK TO job")?;
            }
            exec(conn, "RELEASE job")?;
        }
        exec(conn, "COMMIT")
    })();
    // Jobs not run (an error above stopped the batch) drop their senders: their callers
    // hear that the writer stopped, and nothing of theirs was committed.
    batch.clear();
    let failure = outcome.err().map(|e| e.to_string());
    if failure.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for deliver in delivers {
        deliver(
            failure
                .as_ref()
                .map(|e| StorageError::Unavailable(format!("commit failed: {e}"))),
        );
    }
}

/// The response recorded for `req`, if any.
fn recorded(c: &Connection, req: RequestId) -> Result<Option<Vec<u8>>, StorageError> {
    let r = c
        .prepare_cached(
            "SELECT response FROM session_responses WHERE session_id = ?1 AND seq = ?2",
        )?
        .query_row(params![&req.session[..], i64_of(req.seq)?], |r| r.get(0))
        .optional()?;
    Ok(r)
}

/// Records `response` for `req`.
fn record_response(
    c: &Connection,
    req: RequestId,
    response: &[u8],
    now: i64,
) -> Result<(), StorageError> {
    c.prepare_cached(
        "INSERT INTO session_responses (session_id, seq, response, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![&req.session[..], i64_of(req.seq)?, response, now])?;
    Ok(())
}

/// Appends `body` to the account's audit chain.
fn append_event(
    c: &Connection,
    account: i64,
    user: &UserName,
    body: &EventBody,
    now: i64,
) -> Result<(), StorageError> {
    let (last, head): (i64, Vec<u8>) = c
        .prepare_cached("SELECT audit_seq, audit_head FROM accounts WHERE id = ?1")?
        .query_row(params![account], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let prev: [u8; 32] = if last == 0 {
        audit_chain::genesis(user)
    } else {
        head.as_slice()
            .try_into()
            .map_err(|_| StorageError::Corrupt("audit head is not 32 bytes".into()))?
    };
    let seq = u64_of(last)? + 1;
    let hash = audit_chain::link(&prev, seq, now, body);
    c.prepare_cached(
        "INSERT INTO audit_events (account_id, seq, time, kind, secret, outcome, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        account,
        i64_of(seq)?,
        now,
        body.kind as i64,
        body.secret.as_ref().map(SecretName::as_str),
        body.outcome as i64,
        &hash[..],
    ])?;
    c.prepare_cached("UPDATE accounts SET audit_seq = ?1, audit_head = ?2 WHERE id = ?3")?
        .execute(params![i64_of(seq)?, &hash[..], account])?;
    Ok(())
}

/// The account of `user`, read by the writer.
fn find_account(c: &Connection, user: &UserName) -> Result<Option<Account>, StorageError> {
    let row = c
        .prepare_cached(
            "SELECT id, record, sealed_storage_key, failed_logins, last_login_attempt \
             FROM accounts WHERE user_name = ?1",
        )?
        .query_row(params![user.as_str()], |r| {
            let account = Account {
                id: r.get(0)?,
                record: r.get(1)?,
                sealed_storage_key: r.get(2)?,
                failed_logins: 0,
                last_login_attempt: r.get(4)?,
            };
            Ok((account, r.get::<_, i64>(3)?))
        })
        .optional()?;
    row.map(|(mut account, failed)| {
        account.failed_logins = u64_of(failed)?;
        Ok(account)
    })
    .transpose()
}

/// Decides and counts a login start of an account.
fn begin_login(
    c: &Connection,
    account: i64,
    user: &UserName,
    policy: &LockoutPolicy,
    now: i64,
) -> Result<LoginGate, StorageError> {
    let (failed, last): (i64, Option<i64>) = c
        .prepare_cached("SELECT failed_logins, last_login_attempt FROM accounts WHERE id = ?1")?
        .query_row(params![account], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let gate = policy.decide(u64_of(failed)?, last, now);
    let event = match gate {
        LoginGate::Allowed => {
            c.prepare_cached(
                "UPDATE accounts SET failed_logins = failed_logins + 1, last_login_attempt = ?1 \
                 WHERE id = ?2",
            )?
            .execute(params![now, account])?;
            EventBody::new(EventKind::LoginStarted, Outcome::Ok)
        }
        LoginGate::Locked { .. } => EventBody::new(EventKind::LoginLocked, Outcome::Refused),
    };
    append_event(c, account, user, &event, now)?;
    Ok(gate)
}

/// Decides and counts a login start of an unknown name.
fn begin_unknown_login(
    c: &Connection,
    name_key: &[u8; 32],
    policy: &LockoutPolicy,
    now: i64,
) -> Result<LoginGate, StorageError> {
    c.prepare_cached(
        "INSERT INTO unknown_logins (name_key, failed_logins, last_login_attempt) \
         VALUES (?1, 0, 0) ON CONFLICT (name_key) DO NOTHING",
    )?
    .execute(params![&name_key[..]])?;
    let (failed, last): (i64, i64) = c
        .prepare_cached(
            "SELECT failed_logins, last_login_attempt FROM unknown_logins WHERE name_key = ?1",
        )?
        .query_row(params![&name_key[..]], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let gate = policy.decide(u64_of(failed)?, (last != 0).then_some(last), now);
    if gate == LoginGate::Allowed {
        c.prepare_cached(
            "UPDATE unknown_logins SET failed_logins = failed_logins + 1, \
             last_login_attempt = ?1 WHERE name_key = ?2",
        )?
        .execute(params![now, &name_key[..]])?;
    }
    Ok(gate)
}

/// Records the end of a login.
fn login_finished(
    c: &Connection,
    account: i64,
    user: &UserName,
    session: Option<([u8; 16], Vec<u8>)>,
    success: bool,
    now: i64,
) -> Result<(), StorageError> {
    let event = if success {
        c.prepare_cached("UPDATE accounts SET failed_logins = 0 WHERE id = ?1")?
            .execute(params![account])?;
        if let Some((id, sealed_keys)) = session {
            c.prepare_cached(
                "INSERT INTO sessions (id, account_id, sealed_keys, created_at, last_used) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![&id[..], account, sealed_keys, now, now])?;
        }
        EventBody::new(EventKind::LoginSucceeded, Outcome::Ok)
    } else {
        EventBody::new(EventKind::LoginFailed, Outcome::Failed)
    };
    append_event(c, account, user, &event, now)
}

/// Stores a secret version, or says why not.
fn store_secret(
    c: &Connection,
    account: i64,
    user: &UserName,
    s: &NewSecret<'_>,
    quota: u64,
    now: i64,
) -> Result<StoreOutcome, StorageError> {
    let NewSecret {
        name,
        version,
        replace,
        sealed,
    } = *s;
    let row: Option<(i64, bool)> = c
        .prepare_cached(
            "SELECT version, sealed IS NOT NULL FROM secrets WHERE account_id = ?1 AND name = ?2",
        )?
        .query_row(params![account, name.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (current, live) = match row {
        Some((v, live)) => (u64_of(v)?, live),
        None => (0, false),
    };
    let expected = current.saturating_add(1);
    let refused = if live && !replace {
        Some(StoreOutcome::Exists)
    } else if version != expected {
        Some(StoreOutcome::VersionMismatch { expected })
    } else if !live {
        let count: i64 = c
            .prepare_cached("SELECT live_secrets FROM accounts WHERE id = ?1")?
            .query_row(params![account], |r| r.get(0))?;
        (u64_of(count)? >= quota).then_some(StoreOutcome::Quota)
    } else {
        None
    };
    Ok(match refused {
        Some(outcome) => {
            // A version mismatch is the normal first step of a replace; only real
            // refusals are worth an event in the user's log.
            if !matches!(outcome, StoreOutcome::VersionMismatch { .. }) {
                let event = EventBody::about(EventKind::Store, name, Outcome::Refused);
                append_event(c, account, user, &event, now)?;
            }
            outcome
        }
        None => {
            c.prepare_cached(
                "INSERT INTO secrets (account_id, name, version, sealed, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (account_id, name) DO UPDATE SET version = excluded.version, \
                 sealed = excluded.sealed, created_at = excluded.created_at",
            )?
            .execute(params![
                account,
                name.as_str(),
                i64_of(version)?,
                sealed,
                now
            ])?;
            if !live {
                c.prepare_cached(
                    "UPDATE accounts SET live_secrets = live_secrets + 1 WHERE id = ?1",
                )?
                .execute(params![account])?;
            }
            let event = EventBody::about(EventKind::Store, name, Outcome::Ok);
            append_event(c, account, user, &event, now)?;
            StoreOutcome::Stored {
                version,
                created: now,
            }
        }
    })
}

/// Reads the current version of a secret and records the read.
fn retrieve_secret(
    c: &Connection,
    account: i64,
    user: &UserName,
    name: &SecretName,
    now: i64,
) -> Result<Option<StoredSecret>, StorageError> {
    let row: Option<(i64, i64, Vec<u8>)> = c
        .prepare_cached(
            "SELECT version, created_at, sealed FROM secrets \
             WHERE account_id = ?1 AND name = ?2 AND sealed IS NOT NULL",
        )?
        .query_row(params![account, name.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let found = row
        .map(|(version, created, sealed)| {
            Ok::<_, StorageError>(StoredSecret {
                version: u64_of(version)?,
                created,
                sealed,
            })
        })
        .transpose()?;
    let outcome = if found.is_some() {
        Outcome::Ok
    } else {
        Outcome::NotFound
    };
    append_event(
        c,
        account,
        user,
        &EventBody::about(EventKind::Retrieve, name, outcome),
        now,
    )?;
    Ok(found)
}

/// Deletes a secret, keeping its row (and version) with no ciphertext.
fn delete_secret(
    c: &Connection,
    account: i64,
    user: &UserName,
    name: &SecretName,
    now: i64,
) -> Result<bool, StorageError> {
    let done = c
        .prepare_cached(
            "UPDATE secrets SET sealed = NULL WHERE account_id = ?1 AND name = ?2 \
             AND sealed IS NOT NULL",
        )?
        .execute(params![account, name.as_str()])?
        > 0;
    if done {
        c.prepare_cached("UPDATE accounts SET live_secrets = live_secrets - 1 WHERE id = ?1")?
            .execute(params![account])?;
    }
    let outcome = if done { Outcome::Ok } else { Outcome::NotFound };
    append_event(
        c,
        account,
        user,
        &EventBody::about(EventKind::Delete, name, outcome),
        now,
    )?;
    Ok(done)
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn create_account(
        &self,
        user: &UserName,
        record: &[u8],
        sealed_storage_key: &[u8],
        now: i64,
    ) -> Result<bool, StorageError> {
        let (user, record, sealed_storage_key) =
            (user.clone(), record.to_vec(), sealed_storage_key.to_vec());
        self.writer
            .change(move |c| {
                let id: Option<i64> = c
                    .prepare_cached(
                        "INSERT INTO accounts (user_name, record, sealed_storage_key, created_at, audit_head) \
                         VALUES (?1, ?2, ?3, ?4, X'') ON CONFLICT (user_name) DO NOTHING RETURNING id",
                    )?
                    .query_row(params![user.as_str(), record, sealed_storage_key, now], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let Some(id) = id else { return Ok(false) };
                let event = EventBody::new(EventKind::Register, Outcome::Ok);
                append_event(c, id, &user, &event, now)?;
                Ok(true)
            })
            .await
    }

    async fn find_account(&self, user: &UserName) -> Result<Option<Account>, StorageError> {
        let row = sqlx::query("SELECT id, record, sealed_storage_key, failed_logins, last_login_attempt FROM accounts WHERE user_name = ?")
            .bind(user.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(Account {
                id: r.try_get(0)?,
                record: r.try_get(1)?,
                sealed_storage_key: r.try_get(2)?,
                failed_logins: u64_of(r.try_get(3)?)?,
                last_login_attempt: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn begin_login(
        &self,
        account: i64,
        user: &UserName,
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<LoginGate, StorageError> {
        let (user, policy) = (user.clone(), *policy);
        self.writer
            .change(move |c| begin_login(c, account, &user, &policy, now))
            .await
    }

    async fn begin_unknown_login(
        &self,
        name_key: [u8; 32],
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<LoginGate, StorageError> {
        let policy = *policy;
        self.writer
            .change(move |c| begin_unknown_login(c, &name_key, &policy, now))
            .await
    }

    async fn start_login(
        &self,
        user: &UserName,
        name_key: [u8; 32],
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<LoginStart, StorageError> {
        let (user, policy) = (user.clone(), *policy);
        self.writer
            .change(move |c| {
                let account = find_account(c, &user)?;
                let gate = match &account {
                    Some(a) => begin_login(c, a.id, &user, &policy, now)?,
                    None => begin_unknown_login(c, &name_key, &policy, now)?,
                };
                Ok(LoginStart { account, gate })
            })
            .await
    }

    async fn login_succeeded(
        &self,
        account: i64,
        user: &UserName,
        session: NewSession<'_>,
        max_sessions: u64,
        now: i64,
    ) -> Result<bool, StorageError> {
        let user = user.clone();
        let session = (session.id, session.sealed_keys.to_vec());
        self.writer
            .change(move |c| {
                let count: i64 = c
                    .prepare_cached("SELECT COUNT(*) FROM sessions WHERE account_id = ?1")?
                    .query_row(params![account], |r| r.get(0))?;
                let room = u64_of(count)? < max_sessions;
                login_finished(c, account, &user, room.then_some(session), true, now)?;
                Ok(room)
            })
            .await
    }

    async fn purge_unknown_logins(&self, before: i64) -> Result<u64, StorageError> {
        self.writer
            .run(Durability::Process, move |c| {
                let n = c
                    .prepare_cached("DELETE FROM unknown_logins WHERE last_login_attempt < ?1")?
                    .execute(params![before])?;
                Ok(n as u64)
            })
            .await
    }

    async fn login_finished(
        &self,
        account: i64,
        user: &UserName,
        success: bool,
        session: Option<NewSession<'_>>,
        now: i64,
    ) -> Result<(), StorageError> {
        let user = user.clone();
        let session = session.map(|s| (s.id, s.sealed_keys.to_vec()));
        self.writer
            .change(move |c| login_finished(c, account, &user, session, success, now))
            .await
    }

    async fn change_password(
        &self,
        account: i64,
        user: &UserName,
        record: &[u8],
        sealed_storage_key: &[u8],
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<Done<()>, StorageError> {
        let (user, record, sealed_storage_key, response) = (
            user.clone(),
            record.to_vec(),
            sealed_storage_key.to_vec(),
            response.to_vec(),
        );
        self.writer
            .change(move |c| {
                if let Some(r) = recorded(c, req)? {
                    return Ok(Done::Recorded(r));
                }
                c.prepare_cached(
                    "UPDATE accounts SET record = ?1, sealed_storage_key = ?2, failed_logins = 0 \
                     WHERE id = ?3",
                )?
                .execute(params![record, sealed_storage_key, account])?;
                let event = EventBody::new(EventKind::ChangePassword, Outcome::Ok);
                append_event(c, account, &user, &event, now)?;
                record_response(c, req, &response, now)?;
                Ok(Done::Fresh(()))
            })
            .await
    }

    async fn store_secret(
        &self,
        account: i64,
        user: &UserName,
        s: NewSecret<'_>,
        req: RequestId,
        encode: Encode<StoreOutcome>,
        now: i64,
    ) -> Result<Done<StoreOutcome>, StorageError> {
        let (user, name, sealed) = (user.clone(), s.name.clone(), s.sealed.to_vec());
        let (version, replace, quota) = (s.version, s.replace, self.quota);
        self.writer
            .change(move |c| {
                if let Some(r) = recorded(c, req)? {
                    return Ok(Done::Recorded(r));
                }
                let new = NewSecret {
                    name: &name,
                    version,
                    replace,
                    sealed: &sealed,
                };
                let outcome = store_secret(c, account, &user, &new, quota, now)?;
                record_response(c, req, &encode(&outcome), now)?;
                Ok(Done::Fresh(outcome))
            })
            .await
    }

    async fn retrieve_secret(
        &self,
        account: i64,
        user: &UserName,
        name: &SecretName,
        now: i64,
    ) -> Result<Option<StoredSecret>, StorageError> {
        let (user, name) = (user.clone(), name.clone());
        self.writer
            .run(Durability::Process, move |c| {
                retrieve_secret(c, account, &user, &name, now)
            })
            .await
    }

    async fn list_secrets(
        &self,
        account: i64,
        user: &UserName,
        after: Option<&SecretName>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<SecretEntry>, StorageError> {
        let rows = sqlx::query(
            "SELECT name, version, length(sealed), created_at FROM secrets \
             WHERE account_id = ? AND sealed IS NOT NULL AND name > ? ORDER BY name LIMIT ?",
        )
        .bind(account)
        .bind(after.map_or("", SecretName::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        let entries = rows
            .into_iter()
            .map(|r| {
                let name: String = r.try_get(0)?;
                let len = u64_of(r.try_get(2)?)?;
                Ok(SecretEntry {
                    name: SecretName::new(name)
                        .map_err(|e| StorageError::Corrupt(format!("stored secret name: {e}")))?,
                    version: u64_of(r.try_get(1)?)?,
                    size: plaintext_len(usize::try_from(len).unwrap_or(usize::MAX)) as u64,
                    created: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        if after.is_none() {
            self.record_event(
                account,
                user,
                EventBody::new(EventKind::List, Outcome::Ok),
                now,
            )
            .await?;
        }
        Ok(entries)
    }

    async fn delete_secret(
        &self,
        account: i64,
        user: &UserName,
        name: &SecretName,
        req: RequestId,
        encode: Encode<bool>,
        now: i64,
    ) -> Result<Done<bool>, StorageError> {
        let (user, name) = (user.clone(), name.clone());
        self.writer
            .change(move |c| {
                if let Some(r) = recorded(c, req)? {
                    return Ok(Done::Recorded(r));
                }
                let done = delete_secret(c, account, &user, &name, now)?;
                record_response(c, req, &encode(&done), now)?;
                Ok(Done::Fresh(done))
            })
            .await
    }

    async fn logout(
        &self,
        account: i64,
        user: &UserName,
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<Done<()>, StorageError> {
        let (user, response) = (user.clone(), response.to_vec());
        self.writer
            .change(move |c| {
                if let Some(r) = recorded(c, req)? {
                    return Ok(Done::Recorded(r));
                }
                let event = EventBody::new(EventKind::Logout, Outcome::Ok);
                append_event(c, account, &user, &event, now)?;
                c.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                    .execute(params![&req.session[..]])?;
                record_response(c, req, &response, now)?;
                Ok(Done::Fresh(()))
            })
            .await
    }

    async fn session_count(&self, account: i64) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE account_id = ?")
            .bind(account)
            .fetch_one(&self.read)
            .await?;
        u64_of(n)
    }

    async fn load_session(&self, id: [u8; 16]) -> Result<Option<StoredSession>, StorageError> {
        let row = sqlx::query(
            "SELECT s.account_id, a.user_name, s.sealed_keys, s.created_at, s.last_used \
             FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE s.id = ?",
        )
        .bind(&id[..])
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let user: String = r.try_get(1)?;
            Ok(StoredSession {
                account: r.try_get(0)?,
                user: UserName::new(user)
                    .map_err(|e| StorageError::Corrupt(format!("stored user name: {e}")))?,
                sealed_keys: r.try_get(2)?,
                created: r.try_get(3)?,
                last_used: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn touch_session(&self, id: [u8; 16], now: i64) -> Result<bool, StorageError> {
        self.writer
            .run(Durability::Process, move |c| {
                let n = c
                    .prepare_cached("UPDATE sessions SET last_used = ?1 WHERE id = ?2")?
                    .execute(params![now, &id[..]])?;
                Ok(n > 0)
            })
            .await
    }

    async fn purge_sessions(
        &self,
        created_before: i64,
        used_before: i64,
    ) -> Result<u64, StorageError> {
        self.writer
            .run(Durability::Process, move |c| {
                let n = c
                    .prepare_cached("DELETE FROM sessions WHERE created_at < ?1 OR last_used < ?2")?
                    .execute(params![created_before, used_before])?;
                Ok(n as u64)
            })
            .await
    }

    async fn recorded_response(&self, req: RequestId) -> Result<Option<Vec<u8>>, StorageError> {
        let r = sqlx::query_scalar(
            "SELECT response FROM session_responses WHERE session_id = ? AND seq = ?",
        )
        .bind(&req.session[..])
        .bind(i64_of(req.seq)?)
        .fetch_optional(&self.read)
        .await?;
        Ok(r)
    }

    async fn purge_responses(&self, before: i64) -> Result<u64, StorageError> {
        self.writer
            .run(Durability::Process, move |c| {
                let n = c
                    .prepare_cached("DELETE FROM session_responses WHERE created_at < ?1")?
                    .execute(params![before])?;
                Ok(n as u64)
            })
            .await
    }

    async fn audit_events(
        &self,
        account: i64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, time, kind, secret, outcome, hash FROM audit_events WHERE account_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(account)
        .bind(i64_of(after)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(|r| event_from_row(&r)).collect()
    }

    async fn record_event(
        &self,
        account: i64,
        user: &UserName,
        event: EventBody,
        now: i64,
    ) -> Result<(), StorageError> {
        let user = user.clone();
        self.writer
            .run(Durability::Process, move |c| {
                append_event(c, account, &user, &event, now)
            })
            .await
    }
}

fn event_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AuditEvent, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("audit event: bad {what}"));
    let kind: i64 = r.try_get(2)?;
    let outcome: i64 = r.try_get(4)?;
    let secret: Option<String> = r.try_get(3)?;
    let hash: Vec<u8> = r.try_get(5)?;
    Ok(AuditEvent {
        seq: u64_of(r.try_get(0)?)?,
        time: r.try_get(1)?,
        body: EventBody {
            kind: u8::try_from(kind)
                .ok()
                .and_then(EventKind::from_code)
                .ok_or_else(|| corrupt("kind"))?,
            secret: secret
                .map(SecretName::new)
                .transpose()
                .map_err(|_| corrupt("secret name"))?,
            outcome: u8::try_from(outcome)
                .ok()
                .and_then(Outcome::from_code)
                .ok_or_else(|| corrupt("outcome"))?,
        },
        hash: hash.as_slice().try_into().map_err(|_| corrupt("hash"))?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn fresh(quota: Option<u64>) -> Option<(Arc<dyn Storage>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("test.db"))
            .await
            .unwrap();
        let s = s.with_secret_quota(quota.unwrap_or(MAX_SECRETS_PER_ACCOUNT));
        Some((Arc::new(s), dir))
    }

    crate::storage_contract_tests!(fresh);

    #[tokio::test]
    async fn the_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_s, dir) = fresh(None).await.unwrap();
        let mode = std::fs::metadata(dir.path().join("test.db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// The writer never checkpoints; the checkpoint thread copies its WAL back into the
    /// database file (which only a checkpoint makes grow) within a few of its periods.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_copied_back_beside_the_writer() {
        let (s, dir) = fresh(None).await.unwrap();
        let db = dir.path().join("test.db");
        let before = std::fs::metadata(&db).unwrap().len();
        assert!(
            s.create_account(&UserName::new("alice").unwrap(), b"record", b"key", 1)
                .await
                .unwrap()
        );
        let id = s
            .find_account(&UserName::new("alice").unwrap())
            .await
            .unwrap()
            .unwrap()
            .id;
        let user = UserName::new("alice").unwrap();
        let blob = vec![7u8; 4096];
        for i in 0..64u64 {
            let name = SecretName::new(format!("s{i}")).unwrap();
            let new = NewSecret {
                name: &name,
                version: 1,
                replace: false,
                sealed: &blob,
            };
            let req = RequestId {
                session: [1; 16],
                seq: i + 1,
            };
            let encode: Encode<StoreOutcome> = |_| Vec::new();
            s.store_secret(id, &user, new, req, encode, 2)
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
}
