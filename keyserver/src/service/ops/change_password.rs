//! `change-password`: after a reauth in the same session, an OPAQUE registration of the new
//! password under the account's next credential identifier (a new OPRF key); the new record
//! and the re-sealed storage key replace the old ones, the epoch grows, and every other
//! session of the account ends, in one transaction.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    handshake::registration,
    limits::MAX_SEALED_STORAGE_KEY,
    ops::{ChangePasswordFinish, ChangePasswordStart, ChangePasswordStarted, Rekeyed},
};

use super::{Answer, Call, once, read, refused, sealed_for_epoch};
use crate::{
    audit,
    guess_limit::LockoutPolicy,
    service::ServerError,
    storage::{self, Credentials},
};

/// Step 1: the OPRF evaluation of the new password, under the next credential identifier.
/// Stateless: both steps derive the identifier from the session and the account's epoch.
pub(super) async fn start(
    call: &Call<'_>,
    op: &ChangePasswordStart,
) -> Result<Answer, ServerError> {
    let (core, session, now) = (call.core, call.session, call.now);
    let (account, secs, window) = (
        session.account,
        now.unix_secs(),
        core.config.reauth_window_secs,
    );
    let (epoch, reauthed) = read(call, move |tx, live| {
        Box::pin(async move {
            let a = storage::account(tx, account).await?;
            Ok((a.epoch, live.reauthed(secs, window)))
        })
    })
    .await?;
    if !reauthed {
        return Err(ServerError::ReauthRequired);
    }
    let credential_id = core.keys.next_credential_id(&session.channel.id(), epoch);
    let message = registration::respond(&core.setup, &credential_id, op.message.as_slice())
        .map_err(|_| ServerError::Malformed)?;
    Ok(Answer::Fresh(OpResponse::ChangePasswordStarted(
        ChangePasswordStarted { message },
    )))
}

/// Step 2.
pub(super) async fn finish(
    call: &Call<'_>,
    op: ChangePasswordFinish,
) -> Result<Answer, ServerError> {
    let (core, session, _req, now) = (call.core, call.session, call.req, call.now);
    if op.sealed_storage_key.len() != MAX_SEALED_STORAGE_KEY {
        return Err(ServerError::Malformed);
    }
    let record = registration::record(op.upload.as_slice()).map_err(|_| ServerError::Malformed)?;
    let id = session.channel.id();
    let (account, secs, window) = (
        session.account,
        now.unix_secs(),
        core.config.reauth_window_secs,
    );
    let ids = core.keys.credential_ids();
    let sealed_storage_key = op.sealed_storage_key.into_vec();
    // This session goes on into the new epoch; every other one stays behind, and ends.
    let resealed = sealed_for_epoch(call, op.epoch);
    let answer = once(call, move |tx, live| {
        Box::pin(async move {
            if !live.reauthed(secs, window) {
                return Ok(refused(ServerError::ReauthRequired));
            }
            let mut a = storage::account(tx, account).await?;
            if Some(op.epoch) != a.epoch.checked_add(1) {
                return Ok(refused(ServerError::Stale));
            }
            let credentials = Credentials {
                record,
                credential_id: ids.next(&id, a.epoch).to_vec(),
                sealed_storage_key,
            };
            tx.set_credentials(account, &credentials).await?;
            a.epoch = op.epoch;
            tx.set_session_epoch(id.0, op.epoch, &resealed).await?;
            LockoutPolicy::succeeded(&mut a.guesses);
            // Every other session ends (a phished one stops reading now), and this one's
            // proof is used up.
            tx.delete_other_sessions(account, id.0).await?;
            tx.set_session_reauth(id.0, None).await?;
            tx.delete_staged(id.0).await?;
            let event = EventBody::new(EventKind::ChangePassword, Outcome::Ok);
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(OpResponse::PasswordChanged(Rekeyed { epoch: a.epoch }))
        })
    })
    .await?;
    if matches!(answer, Answer::Fresh(OpResponse::PasswordChanged(_))) {
        core.sessions.close_others(account, &id);
    }
    Ok(answer)
}
