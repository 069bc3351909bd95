//! Operations inside a session, one module each, named as the operation (the same names as
//! in `keyserver_protocol::ops` and in the client). Each handler gets an authenticated
//! session and writes its storage decision once, over `storage::Tx`.
//!
//! Every operation's transaction first checks that its session still exists in the
//! database, in its account's current epoch ([`write`], [`read`], [`once`]): a logout, or a
//! password change in another session, ends it on every instance at once, for every
//! operation. In a write, the check locks the account first, so an operation waiting
//! behind a password change sees the session as the change left it. Mutations run through
//! [`once`]: applied at most once per request, whatever connection or instance it arrives
//! on, and a retry gets the answer recorded the first time.

mod audit;
mod change_password;
mod delete;
mod list;
mod logout;
mod reauth;
mod retrieve;
mod rotate_key;
mod store;

use keyserver_protocol::{OpRequest, OpResponse, session::vault::Binding};
use rand::rngs::OsRng;
use tracing::instrument;

use super::{Core, ServerError, sessions::Session};
use crate::{
    clock::Now,
    storage::{BoxFuture, Durability, RequestId, SessionState, StorageError, Tx},
};

/// What an operation answers.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Computed now.
    Fresh(OpResponse),
    /// The encoded answer recorded when this very request was applied before.
    Recorded(Vec<u8>),
}

/// What an operation's transaction knows of its session: when it last proved the
/// password, if it has.
#[derive(Clone, Copy, Debug)]
pub(super) struct Live {
    /// When the session's last reauth finished (Unix seconds).
    pub(super) reauthed_at: Option<i64>,
}

impl Live {
    /// Whether the session proved the password within `window` seconds of `now`.
    pub(super) fn reauthed(&self, now: i64, window: u64) -> bool {
        let window = i64::try_from(window).unwrap_or(i64::MAX);
        self.reauthed_at
            .is_some_and(|at| at <= now && now.saturating_sub(at) < window)
    }
}

/// The session as its transaction found it: `None` if it ended (logged out, or left in an
/// earlier epoch of its account by a password change or key rotation in another session).
fn live(state: Option<SessionState>) -> Option<Live> {
    state.filter(|s| s.epoch == s.account_epoch).map(|s| Live {
        reauthed_at: s.reauthed_at,
    })
}

/// `session`'s keys sealed for the account's `epoch`: a password change or key rotation
/// takes the session that made it into the new epoch (every other session stays behind,
/// and ends).
pub(super) fn sealed_for_epoch(core: &Core, session: &Session, epoch: u64) -> Vec<u8> {
    let binding = Binding {
        account: session.account,
        user: &session.user,
        created: session.created().unix_secs(),
        epoch,
    };
    core.vault
        .seal(&mut OsRng, &session.channel.keys(), &binding)
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
        OpRequest::ChangePasswordStart(op) => change_password::start(core, session, &op, now).await,
        OpRequest::ChangePasswordFinish(op) => {
            change_password::finish(core, session, req, op, now).await
        }
        OpRequest::Logout => logout::handle(core, session, req, now).await,
        OpRequest::ReauthStart(op) => reauth::start(core, session, req, op, now).await,
        OpRequest::ReauthFinish(op) => reauth::finish(core, session, req, op, now).await,
        OpRequest::RotateKeyStage(op) => rotate_key::stage(core, session, req, op, now).await,
        OpRequest::RotateKeyFinish(op) => rotate_key::finish(core, session, req, op, now).await,
        OpRequest::ReauthAbort(op) => reauth::abort(core, session, op, now).await,
    };
    r.unwrap_or_else(|e| Answer::Fresh(OpResponse::Error(e.reply())))
}

/// Runs `f` as one write transaction of `session`, if the session still exists.
pub(super) async fn write<R, F>(
    core: &Core,
    session: &Session,
    durability: Durability,
    f: F,
) -> Result<R, ServerError>
where
    R: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx, Live) -> BoxFuture<'t, Result<R, StorageError>>
        + Send
        + 'static,
{
    let id = session.channel.id().0;
    let _pass = core.gates.enter(session.account).await;
    core.storage
        .write(durability, move |tx| {
            Box::pin(async move {
                match live(tx.session_state(id).await?) {
                    Some(live) => f(&mut *tx, live).await.map(Some),
                    None => Ok(None),
                }
            })
        })
        .await?
        .ok_or(ServerError::UnknownSession)
}

/// Runs `f` as one read transaction of `session`, if the session still exists.
pub(super) async fn read<R, F>(core: &Core, session: &Session, f: F) -> Result<R, ServerError>
where
    R: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx, Live) -> BoxFuture<'t, Result<R, StorageError>>
        + Send
        + 'static,
{
    let id = session.channel.id().0;
    core.storage
        .read(move |tx| {
            Box::pin(async move {
                match live(tx.session_state(id).await?) {
                    Some(live) => f(&mut *tx, live).await.map(Some),
                    None => Ok(None),
                }
            })
        })
        .await?
        .ok_or(ServerError::UnknownSession)
}

/// Runs the mutation `f` as request `req` of `session`, at most once: if `req` was
/// applied before, its recorded answer; otherwise `f`'s answer, recorded in the same
/// transaction as its changes, durably, before it is returned.
pub(super) async fn once<F>(
    core: &Core,
    session: &Session,
    req: RequestId,
    now: Now,
    f: F,
) -> Result<Answer, ServerError>
where
    F: for<'t> FnOnce(&'t mut dyn Tx, Live) -> BoxFuture<'t, Result<OpResponse, StorageError>>
        + Send
        + 'static,
{
    let secs = now.unix_secs();
    write(core, session, Durability::Disk, move |tx, live| {
        Box::pin(async move {
            if let Some(recorded) = tx.recorded(req).await? {
                return Ok(Answer::Recorded(recorded));
            }
            let response = f(&mut *tx, live).await?;
            tx.record(req, &response.encode(), secs).await?;
            Ok(Answer::Fresh(response))
        })
    })
    .await
}

/// An error answered inside the session (recorded like any answer of a mutation).
pub(super) fn refused(e: ServerError) -> OpResponse {
    OpResponse::Error(e.reply())
}
