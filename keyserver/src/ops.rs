//! Operations inside a session, one function each. The session is authenticated already;
//! each function maps storage results to the typed response.

use keyserver_protocol::{
    ErrorCode, ErrorReply, OpRequest, OpResponse, SecretName,
    codec::Bytes,
    envelope::OpaqueBytes,
    handshake::registration,
    limits::{AUDIT_PAGE, LIST_PAGE, MAX_SEALED_STORAGE_KEY},
    ops::SealedSecret,
};
use tracing::instrument;

use crate::{
    dispatch::{Core, Reply, storage_reply, unix_now},
    session::Session,
    storage::{Done, NewSecret, RequestId, StoreOutcome},
};

/// Runs `op`, the request `req`, in `session`.
#[instrument(skip_all, fields(op = op.kind()))]
pub(crate) async fn run(
    core: &Core,
    session: &Session,
    req: RequestId,
    op: OpRequest,
) -> OpResponse {
    let r = match op {
        OpRequest::Store {
            name,
            version,
            replace,
            sealed,
        } => store(core, session, req, &name, version, replace, &sealed).await,
        OpRequest::Retrieve { name } => retrieve(core, session, &name).await,
        OpRequest::List { after } => list(core, session, after.as_ref()).await,
        OpRequest::Delete { name } => delete(core, session, req, &name).await,
        OpRequest::Audit { after } => audit(core, session, after).await,
        OpRequest::ChangePasswordStart { message } => {
            change_password_start(core, session, &message)
        }
        OpRequest::ChangePasswordFinish {
            upload,
            sealed_storage_key,
        } => change_password_finish(core, session, req, &upload, &sealed_storage_key).await,
        OpRequest::Logout => logout(core, session, req).await,
    };
    r.unwrap_or_else(OpResponse::Error)
}

/// A response recorded by an earlier run of the same request.
fn recorded(bytes: &[u8]) -> OpResponse {
    OpResponse::decode(bytes).unwrap_or_else(|_| OpResponse::Error(ErrorCode::INTERNAL.into()))
}

fn store_response(o: &StoreOutcome) -> OpResponse {
    match o {
        StoreOutcome::Stored { version, created } => OpResponse::Stored {
            version: *version,
            created: *created,
        },
        StoreOutcome::Exists => OpResponse::Error(ErrorCode::NAME_EXISTS.into()),
        StoreOutcome::VersionMismatch { expected } => OpResponse::Error(ErrorReply {
            code: ErrorCode::VERSION_MISMATCH,
            retry_after_secs: None,
            expected_version: Some(*expected),
        }),
        StoreOutcome::Quota => OpResponse::Error(ErrorCode::QUOTA.into()),
    }
}

async fn store(
    core: &Core,
    s: &Session,
    req: RequestId,
    name: &SecretName,
    version: u64,
    replace: bool,
    sealed: &SealedSecret,
) -> Reply<OpResponse> {
    let new = NewSecret {
        name,
        version,
        replace,
        sealed: sealed.as_slice(),
    };
    let encode = |o: &StoreOutcome| store_response(o).encode();
    let done = core
        .storage
        .store_secret(s.account, &s.user, new, req, encode, unix_now())
        .await
        .map_err(storage_reply)?;
    Ok(match done {
        Done::Fresh(o) => store_response(&o),
        Done::Recorded(b) => recorded(&b),
    })
}

async fn retrieve(core: &Core, s: &Session, name: &SecretName) -> Reply<OpResponse> {
    let found = core
        .storage
        .retrieve_secret(s.account, &s.user, name, unix_now())
        .await
        .map_err(storage_reply)?;
    let secret = found.ok_or(ErrorCode::NOT_FOUND)?;
    let sealed = Bytes::new(secret.sealed).ok_or(ErrorCode::INTERNAL)?;
    Ok(OpResponse::Secret {
        version: secret.version,
        created: secret.created,
        sealed,
    })
}

async fn list(core: &Core, s: &Session, after: Option<&SecretName>) -> Reply<OpResponse> {
    let mut entries = core
        .storage
        .list_secrets(s.account, &s.user, after, LIST_PAGE + 1, unix_now())
        .await
        .map_err(storage_reply)?;
    let more = entries.len() > LIST_PAGE;
    entries.truncate(LIST_PAGE);
    Ok(OpResponse::List { entries, more })
}

fn delete_response(deleted: &bool) -> OpResponse {
    if *deleted {
        OpResponse::Deleted
    } else {
        OpResponse::Error(ErrorCode::NOT_FOUND.into())
    }
}

async fn delete(core: &Core, s: &Session, req: RequestId, name: &SecretName) -> Reply<OpResponse> {
    let encode = |d: &bool| delete_response(d).encode();
    let done = core
        .storage
        .delete_secret(s.account, &s.user, name, req, encode, unix_now())
        .await
        .map_err(storage_reply)?;
    Ok(match done {
        Done::Fresh(d) => delete_response(&d),
        Done::Recorded(b) => recorded(&b),
    })
}

async fn audit(core: &Core, s: &Session, after: u64) -> Reply<OpResponse> {
    let mut events = core
        .storage
        .audit_events(s.account, after, AUDIT_PAGE + 1)
        .await
        .map_err(storage_reply)?;
    let more = events.len() > AUDIT_PAGE;
    events.truncate(AUDIT_PAGE);
    Ok(OpResponse::Audit { events, more })
}

fn change_password_start(core: &Core, s: &Session, message: &OpaqueBytes) -> Reply<OpResponse> {
    // Server-side OPAQUE registration is stateless, and both steps run in this
    // authenticated session, so nothing needs to be remembered between them.
    let reply = registration::respond(&core.setup, &s.user, message.as_slice())
        .map_err(|_| ErrorCode::MALFORMED)?;
    Ok(OpResponse::ChangePasswordStarted { message: reply })
}

async fn change_password_finish(
    core: &Core,
    s: &Session,
    req: RequestId,
    upload: &OpaqueBytes,
    sealed_storage_key: &Bytes<MAX_SEALED_STORAGE_KEY>,
) -> Reply<OpResponse> {
    if sealed_storage_key.len() != MAX_SEALED_STORAGE_KEY {
        return Err(ErrorCode::MALFORMED.into());
    }
    let record = registration::record(upload.as_slice()).map_err(|_| ErrorCode::MALFORMED)?;
    let response = OpResponse::PasswordChanged;
    let done = core
        .storage
        .change_password(
            s.account,
            &s.user,
            &record,
            sealed_storage_key.as_slice(),
            req,
            &response.encode(),
            unix_now(),
        )
        .await
        .map_err(storage_reply)?;
    Ok(match done {
        Done::Fresh(()) => response,
        Done::Recorded(b) => recorded(&b),
    })
}

async fn logout(core: &Core, s: &Session, req: RequestId) -> Reply<OpResponse> {
    let response = OpResponse::LoggedOut;
    let done = core
        .storage
        .logout(s.account, &s.user, req, &response.encode(), unix_now())
        .await
        .map_err(storage_reply)?;
    core.sessions.close(&s.channel.id());
    Ok(match done {
        Done::Fresh(()) => response,
        Done::Recorded(b) => recorded(&b),
    })
}
