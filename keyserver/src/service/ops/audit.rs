//! `audit`: a page of the account's audit chain, as stored; the client verifies it.

use keyserver_protocol::{
    OpResponse,
    limits::AUDIT_PAGE,
    ops::{Audit, AuditPage},
};

use super::{Answer, Call};
use crate::service::ServerError;

/// Handles `audit`.
pub(super) async fn handle(call: &Call<'_>, op: Audit) -> Result<Answer, ServerError> {
    let (_core, session) = (call.core, call.session);
    let account = session.account;
    // One more than a page tells whether more follow.
    let mut events = super::read(call, move |tx, _| {
        Box::pin(async move { tx.events(account, op.after, AUDIT_PAGE + 1).await })
    })
    .await?;
    let more = events.len() > AUDIT_PAGE;
    events.truncate(AUDIT_PAGE);
    Ok(Answer::Fresh(OpResponse::Audit(AuditPage { events, more })))
}
