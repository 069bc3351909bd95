//! `delete`: the secret's ciphertext goes, its row (and version counter) stays, with its
//! audit event and recorded answer in one transaction.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    ops::Delete,
};

use super::{Answer, once};
use crate::{
    audit,
    clock::Now,
    service::{Core, ServerError, sessions::Session},
    storage::{self, RequestId, SecretRow},
};

/// Handles `delete`.
pub(super) async fn handle(
    core: &Core,
    session: &Session,
    req: RequestId,
    op: Delete,
    now: Now,
) -> Result<Answer, ServerError> {
    let (account, secs) = (session.account, now.unix_secs());
    once(core, session, req, now, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let live = tx
                .secret(account, &op.name)
                .await?
                .filter(|r| r.sealed.is_some());
            let outcome = match live {
                Some(row) => {
                    let tombstone = SecretRow {
                        sealed: None,
                        ..row
                    };
                    tx.put_secret(account, &op.name, &tombstone).await?;
                    a.live_secrets = a.live_secrets.saturating_sub(1);
                    Outcome::Ok
                }
                None => Outcome::NotFound,
            };
            let event = EventBody::about(EventKind::Delete, &op.name, outcome);
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
