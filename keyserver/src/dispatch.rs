//! The server's protocol core: turns one request's bytes into one response's bytes.
//! Transports call [`Core::handle`] and know nothing else; everything a request can do
//! starts here.

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use keyserver_protocol::{
    ErrorCode, ErrorReply, HandshakeId, OpRequest, OpResponse, Request, Response, SealedRequest,
    ServerSetup, UserName,
    codec::Bytes,
    envelope::OpaqueBytes,
    handshake::{HandshakeError, login, registration},
    limits::MAX_SEALED_STORAGE_KEY,
    session::{ChannelError, ReplayError, SessionId},
};
use rand::rngs::OsRng;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::{
    config::Config,
    guess_limit::{LockoutPolicy, LoginGate},
    handshake::{HandshakeTable, LoginAccount, Pending},
    ops,
    rate_limit::{HandshakeLimiter, Rates},
    session::{Session, SessionTable, SessionVault},
    storage::{LoginStart, NewSession, RequestId, Storage, StorageError},
};

/// Unix time in seconds, for stored timestamps.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A failed request: the reply the client gets.
pub(crate) type Reply<T> = Result<T, ErrorReply>;

pub(crate) fn storage_reply(e: StorageError) -> ErrorReply {
    match e {
        StorageError::Unavailable(why) => {
            warn!(error = %why, "storage unavailable");
            ErrorCode::STORAGE_UNAVAILABLE.into()
        }
        StorageError::Corrupt(why) => {
            warn!(error = %why, "corrupt stored data");
            ErrorCode::INTERNAL.into()
        }
    }
}

fn handshake_reply(e: HandshakeError) -> ErrorReply {
    match e {
        HandshakeError::Malformed => ErrorCode::MALFORMED.into(),
        HandshakeError::AuthFailed => ErrorCode::AUTH_FAILED.into(),
        HandshakeError::BadKsfParams | HandshakeError::Internal => {
            warn!(error = %e, "OPAQUE failure on the server side");
            ErrorCode::INTERNAL.into()
        }
    }
}

/// Everything a request may need: configuration, storage, the OPAQUE setup, and the
/// in-memory tables of handshakes and sessions.
pub struct Core {
    pub(crate) config: Config,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) setup: ServerSetup,
    pub(crate) handshakes: HandshakeTable,
    pub(crate) sessions: SessionTable,
    vault: SessionVault,
    /// Seeds fake records and names unknown users' guess counters; derived from the setup.
    fake_seed: zeroize::Zeroizing<[u8; 32]>,
    limiter: HandshakeLimiter,
    policy: LockoutPolicy,
}

/// How often an instance confirms a session it holds with the shared database: a logout
/// on another instance takes effect here within this time.
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core over `storage` with the OPAQUE `setup`.
    pub fn new(config: Config, storage: Arc<dyn Storage>, setup: ServerSetup) -> Self {
        let handshakes = HandshakeTable::new(
            usize::try_from(config.max_pending_handshakes).unwrap_or(usize::MAX),
            config.handshake_timeout(),
        );
        let sessions = SessionTable::new(
            usize::try_from(config.max_sessions).unwrap_or(usize::MAX),
            config.session_idle_timeout(),
            config.session_lifetime(),
        );
        let policy = LockoutPolicy::from_config(&config);
        let vault = SessionVault::from_setup(&setup);
        let fake_seed = crate::server_setup::derive_key(&setup, b"keyserver/1 fake records");
        let limiter = HandshakeLimiter::new(Rates {
            per_address: config.handshakes_per_second_per_address as f64,
            per_address_burst: config.handshake_burst_per_address as f64,
            overall: config.handshakes_per_second as f64,
            overall_burst: 2.0 * config.handshakes_per_second as f64,
        });
        Self {
            config,
            storage,
            setup,
            handshakes,
            sessions,
            vault,
            fake_seed,
            limiter,
            policy,
        }
    }

    /// Handles one request from `peer`. Never fails: every problem becomes an error
    /// response.
    pub async fn handle(&self, bytes: &[u8], peer: IpAddr) -> Vec<u8> {
        let response = match Request::decode(bytes) {
            Ok(req) => {
                let kind = req.kind();
                let r = match self.admit(&req, peer) {
                    Ok(()) => self.dispatch(req).await,
                    Err(e) => Response::Error(e),
                };
                if let Response::Error(e) = &r {
                    debug!(request = kind, code = e.code.name(), "request refused");
                }
                r
            }
            Err(e) => {
                debug!(error = %e, "undecodable request");
                Response::Error(ErrorCode::from(e).into())
            }
        };
        response.encode()
    }

    /// Rate limits: handshake starts are what a flood costs the server most.
    fn admit(&self, req: &Request, peer: IpAddr) -> Reply<()> {
        if matches!(
            req,
            Request::RegisterStart { .. } | Request::LoginStart { .. }
        ) {
            self.limiter
                .check(peer, Instant::now())
                .map_err(|secs| ErrorReply {
                    code: ErrorCode::SLOW_DOWN,
                    retry_after_secs: Some(secs),
                    expected_version: None,
                })?;
        }
        Ok(())
    }

    async fn dispatch(&self, req: Request) -> Response {
        let r = match req {
            Request::RegisterStart { user, message } => self.register_start(user, &message).await,
            Request::RegisterFinish {
                handshake,
                upload,
                sealed_storage_key,
            } => {
                self.register_finish(handshake, &upload, &sealed_storage_key)
                    .await
            }
            Request::LoginStart { user, message } => self.login_start(user, &message).await,
            Request::LoginFinish { handshake, message } => {
                self.login_finish(handshake, &message).await
            }
            Request::LoginAbort { handshake } => self.login_abort(handshake).await,
            Request::Sealed(req) => self.sealed(&req).await,
        };
        r.unwrap_or_else(Response::Error)
    }

    async fn register_start(&self, user: UserName, message: &OpaqueBytes) -> Reply<Response> {
        // Registration necessarily tells whether a name is taken; login never does.
        if self
            .storage
            .find_account(&user)
            .await
            .map_err(storage_reply)?
            .is_some()
        {
            return Err(ErrorCode::USER_EXISTS.into());
        }
        let reply = registration::respond(&self.setup, &user, message.as_slice())
            .map_err(handshake_reply)?;
        let handshake = self.park(Pending::Registration { user }).await?;
        Ok(Response::RegisterStarted {
            handshake,
            message: reply,
        })
    }

    async fn register_finish(
        &self,
        handshake: HandshakeId,
        upload: &OpaqueBytes,
        sealed_storage_key: &Bytes<MAX_SEALED_STORAGE_KEY>,
    ) -> Reply<Response> {
        let user = match self.take(&handshake).await? {
            Pending::Registration { user } => user,
            other => {
                self.abandon(other).await;
                return Err(ErrorCode::UNKNOWN_HANDSHAKE.into());
            }
        };
        if sealed_storage_key.len() != MAX_SEALED_STORAGE_KEY {
            return Err(ErrorCode::MALFORMED.into());
        }
        let record = registration::record(upload.as_slice()).map_err(handshake_reply)?;
        let created = self
            .storage
            .create_account(&user, &record, sealed_storage_key.as_slice(), unix_now())
            .await
            .map_err(storage_reply)?;
        if !created {
            return Err(ErrorCode::USER_EXISTS.into());
        }
        Ok(Response::Registered)
    }

    async fn login_start(&self, user: UserName, message: &OpaqueBytes) -> Reply<Response> {
        // The reply alone lets the client test a password, so the guess is counted (and
        // durably) before the reply is made; unknown names are counted and locked out
        // alike. Lookup and count are one storage step for real and unknown names.
        let LoginStart { account, gate } = self
            .storage
            .start_login(&user, self.name_key(&user), &self.policy, unix_now())
            .await
            .map_err(storage_reply)?;
        if let LoginGate::Locked { retry_after_secs } = gate {
            return Err(ErrorReply {
                code: ErrorCode::ACCOUNT_LOCKED,
                retry_after_secs: Some(retry_after_secs),
                expected_version: None,
            });
        }
        // An unknown user gets a fake record, the same for the same name every time: the
        // OPAQUE work, the reply's size and the client's error are those of a wrong password.
        let fake;
        let record = match &account {
            Some(a) => a.record.as_slice(),
            None => {
                fake = login::fake_record(&self.fake_seed, &user).map_err(handshake_reply)?;
                fake.as_slice()
            }
        };
        let (state, reply) = login::respond(
            &mut OsRng,
            &self.setup,
            Some(record),
            &user,
            message.as_slice(),
        )
        .map_err(handshake_reply)?;
        let login_account = account.map(|a| LoginAccount {
            id: a.id,
            sealed_storage_key: a.sealed_storage_key,
        });
        let handshake = self
            .park(Pending::Login {
                user,
                account: login_account,
                state,
            })
            .await?;
        Ok(Response::LoginStarted {
            handshake,
            message: reply,
        })
    }

    /// Names an unknown user in the guess-counter table without writing the name down.
    fn name_key(&self, user: &UserName) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.fake_seed.as_ref())
        else {
            return [0; 32];
        };
        mac.update(b"keyserver/1 unknown login");
        mac.update(user.as_str().as_bytes());
        mac.finalize().into_bytes().into()
    }

    async fn login_finish(&self, handshake: HandshakeId, message: &OpaqueBytes) -> Reply<Response> {
        let (user, account, state) = match self.take(&handshake).await? {
            Pending::Login {
                user,
                account,
                state,
            } => (user, account, state),
            other @ Pending::Registration { .. } => {
                self.abandon(other).await;
                return Err(ErrorCode::UNKNOWN_HANDSHAKE.into());
            }
        };
        let keys = state.finish(&user, message.as_slice());
        let (Some(account), Ok(keys)) = (account.as_ref(), keys) else {
            if let Some(a) = account {
                self.storage
                    .login_finished(a.id, &user, false, None, unix_now())
                    .await
                    .map_err(storage_reply)?;
            }
            return Err(ErrorCode::AUTH_FAILED.into());
        };
        // The session is recorded (keys sealed) with the login, so that any instance of a
        // fleet, or this one after a restart, can carry it on. One account cannot pile up
        // sessions (each costs memory on every instance that serves it); the password was
        // right, so the guess count is reset all the same.
        let sealed_keys = self.vault.seal(&keys);
        let new = NewSession {
            id: keys.id.0,
            sealed_keys: &sealed_keys,
        };
        self.sessions
            .open(&keys, account.id, user.clone(), Instant::now())
            .map_err(|_| ErrorReply::from(ErrorCode::SLOW_DOWN))?;
        let recorded = self
            .storage
            .login_succeeded(
                account.id,
                &user,
                new,
                self.config.max_sessions_per_account,
                unix_now(),
            )
            .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                self.sessions.close(&keys.id);
                return Err(ErrorReply {
                    code: ErrorCode::SLOW_DOWN,
                    retry_after_secs: None,
                    expected_version: None,
                });
            }
            Err(e) => {
                self.sessions.close(&keys.id);
                return Err(storage_reply(e));
            }
        }
        let sealed_storage_key =
            Bytes::new(account.sealed_storage_key.clone()).ok_or(ErrorCode::INTERNAL)?;
        Ok(Response::LoggedIn {
            sealed_storage_key,
            idle_timeout_secs: self.config.session_idle_timeout_secs,
            lifetime_secs: self.config.session_lifetime_secs,
        })
    }

    async fn login_abort(&self, handshake: HandshakeId) -> Reply<Response> {
        if let Some(Ok(p) | Err(p)) = self.handshakes.take(&handshake, Instant::now()) {
            self.abandon(p).await;
        }
        Ok(Response::LoginAborted)
    }

    async fn sealed(&self, req: &SealedRequest) -> Reply<Response> {
        let now = Instant::now();
        let session = self.session(req.session_id, now).await?;
        let id = RequestId {
            session: req.session_id.0,
            seq: req.seq,
        };
        let opened = {
            let mut window = session
                .window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            session.channel.open_request(req, &mut window)
        };
        let plain = match opened {
            Ok(p) => p,
            Err(ChannelError::Replay(ReplayError::Duplicate | ReplayError::TooOld)) => {
                // The same request again: a retry after a lost connection, or a replay.
                // If it authenticates and was a mutation that was applied, answer what was
                // answered then; nothing runs twice.
                session
                    .channel
                    .open_again(req)
                    .map_err(|_| ErrorCode::BAD_SEAL)?;
                let recorded = self
                    .storage
                    .recorded_response(id)
                    .await
                    .map_err(storage_reply)?;
                let response = recorded.ok_or(ErrorCode::REPLAYED)?;
                let sealed = session
                    .channel
                    .seal_response(req.seq, &response)
                    .map_err(|_| ErrorCode::INTERNAL)?;
                return Ok(Response::Sealed(sealed));
            }
            Err(ChannelError::Replay(_)) => return Err(ErrorCode::REPLAYED.into()),
            Err(_) => return Err(ErrorCode::BAD_SEAL.into()),
        };
        session.touch(now);
        let response = match OpRequest::decode(&plain) {
            Ok(op) => ops::run(self, &session, id, op).await,
            Err(_) => OpResponse::Error(ErrorCode::MALFORMED.into()),
        };
        let sealed = session
            .channel
            .seal_response(req.seq, &response.encode())
            .map_err(|_| ErrorCode::INTERNAL)?;
        Ok(Response::Sealed(sealed))
    }

    /// The session `id`: from this instance's table, confirmed with the database every
    /// [`SESSION_CHECK`], or taken over from the database (opened on another instance, or
    /// before a restart).
    async fn session(&self, id: SessionId, now: Instant) -> Reply<Arc<Session>> {
        match self.sessions.get(&id, now) {
            Ok(s) => {
                if s.due_for_check(now, SESSION_CHECK) {
                    let alive = self
                        .storage
                        .touch_session(id.0, unix_now())
                        .await
                        .map_err(storage_reply)?;
                    if !alive {
                        self.sessions.close(&id);
                        return Err(ErrorCode::UNKNOWN_SESSION.into());
                    }
                }
                Ok(s)
            }
            Err(ErrorCode::UNKNOWN_SESSION) => {
                let stored = self
                    .storage
                    .load_session(id.0)
                    .await
                    .map_err(storage_reply)?;
                let stored = stored.ok_or(ErrorCode::UNKNOWN_SESSION)?;
                let unix = unix_now();
                if !self.sessions.alive(stored.created, stored.last_used, unix) {
                    return Err(ErrorCode::SESSION_EXPIRED.into());
                }
                let keys = self.vault.open(id, &stored.sealed_keys).ok_or_else(|| {
                    warn!("stored session keys do not open (another server setup?)");
                    ErrorReply::from(ErrorCode::UNKNOWN_SESSION)
                })?;
                let ago = |t: i64| {
                    std::time::Duration::from_secs(
                        u64::try_from(unix.saturating_sub(t)).unwrap_or(0),
                    )
                };
                let created = now.checked_sub(ago(stored.created)).unwrap_or(now);
                let last_used = now.checked_sub(ago(stored.last_used)).unwrap_or(now);
                // A fresh replay window: requests replayed across instances are still
                // applied at most once (recorded responses); reads are harmless.
                self.sessions
                    .adopt(&keys, stored.account, stored.user, created, last_used, now)
                    .map_err(|_| ErrorReply::from(ErrorCode::SLOW_DOWN))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Parks a handshake; records expired logins that had to make room.
    async fn park(&self, pending: Pending) -> Reply<HandshakeId> {
        let (id, expired) = self.handshakes.insert(pending, Instant::now());
        for p in expired {
            self.abandon(p).await;
        }
        id.map_err(|_| ErrorCode::SLOW_DOWN.into())
    }

    /// Takes a handshake for its second step.
    async fn take(&self, id: &HandshakeId) -> Reply<Pending> {
        match self.handshakes.take(id, Instant::now()) {
            Some(Ok(p)) => Ok(p),
            Some(Err(expired)) => {
                self.abandon(expired).await;
                Err(ErrorCode::UNKNOWN_HANDSHAKE.into())
            }
            None => Err(ErrorCode::UNKNOWN_HANDSHAKE.into()),
        }
    }

    /// Ends a handshake that will never finish: a login of a real account is recorded as a
    /// failed login (its guess was already counted when it started).
    async fn abandon(&self, pending: Pending) {
        if let Pending::Login {
            user,
            account: Some(a),
            ..
        } = pending
            && let Err(e) = self
                .storage
                .login_finished(a.id, &user, false, None, unix_now())
                .await
        {
            warn!(error = %e, "could not record an abandoned login");
        }
    }

    /// Drops expired handshakes (recording abandoned logins) and expired sessions.
    pub async fn sweep(&self) {
        let now = Instant::now();
        for p in self.handshakes.sweep(now) {
            self.abandon(p).await;
        }
        let n = self.sessions.sweep(now);
        if n > 0 {
            debug!(expired = n, "sessions expired");
        }
    }

    /// Deletes from storage what can no longer be used: recorded responses and sessions
    /// past their lifetime or idle timeout, and stale unknown-name guess counters. These
    /// are database writes, shared by a fleet, so they run far less often than [`Self::sweep`].
    pub async fn purge(&self) {
        // A recorded response is useful while its session may still retry; no session
        // outlives its lifetime.
        let lifetime = i64::try_from(self.config.session_lifetime_secs).unwrap_or(i64::MAX);
        let unix = unix_now();
        if let Err(e) = self
            .storage
            .purge_responses(unix.saturating_sub(lifetime))
            .await
        {
            warn!(error = %e, "could not purge recorded responses");
        }
        let lockout = i64::try_from(self.config.lockout_max_secs).unwrap_or(i64::MAX);
        if let Err(e) = self
            .storage
            .purge_unknown_logins(unix.saturating_sub(lockout.saturating_mul(2)))
            .await
        {
            warn!(error = %e, "could not purge unknown-name guess counters");
        }
        let idle = i64::try_from(self.config.session_idle_timeout_secs).unwrap_or(i64::MAX);
        if let Err(e) = self
            .storage
            .purge_sessions(unix.saturating_sub(lifetime), unix.saturating_sub(idle))
            .await
        {
            warn!(error = %e, "could not purge expired sessions");
        }
    }
}
