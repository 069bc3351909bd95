//! `delete`: the secret's ciphertext goes, its row (and version counter) stays, with its
//! audit event and recorded answer in one transaction.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    ops::Delete,
};

use super::{Answer, Call, once};
use crate::{
    audit,
    service::ServerError,
    storage::{self, SecretRow},
};

/// Handles `delete`.
pub(super) async fn handle(call: &Call<'_>, op: Delete) -> Result<Answer, ServerError> {
    let (_core, session, _req, now) = (call.core, call.session, call.req, call.now);
    let (account, secs) = (session.account, now.unix_secs());
    once(call, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let live = tx
                .secret(account, &op.tag)
                .await?
                .filter(|r| r.sealed.is_some());
            let (outcome, version) = match live {
                Some(row) => {
                    let version = row.version;
                    let tombstone = SecretRow {
                        sealed: None,
                        ..row
                    };
                    tx.put_secret(account, &op.tag, &tombstone).await?;
                    a.live_secrets = a.live_secrets.saturating_sub(1);
                    (Outcome::Ok, Some(version))
                }
                None => (Outcome::NotFound, None),
            };
            let mut event = EventBody::about(EventKind::Delete, &op.tag, outcome);
            event.version = version;
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(match outcome {
                Outcome::Ok => OpResponse::Deleted,
                _ => OpResponse::Error(ServerError::NotFound.reply()),
            })
        })
    })
    .await
}
