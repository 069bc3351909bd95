//! A logged-in session: sends sealed operations and opens their answers. Each operation is
//! a method in its own module under `ops/`, named as the operation.

use std::sync::Arc;

use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, Request, Response, UserName, seal::StorageKey,
    session::ClientChannel,
};

use crate::{ClientError, Connection};

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
    ) -> Self {
        Self {
            conn: Arc::new(std::sync::RwLock::new(conn)),
            user,
            channel: Arc::new(channel),
            keys: Arc::new(std::sync::RwLock::new(AccountKeys {
                storage_key: Arc::new(storage_key),
                epoch,
            })),
        }
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
        match OpResponse::decode(&plain)
            .map_err(|_| ClientError::Protocol("undecodable response"))?
        {
            OpResponse::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }
}
