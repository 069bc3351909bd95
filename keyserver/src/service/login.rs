//! Login: `LoginStart` counts a guess and answers OPAQUE's KE2, `LoginFinish` checks KE3 and
//! opens the session, `LoginAbort` ends a login the client found wrong. Also what a reauth
//! (a login inside a session, `ops::reauth`) shares with it, and the handshake table's
//! upkeep (a login that never finishes is recorded as failed).
//!
//! The guess is counted when a login *starts*: the client can test a password from KE2
//! alone, so counting at the finish would let aborted logins guess for free. Only a
//! well-formed KE1 counts (junk cannot lock an account). Lookup, decision and count are one
//! transaction, for a real account and for an unknown name alike (the same rows written,
//! the same reply),
//! and the count is reset only by a login that finishes. A login finishes only against the
//! credentials it started with: a password change in between makes it fail.

use keyserver_protocol::{
    HandshakeId, Response, UserName,
    audit_chain::{EventBody, EventKind, Outcome},
    codec::Bytes,
    envelope::OpaqueBytes,
    handshake::login,
    session::{SessionId, vault::Binding},
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
    storage::{self, AccountId, Credentials, Durability, Guesses, SessionRow, StorageError},
};

/// What a counted login start found of its account.
pub(super) struct Found {
    /// The account as the login starts (its id, sealed storage key, epoch).
    pub(super) account: LoginAccount,
    /// Its OPAQUE record.
    pub(super) record: Vec<u8>,
    /// The credential identifier it was registered under.
    pub(super) credential_id: Vec<u8>,
}

/// Whose password a counted guess is for.
#[derive(Clone, Copy)]
pub(super) enum Whose<'a> {
    /// A login: by name (an unknown name is counted too).
    Name(&'a UserName),
    /// A reauth: the account of a session, which must still exist.
    Session(AccountId, SessionId),
}

/// Decides and counts one password guess, in one transaction with its audit event: the
/// account (if any) and whether the guess may go on. For a reauth whose session has ended,
/// [`ServerError::UnknownSession`] and nothing counted.
pub(super) async fn count_guess(
    core: &Core,
    whose: Whose<'_>,
    now: Now,
) -> Result<(Option<Found>, LoginGate), ServerError> {
    let policy = core.policy;
    let secs = now.unix_secs();
    let (name, session, name_key) = match whose {
        Whose::Name(user) => (Some(user.clone()), None, core.keys.unknown_name_key(user)),
        Whose::Session(id, session) => (None, Some((id, session)), [0; 32]),
    };
    let counted = core
        .storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                let row = match (&name, session) {
                    (Some(user), _) => tx.account_by_name(user).await?,
                    (None, Some((id, session))) => {
                        if tx.session_state(session.0).await?.is_none() {
                            return Ok(None);
                        }
                        Some(storage::account(tx, id).await?)
                    }
                    (None, None) => None,
                };
                let Some(mut a) = row else {
                    // Unknown names are counted and locked out alike, and write the same
                    // event to a chain that stands in for an account's.
                    let mut u = tx.unknown_name(&name_key).await?;
                    let gate = policy.start(&mut u.guesses, secs);
                    if logged(gate, &mut u.guesses) {
                        audit::append_unknown(tx, &name_key, &mut u, start_event(gate), secs)
                            .await?;
                        tx.save_unknown_name(&name_key, &u).await?;
                    }
                    return Ok(Some((None, gate)));
                };
                let gate = policy.start(&mut a.guesses, secs);
                if logged(gate, &mut a.guesses) {
                    audit::append(tx, &mut a, start_event(gate), secs).await?;
                    tx.save_account(&a).await?;
                }
                let Credentials {
                    record,
                    credential_id,
                    sealed_storage_key,
                } = tx.credentials(a.id).await?.ok_or_else(|| {
                    StorageError::Corrupt("an account without credentials".into())
                })?;
                let found = Found {
                    account: LoginAccount {
                        id: a.id,
                        sealed_storage_key,
                        epoch: a.epoch,
                    },
                    record,
                    credential_id,
                };
                Ok(Some((Some(found), gate)))
            })
        })
        .await?;
    counted.ok_or(ServerError::UnknownSession)
}

/// Whether a login start goes in the log: every counted one, and the first refusal of a
/// lockout (the later ones write nothing, for a real account and an unknown name alike).
fn logged(gate: LoginGate, g: &mut Guesses) -> bool {
    match gate {
        LoginGate::Allowed => true,
        LoginGate::Locked { .. } => LockoutPolicy::first_refusal(g),
    }
}

/// The event of a counted login start.
fn start_event(gate: LoginGate) -> EventBody {
    match gate {
        LoginGate::Allowed => EventBody::new(EventKind::LoginStarted, Outcome::Ok),
        LoginGate::Locked { .. } => EventBody::new(EventKind::LoginLocked, Outcome::Refused),
    }
}

/// `LoginStart`.
pub(super) async fn start(
    core: &Core,
    user: UserName,
    message: &OpaqueBytes,
    now: Now,
) -> Result<Response, ServerError> {
    // Junk is refused before anything is counted: only a real attempt costs a guess.
    login::parse_request(message.as_slice())?;
    // An unknown user gets a fake record and credential identifier, the same for the same
    // name every time: the OPAQUE work, the reply's size and the client's error are those
    // of a wrong password. They are derived for every login, whether or not the name
    // exists, so that deriving them does not tell the two apart.
    let fake_record = core.keys.fake_record(&user)?;
    let fake_credential_id = core.keys.unknown_credential_id(&user);
    let (found, gate) = count_guess(core, Whose::Name(&user), now).await?;
    if let LoginGate::Locked { retry_after_secs } = gate {
        return Err(ServerError::Locked { retry_after_secs });
    }
    let (record, credential_id, account) = match found {
        Some(f) => (f.record, f.credential_id, Some(f.account)),
        None => (fake_record, fake_credential_id.to_vec(), None),
    };
    let (state, reply) = login::respond(
        &mut OsRng,
        &core.setup,
        Some(&record),
        &credential_id,
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
        other => {
            abandon(core, other, now).await;
            return Err(ServerError::UnknownHandshake);
        }
    };
    let keys = state.finish(&user, message.as_slice());
    let (Some(account), Ok(keys)) = (account.clone(), keys) else {
        let left = failed(core, failure_of(core, &user, account.as_ref()), now).await?;
        return Err(ServerError::AuthFailed {
            guesses_left: Some(left),
        });
    };
    // The session is recorded (keys sealed) with the login, so that any instance of a
    // fleet, or this one after a restart, can carry it on. One account cannot pile up
    // sessions (each costs memory on every instance that serves it); the password was
    // right, so the guess count is reset all the same.
    let secs = now.unix_secs();
    let binding = Binding {
        account: account.id,
        user: &user,
        created: secs,
        epoch: account.epoch,
    };
    let row = SessionRow {
        id: keys.id.0,
        account: account.id,
        sealed_keys: core.vault.seal(&mut OsRng, &keys, &binding),
        created: secs,
        last_used: secs,
        reauthed_at: None,
        epoch: account.epoch,
    };
    core.sessions
        .open(&keys, account.id, user, now)
        .map_err(|_| ServerError::SlowDown {
            retry_after_secs: None,
        })?;
    let (id, max, epoch, policy) = (
        account.id,
        core.config.max_sessions_per_account,
        account.epoch,
        core.policy,
    );
    let recorded = core
        .storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                let mut a = storage::account(tx, id).await?;
                if a.epoch != epoch {
                    // The password changed (or the key was rotated) since this login
                    // started: it ran against credentials that are gone.
                    let event = EventBody::new(EventKind::LoginFailed, Outcome::Failed);
                    audit::append(tx, &mut a, event, secs).await?;
                    tx.save_account(&a).await?;
                    return Ok(Opened::Stale(policy.guesses_left(&a.guesses)));
                }
                let room = tx.count_sessions(id).await? < max;
                if room {
                    tx.insert_session(&row).await?;
                }
                LockoutPolicy::succeeded(&mut a.guesses);
                let event = EventBody::new(EventKind::LoginSucceeded, Outcome::Ok);
                audit::append(tx, &mut a, event, secs).await?;
                tx.save_account(&a).await?;
                Ok(if room { Opened::Yes } else { Opened::Full })
            })
        })
        .await;
    let refused = match recorded {
        Ok(Opened::Yes) => None,
        Ok(Opened::Full) => Some(ServerError::SlowDown {
            retry_after_secs: None,
        }),
        Ok(Opened::Stale(left)) => Some(ServerError::AuthFailed {
            guesses_left: Some(left),
        }),
        Err(e) => Some(e.into()),
    };
    if let Some(e) = refused {
        core.sessions.close(&keys.id);
        return Err(e);
    }
    let sealed_storage_key = Bytes::new(account.sealed_storage_key).ok_or(
        ServerError::Internal("stored sealed storage key is too large"),
    )?;
    Ok(Response::LoggedIn {
        sealed_storage_key,
        epoch,
        idle_timeout_secs: core.config.session_idle_timeout_secs,
        lifetime_secs: core.config.session_lifetime_secs,
    })
}

/// What a login success could record.
enum Opened {
    /// The session.
    Yes,
    /// Nothing: the account holds its most sessions.
    Full,
    /// Nothing: the account's credentials changed since the login started; the guesses
    /// left.
    Stale(u64),
}

/// `LoginAbort`.
pub(super) async fn abort(
    core: &Core,
    handshake: HandshakeId,
    now: Now,
) -> Result<Response, ServerError> {
    let guesses_left = match core.handshakes.take(&handshake, now) {
        Some(Ok(p) | Err(p)) => abandon(core, p, now).await,
        None => None,
    };
    Ok(Response::LoginAborted { guesses_left })
}

/// Whose login failed.
#[derive(Clone, Copy)]
pub(super) enum Failure {
    /// A real account's.
    Account(AccountId),
    /// An unknown name's, by its key.
    Unknown([u8; 32]),
}

fn failure_of(core: &Core, user: &UserName, account: Option<&LoginAccount>) -> Failure {
    match account {
        Some(a) => Failure::Account(a.id),
        None => Failure::Unknown(core.keys.unknown_name_key(user)),
    }
}

/// Records a failed login: a `login_failed` event for a real account (its guess was
/// counted when it started), the same event in the stand-in chain of an unknown name, so
/// that the two cannot be told apart by how long the server takes to answer
/// (`keyserver-bench --enumeration` measures both). Returns the wrong guesses left before
/// the lockout, counted alike for both.
pub(super) async fn failed(core: &Core, who: Failure, now: Now) -> Result<u64, StorageError> {
    let secs = now.unix_secs();
    let event = EventBody::new(EventKind::LoginFailed, Outcome::Failed);
    let guesses = core
        .storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                match who {
                    Failure::Account(id) => {
                        let mut a = storage::account(tx, id).await?;
                        audit::append(tx, &mut a, event, secs).await?;
                        tx.save_account(&a).await?;
                        Ok(a.guesses)
                    }
                    Failure::Unknown(name_key) => {
                        let mut u = tx.unknown_name(&name_key).await?;
                        audit::append_unknown(tx, &name_key, &mut u, event, secs).await?;
                        tx.save_unknown_name(&name_key, &u).await?;
                        Ok(u.guesses)
                    }
                }
            })
        })
        .await?;
    Ok(core.policy.guesses_left(&guesses))
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

/// Ends a handshake that will never finish: a login (or a reauth) is recorded as failed,
/// its guess having been counted when it started. Returns the guesses left, for a login.
pub(super) async fn abandon(core: &Core, pending: Pending, now: Now) -> Option<u64> {
    let who = match &pending {
        Pending::Registration { .. } => return None,
        Pending::Login { user, account, .. } => failure_of(core, user, account.as_ref()),
        Pending::Reauth { account, .. } => Failure::Account(account.id),
    };
    match failed(core, who, now).await {
        Ok(left) => Some(left),
        Err(e) => {
            warn!(error = %e, "could not record an abandoned login");
            None
        }
    }
}
