//! Sealed requests: find the session (in memory, or adopted from the database), open the
//! request under its key with the replay window, run the operation, seal the answer.
//!
//! A request the window refuses as already seen is a client re-sending the same bytes
//! after losing its connection (or a replay): if it authenticates and was a mutation that
//! was applied, it gets the answer recorded then; nothing runs twice.
//!
//! Nothing about a session moves before a request has authenticated under its key: junk
//! sent under a known session id neither refreshes its last use (so it still expires) nor
//! costs more than one rate-limited lookup.

use std::{net::IpAddr, sync::Arc, time::Duration};

use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, Response, SealedRequest,
    ops::OpAnswer,
    session::{ChannelError, ReplayError, SessionId, vault::Binding},
};
use rand::rngs::OsRng;
use tracing::warn;

use super::{
    Core, ServerError,
    ops::{self, Answer},
    sessions::{Adopted, Session, SessionError},
};
use crate::{
    clock::Now,
    storage::{Durability, RequestId, StoredSession},
};

/// How often an instance confirms a session it holds with the shared database (and records
/// its last use there): a logout on another instance ends it here within this time even
/// for a request that touches no row (operations check the session themselves).
const SESSION_CHECK: Duration = Duration::from_secs(2);

/// A `Sealed` request from `peer`.
pub(super) async fn handle(
    core: &Core,
    req: &SealedRequest,
    peer: IpAddr,
    now: Now,
) -> Result<Response, ServerError> {
    let session = find(core, req.session_id, peer, now).await?;
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
    // Zeroized when dropped: a key import carries a private key in clear here.
    let plain = zeroize::Zeroizing::new(match opened {
        Ok(p) => p,
        Err(ChannelError::Replay(ReplayError::Duplicate | ReplayError::TooOld)) => {
            return again(core, &session, req, id).await;
        }
        Err(ChannelError::Replay(_)) => return Err(ServerError::Replayed),
        Err(_) => return Err(ServerError::BadSeal),
    });
    // Authenticated: now, and only now, the session counts as used.
    session.touch(now);
    if session.due_for_check(now, SESSION_CHECK) {
        let secs = now.unix_secs();
        let alive = core
            .storage
            .write(Durability::Process, move |tx| {
                Box::pin(async move { tx.touch_session(id.session, secs).await })
            })
            .await?;
        if !alive {
            core.sessions.close(&req.session_id);
            return Err(ServerError::UnknownSession);
        }
    }
    let (answer, position) = match OpRequest::decode(&plain) {
        Ok(op) => ops::run(core, &session, id, op, now).await,
        Err(_) => (
            Answer::Fresh(OpResponse::Error(ServerError::Malformed.reply())),
            None,
        ),
    };
    // Zeroized when dropped: a key export carries a private key in clear here.
    let bytes = zeroize::Zeroizing::new(match answer {
        Answer::Fresh(response) => {
            if matches!(&response, OpResponse::Error(e) if e.code == ErrorCode::UNKNOWN_SESSION) {
                // The operation found the session gone from the database (a logout or a
                // password change on some instance): this instance forgets it too.
                core.sessions.close(&req.session_id);
            }
            OpAnswer { position, response }.encode()
        }
        Answer::Recorded(b) => b,
    });
    let sealed = session
        .channel
        .seal_response(&mut OsRng, req.seq, &bytes)
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
        .seal_response(&mut OsRng, req.seq, &recorded)
        .map_err(|_| ServerError::Internal("cannot seal a response"))?;
    Ok(Response::Sealed(sealed))
}

/// The session `id`: from this instance's table, or taken over from the database (opened
/// on another instance, or before a restart).
async fn find(
    core: &Core,
    id: SessionId,
    peer: IpAddr,
    now: Now,
) -> Result<Arc<Session>, ServerError> {
    match core.sessions.get(&id, now) {
        Ok(s) => Ok(s),
        Err(SessionError::Unknown) => adopt(core, id, peer, now).await,
        Err(e) => Err(e.into()),
    }
}

/// Takes a session from the database into this instance's table. Each lookup is a
/// database read that anyone can ask for with a made-up id: ids found missing are not
/// looked up again for a while, and lookups are rate-limited per address.
async fn adopt(
    core: &Core,
    id: SessionId,
    peer: IpAddr,
    now: Now,
) -> Result<Arc<Session>, ServerError> {
    if core.misses.contains(&id, now) {
        return Err(ServerError::UnknownSession);
    }
    core.lookups
        .check(peer, now)
        .map_err(|secs| ServerError::SlowDown {
            retry_after_secs: Some(secs),
        })?;
    let stored = core
        .storage
        .read(move |tx| Box::pin(async move { tx.session(id.0).await }))
        .await?;
    let Some(StoredSession { row, user, epoch }) = stored else {
        core.misses.insert(id, now);
        return Err(ServerError::UnknownSession);
    };
    if row.epoch != epoch {
        // Sealed in an earlier epoch of its account: a password change or key rotation
        // in another session ended it (and a row put back after that is no different).
        return Err(ServerError::UnknownSession);
    }
    if !core.sessions.alive(row.created, row.last_used, now) {
        return Err(ServerError::SessionExpired);
    }
    let binding = Binding {
        account: row.account,
        user: &user,
        created: row.created,
        epoch: row.epoch,
    };
    let keys = core
        .vault
        .open(id, &binding, &row.sealed_keys)
        .ok_or_else(|| {
            // Another server setup, or a row changed behind the server's back (pointed at
            // another account, made younger, or put back after a password change ended
            // it): refused either way.
            warn!("stored session keys do not open for what their row says");
            ServerError::UnknownSession
        })?;
    // A fresh replay window: a captured read replayed here runs again (its answer is
    // sealed under a fresh nonce; see `keyserver_protocol::session::channel`), and a
    // mutation is still applied at most once (recorded responses).
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
