//! `reauth`: an OPAQUE login inside the session. The start counts a guess (like a login
//! start, and with the same lockout); the finish checks KE3 and, in one transaction with its
//! audit event, records on the session's row that it proved the password now, for the one
//! sensitive operation (a password change, a key rotation) that may follow.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    handshake::login,
    ops::{ReauthAbort, ReauthAborted, ReauthFinish, ReauthStart, ReauthStarted, Reauthenticated},
};
use rand::rngs::OsRng;

use super::{Answer, Call, once, refused};
use crate::{
    audit,
    guess_limit::{LockoutPolicy, LoginGate},
    service::{
        ServerError,
        login::{self as login_flow, Failure, Whose},
        pending::Pending,
    },
    storage,
};

/// Step 1: counts the guess and answers KE2.
pub(super) async fn start(call: &Call<'_>, op: ReauthStart) -> Result<Answer, ServerError> {
    let (core, session, _req, now) = (call.core, call.session, call.req, call.now);
    login::parse_request(op.message.as_slice())?;
    let id = session.channel.id();
    let (found, gate) =
        login_flow::count_guess(core, Whose::Session(session.account, id), now).await?;
    if let LoginGate::Locked { retry_after_secs } = gate {
        return Err(ServerError::Locked { retry_after_secs });
    }
    let found = found.ok_or(ServerError::Internal("a session without an account"))?;
    let (state, message) = login::respond(
        &mut OsRng,
        &core.setup,
        Some(&found.record),
        &found.credential_id,
        &session.user,
        op.message.as_slice(),
    )?;
    let pending = Pending::Reauth {
        session: id,
        account: found.account,
        state,
    };
    let handshake = login_flow::park(core, pending, now).await?;
    Ok(Answer::Fresh(OpResponse::ReauthStarted(ReauthStarted {
        handshake,
        message,
    })))
}

/// Step 2: checks KE3; records the proof on the session.
pub(super) async fn finish(call: &Call<'_>, op: ReauthFinish) -> Result<Answer, ServerError> {
    let (core, session, _req, now) = (call.core, call.session, call.req, call.now);
    let id = session.channel.id();
    let (account, state) = match login_flow::take(core, &op.handshake, now).await? {
        Pending::Reauth {
            session: s,
            account,
            state,
        } if s == id => (account, state),
        other => {
            // Another session's handshake, or a login's: not this session's to finish.
            login_flow::abandon(core, other, now).await;
            return Err(ServerError::UnknownHandshake);
        }
    };
    let proven = state.finish(&session.user, op.message.as_slice()).is_ok();
    let (secs, window, epoch) = (
        now.unix_secs(),
        core.config.reauth_window_secs,
        account.epoch,
    );
    if !proven {
        let left = login_flow::failed(core, Failure::Account(account.id), now).await?;
        return Ok(Answer::Fresh(refused(ServerError::AuthFailed {
            guesses_left: Some(left),
        })));
    }
    let policy = core.policy;
    once(call, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account.id).await?;
            if a.epoch != epoch {
                // The credentials changed since the reauth started: it proved nothing.
                let event = EventBody::new(EventKind::LoginFailed, Outcome::Failed);
                audit::append(tx, &mut a, event, secs).await?;
                tx.save_account(&a).await?;
                return Ok(refused(ServerError::AuthFailed {
                    guesses_left: Some(policy.guesses_left(&a.guesses)),
                }));
            }
            LockoutPolicy::succeeded(&mut a.guesses);
            let event = EventBody::new(EventKind::LoginSucceeded, Outcome::Ok);
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            tx.set_session_reauth(id.0, Some(secs)).await?;
            Ok(OpResponse::Reauthenticated(Reauthenticated {
                valid_secs: window,
            }))
        })
    })
    .await
}

/// Ends a reauthentication whose KE2 did not open at the client (a wrong password): it is
/// recorded as failed now, and the answer says how many wrong guesses are left.
pub(super) async fn abort(call: &Call<'_>, op: ReauthAbort) -> Result<Answer, ServerError> {
    let (core, session, now) = (call.core, call.session, call.now);
    let guesses_left = match core.handshakes.take(&op.handshake, now) {
        Some(Ok(p) | Err(p)) => {
            if !matches!(&p, Pending::Reauth { session: s, .. } if *s == session.channel.id()) {
                // Not this session's reauth: ended all the same (its id was a secret of its
                // own session), but nothing is said about it here.
                login_flow::abandon(core, p, now).await;
                None
            } else {
                login_flow::abandon(core, p, now).await
            }
        }
        None => None,
    };
    Ok(Answer::Fresh(OpResponse::ReauthAborted(ReauthAborted {
        guesses_left,
    })))
}
