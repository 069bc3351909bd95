//! A logged-in session and its operations.

use std::sync::Arc;

use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, Request, Response, SecretBytes, SecretName, UserName,
    audit_chain::{AuditEvent, ChainError, ChainVerifier},
    codec::Bytes,
    handshake::registration,
    limits::{AUDIT_PAGE, LIST_PAGE},
    ops::SecretEntry,
    seal::StorageKey,
    session::ClientChannel,
};
use rand::rngs::OsRng;

use crate::{ClientError, Connection, handshake_error};

/// How often a request refused as a replay is tried again (see [`Session::op`]).
const REPLAY_RETRIES: u32 = 6;

/// Most attempts at a store whose version moved under it (concurrent writers).
const STORE_ATTEMPTS: usize = 4;

/// A logged-in session. Clone it freely: clones share the session and may run requests
/// concurrently from many tasks.
#[derive(Clone)]
pub struct Session {
    conn: Arc<std::sync::RwLock<Connection>>,
    user: UserName,
    channel: Arc<ClientChannel>,
    storage_key: Arc<StorageKey>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("id", &self.channel.id())
            .finish_non_exhaustive()
    }
}

/// The audit log and whether its hash chain verified.
#[derive(Debug)]
pub struct AuditReport {
    /// Every event, oldest first.
    pub events: Vec<AuditEvent>,
    /// `Ok` if every event hashes to its stored hash and seqs run from 1 without gaps.
    pub verification: Result<(), ChainError>,
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

    /// Seals `op`, sends it, opens the answer.
    ///
    /// A request whose connection was lost is sent again, same bytes, on a new connection
    /// (see [`Connection`]). If the server had applied it, it answers what it answered
    /// then; if it had received but not yet finished it, it says `REPLAYED`: a read is then
    /// sealed again under a new sequence number, a mutation is sent again after a pause
    /// until its recorded answer is there.
    async fn op(&self, op: &OpRequest) -> Result<OpResponse, ClientError> {
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
        let seq = req.seq;
        let plain = self
            .channel
            .open_response(seq, &resp)
            .map_err(|_| ClientError::Integrity("the server's response did not authenticate"))?;
        match OpResponse::decode(&plain)
            .map_err(|_| ClientError::Protocol("undecodable response"))?
        {
            OpResponse::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    /// Stores `secret` as `name`. Without `replace`, fails with [`ClientError::NameExists`]
    /// if the name holds a secret. Returns the version stored.
    pub async fn store(
        &self,
        name: &SecretName,
        secret: &SecretBytes,
        replace: bool,
    ) -> Result<u64, ClientError> {
        // Versions are sealed into the ciphertext, so the client must know the next one; a
        // fresh name is version 1, otherwise the server says which and we seal again.
        let mut version = 1;
        for _ in 0..STORE_ATTEMPTS {
            let sealed = self
                .storage_key
                .seal_secret(&mut OsRng, &self.user, name, version, secret)
                .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
            let sealed = Bytes::new(sealed)
                .ok_or_else(|| ClientError::InvalidInput("secret too large".into()))?;
            let op = OpRequest::Store {
                name: name.clone(),
                version,
                replace,
                sealed,
            };
            match self.op(&op).await {
                Ok(OpResponse::Stored { version, .. }) => return Ok(version),
                Ok(_) => return Err(ClientError::Protocol("unexpected reply to Store")),
                Err(ClientError::VersionMismatch { expected }) if expected > 0 => {
                    version = expected
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Server(ErrorCode::VERSION_MISMATCH))
    }

    /// Retrieves and opens the current version of `name`.
    pub async fn retrieve(&self, name: &SecretName) -> Result<(SecretBytes, u64), ClientError> {
        let OpResponse::Secret {
            version, sealed, ..
        } = self.op(&OpRequest::Retrieve { name: name.clone() }).await?
        else {
            return Err(ClientError::Protocol("unexpected reply to Retrieve"));
        };
        let secret = self
            .storage_key
            .open_secret(&self.user, name, version, sealed.as_slice())
            .map_err(|_| {
                ClientError::Integrity(
                    "the stored secret was altered, swapped or is not the version claimed",
                )
            })?;
        Ok((secret, version))
    }

    /// Lists every secret (name, version, size, created).
    pub async fn list(&self) -> Result<Vec<SecretEntry>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let OpResponse::List { entries, more } = self
                .op(&OpRequest::List {
                    after: after.clone(),
                })
                .await?
            else {
                return Err(ClientError::Protocol("unexpected reply to List"));
            };
            if entries.len() > LIST_PAGE || (more && entries.is_empty()) {
                return Err(ClientError::Protocol("bad list page"));
            }
            after = entries.last().map(|e| e.name.clone());
            all.extend(entries);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Deletes `name`.
    pub async fn delete(&self, name: &SecretName) -> Result<(), ClientError> {
        match self.op(&OpRequest::Delete { name: name.clone() }).await? {
            OpResponse::Deleted => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to Delete")),
        }
    }

    /// Reads the whole audit log and verifies its hash chain.
    pub async fn audit(&self) -> Result<AuditReport, ClientError> {
        let mut events: Vec<AuditEvent> = Vec::new();
        let mut verifier = ChainVerifier::new(&self.user);
        let mut verification = Ok(());
        loop {
            let after = events.last().map_or(0, |e| e.seq);
            let OpResponse::Audit { events: page, more } =
                self.op(&OpRequest::Audit { after }).await?
            else {
                return Err(ClientError::Protocol("unexpected reply to Audit"));
            };
            if page.len() > AUDIT_PAGE
                || (more && page.is_empty())
                || page.first().is_some_and(|e| e.seq <= after)
            {
                return Err(ClientError::Protocol("bad audit page"));
            }
            for e in &page {
                if verification.is_ok() {
                    verification = verifier.push(e);
                }
            }
            events.extend(page);
            if !more {
                return Ok(AuditReport {
                    events,
                    verification,
                });
            }
        }
    }

    /// Changes the password: a new OPAQUE registration, and the same storage key sealed
    /// under the new master key. No secret is re-encrypted.
    pub async fn change_password(&self, new_password: &SecretBytes) -> Result<(), ClientError> {
        let (flow, message) =
            registration::start(&mut OsRng, &self.user, new_password).map_err(handshake_error)?;
        let OpResponse::ChangePasswordStarted { message } =
            self.op(&OpRequest::ChangePasswordStart { message }).await?
        else {
            return Err(ClientError::Protocol(
                "unexpected reply to ChangePasswordStart",
            ));
        };
        let (ksf, pw, user, sk) = (
            self.connection().ksf(),
            new_password.clone(),
            self.user.clone(),
            self.storage_key.clone(),
        );
        let (upload, sealed) = tokio::task::spawn_blocking(move || {
            let fin = flow
                .finish(&mut OsRng, &pw, message.as_slice(), ksf)
                .map_err(handshake_error)?;
            Ok::<_, ClientError>((
                fin.upload,
                fin.master_key.seal_storage_key(&mut OsRng, &user, &sk),
            ))
        })
        .await
        .map_err(|_| ClientError::Protocol("password change task failed"))??;
        let sealed_storage_key =
            Bytes::new(sealed).ok_or(ClientError::Protocol("sealed storage key too large"))?;
        match self
            .op(&OpRequest::ChangePasswordFinish {
                upload,
                sealed_storage_key,
            })
            .await?
        {
            OpResponse::PasswordChanged => Ok(()),
            _ => Err(ClientError::Protocol(
                "unexpected reply to ChangePasswordFinish",
            )),
        }
    }

    /// Ends the session on the server.
    pub async fn logout(&self) -> Result<(), ClientError> {
        match self.op(&OpRequest::Logout).await? {
            OpResponse::LoggedOut => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to Logout")),
        }
    }
}
