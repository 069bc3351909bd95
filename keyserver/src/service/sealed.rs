//! Sealed requests: find the session (in memory, or adopted from the database), open the
//! request under its key with the replay window, run the operation, seal the answer.
//!
//! A request the window refuses as already seen is a client re-sending the same bytes
//! after losing its connection (or a replay): if it authenticates and was a mutation that
//! was applied, it gets the answer recorded then; nothing runs twice.

use std::{sync::Arc, time::Duration};

use keyserver_protocol::{
    OpRequest, OpResponse, Response, SealedRequest,
    session::{ChannelError, ReplayError, SessionId},
};
use tracing::warn;

use super::{
    Core, ServerError,
    ops::{self, Answer},
    sessions::{Adopted, Session, SessionError},
};
use crate::{
    clock::Now,
    storage::{Durability, RequestId},
};

/// How often an instance confirms a session it holds with the shared database: a logout
/// on another instance takes effect here within this time.
const SESSION_CHECK: Duration = Duration::from_secs(2);

/// A `Sealed` request.
pub(super) async fn handle(
    core: &Core,
    req: &SealedRequest,
    now: Now,
) -> Result<Response, ServerError> {
    let session = find(core, req.session_id, now).await?;
    let id = RequestId {
        session: req.session_id.0,
        seq: req.seq,
    };
    let opened = {
        let mut window = session
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        session.channel.open_request(req, &mut window)
    };
    let plain = match opened {
        Ok(p) => p,
        Err(ChannelError::Replay(ReplayError::Duplicate | ReplayError::TooOld)) => {
            return again(core, &session, req, id).await;
        }
        Err(ChannelError::Replay(_)) => return Err(ServerError::Replayed),
        Err(_) => return Err(ServerError::BadSeal),
    };
    session.touch(now);
    let answer = match OpRequest::decode(&plain) {
        Ok(op) => ops::run(core, &session, id, op, now).await,
        Err(_) => Answer::Fresh(OpResponse::Error(ServerError::Malformed.reply())),
    };
    let bytes = match answer {
        Answer::Fresh(r) => r.encode(),
        Answer::Recorded(b) => b,
    };
    let sealed = session
        .channel
        .seal_response(req.seq, &bytes)
        .map_err(|_| ServerError::Internal("cannot seal a response"))?;
    Ok(Response::Sealed(sealed))
}

/// The same request again: answered with its recorded response if it was a mutation that
/// was applied, refused otherwise.
async fn again(
    core: &Core,
    session: &Session,
    req: &SealedRequest,
    id: RequestId,
) -> Result<Response, ServerError> {
    session
        .channel
        .open_again(req)
        .map_err(|_| ServerError::BadSeal)?;
    let recorded = core
        .storage
        .read(move |tx| Box::pin(async move { tx.recorded(id).await }))
        .await?
        .ok_or(ServerError::Replayed)?;
    let sealed = session
        .channel
        .seal_response(req.seq, &recorded)
        .map_err(|_| ServerError::Internal("cannot seal a response"))?;
    Ok(Response::Sealed(sealed))
}

/// The session `id`: from this instance's table, confirmed with the database every
/// [`SESSION_CHECK`], or taken over from the database (opened on another instance, or
/// before a restart).
async fn find(core: &Core, id: SessionId, now: Now) -> Result<Arc<Session>, ServerError> {
    match core.sessions.get(&id, now) {
        Ok(s) => {
            if s.due_for_check(now, SESSION_CHECK) {
                let secs = now.unix_secs();
                let alive = core
                    .storage
                    .write(Durability::Process, move |tx| {
                        Box::pin(async move { tx.touch_session(id.0, secs).await })
                    })
                    .await?;
                if !alive {
                    core.sessions.close(&id);
                    return Err(ServerError::UnknownSession);
                }
            }
            Ok(s)
        }
        Err(SessionError::Unknown) => adopt(core, id, now).await,
        Err(e) => Err(e.into()),
    }
}

/// Takes a session from the database into this instance's table.
async fn adopt(core: &Core, id: SessionId, now: Now) -> Result<Arc<Session>, ServerError> {
    let stored = core
        .storage
        .read(move |tx| Box::pin(async move { tx.session(id.0).await }))
        .await?;
    let (row, user) = stored.ok_or(ServerError::UnknownSession)?;
    if !core.sessions.alive(row.created, row.last_used, now) {
        return Err(ServerError::SessionExpired);
    }
    let keys = core.vault.open(id, &row.sealed_keys).ok_or_else(|| {
        warn!("stored session keys do not open (another server setup?)");
        ServerError::UnknownSession
    })?;
    // A fresh replay window: requests replayed across instances are still applied at most
    // once (recorded responses); reads are harmless.
    let adopted = Adopted {
        keys: &keys,
        account: row.account,
        user,
        created: Now::from_unix_secs(row.created),
        last_used: Now::from_unix_secs(row.last_used),
    };
    core.sessions
        .adopt(adopted, now)
        .map_err(|_| ServerError::SlowDown {
            retry_after_secs: None,
        })
}
