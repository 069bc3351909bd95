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
    pub(crate) storage_key: Arc<StorageKey>,
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
        channel: Arc<ClientChannel>,
        storage_key: StorageKey,
    ) -> Self {
        Self {
            conn: Arc::new(std::sync::RwLock::new(conn)),
            user,
            channel,
            storage_key: Arc::new(storage_key),
        }
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
            match self.connection().call(&Request::Sealed(req.clone())).await {
                Ok(Response::Sealed(resp)) => break resp,
                Ok(_) => return Err(ClientError::Protocol("unsealed reply to a sealed request")),
                Err(ClientError::Server(ErrorCode::REPLAYED)) if attempt < REPLAY_RETRIES => {
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
