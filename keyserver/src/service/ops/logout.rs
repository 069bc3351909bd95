//! `logout`: the session's row goes (so every instance ends it within its next check), with
//! the audit event and recorded answer in one transaction; this instance forgets it at once.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
};

use super::{Answer, once};
use crate::{
    audit,
    clock::Now,
    service::{Core, ServerError, sessions::Session},
    storage::{self, RequestId},
};

/// Handles `logout`.
pub(super) async fn handle(
    core: &Core,
    session: &Session,
    req: RequestId,
    now: Now,
) -> Result<Answer, ServerError> {
    let (account, secs) = (session.account, now.unix_secs());
    let answer = once(core, session, req, now, move |tx, _| {
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
