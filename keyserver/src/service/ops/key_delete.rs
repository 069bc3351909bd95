//! `key-delete`: the key's row, sealed private key and all, goes; its audit event and the
//! recorded answer in the same transaction. It needs a fresh reauth: a key that was not
//! exportable is gone for good.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    ops::KeyDelete,
};

use super::{Answer, Call, once, refused};
use crate::{audit, service::ServerError, storage};

/// Handles `key-delete`.
pub(super) async fn handle(call: &Call<'_>, op: KeyDelete) -> Result<Answer, ServerError> {
    let (account, secs, window) = (
        call.session.account,
        call.now.unix_secs(),
        call.core.config.reauth_window_secs,
    );
    once(call, move |tx, live| {
        Box::pin(async move {
            if !live.reauthed(secs, window) {
                return Ok(refused(ServerError::ReauthRequired));
            }
            let mut a = storage::account(tx, account).await?;
            let deleted = tx.delete_held_key(account, &op.name).await?;
            let outcome = if deleted {
                Outcome::Ok
            } else {
                Outcome::NotFound
            };
            let event = EventBody::about_key(EventKind::KeyDelete, &op.name, outcome);
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(if deleted {
                OpResponse::KeyDeleted
            } else {
                refused(ServerError::NotFound)
            })
        })
    })
    .await
}
