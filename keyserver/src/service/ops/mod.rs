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
mod checkpoint;
mod delete;
mod key_delete;
mod key_export;
mod key_generate;
mod key_import;
mod key_list;
mod key_public;
mod key_sign;
mod list;
mod logout;
mod reauth;
mod retrieve;
mod rotate_key;
mod store;

use std::sync::Mutex;

use keyserver_protocol::{
    OpRequest, OpResponse, UserName,
    audit_chain::{AuditPosition, genesis},
    ops::OpAnswer,
    session::vault::Binding,
};
use rand::rngs::OsRng;
use tracing::instrument;

use super::{Core, ServerError, sessions::Session};
use crate::{
    clock::Now,
    storage::{self, AccountId, BoxFuture, Durability, RequestId, SessionState, StorageError, Tx},
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
pub(super) fn sealed_for_epoch(call: &Call<'_>, epoch: u64) -> Vec<u8> {
    let (core, session) = (call.core, call.session);
    let binding = Binding {
        account: session.account,
        user: &session.user,
        created: session.created().unix_secs(),
        epoch,
    };
    core.vault
        .seal(&mut OsRng, &session.channel.keys(), &binding)
}

/// One call of an operation in a session: what its handler needs, and the newest audit
/// position its transactions found (after their own events), which the answer carries.
pub(crate) struct Call<'a> {
    pub(super) core: &'a Core,
    pub(super) session: &'a Session,
    pub(super) req: RequestId,
    pub(super) now: Now,
    position: Mutex<Option<AuditPosition>>,
}

impl<'a> Call<'a> {
    fn new(core: &'a Core, session: &'a Session, req: RequestId, now: Now) -> Self {
        Self {
            core,
            session,
            req,
            now,
            position: Mutex::new(None),
        }
    }

    /// Keeps the newest position seen.
    fn saw(&self, p: AuditPosition) {
        let mut slot = self
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none_or(|old| p.seq >= old.seq) {
            *slot = Some(p);
        }
    }

    fn position(&self) -> Option<AuditPosition> {
        *self
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `op`, the request `req`, in `session`: its answer, sealed as it will be sent
/// (with the account's audit position when the operation read it).
#[instrument(skip_all, fields(op = op.kind(), outcome = tracing::field::Empty))]
pub(super) async fn run(
    core: &Core,
    session: &Session,
    req: RequestId,
    op: OpRequest,
    now: Now,
) -> (Answer, Option<AuditPosition>) {
    let started = crate::clock::Stopwatch::start();
    let kind = op.kind();
    let call = Call::new(core, session, req, now);
    let r = match op {
        OpRequest::Store(op) => store::handle(&call, op).await,
        OpRequest::Retrieve(op) => retrieve::handle(&call, op).await,
        OpRequest::List(op) => list::handle(&call, op).await,
        OpRequest::Delete(op) => delete::handle(&call, op).await,
        OpRequest::Audit(op) => audit::handle(&call, op).await,
        OpRequest::ChangePasswordStart(op) => change_password::start(&call, &op).await,
        OpRequest::ChangePasswordFinish(op) => change_password::finish(&call, op).await,
        OpRequest::Logout => logout::handle(&call).await,
        OpRequest::ReauthStart(op) => reauth::start(&call, op).await,
        OpRequest::ReauthFinish(op) => reauth::finish(&call, op).await,
        OpRequest::RotateKeyStage(op) => rotate_key::stage(&call, op).await,
        OpRequest::RotateKeyFinish(op) => rotate_key::finish(&call, op).await,
        OpRequest::ReauthAbort(op) => reauth::abort(&call, op).await,
        OpRequest::SaveCheckpoint(op) => checkpoint::save(&call, op).await,
        OpRequest::Checkpoints => checkpoint::list(&call).await,
        OpRequest::KeyGenerate(op) => key_generate::handle(&call, op).await,
        OpRequest::KeyImport(op) => key_import::handle(&call, op).await,
        OpRequest::KeySign(op) => key_sign::handle(&call, op).await,
        OpRequest::KeyPublic(op) => key_public::handle(&call, op).await,
        OpRequest::KeyList(op) => key_list::handle(&call, op).await,
        OpRequest::KeyExport(op) => key_export::handle(&call, op).await,
        OpRequest::KeyDelete(op) => key_delete::handle(&call, op).await,
    };
    let answer = r.unwrap_or_else(|e| Answer::Fresh(OpResponse::Error(e.reply())));
    if let (Answer::Fresh(response), None) = (&answer, call.position())
        && !matches!(response, OpResponse::Error(_))
    {
        // Every answer but a refusal carries the account's position, so that a client can
        // refuse one without it: an operation that read none (a reauth's first step) reads
        // it now.
        let (account, user) = (session.account, session.user.clone());
        let read = core
            .storage
            .read(move |tx| Box::pin(async move { position_in(tx, account, &user).await }))
            .await;
        match read {
            Ok(p) => call.saw(p),
            Err(e) => {
                let e = ServerError::from(e);
                return (Answer::Fresh(OpResponse::Error(e.reply())), None);
            }
        }
    }
    let outcome = match &answer {
        Answer::Fresh(OpResponse::Error(e)) => e.code.name(),
        Answer::Fresh(_) => "ok",
        Answer::Recorded(_) => "recorded",
    };
    tracing::Span::current().record("outcome", outcome);
    tracing::debug!("request answered");
    let m = &core.metrics;
    m.operations
        .get_or_create(&crate::metrics::Outcome { op: kind, outcome })
        .inc();
    m.operation_seconds
        .get_or_create(&crate::metrics::Op { op: kind })
        .observe(started.elapsed().as_secs_f64());
    (answer, call.position())
}

/// The account's audit position, read in the transaction `tx` (after its own event).
async fn position_in(
    tx: &mut dyn Tx,
    account: AccountId,
    user: &UserName,
) -> Result<AuditPosition, StorageError> {
    let a = storage::account(tx, account).await?;
    Ok(AuditPosition {
        seq: a.audit_seq,
        head: a.audit_head.unwrap_or_else(|| genesis(user)),
    })
}

/// Runs `f` as one write transaction of the call's session, if the session still exists,
/// and notes the account's audit position after it.
pub(super) async fn write<R, F>(
    call: &Call<'_>,
    durability: Durability,
    f: F,
) -> Result<R, ServerError>
where
    R: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx, Live) -> BoxFuture<'t, Result<R, StorageError>>
        + Send
        + 'static,
{
    let (core, session) = (call.core, call.session);
    let id = session.channel.id().0;
    let (account, user) = (session.account, session.user.clone());
    let _pass = core.gates.enter(account).await;
    let (r, position) = core
        .storage
        .write_for(account, durability, move |tx| {
            Box::pin(async move {
                match live(tx.session_state(id).await?) {
                    Some(live) => {
                        let r = f(&mut *tx, live).await?;
                        Ok(Some((r, position_in(tx, account, &user).await?)))
                    }
                    None => Ok(None),
                }
            })
        })
        .await?
        .ok_or(ServerError::UnknownSession)?;
    call.saw(position);
    Ok(r)
}

/// Runs `f` as one read transaction of the call's session, if the session still exists,
/// and notes the account's audit position in it.
pub(super) async fn read<R, F>(call: &Call<'_>, f: F) -> Result<R, ServerError>
where
    R: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx, Live) -> BoxFuture<'t, Result<R, StorageError>>
        + Send
        + 'static,
{
    let (core, session) = (call.core, call.session);
    let id = session.channel.id().0;
    let (account, user) = (session.account, session.user.clone());
    let (r, position) = core
        .storage
        .read(move |tx| {
            Box::pin(async move {
                match live(tx.session_state(id).await?) {
                    Some(live) => {
                        let r = f(&mut *tx, live).await?;
                        Ok(Some((r, position_in(tx, account, &user).await?)))
                    }
                    None => Ok(None),
                }
            })
        })
        .await?
        .ok_or(ServerError::UnknownSession)?;
    call.saw(position);
    Ok(r)
}

/// Runs the mutation `f` as the call's request, at most once: if the request was applied
/// before, its recorded answer; otherwise `f`'s answer, recorded (with the audit position
/// after it) in the same transaction as its changes, durably, before it is returned.
pub(super) async fn once<F>(call: &Call<'_>, f: F) -> Result<Answer, ServerError>
where
    F: for<'t> FnOnce(&'t mut dyn Tx, Live) -> BoxFuture<'t, Result<OpResponse, StorageError>>
        + Send
        + 'static,
{
    let (req, secs) = (call.req, call.now.unix_secs());
    let (account, user) = (call.session.account, call.session.user.clone());
    let (answer, fresh) = write(call, Durability::Disk, move |tx, live| {
        Box::pin(async move {
            if let Some(recorded) = tx.recorded(req).await? {
                return Ok((Answer::Recorded(recorded), None));
            }
            let response = f(&mut *tx, live).await?;
            // The position the answer carries, whenever it is sent again.
            let position = position_in(tx, account, &user).await?;
            let sealed = OpAnswer {
                position: Some(position),
                response: response.clone(),
            };
            tx.record(req, &sealed.encode(), secs).await?;
            Ok((Answer::Fresh(response), Some(position)))
        })
    })
    .await?;
    if let Some(p) = fresh {
        call.saw(p);
    }
    Ok(answer)
}

/// An error answered inside the session (recorded like any answer of a mutation).
pub(super) fn refused(e: ServerError) -> OpResponse {
    OpResponse::Error(e.reply())
}
