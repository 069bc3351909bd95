//! The production backend: Postgres, which many instances can share.
//!
//! Every mutation starts by locking its account's row (`SELECT … FOR UPDATE`), so that
//! mutations of one account are serialised across every instance of a fleet: the audit
//! chain stays linear, versions never race, the guess count cannot be passed by concurrent
//! logins, and a request recorded by one instance is seen by the next. Different accounts
//! never wait for each other. sqlx's migrator takes an advisory lock, so instances starting
//! together against an empty database do not race either. A commit is acknowledged only
//! once Postgres reports it durable (`synchronous_commit` as configured on the server; keep
//! its default, `on`).

use std::time::Duration;

use async_trait::async_trait;
use keyserver_protocol::{
    SecretName, UserName,
    audit_chain::{self, AuditEvent, EventBody, EventKind, Outcome},
    ops::SecretEntry,
    seal::plaintext_len,
};
use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{
    Account, Done, Encode, LockoutPolicy, LoginGate, MAX_SECRETS_PER_ACCOUNT, NewSecret,
    NewSession, RequestId, Storage, StorageError, StoreOutcome, StoredSecret, StoredSession,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The Postgres backend.
#[derive(Clone, Debug)]
pub struct PostgresStorage {
    write: PgPool,
    read: PgPool,
    quota: u64,
}

fn u64_of(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative count {v}")))
}

fn i64_of(v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::Corrupt(format!("count {v} out of range")))
}

impl PostgresStorage {
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
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(opts)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StorageError::Unavailable(format!("migration failed: {e}")))?;
        Ok(Self {
            write: pool.clone(),
            read: pool,
            quota: MAX_SECRETS_PER_ACCOUNT,
        })
    }

    /// The most secrets one account may hold (default [`MAX_SECRETS_PER_ACCOUNT`]).
    #[must_use]
    pub fn with_secret_quota(mut self, quota: u64) -> Self {
        self.quota = quota;
        self
    }
}

/// Locks the account's row until the transaction ends: mutations of one account are
/// serialised across the whole fleet.
async fn lock_account(
    tx: &mut Transaction<'_, Postgres>,
    account: i64,
) -> Result<(), StorageError> {
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(account)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The response recorded for `req` inside `tx`, if any.
async fn recorded(
    tx: &mut Transaction<'_, Postgres>,
    req: RequestId,
) -> Result<Option<Vec<u8>>, StorageError> {
    let r = sqlx::query_scalar(
        "SELECT response FROM session_responses WHERE session_id = $1 AND seq = $2",
    )
    .bind(&req.session[..])
    .bind(i64_of(req.seq)?)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(r)
}

/// Records `response` for `req` inside `tx`.
async fn record_response(
    tx: &mut Transaction<'_, Postgres>,
    req: RequestId,
    response: &[u8],
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO session_responses (session_id, seq, response, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&req.session[..])
    .bind(i64_of(req.seq)?)
    .bind(response)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends `body` to the account's audit chain inside `tx`.
async fn append_event(
    tx: &mut Transaction<'_, Postgres>,
    account: i64,
    user: &UserName,
    body: &EventBody,
    now: i64,
) -> Result<(), StorageError> {
    let row = sqlx::query("SELECT audit_seq, audit_head FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_one(&mut **tx)
        .await?;
    let last: i64 = row.try_get(0)?;
    let head: Vec<u8> = row.try_get(1)?;
    let prev: [u8; 32] = if last == 0 {
        audit_chain::genesis(user)
    } else {
        head.as_slice()
            .try_into()
            .map_err(|_| StorageError::Corrupt("audit head is not 32 bytes".into()))?
    };
    let seq = u64_of(last)? + 1;
    let hash = audit_chain::link(&prev, seq, now, body);
    sqlx::query("INSERT INTO audit_events (account_id, seq, time, kind, secret, outcome, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(account)
        .bind(i64_of(seq)?)
        .bind(now)
        .bind(body.kind as i64)
        .bind(body.secret.as_ref().map(SecretName::as_str))
        .bind(body.outcome as i64)
        .bind(&hash[..])
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE accounts SET audit_seq = $1, audit_head = $2 WHERE id = $3")
        .bind(i64_of(seq)?)
        .bind(&hash[..])
        .bind(account)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn create_account(
        &self,
        user: &UserName,
        record: &[u8],
        sealed_storage_key: &[u8],
        now: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.write.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (user_name, record, sealed_storage_key, created_at, audit_head) VALUES ($1, $2, $3, $4, ''::bytea) \
             ON CONFLICT (user_name) DO NOTHING RETURNING id",
        )
        .bind(user.as_str())
        .bind(record)
        .bind(sealed_storage_key)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = inserted else {
            tx.rollback().await?;
            return Ok(false);
        };
        let id: i64 = row.try_get(0)?;
        append_event(
            &mut tx,
            id,
            user,
            &EventBody::new(EventKind::Register, Outcome::Ok),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn find_account(&self, user: &UserName) -> Result<Option<Account>, StorageError> {
        let row = sqlx::query("SELECT id, record, sealed_storage_key, failed_logins, last_login_attempt FROM accounts WHERE user_name = $1")
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
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(
            "SELECT failed_logins, last_login_attempt FROM accounts WHERE id = $1 FOR UPDATE",
        )
        .bind(account)
        .fetch_one(&mut *tx)
        .await?;
        let gate = policy.decide(u64_of(row.try_get(0)?)?, row.try_get(1)?, now);
        let event = match gate {
            LoginGate::Allowed => {
                sqlx::query("UPDATE accounts SET failed_logins = failed_logins + 1, last_login_attempt = $1 WHERE id = $2")
                    .bind(now)
                    .bind(account)
                    .execute(&mut *tx)
                    .await?;
                EventBody::new(EventKind::LoginStarted, Outcome::Ok)
            }
            LoginGate::Locked { .. } => EventBody::new(EventKind::LoginLocked, Outcome::Refused),
        };
        append_event(&mut tx, account, user, &event, now).await?;
        tx.commit().await?;
        Ok(gate)
    }

    async fn begin_unknown_login(
        &self,
        name_key: [u8; 32],
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<LoginGate, StorageError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("INSERT INTO unknown_logins (name_key, failed_logins, last_login_attempt) VALUES ($1, 0, 0) ON CONFLICT (name_key) DO NOTHING")
            .bind(&name_key[..])
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT failed_logins, last_login_attempt FROM unknown_logins WHERE name_key = $1 FOR UPDATE")
            .bind(&name_key[..])
            .fetch_one(&mut *tx)
            .await?;
        let last: i64 = row.try_get(1)?;
        let gate = policy.decide(u64_of(row.try_get(0)?)?, (last != 0).then_some(last), now);
        if gate == LoginGate::Allowed {
            sqlx::query("UPDATE unknown_logins SET failed_logins = failed_logins + 1, last_login_attempt = $1 WHERE name_key = $2")
                .bind(now)
                .bind(&name_key[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(gate)
    }

    async fn purge_unknown_logins(&self, before: i64) -> Result<u64, StorageError> {
        let n = sqlx::query("DELETE FROM unknown_logins WHERE last_login_attempt < $1")
            .bind(before)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n)
    }

    async fn login_finished(
        &self,
        account: i64,
        user: &UserName,
        success: bool,
        session: Option<NewSession<'_>>,
        now: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self.write.begin().await?;
        lock_account(&mut tx, account).await?;
        let event = if success {
            sqlx::query("UPDATE accounts SET failed_logins = 0 WHERE id = $1")
                .bind(account)
                .execute(&mut *tx)
                .await?;
            if let Some(sess) = session {
                sqlx::query("INSERT INTO sessions (id, account_id, sealed_keys, created_at, last_used) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&sess.id[..])
                    .bind(account)
                    .bind(sess.sealed_keys)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            EventBody::new(EventKind::LoginSucceeded, Outcome::Ok)
        } else {
            EventBody::new(EventKind::LoginFailed, Outcome::Failed)
        };
        append_event(&mut tx, account, user, &event, now).await?;
        tx.commit().await?;
        Ok(())
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
        let mut tx = self.write.begin().await?;
        lock_account(&mut tx, account).await?;
        if let Some(r) = recorded(&mut tx, req).await? {
            // End the transaction now: dropped, it would hold its locks until the
            // connection is next used.
            tx.rollback().await?;
            return Ok(Done::Recorded(r));
        }
        sqlx::query("UPDATE accounts SET record = $1, sealed_storage_key = $2, failed_logins = 0 WHERE id = $3")
            .bind(record)
            .bind(sealed_storage_key)
            .bind(account)
            .execute(&mut *tx)
            .await?;
        let event = EventBody::new(EventKind::ChangePassword, Outcome::Ok);
        append_event(&mut tx, account, user, &event, now).await?;
        record_response(&mut tx, req, response, now).await?;
        tx.commit().await?;
        Ok(Done::Fresh(()))
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
        let mut tx = self.write.begin().await?;
        lock_account(&mut tx, account).await?;
        if let Some(r) = recorded(&mut tx, req).await? {
            // End the transaction now: dropped, it would hold its locks until the
            // connection is next used.
            tx.rollback().await?;
            return Ok(Done::Recorded(r));
        }
        let row = sqlx::query(
            "SELECT version, sealed IS NOT NULL FROM secrets WHERE account_id = $1 AND name = $2",
        )
        .bind(account)
        .bind(s.name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let (current, live) = match row {
            Some(r) => (u64_of(r.try_get(0)?)?, r.try_get::<bool, _>(1)?),
            None => (0, false),
        };
        let expected = current.saturating_add(1);
        let refused = if live && !s.replace {
            Some(StoreOutcome::Exists)
        } else if s.version != expected {
            Some(StoreOutcome::VersionMismatch { expected })
        } else if !live {
            let count: i64 = sqlx::query_scalar("SELECT live_secrets FROM accounts WHERE id = $1")
                .bind(account)
                .fetch_one(&mut *tx)
                .await?;
            (u64_of(count)? >= self.quota).then_some(StoreOutcome::Quota)
        } else {
            None
        };
        let outcome = match refused {
            Some(outcome) => {
                // A version mismatch is the normal first step of a replace; only real
                // refusals are worth an event in the user's log.
                if !matches!(outcome, StoreOutcome::VersionMismatch { .. }) {
                    let event = EventBody::about(EventKind::Store, s.name, Outcome::Refused);
                    append_event(&mut tx, account, user, &event, now).await?;
                }
                outcome
            }
            None => {
                sqlx::query(
                    "INSERT INTO secrets (account_id, name, version, sealed, created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (account_id, name) DO UPDATE SET version = excluded.version, \
                     sealed = excluded.sealed, created_at = excluded.created_at",
                )
                .bind(account)
                .bind(s.name.as_str())
                .bind(i64_of(s.version)?)
                .bind(s.sealed)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if !live {
                    sqlx::query(
                        "UPDATE accounts SET live_secrets = live_secrets + 1 WHERE id = $1",
                    )
                    .bind(account)
                    .execute(&mut *tx)
                    .await?;
                }
                let event = EventBody::about(EventKind::Store, s.name, Outcome::Ok);
                append_event(&mut tx, account, user, &event, now).await?;
                StoreOutcome::Stored {
                    version: s.version,
                    created: now,
                }
            }
        };
        record_response(&mut tx, req, &encode(&outcome), now).await?;
        tx.commit().await?;
        Ok(Done::Fresh(outcome))
    }

    async fn retrieve_secret(
        &self,
        account: i64,
        user: &UserName,
        name: &SecretName,
        now: i64,
    ) -> Result<Option<StoredSecret>, StorageError> {
        let mut tx = self.write.begin().await?;
        lock_account(&mut tx, account).await?;
        let row = sqlx::query("SELECT version, created_at, sealed FROM secrets WHERE account_id = $1 AND name = $2 AND sealed IS NOT NULL")
            .bind(account)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let found = row
            .map(|r| {
                Ok::<_, StorageError>(StoredSecret {
                    version: u64_of(r.try_get(0)?)?,
                    created: r.try_get(1)?,
                    sealed: r.try_get(2)?,
                })
            })
            .transpose()?;
        let outcome = if found.is_some() {
            Outcome::Ok
        } else {
            Outcome::NotFound
        };
        append_event(
            &mut tx,
            account,
            user,
            &EventBody::about(EventKind::Retrieve, name, outcome),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(found)
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
            "SELECT name, version, octet_length(sealed)::BIGINT, created_at FROM secrets \
             WHERE account_id = $1 AND sealed IS NOT NULL AND name > $2 ORDER BY name LIMIT $3",
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
        let mut tx = self.write.begin().await?;
        lock_account(&mut tx, account).await?;
        if let Some(r) = recorded(&mut tx, req).await? {
            // End the transaction now: dropped, it would hold its locks until the
            // connection is next used.
            tx.rollback().await?;
            return Ok(Done::Recorded(r));
        }
        // The row stays with its version and no ciphertext, so versions keep counting.
        let done = sqlx::query("UPDATE secrets SET sealed = NULL WHERE account_id = $1 AND name = $2 AND sealed IS NOT NULL")
            .bind(account)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if done {
            sqlx::query("UPDATE accounts SET live_secrets = live_secrets - 1 WHERE id = $1")
                .bind(account)
                .execute(&mut *tx)
                .await?;
        }
        let outcome = if done { Outcome::Ok } else { Outcome::NotFound };
        append_event(
            &mut tx,
            account,
            user,
            &EventBody::about(EventKind::Delete, name, outcome),
            now,
        )
        .await?;
        record_response(&mut tx, req, &encode(&done), now).await?;
        tx.commit().await?;
        Ok(Done::Fresh(done))
    }

    async fn logout(
        &self,
        account: i64,
        user: &UserName,
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<Done<()>, StorageError> {
        let mut tx = self.write.begin().await?;
        lock_account(&mut tx, account).await?;
        if let Some(r) = recorded(&mut tx, req).await? {
            // End the transaction now: dropped, it would hold its locks until the
            // connection is next used.
            tx.rollback().await?;
            return Ok(Done::Recorded(r));
        }
        append_event(
            &mut tx,
            account,
            user,
            &EventBody::new(EventKind::Logout, Outcome::Ok),
            now,
        )
        .await?;
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(&req.session[..])
            .execute(&mut *tx)
            .await?;
        record_response(&mut tx, req, response, now).await?;
        tx.commit().await?;
        Ok(Done::Fresh(()))
    }

    async fn session_count(&self, account: i64) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE account_id = $1")
            .bind(account)
            .fetch_one(&self.read)
            .await?;
        u64_of(n)
    }

    async fn load_session(&self, id: [u8; 16]) -> Result<Option<StoredSession>, StorageError> {
        let row = sqlx::query(
            "SELECT s.account_id, a.user_name, s.sealed_keys, s.created_at, s.last_used \
             FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE s.id = $1",
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
        let n = sqlx::query("UPDATE sessions SET last_used = $1 WHERE id = $2")
            .bind(now)
            .bind(&id[..])
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn purge_sessions(
        &self,
        created_before: i64,
        used_before: i64,
    ) -> Result<u64, StorageError> {
        let n = sqlx::query("DELETE FROM sessions WHERE created_at < $1 OR last_used < $2")
            .bind(created_before)
            .bind(used_before)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n)
    }

    async fn recorded_response(&self, req: RequestId) -> Result<Option<Vec<u8>>, StorageError> {
        let r = sqlx::query_scalar(
            "SELECT response FROM session_responses WHERE session_id = $1 AND seq = $2",
        )
        .bind(&req.session[..])
        .bind(i64_of(req.seq)?)
        .fetch_optional(&self.read)
        .await?;
        Ok(r)
    }

    async fn purge_responses(&self, before: i64) -> Result<u64, StorageError> {
        let n = sqlx::query("DELETE FROM session_responses WHERE created_at < $1")
            .bind(before)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n)
    }

    async fn audit_events(
        &self,
        account: i64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, time, kind, secret, outcome, hash FROM audit_events WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
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
        let mut tx = self.write.begin().await?;
        lock_account(&mut tx, account).await?;
        append_event(&mut tx, account, user, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn event_from_row(r: &sqlx::postgres::PgRow) -> Result<AuditEvent, StorageError> {
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
    use crate::storage::test_postgres::{TestSchema, fresh_schema};

    async fn fresh(quota: Option<u64>) -> Option<(Arc<dyn Storage>, TestSchema)> {
        let schema = fresh_schema().await?;
        let s = PostgresStorage::connect_with(schema.options())
            .await
            .unwrap();
        let s = s.with_secret_quota(quota.unwrap_or(MAX_SECRETS_PER_ACCOUNT));
        Some((Arc::new(s), schema))
    }

    crate::storage_contract_tests!(fresh);
}
