//! Storage: one contract, two backends (SQLite embedded, Postgres for fleets).
//!
//! The contract, which [`contract`] tests against every backend:
//! - every mutation and the audit event that records it commit in one transaction, and an
//!   acknowledged change is durable (on disk before it is acknowledged);
//! - a read (retrieve, list) commits its audit event before the answer leaves; that event
//!   survives a crash of the process, and may wait for the next durable commit to survive
//!   a power cut (SQLite; Postgres makes every commit durable);
//! - each account's audit events form a hash chain (`keyserver_protocol::audit_chain`) with
//!   consecutive seqs from 1;
//! - a secret's versions only grow, across deletes too, so a deleted and re-stored name
//!   never reuses a version (and the server cannot pass an old ciphertext as current);
//! - nothing here ever holds a plaintext secret, a password or a key that opens a secret.

pub mod postgres;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
pub(crate) mod test_postgres;

use async_trait::async_trait;

use crate::guess_limit::{LockoutPolicy, LoginGate};
use keyserver_protocol::{
    SecretName, UserName,
    audit_chain::{AuditEvent, EventBody},
    ops::SecretEntry,
};

/// Most secrets one account may hold.
pub const MAX_SECRETS_PER_ACCOUNT: u64 = 10_000;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or refused the operation; nothing was changed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored row is not what this server wrote (corruption or tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        // sqlx errors quote SQL and sometimes values; values here are never secrets (only
        // names and ciphertexts), but keep the message to the error's kind.
        match e {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_) => Self::Corrupt(e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// A stored account.
#[derive(Clone, Debug)]
pub struct Account {
    /// Internal id.
    pub id: i64,
    /// Serialized OPAQUE registration record.
    pub record: Vec<u8>,
    /// The storage key sealed under the user's master key.
    pub sealed_storage_key: Vec<u8>,
    /// Logins started since the last one that finished.
    pub failed_logins: u64,
    /// When the last login started (Unix seconds).
    pub last_login_attempt: Option<i64>,
}

/// A stored secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSecret {
    /// Its version.
    pub version: u64,
    /// When the version was stored.
    pub created: i64,
    /// The sealed blob.
    pub sealed: Vec<u8>,
}

/// What a store did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored as this version.
    Stored {
        /// The new current version.
        version: u64,
        /// When.
        created: i64,
    },
    /// The name holds a secret and the store did not ask to replace it.
    Exists,
    /// The version is not the next one.
    VersionMismatch {
        /// The version a store must carry.
        expected: u64,
    },
    /// The account holds [`MAX_SECRETS_PER_ACCOUNT`] secrets.
    Quota,
}

/// Names one sealed request. A mutation records its encoded response under this id in the
/// same transaction as the change, so the same request is applied at most once whatever
/// connection or instance it arrives on, and a retry gets the first answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// The session's id.
    pub session: [u8; 16],
    /// The request's sequence number in the session.
    pub seq: u64,
}

/// The result of a recorded mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done<T> {
    /// Applied now.
    Fresh(T),
    /// The same request was applied before; this is its recorded response.
    Recorded(Vec<u8>),
}

/// Encodes a mutation's outcome as the response to record.
pub type Encode<T> = fn(&T) -> Vec<u8>;

/// A session as stored for other instances.
#[derive(Clone, Debug)]
pub struct StoredSession {
    /// The account.
    pub account: i64,
    /// The account's user name.
    pub user: UserName,
    /// The session keys, sealed (see `SessionVault`).
    pub sealed_keys: Vec<u8>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds, updated every few seconds while the session is in use.
    pub last_used: i64,
}

/// A session to record with a successful login.
#[derive(Clone, Copy, Debug)]
pub struct NewSession<'a> {
    /// The session id.
    pub id: [u8; 16],
    /// The sealed keys.
    pub sealed_keys: &'a [u8],
}

/// What the start of a login found and decided.
#[derive(Clone, Debug)]
pub struct LoginStart {
    /// The account, if the name has one.
    pub account: Option<Account>,
    /// Whether the login may go on (the guess was counted) or is locked out.
    pub gate: LoginGate,
}

/// A new secret version to store.
#[derive(Clone, Copy, Debug)]
pub struct NewSecret<'a> {
    /// Its name.
    pub name: &'a SecretName,
    /// The version it was sealed for.
    pub version: u64,
    /// Whether an existing secret may be replaced.
    pub replace: bool,
    /// The sealed blob.
    pub sealed: &'a [u8],
}

/// The storage contract. `user` arguments name the account whose id is given; they are
/// needed for the audit chain's genesis.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Creates an account and its `register` event. `Ok(false)` if the name is taken (the
    /// existing account is not touched).
    async fn create_account(
        &self,
        user: &UserName,
        record: &[u8],
        sealed_storage_key: &[u8],
        now: i64,
    ) -> Result<bool, StorageError>;

    /// Looks an account up by name.
    async fn find_account(&self, user: &UserName) -> Result<Option<Account>, StorageError>;

    /// Decides whether a login may start under `policy` and, if so, counts the guess and
    /// appends `login_started`; if not, appends `login_locked`. Decision and count are one
    /// transaction, so concurrent logins cannot slip past the limit.
    async fn begin_login(
        &self,
        account: i64,
        user: &UserName,
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<LoginGate, StorageError>;

    /// The same as [`Self::begin_login`] for a user name that does not exist, named by
    /// `name_key` (an HMAC of the name): counted and locked out alike, with no audit log.
    async fn begin_unknown_login(
        &self,
        name_key: [u8; 32],
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<LoginGate, StorageError>;

    /// The whole storage part of a login start: looks `user` up and decides and counts the
    /// guess on the account ([`Self::begin_login`]) or, for a name without an account, on
    /// `name_key` ([`Self::begin_unknown_login`]). A backend may do it in one step.
    async fn start_login(
        &self,
        user: &UserName,
        name_key: [u8; 32],
        policy: &LockoutPolicy,
        now: i64,
    ) -> Result<LoginStart, StorageError> {
        let account = self.find_account(user).await?;
        let gate = match &account {
            Some(a) => self.begin_login(a.id, user, policy, now).await?,
            None => self.begin_unknown_login(name_key, policy, now).await?,
        };
        Ok(LoginStart { account, gate })
    }

    /// Records a successful login with its session, unless the account already holds
    /// `max_sessions` sessions: then the guess count is reset all the same, the session is
    /// not recorded, and the answer is `false`. A backend may do it in one step.
    async fn login_succeeded(
        &self,
        account: i64,
        user: &UserName,
        session: NewSession<'_>,
        max_sessions: u64,
        now: i64,
    ) -> Result<bool, StorageError> {
        if self.session_count(account).await? >= max_sessions {
            self.login_finished(account, user, true, None, now).await?;
            return Ok(false);
        }
        self.login_finished(account, user, true, Some(session), now)
            .await?;
        Ok(true)
    }

    /// Forgets unknown-name counters untouched since `before`.
    async fn purge_unknown_logins(&self, before: i64) -> Result<u64, StorageError>;

    /// Records the end of a login: success resets the guess count and records `session`.
    async fn login_finished(
        &self,
        account: i64,
        user: &UserName,
        success: bool,
        session: Option<NewSession<'_>>,
        now: i64,
    ) -> Result<(), StorageError>;

    /// How many sessions of the account are stored (expired ones until they are purged).
    async fn session_count(&self, account: i64) -> Result<u64, StorageError>;

    /// A stored session, if it exists (not logged out, not purged).
    async fn load_session(&self, id: [u8; 16]) -> Result<Option<StoredSession>, StorageError>;

    /// Marks a session used at `now`; `false` if it no longer exists.
    async fn touch_session(&self, id: [u8; 16], now: i64) -> Result<bool, StorageError>;

    /// Deletes sessions created before `created_before` or unused since `used_before`.
    async fn purge_sessions(
        &self,
        created_before: i64,
        used_before: i64,
    ) -> Result<u64, StorageError>;

    /// Replaces the OPAQUE record and the sealed storage key; records `response`.
    #[allow(clippy::too_many_arguments)]
    async fn change_password(
        &self,
        account: i64,
        user: &UserName,
        record: &[u8],
        sealed_storage_key: &[u8],
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<Done<()>, StorageError>;

    /// Stores a new version of a secret; records `encode(outcome)`.
    async fn store_secret(
        &self,
        account: i64,
        user: &UserName,
        secret: NewSecret<'_>,
        req: RequestId,
        encode: Encode<StoreOutcome>,
        now: i64,
    ) -> Result<Done<StoreOutcome>, StorageError>;

    /// Reads the current version of a secret, and records the read.
    async fn retrieve_secret(
        &self,
        account: i64,
        user: &UserName,
        name: &SecretName,
        now: i64,
    ) -> Result<Option<StoredSecret>, StorageError>;

    /// One page of secrets after `after`, in name order; records the read on the first page.
    async fn list_secrets(
        &self,
        account: i64,
        user: &UserName,
        after: Option<&SecretName>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<SecretEntry>, StorageError>;

    /// Deletes a secret (`false`: there was none); records `encode(deleted)`.
    async fn delete_secret(
        &self,
        account: i64,
        user: &UserName,
        name: &SecretName,
        req: RequestId,
        encode: Encode<bool>,
        now: i64,
    ) -> Result<Done<bool>, StorageError>;

    /// Records a logout event, deletes the session `req.session`; records `response`.
    async fn logout(
        &self,
        account: i64,
        user: &UserName,
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<Done<()>, StorageError>;

    /// The response recorded for a request, if it was a mutation that was applied.
    async fn recorded_response(&self, req: RequestId) -> Result<Option<Vec<u8>>, StorageError>;

    /// Forgets recorded responses older than `before` (their sessions have ended).
    async fn purge_responses(&self, before: i64) -> Result<u64, StorageError>;

    /// One page of audit events with seq greater than `after`.
    async fn audit_events(
        &self,
        account: i64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StorageError>;

    /// Appends an event that records no other change (a read), with a read's durability.
    async fn record_event(
        &self,
        account: i64,
        user: &UserName,
        event: EventBody,
        now: i64,
    ) -> Result<(), StorageError>;
}
