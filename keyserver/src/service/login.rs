//! Login: `LoginStart` counts a guess and answers OPAQUE's KE2, `LoginFinish` checks KE3 and
//! opens the session, `LoginAbort` ends a login the client found wrong. Also the handshake
//! table's upkeep (a login that never finishes is recorded as failed).
//!
//! The guess is counted when a login *starts*: the client can test a password from KE2
//! alone, so counting at the finish would let aborted logins guess for free. Lookup,
//! decision and count are one transaction, for a real account and for an unknown name alike
//! (same work, same reply), and the count is reset only by a login that finishes.

use keyserver_protocol::{
    HandshakeId, Response, UserName,
    audit_chain::{EventBody, EventKind, Outcome},
    codec::Bytes,
    envelope::OpaqueBytes,
    handshake::login,
};
use rand::rngs::OsRng;
use tracing::warn;

use super::{
    Core, ServerError,
    pending::{LoginAccount, Pending},
};
use crate::{
    audit,
    clock::Now,
    guess_limit::{LockoutPolicy, LoginGate},
    storage::{self, AccountId, Durability, SessionRow, StorageError},
};

/// What a login start found: the account's id, its sealed storage key and record.
struct Found {
    id: AccountId,
    record: Vec<u8>,
    sealed_storage_key: Vec<u8>,
}

/// `LoginStart`.
pub(super) async fn start(
    core: &Core,
    user: UserName,
    message: &OpaqueBytes,
    now: Now,
) -> Result<Response, ServerError> {
    let policy = core.policy;
    let name_key = core.keys.unknown_name_key(&user);
    let secs = now.unix_secs();
    let name = user.clone();
    let (found, gate) = core
        .storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                let Some(mut a) = tx.account_by_name(&name).await? else {
                    // Unknown names are counted and locked out alike, with no audit log.
                    let mut g = tx.unknown_guesses(&name_key).await?;
                    let gate = policy.start(&mut g, secs);
                    if gate == LoginGate::Allowed {
                        tx.save_unknown_guesses(&name_key, &g).await?;
                    }
                    return Ok((None, gate));
                };
                let gate = policy.start(&mut a.guesses, secs);
                let event = match gate {
                    LoginGate::Allowed => EventBody::new(EventKind::LoginStarted, Outcome::Ok),
                    LoginGate::Locked { .. } => {
                        EventBody::new(EventKind::LoginLocked, Outcome::Refused)
                    }
                };
                audit::append(tx, &mut a, event, secs).await?;
                tx.save_account(&a).await?;
                let c = tx.credentials(a.id).await?.ok_or_else(|| {
                    StorageError::Corrupt("an account without credentials".into())
                })?;
                let found = Found {
                    id: a.id,
                    record: c.record,
                    sealed_storage_key: c.sealed_storage_key,
                };
                Ok((Some(found), gate))
            })
        })
        .await?;
    if let LoginGate::Locked { retry_after_secs } = gate {
        return Err(ServerError::Locked { retry_after_secs });
    }
    // An unknown user gets a fake record, the same for the same name every time: the
    // OPAQUE work, the reply's size and the client's error are those of a wrong password.
    let (record, account) = match found {
        Some(f) => (
            f.record,
            Some(LoginAccount {
                id: f.id,
                sealed_storage_key: f.sealed_storage_key,
            }),
        ),
        None => (core.keys.fake_record(&user)?, None),
    };
    let (state, reply) = login::respond(
        &mut OsRng,
        &core.setup,
        Some(&record),
        &user,
        message.as_slice(),
    )?;
    let handshake = park(
        core,
        Pending::Login {
            user,
            account,
            state,
        },
        now,
    )
    .await?;
    Ok(Response::LoginStarted {
        handshake,
        message: reply,
    })
}

/// `LoginFinish`.
pub(super) async fn finish(
    core: &Core,
    handshake: HandshakeId,
    message: &OpaqueBytes,
    now: Now,
) -> Result<Response, ServerError> {
    let (user, account, state) = match take(core, &handshake, now).await? {
        Pending::Login {
            user,
            account,
            state,
        } => (user, account, state),
        other @ Pending::Registration { .. } => {
            abandon(core, other, now).await;
            return Err(ServerError::UnknownHandshake);
        }
    };
    let keys = state.finish(&user, message.as_slice());
    let (Some(account), Ok(keys)) = (account.as_ref(), keys) else {
        if let Some(a) = account {
            failed(core, a.id, now).await?;
        }
        return Err(ServerError::AuthFailed);
    };
    // The session is recorded (keys sealed) with the login, so that any instance of a
    // fleet, or this one after a restart, can carry it on. One account cannot pile up
    // sessions (each costs memory on every instance that serves it); the password was
    // right, so the guess count is reset all the same.
    let secs = now.unix_secs();
    let row = SessionRow {
        id: keys.id.0,
        account: account.id,
        sealed_keys: core.vault.seal(&mut OsRng, &keys),
        created: secs,
        last_used: secs,
    };
    core.sessions
        .open(&keys, account.id, user, now)
        .map_err(|_| ServerError::SlowDown {
            retry_after_secs: None,
        })?;
    let (id, max) = (account.id, core.config.max_sessions_per_account);
    let recorded = core
        .storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                let mut a = storage::account(tx, id).await?;
                let room = tx.count_sessions(id).await? < max;
                if room {
                    tx.insert_session(&row).await?;
                }
                LockoutPolicy::succeeded(&mut a.guesses);
                let event = EventBody::new(EventKind::LoginSucceeded, Outcome::Ok);
                audit::append(tx, &mut a, event, secs).await?;
                tx.save_account(&a).await?;
                Ok(room)
            })
        })
        .await;
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            core.sessions.close(&keys.id);
            return Err(ServerError::SlowDown {
                retry_after_secs: None,
            });
        }
        Err(e) => {
            core.sessions.close(&keys.id);
            return Err(e.into());
        }
    }
    let sealed_storage_key = Bytes::new(account.sealed_storage_key.clone()).ok_or(
        ServerError::Internal("stored sealed storage key is too large"),
    )?;
    Ok(Response::LoggedIn {
        sealed_storage_key,
        idle_timeout_secs: core.config.session_idle_timeout_secs,
        lifetime_secs: core.config.session_lifetime_secs,
    })
}

/// `LoginAbort`.
pub(super) async fn abort(
    core: &Core,
    handshake: HandshakeId,
    now: Now,
) -> Result<Response, ServerError> {
    if let Some(Ok(p) | Err(p)) = core.handshakes.take(&handshake, now) {
        abandon(core, p, now).await;
    }
    Ok(Response::LoginAborted)
}

/// Records a failed login of a real account (its guess was counted when it started).
async fn failed(core: &Core, id: AccountId, now: Now) -> Result<(), StorageError> {
    let secs = now.unix_secs();
    core.storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                let mut a = storage::account(tx, id).await?;
                let event = EventBody::new(EventKind::LoginFailed, Outcome::Failed);
                audit::append(tx, &mut a, event, secs).await?;
                tx.save_account(&a).await
            })
        })
        .await
}

/// Parks a handshake; records expired logins that had to make room.
pub(super) async fn park(
    core: &Core,
    pending: Pending,
    now: Now,
) -> Result<HandshakeId, ServerError> {
    let (id, expired) = core.handshakes.insert(pending, now);
    for p in expired {
        abandon(core, p, now).await;
    }
    id.map_err(|_| ServerError::SlowDown {
        retry_after_secs: None,
    })
}

/// Takes a handshake for its second step.
pub(super) async fn take(core: &Core, id: &HandshakeId, now: Now) -> Result<Pending, ServerError> {
    match core.handshakes.take(id, now) {
        Some(Ok(p)) => Ok(p),
        Some(Err(expired)) => {
            abandon(core, expired, now).await;
            Err(ServerError::UnknownHandshake)
        }
        None => Err(ServerError::UnknownHandshake),
    }
}

/// Ends a handshake that will never finish: a login of a real account is recorded as a
/// failed login (its guess was already counted when it started).
pub(super) async fn abandon(core: &Core, pending: Pending, now: Now) {
    if let Pending::Login {
        account: Some(a), ..
    } = pending
        && let Err(e) = failed(core, a.id, now).await
    {
        warn!(error = %e, "could not record an abandoned login");
    }
}
