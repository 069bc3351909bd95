//! Storage: the rows the server keeps, behind one narrow contract and two backends.
//!
//! ```text
//!  service (handlers, rules)         decides: what to read, what to write, what to answer
//!     │  Storage::write / read        one job = one transaction
//!     ▼
//!  Backend (sqlite, postgres)         runs a job as one transaction, durably
//!     │  &mut dyn Tx
//!     ▼
//!  Tx                                 row primitives only: read a row, write a row
//! ```
//!
//! No decision lives below [`Storage`]: a backend reads and writes rows, in its own SQL
//! dialect, and every rule (the store decision, the audit append, the lockout, the
//! at-most-once answer) is written once, above it, over [`Tx`]. So the two backends cannot
//! drift apart, and a new feature is written once.
//!
//! What every backend guarantees (tested by [`contract`] on each):
//! - a job runs as one transaction: all of its writes commit, or none does;
//! - an acknowledged [`Durability::Disk`] job is on disk before [`Storage::write`] returns,
//!   so neither a killed process nor a power cut loses it;
//! - in a write job, reading an account ([`Tx::account`], [`Tx::account_by_name`]) locks it
//!   until the job ends, across every instance sharing the database: the jobs of one account
//!   are serialised (its audit chain stays linear, its guess count cannot be passed);
//! - nothing here ever holds a plaintext secret, a password or a key that opens a secret.

pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod contract;

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use keyserver_protocol::{
    KeyName, NameTag, UserName,
    audit_chain::{AuditEvent, EventBody, EventKind, Outcome},
    ops::StoredCheckpoint,
    signing::Algorithm,
};

/// A boxed future that can move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An account's internal id.
pub type AccountId = i64;

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

/// A stored count or sequence number that must not be negative.
pub(crate) fn u64_of(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative count {v}")))
}

/// A count or sequence number as the databases store it (signed 64 bits).
pub(crate) fn i64_of(v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::Corrupt(format!("count {v} out of range")))
}

/// A stored user name, checked again on the way out.
pub(crate) fn user_of(s: String) -> Result<UserName, StorageError> {
    UserName::new(s).map_err(|e| StorageError::Corrupt(format!("stored user name: {e}")))
}

/// A stored name tag.
pub(crate) fn tag_of(b: &[u8]) -> Result<NameTag, StorageError> {
    hash_of(b).map(NameTag)
}

/// A stored 32-byte hash.
pub(crate) fn hash_of(b: &[u8]) -> Result<[u8; 32], StorageError> {
    b.try_into()
        .map_err(|_| StorageError::Corrupt("stored hash is not 32 bytes".into()))
}

/// A stored checkpoint, its values checked.
pub(crate) fn checkpoint_of(
    seq: i64,
    head: &[u8],
    mac: &[u8],
    time: i64,
) -> Result<StoredCheckpoint, StorageError> {
    Ok(StoredCheckpoint {
        checkpoint: keyserver_protocol::checkpoint::Checkpoint {
            position: keyserver_protocol::audit_chain::AuditPosition {
                seq: u64_of(seq)?,
                head: hash_of(head)?,
            },
            mac: hash_of(mac)?,
        },
        time,
    })
}

/// An account row as a database returns it, before its values are checked.
pub(crate) struct RawAccount {
    pub(crate) id: i64,
    pub(crate) user: String,
    pub(crate) failed: i64,
    pub(crate) last_attempt: Option<i64>,
    pub(crate) lockout_logged: i64,
    pub(crate) audit_seq: i64,
    pub(crate) audit_head: Vec<u8>,
    pub(crate) live_secrets: i64,
    pub(crate) epoch: i64,
}

impl RawAccount {
    pub(crate) fn check(self) -> Result<AccountRow, StorageError> {
        Ok(AccountRow {
            id: self.id,
            user: user_of(self.user)?,
            guesses: Guesses {
                failed: u64_of(self.failed)?,
                last_attempt: self.last_attempt,
                lockout_logged: self.lockout_logged != 0,
            },
            audit_seq: u64_of(self.audit_seq)?,
            audit_head: if self.audit_head.is_empty() {
                None
            } else {
                Some(hash_of(&self.audit_head)?)
            },
            live_secrets: u64_of(self.live_secrets)?,
            epoch: u64_of(self.epoch)?,
        })
    }
}

/// The columns of [`RawAccount`], in its order, for both dialects (a macro, so that
/// statements are `concat!`ed constants rather than formatted per call).
macro_rules! account_columns {
    () => {
        "id, user_name, failed_logins, last_login_attempt, audit_seq, audit_head, \
         live_secrets, epoch, lockout_logged"
    };
}
pub(crate) use account_columns;

/// An audit event as a database returns it, before its values are checked.
pub(crate) struct RawEvent {
    pub(crate) seq: i64,
    pub(crate) time: i64,
    pub(crate) kind: i64,
    pub(crate) secret: Option<Vec<u8>>,
    pub(crate) outcome: i64,
    pub(crate) hash: Vec<u8>,
    pub(crate) version: Option<i64>,
    pub(crate) key: Option<String>,
    pub(crate) digest: Option<Vec<u8>>,
}

impl RawEvent {
    pub(crate) fn check(self) -> Result<AuditEvent, StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("audit event: bad {what}"));
        Ok(AuditEvent {
            seq: u64_of(self.seq)?,
            time: self.time,
            body: EventBody {
                kind: u8::try_from(self.kind)
                    .ok()
                    .and_then(EventKind::from_code)
                    .ok_or_else(|| corrupt("kind"))?,
                secret: self.secret.map(|t| hash_of(&t).map(NameTag)).transpose()?,
                outcome: u8::try_from(self.outcome)
                    .ok()
                    .and_then(Outcome::from_code)
                    .ok_or_else(|| corrupt("outcome"))?,
                version: self.version.map(u64_of).transpose()?,
                key: self.key.map(key_name_of).transpose()?,
                digest: self.digest.as_deref().map(hash_of).transpose()?,
            },
            hash: hash_of(&self.hash)?,
        })
    }
}

/// A stored key name, checked again on the way out.
pub(crate) fn key_name_of(s: String) -> Result<KeyName, StorageError> {
    KeyName::new(s).map_err(|e| StorageError::Corrupt(format!("stored key name: {e}")))
}

/// A server-held key's row as a database returns it, before its values are checked.
pub(crate) struct RawHeldKey {
    pub(crate) name: String,
    pub(crate) algorithm: i64,
    pub(crate) public_key: Vec<u8>,
    pub(crate) sealed_key: Vec<u8>,
    pub(crate) exportable: bool,
    pub(crate) created: i64,
    pub(crate) signatures: i64,
    pub(crate) window_start: i64,
    pub(crate) window_count: i64,
}

impl RawHeldKey {
    pub(crate) fn check(self) -> Result<HeldKeyRow, StorageError> {
        let algorithm = u8::try_from(self.algorithm)
            .ok()
            .and_then(Algorithm::from_code)
            .ok_or_else(|| StorageError::Corrupt("held key: bad algorithm".into()))?;
        if self.public_key.len() != algorithm.public_key_len() {
            return Err(StorageError::Corrupt("held key: bad public key".into()));
        }
        Ok(HeldKeyRow {
            name: key_name_of(self.name)?,
            algorithm,
            public_key: self.public_key,
            sealed_key: self.sealed_key,
            exportable: self.exportable,
            created: self.created,
            usage: KeyUsage {
                signatures: u64_of(self.signatures)?,
                window_start: self.window_start,
                window_count: u64_of(self.window_count)?,
            },
        })
    }
}

/// The columns of [`RawHeldKey`], in its order, for both dialects.
macro_rules! held_key_columns {
    () => {
        "name, algorithm, public_key, sealed_key, exportable, created_at, signatures, \
         window_start, window_count"
    };
}
pub(crate) use held_key_columns;

/// A `LIMIT` as the databases take it.
pub(crate) fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Consecutive guesses: the guess limit's counter, on an account or on an unknown name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guesses {
    /// Logins started since the last one that finished.
    pub failed: u64,
    /// When the last counted login started (Unix seconds).
    pub last_attempt: Option<i64>,
    /// Whether a refusal of the current lockout is in the log already (later ones write
    /// nothing).
    pub lockout_logged: bool,
}

/// The row of a user name that is not registered: its guess counter, and the head of its
/// stand-in audit chain (events no one reads, written where an account writes its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnknownRow {
    /// The guess counter.
    pub guesses: Guesses,
    /// Seq of the last event (0: none yet).
    pub seq: u64,
    /// Hash of the last event; `None` before the first.
    pub head: Option<[u8; 32]>,
}

/// An account's row: what every operation on the account reads and writes (its audit head,
/// counters). Its credentials, which only logins and password changes need, are read
/// apart ([`Tx::credentials`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    /// Internal id.
    pub id: AccountId,
    /// The user name.
    pub user: UserName,
    /// The guess counter.
    pub guesses: Guesses,
    /// Seq of the last audit event (0: none yet).
    pub audit_seq: u64,
    /// Hash of the last audit event; `None` before the first.
    pub audit_head: Option<[u8; 32]>,
    /// Secrets that are not deleted.
    pub live_secrets: u64,
    /// Grows with every password change and key rotation; the sealed storage key is bound
    /// to it. New accounts start at 1 (0: sealed before epochs existed).
    pub epoch: u64,
}

/// What a login needs of an account: its OPAQUE record, the credential identifier it was
/// registered under, and its sealed storage key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Serialized OPAQUE registration record.
    pub record: Vec<u8>,
    /// OPAQUE's credential identifier (it fixes the account's OPRF key).
    pub credential_id: Vec<u8>,
    /// The storage key sealed under the user's master key.
    pub sealed_storage_key: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither opens anything without the password, but neither belongs in a log.
        f.debug_struct("Credentials")
            .field("record", &self.record.len())
            .field("credential_id", &self.credential_id.len())
            .field("sealed_storage_key", &self.sealed_storage_key.len())
            .finish()
    }
}

/// A new account's row. It starts at epoch 1.
#[derive(Clone, Copy, Debug)]
pub struct NewAccount<'a> {
    /// The user name.
    pub user: &'a UserName,
    /// Serialized OPAQUE registration record.
    pub record: &'a [u8],
    /// The credential identifier it was registered under.
    pub credential_id: &'a [u8],
    /// The storage key sealed under the user's master key.
    pub sealed_storage_key: &'a [u8],
    /// Unix seconds.
    pub created: i64,
}

/// A secret's row. A deleted secret keeps its row with no ciphertext, so that its version
/// counter survives and a name stored again never reuses a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRow {
    /// Its name, sealed by the client.
    pub sealed_name: Vec<u8>,
    /// Its current (or last) version.
    pub version: u64,
    /// The sealed blob; `None` once deleted.
    pub sealed: Option<Vec<u8>>,
    /// When the version was stored (Unix seconds).
    pub created: i64,
}

/// A secret as `list` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretListing {
    /// Its name tag.
    pub tag: NameTag,
    /// Its name, sealed by the client.
    pub sealed_name: Vec<u8>,
    /// Its version.
    pub version: u64,
    /// Bytes of its sealed blob; `None` if it was deleted.
    pub sealed_len: Option<u64>,
    /// When the version was stored.
    pub created: i64,
}

/// How much a server-held key has signed: in all, and in the current window of the rate
/// limit (see `held_keys::SignLimits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// Signatures made with it, ever.
    pub signatures: u64,
    /// Start of the window `window_count` counts in (Unix seconds, a multiple of the
    /// window's length).
    pub window_start: i64,
    /// Signatures made in that window.
    pub window_count: u64,
}

/// A key the server holds for an account. Its private key is sealed (`sealed_key`) under
/// the deployment's data key for server-held keys, bound to the account, the name, the
/// algorithm and the public key (`held_keys::seal`): a row copied to another account or
/// name, or given another public key, no longer opens.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldKeyRow {
    /// Its name.
    pub name: KeyName,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its public key.
    pub public_key: Vec<u8>,
    /// Its private key, sealed.
    pub sealed_key: Vec<u8>,
    /// Whether it may be exported.
    pub exportable: bool,
    /// When it was made or imported (Unix seconds).
    pub created: i64,
    /// Its signatures.
    pub usage: KeyUsage,
}

impl std::fmt::Debug for HeldKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKeyRow")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("sealed_key", &self.sealed_key.len())
            .field("exportable", &self.exportable)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

/// A session's row: what another instance (or this one after a restart) needs to carry it
/// on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// The session id.
    pub id: [u8; 16],
    /// The account.
    pub account: AccountId,
    /// The session keys, sealed by the vault.
    pub sealed_keys: Vec<u8>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds, refreshed every few seconds while the session is used.
    pub last_used: i64,
    /// When the session last proved the password (Unix seconds), if it has.
    pub reauthed_at: Option<i64>,
    /// The account's epoch the session lives in (its sealed keys are bound to it): it
    /// ends when the account's epoch moves on without it.
    pub epoch: u64,
}

/// A stored session as an instance takes it in: its row, and its account's user name and
/// epoch (which its sealed keys are bound to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSession {
    /// The row.
    pub row: SessionRow,
    /// The account's user name.
    pub user: UserName,
    /// The account's epoch now.
    pub epoch: u64,
}

/// What every operation's transaction checks of its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// When it last proved the password (Unix seconds), if it has.
    pub reauthed_at: Option<i64>,
    /// The epoch the session lives in.
    pub epoch: u64,
    /// Its account's epoch now.
    pub account_epoch: u64,
}

/// A secret sealed under a new storage key by a key rotation in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedRow {
    /// Its name tag now.
    pub tag: NameTag,
    /// Its name tag under the new storage key.
    pub new_tag: NameTag,
    /// Its name sealed under the new storage key.
    pub sealed_name: Vec<u8>,
    /// The version it was sealed for (its current version).
    pub version: u64,
    /// The new ciphertext; `None` for a deleted secret.
    pub sealed: Option<Vec<u8>>,
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

/// The row primitives a backend implements, inside one transaction. Each reads or writes
/// rows and decides nothing.
///
/// In a write job ([`Storage::write`]), reading an account locks its row until the job
/// ends; in a read job ([`Storage::read`]) nothing is locked and nothing may be written.
#[async_trait]
pub trait Tx: Send {
    /// Inserts an account; `None` if the name is taken (nothing is changed then).
    async fn insert_account(
        &mut self,
        new: &NewAccount<'_>,
    ) -> Result<Option<AccountRow>, StorageError>;

    /// The account of `user`, locked in a write job.
    async fn account_by_name(
        &mut self,
        user: &UserName,
    ) -> Result<Option<AccountRow>, StorageError>;

    /// The account `id`, locked in a write job.
    async fn account(&mut self, id: AccountId) -> Result<Option<AccountRow>, StorageError>;

    /// Writes back every mutable column of an account read in this job.
    async fn save_account(&mut self, row: &AccountRow) -> Result<(), StorageError>;

    /// The credentials of account `id`.
    async fn credentials(&mut self, id: AccountId) -> Result<Option<Credentials>, StorageError>;

    /// Replaces the credentials of account `id`.
    async fn set_credentials(
        &mut self,
        id: AccountId,
        credentials: &Credentials,
    ) -> Result<(), StorageError>;

    /// Inserts one audit event of `account`.
    async fn insert_event(
        &mut self,
        account: AccountId,
        event: &AuditEvent,
    ) -> Result<(), StorageError>;

    /// At most `limit` audit events of `account` with seq greater than `after`, in order.
    async fn events(
        &mut self,
        account: AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StorageError>;

    /// The row of the secret tagged `tag`, live or deleted.
    async fn secret(
        &mut self,
        account: AccountId,
        tag: &NameTag,
    ) -> Result<Option<SecretRow>, StorageError>;

    /// Inserts or replaces the row of the secret tagged `tag`.
    async fn put_secret(
        &mut self,
        account: AccountId,
        tag: &NameTag,
        row: &SecretRow,
    ) -> Result<(), StorageError>;

    /// At most `limit` secrets with a tag after `after`, in tag order (bytewise): the live
    /// ones, and the deleted ones too if `deleted`.
    async fn secrets(
        &mut self,
        account: AccountId,
        after: Option<&NameTag>,
        limit: usize,
        deleted: bool,
    ) -> Result<Vec<SecretListing>, StorageError>;

    /// How many secret rows `account` has, live and deleted.
    async fn count_secret_rows(&mut self, account: AccountId) -> Result<u64, StorageError>;

    /// The server-held key `name` of `account`.
    async fn held_key(
        &mut self,
        account: AccountId,
        name: &KeyName,
    ) -> Result<Option<HeldKeyRow>, StorageError>;

    /// Inserts a server-held key; `false` if `account` has one of that name (nothing is
    /// changed then).
    async fn insert_held_key(
        &mut self,
        account: AccountId,
        row: &HeldKeyRow,
    ) -> Result<bool, StorageError>;

    /// Writes the usage of `account`'s key `name`.
    async fn save_key_usage(
        &mut self,
        account: AccountId,
        name: &KeyName,
        usage: &KeyUsage,
    ) -> Result<(), StorageError>;

    /// Deletes `account`'s key `name`; `false` if there was none.
    async fn delete_held_key(
        &mut self,
        account: AccountId,
        name: &KeyName,
    ) -> Result<bool, StorageError>;

    /// At most `limit` of `account`'s keys with a name after `after`, in name order
    /// (bytewise, whatever the database's collation).
    async fn held_keys(
        &mut self,
        account: AccountId,
        after: Option<&KeyName>,
        limit: usize,
    ) -> Result<Vec<HeldKeyRow>, StorageError>;

    /// How many keys `account` holds.
    async fn count_held_keys(&mut self, account: AccountId) -> Result<u64, StorageError>;

    /// How many signatures `account`'s keys made in the window starting at `window_start`
    /// (or in a later one: a window never moves back).
    async fn signatures_in_window(
        &mut self,
        account: AccountId,
        window_start: i64,
    ) -> Result<u64, StorageError>;

    /// The response recorded for `req`, if any.
    async fn recorded(&mut self, req: RequestId) -> Result<Option<Vec<u8>>, StorageError>;

    /// Records `response` for `req`.
    async fn record(
        &mut self,
        req: RequestId,
        response: &[u8],
        now: i64,
    ) -> Result<(), StorageError>;

    /// Deletes recorded responses older than `before`; how many.
    async fn purge_responses(&mut self, before: i64) -> Result<u64, StorageError>;

    /// Inserts a session.
    async fn insert_session(&mut self, row: &SessionRow) -> Result<(), StorageError>;

    /// Session `id`, with its account's user name and epoch.
    async fn session(&mut self, id: [u8; 16]) -> Result<Option<StoredSession>, StorageError>;

    /// Whether session `id` still exists (`None` if not), when it last proved the password
    /// and its account's epoch. In a write job, the session's
    /// account is locked first: whatever ends sessions (a password change, a key rotation)
    /// holds that lock while it does, so the answer is its state before the change began or
    /// after it committed, never a session that goes on acting after it was ended.
    async fn session_state(&mut self, id: [u8; 16]) -> Result<Option<SessionState>, StorageError>;

    /// Moves session `id` into `epoch`, with its keys sealed again for it.
    async fn set_session_epoch(
        &mut self,
        id: [u8; 16],
        epoch: u64,
        sealed_keys: &[u8],
    ) -> Result<(), StorageError>;

    /// Sets when session `id` last proved the password (`None`: the proof was used).
    async fn set_session_reauth(
        &mut self,
        id: [u8; 16],
        at: Option<i64>,
    ) -> Result<(), StorageError>;

    /// Deletes every session of `account` but `keep`; how many.
    async fn delete_other_sessions(
        &mut self,
        account: AccountId,
        keep: [u8; 16],
    ) -> Result<u64, StorageError>;

    /// How many sessions of `account` are stored (expired ones until purged).
    async fn count_sessions(&mut self, account: AccountId) -> Result<u64, StorageError>;

    /// Sets a session's last use; `false` if it does not exist.
    async fn touch_session(&mut self, id: [u8; 16], now: i64) -> Result<bool, StorageError>;

    /// Deletes a session; `false` if it did not exist.
    async fn delete_session(&mut self, id: [u8; 16]) -> Result<bool, StorageError>;

    /// Deletes sessions created before `created_before` or unused since `used_before`.
    async fn purge_sessions(
        &mut self,
        created_before: i64,
        used_before: i64,
    ) -> Result<u64, StorageError>;

    /// Stages a secret for session `session`'s key rotation (replacing one of that name).
    async fn stage_secret(
        &mut self,
        session: [u8; 16],
        account: AccountId,
        row: &StagedRow,
    ) -> Result<(), StorageError>;

    /// How many secrets session `session` has staged.
    async fn staged_count(&mut self, session: [u8; 16]) -> Result<u64, StorageError>;

    /// How many of `account`'s secrets (live and deleted) have no staged row of the same tag,
    /// version and liveness in `session`, plus how many staged rows have no such secret.
    async fn staged_mismatches(
        &mut self,
        session: [u8; 16],
        account: AccountId,
    ) -> Result<u64, StorageError>;

    /// Replaces the tag, sealed name and ciphertext of each of `account`'s secrets by the
    /// ones `session` staged for it; how many.
    async fn apply_staged(
        &mut self,
        session: [u8; 16],
        account: AccountId,
    ) -> Result<u64, StorageError>;

    /// Deletes what `session` staged; how many.
    async fn delete_staged(&mut self, session: [u8; 16]) -> Result<u64, StorageError>;

    /// Deletes staged secrets whose session no longer exists; how many.
    async fn purge_staged(&mut self) -> Result<u64, StorageError>;

    /// The hash of `account`'s event `seq`, if it has one.
    async fn event_hash(
        &mut self,
        account: AccountId,
        seq: u64,
    ) -> Result<Option<[u8; 32]>, StorageError>;

    /// Keeps a checkpoint of `account` (one of a seq it has already: kept as it was).
    async fn put_checkpoint(
        &mut self,
        account: AccountId,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StorageError>;

    /// `account`'s newest checkpoints, newest first, at most `limit`.
    async fn checkpoints(
        &mut self,
        account: AccountId,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StorageError>;

    /// Deletes all but `account`'s `keep` newest checkpoints.
    async fn prune_checkpoints(
        &mut self,
        account: AccountId,
        keep: usize,
    ) -> Result<(), StorageError>;

    /// Deletes every checkpoint of `account` (its storage key changed).
    async fn delete_checkpoints(&mut self, account: AccountId) -> Result<(), StorageError>;

    /// The row of an unknown name (named by its key); empty if it has none. Locked in a
    /// write job, even when it did not exist yet.
    async fn unknown_name(&mut self, name_key: &[u8; 32]) -> Result<UnknownRow, StorageError>;

    /// Writes the row of an unknown name.
    async fn save_unknown_name(
        &mut self,
        name_key: &[u8; 32],
        row: &UnknownRow,
    ) -> Result<(), StorageError>;

    /// Inserts one event of an unknown name's stand-in chain.
    async fn insert_unknown_event(
        &mut self,
        name_key: &[u8; 32],
        event: &AuditEvent,
    ) -> Result<(), StorageError>;

    /// Deletes the rows (and events) of unknown names untouched since `before`; returns
    /// how many names.
    async fn purge_unknown_names(&mut self, before: i64) -> Result<u64, StorageError>;

    /// The deployment's keyring (see `keys::Keyring`) and its generation, if it has one.
    async fn keyring(&mut self) -> Result<Option<(u64, Vec<u8>)>, StorageError>;

    /// Whether any account exists (a database without a keyring but with accounts lost its
    /// keyring: a new one would lock every user out).
    async fn has_accounts(&mut self) -> Result<bool, StorageError>;

    /// Writes the keyring at `generation`: the first one if `previous` is `None` (unless
    /// there is one already), else in place of generation `previous` (unless another
    /// replaced it). Returns whether it was written.
    async fn put_keyring(
        &mut self,
        previous: Option<u64>,
        generation: u64,
        body: &[u8],
    ) -> Result<bool, StorageError>;
}

/// The row of account `id`, which a session or a handshake names and so must exist.
pub async fn account(tx: &mut dyn Tx, id: AccountId) -> Result<AccountRow, StorageError> {
    tx.account(id)
        .await?
        .ok_or_else(|| StorageError::Corrupt(format!("account {id} is gone")))
}

/// How far a write must have reached before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk (fsync): survives a power cut. Every change a client or the guess limit
    /// relies on: accounts, logins, sessions, secrets, recorded responses.
    Disk,
    /// Written to the file (the kernel holds it): survives a crash or kill of the process,
    /// and reaches the disk with the next `Disk` commit or checkpoint. Only for events that
    /// record a read (retrieve, list) and for bookkeeping (session last use, purges): a
    /// power cut may lose the newest of those, never a change. (Postgres makes every commit
    /// durable.)
    Process,
}

/// A job: the body of one transaction.
pub type Job =
    Box<dyn for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<(), StorageError>> + Send>;

/// A database: runs jobs as transactions.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `job` as one transaction and commits it with `durability`; returns once it is
    /// committed (or, if the job failed, rolled back alone).
    async fn write(&self, durability: Durability, job: Job) -> Result<(), StorageError>;

    /// As [`Backend::write`], for a job that locks account `account` and no other (an
    /// operation in one of its sessions), which the backend may commit in a group with
    /// others.
    async fn write_for(
        &self,
        _account: AccountId,
        durability: Durability,
        job: Job,
    ) -> Result<(), StorageError> {
        self.write(durability, job).await
    }

    /// Runs `job` as one read-only transaction.
    async fn read(&self, job: Job) -> Result<(), StorageError>;

    /// `sqlite` or `postgres`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// How many write jobs of one account an instance should send at once, if a job
    /// waiting for the account's lock holds something scarce (a pooled connection);
    /// `None` if waiting costs nothing (see `service::gates`).
    fn jobs_per_account(&self) -> Option<usize> {
        None
    }

    /// Its connection pools: (name, connections open, idle).
    fn pools(&self) -> Vec<(&'static str, u32, u32)> {
        Vec::new()
    }

    /// Has `observer` told of every commit: its time and how many jobs it held.
    fn observe_commits(&self, _observer: CommitObserver) {}
}

/// Told of every commit: its time and its number of jobs (see [`Backend::observe_commits`]).
#[derive(Clone)]
pub struct CommitObserver(pub Arc<dyn Fn(std::time::Duration, usize) + Send + Sync>);

impl std::fmt::Debug for CommitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitObserver")
    }
}

/// The server's handle on its database. Clone it freely.
#[derive(Clone, Debug)]
pub struct Storage {
    backend: Arc<dyn Backend>,
}

fn no_answer() -> StorageError {
    StorageError::Unavailable("the transaction ended without an answer".into())
}

impl Storage {
    /// A handle on `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// See [`Backend::pools`].
    pub fn pools(&self) -> Vec<(&'static str, u32, u32)> {
        self.backend.pools()
    }

    /// See [`Backend::observe_commits`].
    pub fn observe_commits(&self, observer: CommitObserver) {
        self.backend.observe_commits(observer);
    }

    /// See [`Backend::jobs_per_account`].
    pub fn jobs_per_account(&self) -> Option<usize> {
        self.backend.jobs_per_account()
    }

    /// Runs `f` as one write transaction; its answer once the transaction is committed
    /// with `durability`. If `f` fails, its writes are rolled back and nothing else is.
    pub async fn write<R, F>(&self, durability: Durability, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R, StorageError>>
            + Send
            + 'static,
    {
        let (job, answer) = job(f);
        self.backend.write(durability, job).await?;
        take(&answer)
    }

    /// As [`Storage::write`], for a job that locks account `account` and no other account
    /// (see [`Backend::write_for`]).
    pub async fn write_for<R, F>(
        &self,
        account: AccountId,
        durability: Durability,
        f: F,
    ) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R, StorageError>>
            + Send
            + 'static,
    {
        let (job, answer) = job(f);
        self.backend.write_for(account, durability, job).await?;
        take(&answer)
    }

    /// Runs `f` as one read-only transaction.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R, StorageError>>
            + Send
            + 'static,
    {
        let (job, answer) = job(f);
        self.backend.read(job).await?;
        take(&answer)
    }
}

type Answer<R> = Arc<Mutex<Option<R>>>;

/// Erases `f`'s answer type: the job leaves its answer in a slot that the caller reads
/// once the backend says the transaction committed.
fn job<R, F>(f: F) -> (Job, Answer<R>)
where
    R: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R, StorageError>> + Send + 'static,
{
    let answer: Answer<R> = Arc::new(Mutex::new(None));
    let slot = answer.clone();
    let job: Job = Box::new(move |tx| {
        Box::pin(async move {
            let r = f(tx).await?;
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
            Ok(())
        })
    });
    (job, answer)
}

fn take<R>(answer: &Answer<R>) -> Result<R, StorageError> {
    answer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .ok_or_else(no_answer)
}
