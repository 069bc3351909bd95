//! Operations inside a session, one module each, named as the operation (the same names as
//! in `keyserver_protocol::ops` and in the client). Each handler gets an authenticated
//! session and writes its storage decision once, over `storage::Tx`.
//!
//! Mutations (store, delete, change-password, logout) run through [`once`]: applied at most
//! once per request, whatever connection or instance the request arrives on, and a retry
//! gets the answer recorded the first time.

mod audit;
mod change_password;
mod delete;
mod list;
mod logout;
mod retrieve;
mod store;

use keyserver_protocol::{OpRequest, OpResponse};
use tracing::instrument;

use super::{Core, ServerError, sessions::Session};
use crate::{
    clock::Now,
    storage::{BoxFuture, Durability, RequestId, StorageError, Tx},
};

/// What an operation answers.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Computed now.
    Fresh(OpResponse),
    /// The encoded answer recorded when this very request was applied before.
    Recorded(Vec<u8>),
}

/// Runs `op`, the request `req`, in `session`.
#[instrument(skip_all, fields(op = op.kind()))]
pub(super) async fn run(
    core: &Core,
    session: &Session,
    req: RequestId,
    op: OpRequest,
    now: Now,
) -> Answer {
    let r = match op {
        OpRequest::Store(op) => store::handle(core, session, req, op, now).await,
        OpRequest::Retrieve(op) => retrieve::handle(core, session, op, now).await,
        OpRequest::List(op) => list::handle(core, session, op, now).await,
        OpRequest::Delete(op) => delete::handle(core, session, req, op, now).await,
        OpRequest::Audit(op) => audit::handle(core, session, op).await,
        OpRequest::ChangePasswordStart(op) => change_password::start(core, session, &op),
        OpRequest::ChangePasswordFinish(op) => {
            change_password::finish(core, session, req, op, now).await
        }
        OpRequest::Logout => logout::handle(core, session, req, now).await,
    };
    r.unwrap_or_else(|e| Answer::Fresh(OpResponse::Error(e.reply())))
}

/// Runs the mutation `f` as request `req`, at most once: if `req` was applied before, its
/// recorded answer; otherwise `f`'s answer, recorded in the same transaction as its
/// changes, durably, before it is returned.
pub(super) async fn once<F>(
    core: &Core,
    req: RequestId,
    now: Now,
    f: F,
) -> Result<Answer, ServerError>
where
    F: for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<OpResponse, StorageError>>
        + Send
        + 'static,
{
    let secs = now.unix_secs();
    let answer = core
        .storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                if let Some(recorded) = tx.recorded(req).await? {
                    return Ok(Answer::Recorded(recorded));
                }
                let response = f(&mut *tx).await?;
                tx.record(req, &response.encode(), secs).await?;
                Ok(Answer::Fresh(response))
            })
        })
        .await?;
    Ok(answer)
}
