//! `change-password`: an OPAQUE registration of the new password inside the session; the
//! new record and the re-sealed storage key replace the old ones in one transaction.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    handshake::registration,
    limits::MAX_SEALED_STORAGE_KEY,
    ops::{ChangePasswordFinish, ChangePasswordStart, ChangePasswordStarted},
};

use super::{Answer, once};
use crate::{
    audit,
    clock::Now,
    guess_limit::LockoutPolicy,
    service::{Core, ServerError, sessions::Session},
    storage::{self, Credentials, RequestId},
};

/// Step 1. Server-side OPAQUE registration is stateless, and both steps run in this
/// authenticated session, so nothing needs to be remembered between them.
pub(super) fn start(
    core: &Core,
    session: &Session,
    op: &ChangePasswordStart,
) -> Result<Answer, ServerError> {
    let message = registration::respond(&core.setup, &session.user, op.message.as_slice())
        .map_err(|_| ServerError::Malformed)?;
    Ok(Answer::Fresh(OpResponse::ChangePasswordStarted(
        ChangePasswordStarted { message },
    )))
}

/// Step 2.
pub(super) async fn finish(
    core: &Core,
    session: &Session,
    req: RequestId,
    op: ChangePasswordFinish,
    now: Now,
) -> Result<Answer, ServerError> {
    if op.sealed_storage_key.len() != MAX_SEALED_STORAGE_KEY {
        return Err(ServerError::Malformed);
    }
    let record = registration::record(op.upload.as_slice()).map_err(|_| ServerError::Malformed)?;
    let (account, secs) = (session.account, now.unix_secs());
    let sealed_storage_key = op.sealed_storage_key.into_vec();
    once(core, req, now, move |tx| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let credentials = Credentials {
                record,
                sealed_storage_key,
            };
            tx.set_credentials(account, &credentials).await?;
            LockoutPolicy::succeeded(&mut a.guesses);
            let event = EventBody::new(EventKind::ChangePassword, Outcome::Ok);
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(OpResponse::PasswordChanged)
        })
    })
    .await
}
