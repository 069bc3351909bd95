//! `logout`: the session's row goes (so every instance ends it within its next check), with
//! the audit event and recorded answer in one transaction; this instance forgets it at once.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
};

use super::{Answer, Call, once};
use crate::{audit, service::ServerError, storage};

/// Handles `logout`.
pub(super) async fn handle(call: &Call<'_>) -> Result<Answer, ServerError> {
    let (core, session, req, now) = (call.core, call.session, call.req, call.now);
    let (account, secs) = (session.account, now.unix_secs());
    let answer = once(call, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let event = EventBody::new(EventKind::Logout, Outcome::Ok);
            audit::append(tx, &mut a, event, secs).await?;
            tx.delete_session(req.session).await?;
            tx.save_account(&a).await?;
            Ok(OpResponse::LoggedOut)
        })
    })
    .await?;
    core.sessions.close(&session.channel.id());
    Ok(answer)
}
