//! A logged-in session: sends sealed operations and opens their answers. Each operation is
//! a method in its own module under `ops/`, named as the operation.

use std::sync::Arc;

use keyserver_protocol::{
    ErrorCode, NameTag, OpRequest, OpResponse, Request, Response, UserName,
    audit_chain::AuditPosition, ops::OpAnswer, seal::StorageKey, session::ClientChannel,
};

use crate::{
    ClientError, Connection,
    state::{AccountState, ServerId},
};

/// How often a request refused as a replay is tried again (see [`Session::call`]).
const REPLAY_RETRIES: u32 = 6;

/// A logged-in session. Clone it freely: clones share the session and may run requests
/// concurrently from many tasks.
#[derive(Clone)]
pub struct Session {
    conn: Arc<std::sync::RwLock<Connection>>,
    pub(crate) user: UserName,
    channel: Arc<ClientChannel>,
    keys: Arc<std::sync::RwLock<AccountKeys>>,
    server: ServerId,
    checks: Arc<std::sync::Mutex<Checks>>,
}

/// What the session checks the server's answers against.
#[derive(Debug, Default)]
struct Checks {
    /// What this client remembers of the account, updated with every answer.
    state: AccountState,
    /// The position remembered when the state was given ([`Session::remember`]).
    remembered: Option<AuditPosition>,
    /// The checkpoint the session started from, if it remembered nothing.
    checkpoint: Option<keyserver_protocol::ops::StoredCheckpoint>,
}

/// What a session knows of its account's keys: the storage key, and the epoch it is sealed
/// for. A password change moves the epoch; a key rotation replaces both.
#[derive(Clone, Debug)]
pub(crate) struct AccountKeys {
    pub(crate) storage_key: Arc<StorageKey>,
    pub(crate) epoch: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("id", &self.channel.id())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        conn: Connection,
        user: UserName,
        channel: ClientChannel,
        storage_key: StorageKey,
        epoch: u64,
        server: ServerId,
    ) -> Self {
        let mut state = AccountState::new();
        state.epoch = epoch;
        Self {
            conn: Arc::new(std::sync::RwLock::new(conn)),
            user,
            channel: Arc::new(channel),
            keys: Arc::new(std::sync::RwLock::new(AccountKeys {
                storage_key: Arc::new(storage_key),
                epoch,
            })),
            server,
            checks: Arc::new(std::sync::Mutex::new(Checks {
                state,
                remembered: None,
                checkpoint: None,
            })),
        }
    }

    fn checks(&self) -> std::sync::MutexGuard<'_, Checks> {
        // Every critical section is a check and an assignment: a panic cannot leave the
        // state half-written.
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The server this session is on (from its long-term key, which the login
    /// authenticated).
    pub fn server_id(&self) -> ServerId {
        self.server
    }

    /// Gives the session what this client remembers of the account from earlier runs (see
    /// [`crate::state`]): from now on, every answer is checked against it, and it is kept
    /// up to date. Fails with [`ClientError::Rollback`] if the login already showed an
    /// older epoch.
    pub fn remember(&self, mut state: AccountState) -> Result<(), ClientError> {
        state
            .saw_epoch(self.epoch())
            .map_err(ClientError::Rollback)?;
        state.tags_under(self.keys().storage_key.tag_key_id());
        let mut c = self.checks();
        let seen = std::mem::take(&mut c.state);
        state.merge(&seen).map_err(ClientError::Rollback)?;
        c.remembered = state.pinned;
        c.state = state;
        Ok(())
    }

    /// What this client now knows of the account, to keep for the next run.
    pub fn state(&self) -> AccountState {
        self.checks().state.clone()
    }

    /// The audit position remembered when [`Self::remember`] was called (`None`: nothing
    /// was, and the first position seen was trusted).
    pub fn remembered_position(&self) -> Option<AuditPosition> {
        self.checks().remembered
    }

    /// Notes that the remembered position came from checkpoint `c`.
    pub(crate) fn started_from(&self, c: keyserver_protocol::ops::StoredCheckpoint) {
        self.checks().checkpoint = Some(c);
    }

    /// The checkpoint this session started from, if it remembered nothing of the account
    /// ([`Self::start_from_checkpoint`]).
    pub fn started_from_checkpoint(&self) -> Option<keyserver_protocol::ops::StoredCheckpoint> {
        self.checks().checkpoint
    }

    /// The newest audit position seen in this session (or remembered).
    pub fn position(&self) -> Option<AuditPosition> {
        self.checks().state.pinned
    }

    /// The tag the server knows `name` by, under the current storage key.
    pub(crate) fn tag(&self, name: &keyserver_protocol::SecretName) -> NameTag {
        self.keys().storage_key.name_tag(name)
    }

    /// The newest version of the secret tagged `tag` seen, to check an answer against.
    pub(crate) fn newest_version(&self, tag: &NameTag) -> Option<u64> {
        self.checks().state.newest_version(tag)
    }

    /// Checks version `seen` of `name`, tagged `tag` (see [`AccountState::saw_version`]).
    pub(crate) fn saw_version(
        &self,
        name: &keyserver_protocol::SecretName,
        tag: &NameTag,
        at_send: Option<u64>,
        seen: u64,
    ) -> Result<(), ClientError> {
        self.checks()
            .state
            .saw_version(name, tag, at_send, seen)
            .map_err(ClientError::Rollback)
    }

    /// Remembers version `seen` of the secret tagged `tag`, known from the verified audit
    /// chain (the store events carry their version).
    pub(crate) fn saw_stored(&self, tag: &NameTag, seen: u64) {
        self.checks().state.remember_version(tag, seen);
    }

    /// Moves the remembered versions to new tags (a key rotation made here).
    pub(crate) fn retag(&self, moves: &[(NameTag, NameTag)], id: [u8; 16]) {
        self.checks().state.retag(moves, id);
    }

    /// The account's storage key and epoch, as this session knows them.
    pub(crate) fn keys(&self) -> AccountKeys {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces what this session knows of the account's keys (after a password change or
    /// a key rotation it made).
    pub(crate) fn set_keys(&self, keys: AccountKeys) {
        let epoch = keys.epoch;
        let mut c = self.checks();
        c.state.epoch = c.state.epoch.max(epoch);
        drop(c);
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
    }

    /// The account's epoch, as this session knows it (see
    /// `keyserver_protocol::seal::MasterKey::seal_storage_key`).
    pub fn epoch(&self) -> u64 {
        self.keys().epoch
    }

    /// The user this session is logged in as.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The connection requests of this session go over.
    pub fn connection(&self) -> Connection {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Moves the session to another connection (of either transport, even to another
    /// server instance sharing the database): its next requests go there. No login, no
    /// password: the session lives above connections.
    pub fn move_to(&self, conn: &Connection) {
        *self
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = conn.clone();
    }

    /// Seals `op`, sends it, opens the answer. The operations of this crate (store,
    /// retrieve, …) are built on it; it is public for tests and for tools that speak the
    /// protocol directly. An [`OpResponse::Error`] comes back as the matching
    /// [`ClientError`].
    ///
    /// A request whose connection was lost is sent again, same bytes, on a new connection
    /// (see [`Connection`]). If the server had applied it, it answers what it answered
    /// then; if it had received but not yet finished it, it says `REPLAYED`: a read is then
    /// sealed again under a new sequence number, a mutation is sent again after a pause
    /// until its recorded answer is there.
    pub async fn call(&self, op: &OpRequest) -> Result<OpResponse, ClientError> {
        // The answer must not be behind what was seen before it was asked for (answers to
        // requests sent concurrently may come back in any order).
        let at_send = self.position();
        let body = op.encode();
        let seal = |body: &[u8]| {
            self.channel
                .seal_request(body)
                .map_err(|_| ClientError::InvalidInput("request too large".into()))
        };
        let mut req = seal(&body)?;
        let mut attempt = 0u32;
        let resp = loop {
            let sent = if op.is_guess() {
                // It counts a password guess: never sent twice behind the caller's back.
                self.connection()
                    .call_once(&Request::Sealed(req.clone()))
                    .await
            } else {
                self.connection().call(&Request::Sealed(req.clone())).await
            };
            match sent {
                Ok(Response::Sealed(resp)) => break resp,
                Ok(_) => return Err(ClientError::Protocol("unsealed reply to a sealed request")),
                Err(ClientError::Server(ErrorCode::REPLAYED))
                    if attempt < REPLAY_RETRIES && !op.is_guess() =>
                {
                    attempt += 1;
                    if op.is_mutation() {
                        tokio::time::sleep(
                            std::time::Duration::from_millis(20) * 2u32.pow(attempt),
                        )
                        .await;
                    } else {
                        req = seal(&body)?;
                    }
                }
                Err(ClientError::Server(ErrorCode::REPLAYED)) => {
                    return Err(ClientError::Protocol(
                        "the server did not confirm the request; check its outcome with list or audit",
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        let plain = self
            .channel
            .open_response(req.seq, &resp)
            .map_err(|_| ClientError::Integrity("the server's response did not authenticate"))?;
        let answer =
            OpAnswer::decode(&plain).map_err(|_| ClientError::Protocol("undecodable response"))?;
        if let Some(seen) = answer.position {
            self.checks()
                .state
                .saw_position(at_send, seen)
                .map_err(ClientError::Rollback)?;
        }
        match answer.response {
            OpResponse::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }
}
