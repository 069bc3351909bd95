//! Operations inside a session, one function each. The session is authenticated already;
//! each function maps storage results to the typed response.

use keyserver_protocol::{
    ErrorCode, ErrorReply, OpRequest, OpResponse, SecretName,
    audit_chain::{EventBody, EventKind, Outcome},
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
    storage::{NewSecret, StoreOutcome},
};

/// Runs `op` in `session`.
#[instrument(skip_all, fields(op = op.kind()))]
pub(crate) async fn run(core: &Core, session: &Session, op: OpRequest) -> OpResponse {
    let r = match op {
        OpRequest::Store {
            name,
            version,
            replace,
            sealed,
        } => store(core, session, &name, version, replace, &sealed).await,
        OpRequest::Retrieve { name } => retrieve(core, session, &name).await,
        OpRequest::List { after } => list(core, session, after.as_ref()).await,
        OpRequest::Delete { name } => delete(core, session, &name).await,
        OpRequest::Audit { after } => audit(core, session, after).await,
        OpRequest::ChangePasswordStart { message } => {
            change_password_start(core, session, &message)
        }
        OpRequest::ChangePasswordFinish {
            upload,
            sealed_storage_key,
        } => change_password_finish(core, session, &upload, &sealed_storage_key).await,
        OpRequest::Logout => logout(core, session).await,
    };
    r.unwrap_or_else(OpResponse::Error)
}

async fn store(
    core: &Core,
    s: &Session,
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
    match core
        .storage
        .store_secret(s.account, &s.user, new, unix_now())
        .await
        .map_err(storage_reply)?
    {
        StoreOutcome::Stored { version, created } => Ok(OpResponse::Stored { version, created }),
        StoreOutcome::Exists => Err(ErrorCode::NAME_EXISTS.into()),
        StoreOutcome::VersionMismatch { expected } => Err(ErrorReply {
            code: ErrorCode::VERSION_MISMATCH,
            retry_after_secs: None,
            expected_version: Some(expected),
        }),
        StoreOutcome::Quota => Err(ErrorCode::QUOTA.into()),
    }
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

async fn delete(core: &Core, s: &Session, name: &SecretName) -> Reply<OpResponse> {
    if core
        .storage
        .delete_secret(s.account, &s.user, name, unix_now())
        .await
        .map_err(storage_reply)?
    {
        Ok(OpResponse::Deleted)
    } else {
        Err(ErrorCode::NOT_FOUND.into())
    }
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
    upload: &OpaqueBytes,
    sealed_storage_key: &Bytes<MAX_SEALED_STORAGE_KEY>,
) -> Reply<OpResponse> {
    if sealed_storage_key.len() != MAX_SEALED_STORAGE_KEY {
        return Err(ErrorCode::MALFORMED.into());
    }
    let record = registration::record(upload.as_slice()).map_err(|_| ErrorCode::MALFORMED)?;
    core.storage
        .change_password(
            s.account,
            &s.user,
            &record,
            sealed_storage_key.as_slice(),
            unix_now(),
        )
        .await
        .map_err(storage_reply)?;
    Ok(OpResponse::PasswordChanged)
}

async fn logout(core: &Core, s: &Session) -> Reply<OpResponse> {
    core.storage
        .record_event(
            s.account,
            &s.user,
            EventBody::new(EventKind::Logout, Outcome::Ok),
            unix_now(),
        )
        .await
        .map_err(storage_reply)?;
    core.sessions.close(&s.channel.id());
    Ok(OpResponse::LoggedOut)
}
