//! `retrieve`: the current version of a secret, still sealed, and the read's audit event,
//! committed before the answer leaves (with a read's durability: see `storage::Durability`).

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    codec::Bytes,
    ops::{Retrieve, Secret},
};

use super::{Answer, Call};
use crate::{
    audit,
    service::ServerError,
    storage::{self, Durability},
};

/// Handles `retrieve`.
pub(super) async fn handle(call: &Call<'_>, op: Retrieve) -> Result<Answer, ServerError> {
    let (_core, session, now) = (call.core, call.session, call.now);
    let (account, secs) = (session.account, now.unix_secs());
    let found = super::write(call, Durability::Process, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let found = tx
                .secret(account, &op.tag)
                .await?
                .and_then(|r| r.sealed.map(|sealed| (r.version, r.created, sealed)));
            let outcome = if found.is_some() {
                Outcome::Ok
            } else {
                Outcome::NotFound
            };
            let mut event = EventBody::about(EventKind::Retrieve, &op.tag, outcome);
            event.version = found.as_ref().map(|f| f.0);
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(found)
        })
    })
    .await?;
    let (version, created, sealed) = found.ok_or(ServerError::NotFound)?;
    let sealed = Bytes::new(sealed).ok_or(ServerError::Internal("stored secret is too large"))?;
    Ok(Answer::Fresh(OpResponse::Secret(Secret {
        version,
        created,
        sealed,
    })))
}
