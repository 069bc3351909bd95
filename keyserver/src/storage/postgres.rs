//! The production backend: Postgres, which many instances can share.
//!
//! A write job is one transaction. Reading an account in it takes the account's row lock
//! (`SELECT … FOR UPDATE`), so that the jobs of one account are serialised across every
//! instance of a fleet: the audit chain stays linear, versions never race, the guess count
//! cannot be passed by concurrent logins, and a request recorded by one instance is seen by
//! the next. Different accounts never wait for each other. sqlx's migrator takes an
//! advisory lock, so instances starting together against an empty database do not race.
//!
//! The write jobs of sessions (every operation on an account) are committed in groups: each
//! account's jobs queue for one of [`COMMITTERS`] tasks, which runs the jobs waiting as one
//! transaction, one savepoint each (a failing job is rolled back alone), commits once, and
//! only then acknowledges them. One commit's round trip and disk flush serve a whole batch.
//! Jobs that name no account up front (logins, registration, upkeep) run alone.
//!
//! Reads and writes have pools of their own, so that a flood of reads (sessions looked up,
//! audit pages) cannot take every connection a write needs. Every connection sets
//! `synchronous_commit = on`: a commit is acknowledged only once Postgres has it on disk,
//! whatever the server's default.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::FutureExt;
use keyserver_protocol::{
    KeyName, NameTag, UserName, audit_chain::AuditEvent, ops::StoredCheckpoint,
};
use sqlx::{
    PgConnection, PgPool, Row,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};
use tokio::sync::{mpsc, oneshot};

use super::{
    AccountId, AccountRow, Backend, Credentials, Durability, Guesses, HeldKeyRow, Job, KeyUsage,
    NewAccount, RawAccount, RawEvent, RawHeldKey, RequestId, SecretListing, SecretRow, SessionRow,
    SessionState, StagedRow, StorageError, StoredSession, Tx, UnknownRow, account_columns,
    checkpoint_of, hash_of, held_key_columns, i64_of, limit_of, tag_of, u64_of, user_of,
};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections for write jobs.
pub const WRITE_POOL: u32 = 16;
/// Connections for read jobs.
pub const READ_POOL: u32 = 8;

/// Committers: the tasks that run the write jobs of sessions in batches, each with one
/// connection of the write pool at a time. An account's jobs always go to the same one.
pub const COMMITTERS: usize = 4;

/// Jobs in one batch at most. Each job is a savepoint, and a savepoint that writes is a
/// subtransaction: Postgres keeps 64 of them per backend in shared memory, and beyond that
/// every snapshot in the database pays for lookups in `pg_subtrans`. 48 stays below.
pub const MAX_BATCH: usize = 48;

/// Jobs waiting for each committer at most, before a sender waits too.
const QUEUE: usize = 256;

/// How long a statement waits for a lock before it fails (`lock_timeout`): a job stuck
/// behind a lock would hold up its whole batch. Account locks are held for one batch's
/// time (milliseconds); ten seconds only ends what is stuck.
const LOCK_TIMEOUT: &str = "10s";

/// How long a connection of ours may sit idle inside a transaction before the database
/// ends it (`idle_in_transaction_session_timeout`).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// The Postgres backend.
#[derive(Clone, Debug)]
pub struct PostgresBackend {
    write: PgPool,
    read: PgPool,
    committers: Arc<[mpsc::Sender<Queued>]>,
    observer: Arc<std::sync::OnceLock<super::CommitObserver>>,
}

/// A job waiting for its committer.
struct Queued {
    account: AccountId,
    job: Job,
    done: oneshot::Sender<Result<(), StorageError>>,
}

impl PostgresBackend {
    /// Connects to `url` and applies migrations. Fails at once (after a 3 s connect
    /// timeout) if the database cannot be reached: a server must not start without it.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e| StorageError::Unavailable(format!("invalid database URL: {e}")))?;
        Self::connect_with(opts).await
    }

    /// As [`Self::connect`], with options.
    pub async fn connect_with(opts: PgConnectOptions) -> Result<Self, StorageError> {
        let opts = opts.options([("synchronous_commit", "on")]);
        let pool = |size, opts: &PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts.clone())
        };
        // Migrations on a connection of their own, without the request path's timeouts
        // (an index built on a large table may take long).
        {
            let migrating = pool(1, &opts).await?;
            MIGRATOR
                .run(&migrating)
                .await
                .map_err(|e| StorageError::Unavailable(format!("migration failed: {e}")))?;
            migrating.close().await;
        }
        // A job waiting on a lock held elsewhere (another instance's batch, an operator's
        // session) fails alone after LOCK_TIMEOUT instead of stalling its committer and
        // every account queued behind it; a transaction left idle by a stuck client of
        // ours is ended by the database.
        let opts = opts.options([
            ("lock_timeout", LOCK_TIMEOUT),
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            ),
        ]);
        let write = pool(WRITE_POOL, &opts).await?;
        let read = pool(READ_POOL, &opts).await?;
        let observer = Arc::new(std::sync::OnceLock::new());
        let committers = (0..COMMITTERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(commit_loop(write.clone(), rx, observer.clone()));
                tx
            })
            .collect();
        Ok(Self {
            write,
            read,
            committers,
            observer,
        })
    }

    /// Runs `job` alone, in a transaction of its own.
    async fn write_alone(&self, job: Job) -> Result<(), StorageError> {
        let started = crate::clock::Stopwatch::start();
        let mut tx = self.write.begin().await?;
        let result = match job(&mut PgTx::new(&mut tx, true)).await {
            // A statement of our own fails if the job left the transaction aborted while
            // answering success (an SQL error it went past): COMMIT would then answer
            // ROLLBACK, which sqlx does not report.
            Ok(()) => exec(&mut tx, "SELECT 1").await.map_err(StorageError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tx.commit().await?;
                if let Some(o) = self.observer.get() {
                    (o.0)(started.elapsed(), 1);
                }
                Ok(())
            }
            Err(e) => {
                // End the transaction now: dropped, it would hold its locks until the
                // connection is next used.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

/// A committer: takes the jobs waiting (up to [`MAX_BATCH`]) and runs them as one batch,
/// for as long as the backend lives.
async fn commit_loop(
    pool: PgPool,
    mut rx: mpsc::Receiver<Queued>,
    observer: Arc<std::sync::OnceLock<super::CommitObserver>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (jobs, started) = (batch.len(), crate::clock::Stopwatch::start());
        // A panic outside the jobs (each is caught on its own) fails this batch's callers
        // (their answers are dropped) and not the committer: the accounts queued here
        // would otherwise be refused until a restart.
        let committed = AssertUnwindSafe(commit_batch(&pool, &mut batch))
            .catch_unwind()
            .await
            .unwrap_or(false);
        batch.clear();
        if committed && let Some(o) = observer.get() {
            (o.0)(started.elapsed(), jobs);
        }
    }
}

/// Runs every job of `batch` in one transaction, one savepoint each, in the order of their
/// accounts; commits; answers each job. Whether it committed.
///
/// The order is what keeps batches of different instances from deadlocking: each job
/// locks its own account (the one it was queued for), so every batch takes its locks in
/// ascending account order. Within an instance, an account's jobs all go to one committer,
/// so two batches of one instance never wait for each other.
async fn commit_batch(pool: &PgPool, batch: &mut Vec<Queued>) -> bool {
    batch.sort_by_key(|q| q.account);
    let mut answers = Vec::with_capacity(batch.len());
    let outcome: Result<(), sqlx::Error> = async {
        let mut tx = pool.begin().await?;
        exec(&mut tx, "SAVEPOINT job").await?;
        for Queued { job, done, .. } in batch.drain(..) {
            let mut result = AssertUnwindSafe(job(&mut PgTx::new(&mut tx, true)))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(StorageError::Unavailable(
                        "a database job failed unexpectedly".into(),
                    ))
                });
            if result.is_ok() {
                // The job's release and the next one's savepoint, in one round trip. It
                // fails if the job left the transaction aborted while answering success
                // (an SQL error it went past): that job failed. Without this check, a
                // COMMIT of an aborted transaction answers ROLLBACK, which sqlx does not
                // report, and the whole batch would be acknowledged and lost.
                if let Err(e) = exec(&mut tx, "RELEASE SAVEPOINT job; SAVEPOINT job").await {
                    result = Err(e.into());
                }
            }
            if result.is_err() {
                // Undoes the job's writes and releases the locks it took; the batch's
                // transaction goes on (also after an SQL error inside the job), and the
                // savepoint stays for the next job.
                exec(&mut tx, "ROLLBACK TO SAVEPOINT job").await?;
            }
            answers.push((done, result));
        }
        tx.commit().await
    }
    .await;
    // Jobs not run (an error above stopped the batch) drop their senders: their callers
    // hear that the batch failed, and nothing of theirs was committed. A transaction left
    // open is rolled back when dropped, before its connection is used again.
    batch.clear();
    let failure = outcome.err().map(|e| StorageError::from(e).to_string());
    if let Some(e) = &failure {
        tracing::warn!(error = %e, "database batch failed");
    }
    for (done, result) in answers {
        let answer = match &failure {
            Some(e) => Err(StorageError::Unavailable(format!("commit failed: {e}"))),
            None => result,
        };
        let _ = done.send(answer);
    }
    failure.is_none()
}

/// Runs `sql` (statements of our own, no parameters) on `conn`, in one round trip.
fn exec<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
) -> super::BoxFuture<'c, Result<(), sqlx::Error>> {
    // A query without arguments goes by the simple protocol, which takes several
    // statements at once.
    Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(drop) })
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn write(&self, _durability: Durability, job: Job) -> Result<(), StorageError> {
        self.write_alone(job).await
    }

    /// Queued for the account's committer, and acknowledged once its batch committed
    /// (every commit is synchronous: see the module's header).
    async fn write_for(
        &self,
        account: AccountId,
        _durability: Durability,
        job: Job,
    ) -> Result<(), StorageError> {
        let stopped = || StorageError::Unavailable("the database committer stopped".into());
        let n = u64::try_from(self.committers.len()).unwrap_or(1).max(1);
        // Account ids are positive; any id maps to some committer.
        let i = usize::try_from(account.unsigned_abs() % n).unwrap_or(0);
        let (done, answer) = oneshot::channel();
        self.committers[i]
            .send(Queued { account, job, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn read(&self, job: Job) -> Result<(), StorageError> {
        let mut tx = self.read.begin().await?;
        let r = job(&mut PgTx::new(&mut tx, false)).await;
        let _ = tx.rollback().await;
        r
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    /// One job running and one ready: the account's jobs run one at a time in the database
    /// anyway (each locks the account), and an account's jobs queue for one committer, so
    /// more would only delay the other accounts queued there.
    fn jobs_per_account(&self) -> Option<usize> {
        Some(2)
    }

    fn pools(&self) -> Vec<(&'static str, u32, u32)> {
        let of = |p: &PgPool| (p.size(), u32::try_from(p.num_idle()).unwrap_or(u32::MAX));
        let ((ws, wi), (rs, ri)) = (of(&self.write), of(&self.read));
        vec![("write", ws, wi), ("read", rs, ri)]
    }

    fn observe_commits(&self, observer: super::CommitObserver) {
        let _ = self.observer.set(observer);
    }
}

/// One job, on a connection inside a transaction (its own, or a savepoint of a batch).
struct PgTx<'c> {
    tx: &'c mut PgConnection,
    /// Whether account reads lock their row (write jobs).
    locking: bool,
    /// The account row this write job locked, as it last read or saved it. While the job
    /// holds the row's lock no one else can change it, so reading it again (the audit
    /// position every answer carries, a handler's own read) needs no round trip. Only the
    /// job's own statements change it, through [`Tx::save_account`].
    locked: Option<AccountRow>,
}

impl<'c> PgTx<'c> {
    fn new(tx: &'c mut PgConnection, locking: bool) -> Self {
        Self {
            tx,
            locking,
            locked: None,
        }
    }

    /// Keeps `row` as the locked account's, in a write job.
    fn keep(&mut self, row: Option<&AccountRow>) {
        if self.locking
            && let Some(r) = row
        {
            self.locked = Some(r.clone());
        }
    }

    /// The locked account `id` as this job last saw it, if it holds it.
    fn held(&self, id: AccountId) -> Option<AccountRow> {
        self.locked.as_ref().filter(|a| a.id == id).cloned()
    }
}

fn account_of(r: &PgRow) -> Result<AccountRow, StorageError> {
    RawAccount {
        id: r.try_get(0)?,
        user: r.try_get(1)?,
        failed: r.try_get(2)?,
        last_attempt: r.try_get(3)?,
        audit_seq: r.try_get(4)?,
        audit_head: r.try_get(5)?,
        live_secrets: r.try_get(6)?,
        epoch: r.try_get(7)?,
        lockout_logged: r.try_get(8)?,
    }
    .check()
}

#[async_trait]
impl Tx for PgTx<'_> {
    async fn insert_account(
        &mut self,
        new: &NewAccount<'_>,
    ) -> Result<Option<AccountRow>, StorageError> {
        let row = sqlx::query(concat!(
            "INSERT INTO accounts (user_name, record, credential_id, sealed_storage_key, \
             created_at, audit_head, epoch) VALUES ($1, $2, $3, $4, $5, ''::bytea, 1) \
             ON CONFLICT (user_name) DO NOTHING RETURNING ",
            account_columns!()
        ))
        .bind(new.user.as_str())
        .bind(new.record)
        .bind(new.credential_id)
        .bind(new.sealed_storage_key)
        .bind(new.created)
        .fetch_optional(&mut *self.tx)
        .await?;
        let row = row.as_ref().map(account_of).transpose()?;
        self.keep(row.as_ref());
        Ok(row)
    }

    async fn account_by_name(
        &mut self,
        user: &UserName,
    ) -> Result<Option<AccountRow>, StorageError> {
        let row = sqlx::query(if self.locking {
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE user_name = $1 FOR UPDATE"
            )
        } else {
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE user_name = $1"
            )
        })
        .bind(user.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        let row = row.as_ref().map(account_of).transpose()?;
        self.keep(row.as_ref());
        Ok(row)
    }

    async fn account(&mut self, id: AccountId) -> Result<Option<AccountRow>, StorageError> {
        if let Some(held) = self.held(id) {
            return Ok(Some(held));
        }
        let row = sqlx::query(if self.locking {
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id = $1 FOR UPDATE"
            )
        } else {
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id = $1"
            )
        })
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        let row = row.as_ref().map(account_of).transpose()?;
        self.keep(row.as_ref());
        Ok(row)
    }

    async fn save_account(&mut self, a: &AccountRow) -> Result<(), StorageError> {
        let head: &[u8] = a.audit_head.as_ref().map_or(&[], |h| &h[..]);
        sqlx::query(
            "UPDATE accounts SET failed_logins = $1, last_login_attempt = $2, audit_seq = $3, \
             audit_head = $4, live_secrets = $5, epoch = $6, lockout_logged = $7 WHERE id = $8",
        )
        .bind(i64_of(a.guesses.failed)?)
        .bind(a.guesses.last_attempt)
        .bind(i64_of(a.audit_seq)?)
        .bind(head)
        .bind(i64_of(a.live_secrets)?)
        .bind(i64_of(a.epoch)?)
        .bind(i64::from(a.guesses.lockout_logged))
        .bind(a.id)
        .execute(&mut *self.tx)
        .await?;
        if self.locked.as_ref().is_some_and(|l| l.id == a.id) {
            self.locked = Some(a.clone());
        }
        Ok(())
    }

    async fn credentials(&mut self, id: AccountId) -> Result<Option<Credentials>, StorageError> {
        let row = sqlx::query(
            "SELECT record, credential_id, sealed_storage_key FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(Credentials {
                record: r.try_get(0)?,
                credential_id: r.try_get(1)?,
                sealed_storage_key: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn set_credentials(
        &mut self,
        id: AccountId,
        c: &Credentials,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE accounts SET record = $1, credential_id = $2, sealed_storage_key = $3 \
             WHERE id = $4",
        )
        .bind(&c.record)
        .bind(&c.credential_id)
        .bind(&c.sealed_storage_key)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_event(
        &mut self,
        account: AccountId,
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO audit_events (account_id, seq, time, kind, secret, outcome, hash, \
             version, key_name, digest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(account)
        .bind(i64_of(e.seq)?)
        .bind(e.time)
        .bind(e.body.kind as i64)
        .bind(e.body.secret.as_ref().map(|t| &t.0[..]))
        .bind(e.body.outcome as i64)
        .bind(&e.hash[..])
        .bind(e.body.version.map(i64_of).transpose()?)
        .bind(e.body.key.as_ref().map(KeyName::as_str))
        .bind(e.body.digest.as_ref().map(|d| &d[..]))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn events(
        &mut self,
        account: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, time, kind, secret, outcome, hash, version, key_name, digest \
             FROM audit_events WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(account)
        .bind(i64_of(after)?)
        .bind(limit_of(limit))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                RawEvent {
                    seq: r.try_get(0)?,
                    time: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    secret: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    hash: r.try_get(5)?,
                    version: r.try_get(6)?,
                    key: r.try_get(7)?,
                    digest: r.try_get(8)?,
                }
                .check()
            })
            .collect()
    }

    async fn secret(
        &mut self,
        account: AccountId,
        tag: &NameTag,
    ) -> Result<Option<SecretRow>, StorageError> {
        let row = sqlx::query(
            "SELECT sealed_name, version, sealed, created_at FROM secrets \
             WHERE account_id = $1 AND tag = $2",
        )
        .bind(account)
        .bind(&tag.0[..])
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(SecretRow {
                sealed_name: r.try_get(0)?,
                version: u64_of(r.try_get(1)?)?,
                sealed: r.try_get(2)?,
                created: r.try_get(3)?,
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
        sqlx::query(
            "INSERT INTO secrets (account_id, tag, sealed_name, version, sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (account_id, tag) DO UPDATE SET sealed_name = excluded.sealed_name, \
             version = excluded.version, sealed = excluded.sealed, \
             created_at = excluded.created_at",
        )
        .bind(account)
        .bind(&tag.0[..])
        .bind(&row.sealed_name)
        .bind(i64_of(row.version)?)
        .bind(row.sealed.as_deref())
        .bind(row.created)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn secrets(
        &mut self,
        account: AccountId,
        after: Option<&NameTag>,
        limit: usize,
        deleted: bool,
    ) -> Result<Vec<SecretListing>, StorageError> {
        // Two statements, so that the live one can use the index of live secrets (a
        // condition with a parameter in it could not, in a generic plan).
        let rows = sqlx::query(if deleted {
            "SELECT tag, sealed_name, version, length(sealed)::BIGINT, created_at FROM secrets \
             WHERE account_id = $1 AND tag > $2 ORDER BY tag LIMIT $3"
        } else {
            "SELECT tag, sealed_name, version, length(sealed)::BIGINT, created_at FROM secrets \
             WHERE account_id = $1 AND sealed IS NOT NULL AND tag > $2 ORDER BY tag LIMIT $3"
        })
        .bind(account)
        .bind(after.map_or(&[][..], |t| &t.0[..]))
        .bind(limit_of(limit))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                let tag: Vec<u8> = r.try_get(0)?;
                let len: Option<i64> = r.try_get(3)?;
                Ok(SecretListing {
                    tag: tag_of(&tag)?,
                    sealed_name: r.try_get(1)?,
                    version: u64_of(r.try_get(2)?)?,
                    sealed_len: len.map(u64_of).transpose()?,
                    created: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn count_secret_rows(&mut self, account: AccountId) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE account_id = $1")
            .bind(account)
            .fetch_one(&mut *self.tx)
            .await?;
        u64_of(n)
    }

    async fn held_key(
        &mut self,
        account: AccountId,
        name: &KeyName,
    ) -> Result<Option<HeldKeyRow>, StorageError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            held_key_columns!(),
            " FROM held_keys WHERE account_id = $1 AND name = $2"
        ))
        .bind(account)
        .bind(name.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| held_key_row(&r)?.check()).transpose()
    }

    async fn insert_held_key(
        &mut self,
        account: AccountId,
        row: &HeldKeyRow,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "INSERT INTO held_keys (account_id, name, algorithm, public_key, sealed_key, \
             exportable, created_at, signatures, window_start, window_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (account_id, name) DO NOTHING",
        )
        .bind(account)
        .bind(row.name.as_str())
        .bind(i16::from(row.algorithm.code()))
        .bind(&row.public_key)
        .bind(&row.sealed_key)
        .bind(row.exportable)
        .bind(row.created)
        .bind(i64_of(row.usage.signatures)?)
        .bind(row.usage.window_start)
        .bind(i64_of(row.usage.window_count)?)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_key_usage(
        &mut self,
        account: AccountId,
        name: &KeyName,
        usage: &KeyUsage,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE held_keys SET signatures = $1, window_start = $2, window_count = $3 \
             WHERE account_id = $4 AND name = $5",
        )
        .bind(i64_of(usage.signatures)?)
        .bind(usage.window_start)
        .bind(i64_of(usage.window_count)?)
        .bind(account)
        .bind(name.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn delete_held_key(
        &mut self,
        account: AccountId,
        name: &KeyName,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM held_keys WHERE account_id = $1 AND name = $2")
            .bind(account)
            .bind(name.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn held_keys(
        &mut self,
        account: AccountId,
        after: Option<&KeyName>,
        limit: usize,
    ) -> Result<Vec<HeldKeyRow>, StorageError> {
        // The "C" collation compares bytewise, whatever the database's default.
        let rows = sqlx::query(concat!(
            "SELECT ",
            held_key_columns!(),
            " FROM held_keys WHERE account_id = $1 AND name COLLATE \"C\" > $2 \
             ORDER BY name COLLATE \"C\" LIMIT $3"
        ))
        .bind(account)
        .bind(after.map_or("", KeyName::as_str))
        .bind(limit_of(limit))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(|r| held_key_row(r)?.check()).collect()
    }

    async fn count_held_keys(&mut self, account: AccountId) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM held_keys WHERE account_id = $1")
            .bind(account)
            .fetch_one(&mut *self.tx)
            .await?;
        u64_of(n)
    }

    async fn signatures_in_window(
        &mut self,
        account: AccountId,
        window_start: i64,
    ) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(window_count), 0)::BIGINT FROM held_keys \
             WHERE account_id = $1 AND window_start >= $2",
        )
        .bind(account)
        .bind(window_start)
        .fetch_one(&mut *self.tx)
        .await?;
        u64_of(n)
    }

    async fn recorded(&mut self, req: RequestId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT response FROM session_responses WHERE session_id = $1 AND seq = $2",
        )
        .bind(&req.session[..])
        .bind(i64_of(req.seq)?)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    async fn record(
        &mut self,
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO session_responses (session_id, seq, response, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&req.session[..])
        .bind(i64_of(req.seq)?)
        .bind(response)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn purge_responses(&mut self, before: i64) -> Result<u64, StorageError> {
        Ok(sqlx::query(
            "DELETE FROM session_responses WHERE (session_id, seq) IN (SELECT session_id, \
                 seq FROM session_responses WHERE created_at < $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before)
        .execute(&mut *self.tx)
        .await?
        .rows_affected())
    }

    async fn insert_session(&mut self, s: &SessionRow) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO sessions (id, account_id, sealed_keys, created_at, last_used, \
             reauthed_at, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id[..])
        .bind(s.account)
        .bind(&s.sealed_keys)
        .bind(s.created)
        .bind(s.last_used)
        .bind(s.reauthed_at)
        .bind(i64_of(s.epoch)?)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn session(&mut self, id: [u8; 16]) -> Result<Option<StoredSession>, StorageError> {
        let row = sqlx::query(
            "SELECT s.account_id, a.user_name, s.sealed_keys, s.created_at, s.last_used, \
             s.reauthed_at, a.epoch, s.epoch FROM sessions s \
             JOIN accounts a ON a.id = s.account_id WHERE s.id = $1",
        )
        .bind(&id[..])
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(StoredSession {
                row: SessionRow {
                    id,
                    account: r.try_get(0)?,
                    sealed_keys: r.try_get(2)?,
                    created: r.try_get(3)?,
                    last_used: r.try_get(4)?,
                    reauthed_at: r.try_get(5)?,
                    epoch: u64_of(r.try_get(7)?)?,
                },
                user: user_of(r.try_get(1)?)?,
                epoch: u64_of(r.try_get(6)?)?,
            })
        })
        .transpose()
    }

    async fn session_state(&mut self, id: [u8; 16]) -> Result<Option<SessionState>, StorageError> {
        if self.locking {
            // Waits out a change holding the account; the next statement then reads the
            // sessions as that change left them (each statement takes a new snapshot).
            // The row it returns is the account as it is now, locked: kept for the job.
            let row = sqlx::query(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id = (SELECT account_id FROM sessions WHERE id = $1) \
                 FOR UPDATE"
            ))
            .bind(&id[..])
            .fetch_optional(&mut *self.tx)
            .await?;
            let row = row.as_ref().map(account_of).transpose()?;
            self.keep(row.as_ref());
        }
        let row = sqlx::query(
            "SELECT s.reauthed_at, s.epoch, a.epoch FROM sessions s \
             JOIN accounts a ON a.id = s.account_id WHERE s.id = $1",
        )
        .bind(&id[..])
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(SessionState {
                reauthed_at: r.try_get(0)?,
                epoch: u64_of(r.try_get(1)?)?,
                account_epoch: u64_of(r.try_get(2)?)?,
            })
        })
        .transpose()
    }

    async fn set_session_epoch(
        &mut self,
        id: [u8; 16],
        epoch: u64,
        sealed_keys: &[u8],
    ) -> Result<(), StorageError> {
        sqlx::query("UPDATE sessions SET epoch = $1, sealed_keys = $2 WHERE id = $3")
            .bind(i64_of(epoch)?)
            .bind(sealed_keys)
            .bind(&id[..])
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn set_session_reauth(
        &mut self,
        id: [u8; 16],
        at: Option<i64>,
    ) -> Result<(), StorageError> {
        sqlx::query("UPDATE sessions SET reauthed_at = $1 WHERE id = $2")
            .bind(at)
            .bind(&id[..])
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn delete_other_sessions(
        &mut self,
        account: AccountId,
        keep: [u8; 16],
    ) -> Result<u64, StorageError> {
        Ok(
            sqlx::query("DELETE FROM sessions WHERE account_id = $1 AND id <> $2")
                .bind(account)
                .bind(&keep[..])
                .execute(&mut *self.tx)
                .await?
                .rows_affected(),
        )
    }

    async fn stage_secret(
        &mut self,
        session: [u8; 16],
        account: AccountId,
        row: &StagedRow,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO staged_secrets (session_id, account_id, tag, new_tag, sealed_name, \
             version, sealed) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (session_id, tag) DO UPDATE SET new_tag = excluded.new_tag, \
             sealed_name = excluded.sealed_name, version = excluded.version, \
             sealed = excluded.sealed",
        )
        .bind(&session[..])
        .bind(account)
        .bind(&row.tag.0[..])
        .bind(&row.new_tag.0[..])
        .bind(&row.sealed_name)
        .bind(i64_of(row.version)?)
        .bind(row.sealed.as_deref())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn staged_count(&mut self, session: [u8; 16]) -> Result<u64, StorageError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM staged_secrets WHERE session_id = $1")
                .bind(&session[..])
                .fetch_one(&mut *self.tx)
                .await?;
        u64_of(n)
    }

    async fn staged_mismatches(
        &mut self,
        session: [u8; 16],
        account: AccountId,
    ) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT \
             (SELECT COUNT(*) FROM secrets s WHERE s.account_id = $2 \
              AND NOT EXISTS (SELECT 1 FROM staged_secrets t WHERE t.session_id = $1 \
              AND t.tag = s.tag AND t.version = s.version \
              AND (t.sealed IS NULL) = (s.sealed IS NULL))) + \
             (SELECT COUNT(*) FROM staged_secrets t WHERE t.session_id = $1 \
              AND NOT EXISTS (SELECT 1 FROM secrets s WHERE s.account_id = $2 \
              AND s.tag = t.tag AND s.version = t.version \
              AND (t.sealed IS NULL) = (s.sealed IS NULL)))",
        )
        .bind(&session[..])
        .bind(account)
        .fetch_one(&mut *self.tx)
        .await?;
        u64_of(n)
    }

    async fn apply_staged(
        &mut self,
        session: [u8; 16],
        account: AccountId,
    ) -> Result<u64, StorageError> {
        Ok(sqlx::query(
            "UPDATE secrets s SET tag = t.new_tag, sealed_name = t.sealed_name, \
             sealed = t.sealed FROM staged_secrets t \
             WHERE t.session_id = $1 AND s.account_id = $2 \
             AND t.tag = s.tag AND t.version = s.version",
        )
        .bind(&session[..])
        .bind(account)
        .execute(&mut *self.tx)
        .await?
        .rows_affected())
    }

    async fn delete_staged(&mut self, session: [u8; 16]) -> Result<u64, StorageError> {
        Ok(
            sqlx::query("DELETE FROM staged_secrets WHERE session_id = $1")
                .bind(&session[..])
                .execute(&mut *self.tx)
                .await?
                .rows_affected(),
        )
    }

    async fn purge_staged(&mut self) -> Result<u64, StorageError> {
        Ok(sqlx::query(
            "DELETE FROM staged_secrets WHERE (session_id, tag) IN (SELECT session_id, tag \
             FROM staged_secrets t WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = \
             t.session_id) FOR UPDATE OF t SKIP LOCKED)",
        )
        .execute(&mut *self.tx)
        .await?
        .rows_affected())
    }

    async fn count_sessions(&mut self, account: AccountId) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE account_id = $1")
            .bind(account)
            .fetch_one(&mut *self.tx)
            .await?;
        u64_of(n)
    }

    async fn touch_session(&mut self, id: [u8; 16], now: i64) -> Result<bool, StorageError> {
        Ok(
            sqlx::query("UPDATE sessions SET last_used = $1 WHERE id = $2")
                .bind(now)
                .bind(&id[..])
                .execute(&mut *self.tx)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn delete_session(&mut self, id: [u8; 16]) -> Result<bool, StorageError> {
        Ok(sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(&id[..])
            .execute(&mut *self.tx)
            .await?
            .rows_affected()
            > 0)
    }

    async fn purge_sessions(
        &mut self,
        created_before: i64,
        used_before: i64,
    ) -> Result<u64, StorageError> {
        // The purges skip rows a batch holds: a purge waiting on one batch's row while
        // holding another's could deadlock with it. What is skipped goes next round.
        Ok(sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE created_at < \
                 $1 OR last_used < $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(created_before)
        .bind(used_before)
        .execute(&mut *self.tx)
        .await?
        .rows_affected())
    }

    async fn event_hash(
        &mut self,
        account: AccountId,
        seq: u64,
    ) -> Result<Option<[u8; 32]>, StorageError> {
        let h: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM audit_events WHERE account_id = $1 AND seq = $2")
                .bind(account)
                .bind(i64_of(seq)?)
                .fetch_optional(&mut *self.tx)
                .await?;
        h.as_deref().map(hash_of).transpose()
    }

    async fn put_checkpoint(
        &mut self,
        account: AccountId,
        c: &StoredCheckpoint,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO checkpoints (account_id, seq, head, mac, created) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, seq) DO NOTHING",
        )
        .bind(account)
        .bind(i64_of(c.checkpoint.position.seq)?)
        .bind(&c.checkpoint.position.head[..])
        .bind(&c.checkpoint.mac[..])
        .bind(c.time)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn keyring(&mut self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let row = sqlx::query("SELECT generation, body FROM keyring WHERE id = 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| Ok((u64_of(r.try_get(0)?)?, r.try_get(1)?)))
            .transpose()
    }

    async fn has_accounts(&mut self) -> Result<bool, StorageError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts)")
            .fetch_one(&mut *self.tx)
            .await?)
    }

    async fn put_keyring(
        &mut self,
        previous: Option<u64>,
        generation: u64,
        body: &[u8],
    ) -> Result<bool, StorageError> {
        let done = match previous {
            None => {
                sqlx::query(
                    "INSERT INTO keyring (id, generation, body) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO NOTHING",
                )
                .bind(i64_of(generation)?)
                .bind(body)
                .execute(&mut *self.tx)
                .await?
            }
            Some(p) => sqlx::query(
                "UPDATE keyring SET generation = $1, body = $2 WHERE id = 1 AND generation = $3",
            )
            .bind(i64_of(generation)?)
            .bind(body)
            .bind(i64_of(p)?)
            .execute(&mut *self.tx)
            .await?,
        };
        Ok(done.rows_affected() == 1)
    }

    async fn checkpoints(
        &mut self,
        account: AccountId,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, head, mac, created FROM checkpoints WHERE account_id = $1 \
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(account)
        .bind(limit_of(limit))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                let (head, mac): (Vec<u8>, Vec<u8>) = (r.try_get(1)?, r.try_get(2)?);
                checkpoint_of(r.try_get(0)?, &head, &mac, r.try_get(3)?)
            })
            .collect()
    }

    async fn prune_checkpoints(
        &mut self,
        account: AccountId,
        keep: usize,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "DELETE FROM checkpoints WHERE account_id = $1 AND seq NOT IN \
             (SELECT seq FROM checkpoints WHERE account_id = $1 ORDER BY seq DESC LIMIT $2)",
        )
        .bind(account)
        .bind(limit_of(keep))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn delete_checkpoints(&mut self, account: AccountId) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM checkpoints WHERE account_id = $1")
            .bind(account)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn unknown_name(&mut self, name_key: &[u8; 32]) -> Result<UnknownRow, StorageError> {
        // Created first, so that two instances counting the same name's first guess both
        // lock one row instead of each starting from zero.
        sqlx::query(
            "INSERT INTO unknown_logins (name_key, failed_logins, last_login_attempt) \
             VALUES ($1, 0, 0) ON CONFLICT (name_key) DO NOTHING",
        )
        .bind(&name_key[..])
        .execute(&mut *self.tx)
        .await?;
        let row = sqlx::query(if self.locking {
            "SELECT failed_logins, last_login_attempt, events, head, lockout_logged \
             FROM unknown_logins WHERE name_key = $1 FOR UPDATE"
        } else {
            "SELECT failed_logins, last_login_attempt, events, head, lockout_logged \
             FROM unknown_logins WHERE name_key = $1"
        })
        .bind(&name_key[..])
        .fetch_one(&mut *self.tx)
        .await?;
        let last: i64 = row.try_get(1)?;
        let head: Option<Vec<u8>> = row.try_get(3)?;
        let logged: i64 = row.try_get(4)?;
        Ok(UnknownRow {
            guesses: Guesses {
                failed: u64_of(row.try_get(0)?)?,
                last_attempt: (last != 0).then_some(last),
                lockout_logged: logged != 0,
            },
            seq: u64_of(row.try_get(2)?)?,
            head: head.as_deref().map(hash_of).transpose()?,
        })
    }

    async fn save_unknown_name(
        &mut self,
        name_key: &[u8; 32],
        row: &UnknownRow,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO unknown_logins (name_key, failed_logins, last_login_attempt, events, \
             head, lockout_logged) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name_key) DO \
             UPDATE SET failed_logins = excluded.failed_logins, \
             last_login_attempt = excluded.last_login_attempt, \
             events = excluded.events, head = excluded.head, \
             lockout_logged = excluded.lockout_logged",
        )
        .bind(&name_key[..])
        .bind(i64_of(row.guesses.failed)?)
        .bind(row.guesses.last_attempt.unwrap_or(0))
        .bind(i64_of(row.seq)?)
        .bind(row.head.as_ref().map(|h| &h[..]))
        .bind(i64::from(row.guesses.lockout_logged))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_unknown_event(
        &mut self,
        name_key: &[u8; 32],
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO unknown_events (name_key, seq, time, kind, outcome, hash) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&name_key[..])
        .bind(i64_of(e.seq)?)
        .bind(e.time)
        .bind(e.body.kind as i64)
        .bind(e.body.outcome as i64)
        .bind(&e.hash[..])
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn purge_unknown_names(&mut self, before: i64) -> Result<u64, StorageError> {
        sqlx::query(
            "DELETE FROM unknown_events WHERE name_key IN \
             (SELECT name_key FROM unknown_logins WHERE last_login_attempt < $1)",
        )
        .bind(before)
        .execute(&mut *self.tx)
        .await?;
        Ok(
            sqlx::query("DELETE FROM unknown_logins WHERE last_login_attempt < $1")
                .bind(before)
                .execute(&mut *self.tx)
                .await?
                .rows_affected(),
        )
    }
}

fn held_key_row(r: &PgRow) -> Result<RawHeldKey, StorageError> {
    Ok(RawHeldKey {
        name: r.try_get(0)?,
        algorithm: i64::from(r.try_get::<i16, _>(1)?),
        public_key: r.try_get(2)?,
        sealed_key: r.try_get(3)?,
        exportable: r.try_get(4)?,
        created: r.try_get(5)?,
        signatures: r.try_get(6)?,
        window_start: r.try_get(7)?,
        window_count: r.try_get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit is acknowledged only once Postgres has it on disk, whatever the server's
    /// default or the URL says: every connection sets `synchronous_commit = on`.
    #[tokio::test]
    async fn every_connection_commits_synchronously() {
        let Some(schema) = keyserver_tests::PgSchema::create() else {
            return;
        };
        let url = format!("{}&options[synchronous_commit]=off", schema.url());
        let b = PostgresBackend::connect(&url).await.unwrap();
        for pool in [&b.write, &b.read] {
            let v: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(v, "on");
        }
    }

    /// Two instances committing groups of jobs over the same accounts, in every order:
    /// each batch takes its account locks in ascending order, so none deadlocks (Postgres
    /// would abort one of the jobs after `deadlock_timeout`), and no update is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_grouping_jobs_of_the_same_accounts_neither_deadlock_nor_lose() {
        let Some(schema) = keyserver_tests::PgSchema::create() else {
            return;
        };
        let url = schema.url();
        let one =
            super::super::Storage::new(Arc::new(PostgresBackend::connect(&url).await.unwrap()));
        let two =
            super::super::Storage::new(Arc::new(PostgresBackend::connect(&url).await.unwrap()));
        let mut accounts = Vec::new();
        for n in 0..8 {
            let user = UserName::new(format!("user{n}")).unwrap();
            let row = one
                .write(Durability::Disk, move |tx| {
                    Box::pin(async move {
                        let new = NewAccount {
                            user: &user,
                            record: b"r",
                            credential_id: b"c",
                            sealed_storage_key: b"k",
                            created: 1,
                        };
                        Ok(tx.insert_account(&new).await?.unwrap())
                    })
                })
                .await
                .unwrap();
            accounts.push(row.id);
        }
        let mut jobs = Vec::new();
        for i in 0..400usize {
            let s = if i % 2 == 0 { one.clone() } else { two.clone() };
            // Both instances walk the accounts, one forwards and one backwards.
            let a = if i % 2 == 0 {
                accounts[(i / 2) % 8]
            } else {
                accounts[7 - (i / 2) % 8]
            };
            jobs.push(tokio::spawn(async move {
                s.write_for(a, Durability::Disk, move |tx| {
                    Box::pin(async move {
                        let mut row = super::super::account(tx, a).await?;
                        row.live_secrets += 1;
                        tx.save_account(&row).await
                    })
                })
                .await
            }));
        }
        for (i, j) in jobs.into_iter().enumerate() {
            j.await.unwrap().unwrap_or_else(|e| panic!("job {i}: {e}"));
        }
        for a in accounts {
            let row = two
                .read(move |tx| Box::pin(async move { super::super::account(tx, a).await }))
                .await
                .unwrap();
            assert_eq!(row.live_secrets, 50);
        }
    }

    /// A job that goes past an SQL error and answers success has left its transaction
    /// aborted (Postgres refuses every statement after the error): it fails, alone in its
    /// batch and alone, and nothing of it is kept, while the other jobs of its batch are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_goes_past_an_sql_error_fails_and_its_batch_commits() {
        let Some(schema) = keyserver_tests::PgSchema::create() else {
            return;
        };
        let s = super::super::Storage::new(Arc::new(
            PostgresBackend::connect(&schema.url()).await.unwrap(),
        ));
        // Records request `seq` (a second time if `twice`, the error ignored).
        fn job(
            seq: u64,
            twice: bool,
        ) -> impl for<'t> FnOnce(
            &'t mut dyn Tx,
        )
            -> super::super::BoxFuture<'t, Result<(), StorageError>>
        + Send
        + 'static {
            move |tx| {
                Box::pin(async move {
                    let req = RequestId {
                        session: [7; 16],
                        seq,
                    };
                    tx.record(req, b"answer", 1).await?;
                    if twice {
                        let refused = tx.record(req, b"answer", 1).await;
                        assert!(refused.is_err());
                    }
                    Ok(())
                })
            }
        }
        let mut jobs = Vec::new();
        for seq in 0..64u64 {
            let s = s.clone();
            let swallows = seq % 4 == 1;
            jobs.push(tokio::spawn(async move {
                s.write_for(1, Durability::Disk, job(seq, swallows)).await
            }));
        }
        for (seq, j) in jobs.into_iter().enumerate() {
            assert_eq!(j.await.unwrap().is_ok(), seq % 4 != 1, "job {seq}");
        }
        assert!(s.write(Durability::Disk, job(100, true)).await.is_err());
        s.write(Durability::Disk, job(101, false)).await.unwrap();
        for seq in (0..64).chain([100, 101]) {
            let kept = s
                .read(move |tx| {
                    Box::pin(async move {
                        tx.recorded(RequestId {
                            session: [7; 16],
                            seq,
                        })
                        .await
                    })
                })
                .await
                .unwrap();
            let swallowed = if seq < 64 { seq % 4 == 1 } else { seq == 100 };
            assert_eq!(kept.is_some(), !swallowed, "request {seq}");
        }
    }

    /// A job waiting on a lock held elsewhere fails after the lock timeout, alone, instead
    /// of holding up its committer (and every account queued behind it) for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_stuck_on_a_lock_fails_alone_and_its_committer_goes_on() {
        let Some(schema) = keyserver_tests::PgSchema::create() else {
            return;
        };
        let b = PostgresBackend::connect(&schema.url()).await.unwrap();
        let v: String = sqlx::query_scalar("SHOW lock_timeout")
            .fetch_one(&b.write)
            .await
            .unwrap();
        assert_eq!(v, LOCK_TIMEOUT);
        let s = super::super::Storage::new(Arc::new(b.clone()));
        let mut ids = Vec::new();
        for n in 0..=COMMITTERS {
            let user = UserName::new(format!("user{n}")).unwrap();
            let row = s
                .write(Durability::Disk, move |tx| {
                    Box::pin(async move {
                        let new = NewAccount {
                            user: &user,
                            record: b"r",
                            credential_id: b"c",
                            sealed_storage_key: b"k",
                            created: 1,
                        };
                        Ok(tx.insert_account(&new).await?.unwrap())
                    })
                })
                .await
                .unwrap();
            ids.push(row.id);
        }
        // Two accounts of the same committer; someone else (an operator's session) holds
        // the first one's row.
        let (held, next) = (ids[0], ids[COMMITTERS]);
        assert_eq!(held % COMMITTERS as i64, next % COMMITTERS as i64);
        let mut other = <PgConnection as sqlx::Connection>::connect(&schema.url())
            .await
            .unwrap();
        sqlx::Executor::execute(&mut other, "BEGIN").await.unwrap();
        sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(held)
            .execute(&mut other)
            .await
            .unwrap();
        let bump = |s: super::super::Storage, a: AccountId| {
            tokio::spawn(async move {
                s.write_for(a, Durability::Disk, move |tx| {
                    Box::pin(async move {
                        let mut row = super::super::account(tx, a).await?;
                        row.live_secrets += 1;
                        tx.save_account(&row).await
                    })
                })
                .await
            })
        };
        let started = crate::clock::Stopwatch::start();
        let stuck = bump(s.clone(), held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = bump(s.clone(), next);
        assert!(
            stuck.await.unwrap().is_err(),
            "the job went through a held lock"
        );
        after.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
        sqlx::Executor::execute(&mut other, "ROLLBACK")
            .await
            .unwrap();
        let row = s
            .read(move |tx| Box::pin(async move { super::super::account(tx, held).await }))
            .await
            .unwrap();
        assert_eq!(row.live_secrets, 0);
    }

    /// Reads cannot starve writes: with every read connection taken (a flood of session
    /// lookups), a write still goes through at once.
    #[tokio::test]
    async fn a_write_goes_through_while_every_read_connection_is_taken() {
        let Some(schema) = keyserver_tests::PgSchema::create() else {
            return;
        };
        let b = PostgresBackend::connect(&schema.url()).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..READ_POOL {
            held.push(b.read.acquire().await.unwrap());
        }
        let s = super::super::Storage::new(Arc::new(b.clone()));
        let wrote = s.write(Durability::Disk, |tx| {
            Box::pin(async move { tx.purge_responses(0).await })
        });
        tokio::time::timeout(Duration::from_secs(2), wrote)
            .await
            .expect("a write waited for a read connection")
            .unwrap();
        // And a read waits for one of its own (it would time out, not take a writer's).
        assert!(b.read.try_acquire().is_none());
        drop(held);
    }
}
