//! Registration: `RegisterStart` evaluates the OPRF on the blinded password, `RegisterFinish`
//! stores the record and the sealed storage key. The server side of OPAQUE registration is
//! stateless; the handshake remembers only the name.

use keyserver_protocol::{
    HandshakeId, Response, UserName,
    audit_chain::{EventBody, EventKind, Outcome},
    codec::Bytes,
    envelope::OpaqueBytes,
    handshake::registration,
    limits::MAX_SEALED_STORAGE_KEY,
};

use rand::{RngCore, rngs::OsRng};

use super::{Core, ServerError, login, pending::Pending};
use crate::{
    audit,
    clock::Now,
    storage::{Durability, NewAccount},
};

/// `RegisterStart`.
pub(super) async fn start(
    core: &Core,
    user: UserName,
    message: &OpaqueBytes,
    now: Now,
) -> Result<Response, ServerError> {
    // Registration necessarily tells whether a name is taken; login never does.
    let name = user.clone();
    let taken = core
        .storage
        .read(move |tx| Box::pin(async move { Ok(tx.account_by_name(&name).await?.is_some()) }))
        .await?;
    if taken {
        return Err(ServerError::UserExists);
    }
    // A credential identifier of its own for the account, drawn now: the OPRF key this
    // registration is evaluated under is the one the account will log in with, and nobody
    // can evaluate it before the name is registered (a name-derived identifier would let
    // anyone precompute guesses against a future account, uncounted).
    let mut credential_id = [0u8; 32];
    OsRng.fill_bytes(&mut credential_id);
    let reply = registration::respond(&core.setup, &credential_id, message.as_slice())?;
    let pending = Pending::Registration {
        user,
        credential_id,
    };
    let handshake = login::park(core, pending, now).await?;
    Ok(Response::RegisterStarted {
        handshake,
        message: reply,
    })
}

/// `RegisterFinish`: the account and its `register` event, in one transaction.
pub(super) async fn finish(
    core: &Core,
    handshake: HandshakeId,
    upload: &OpaqueBytes,
    sealed_storage_key: &Bytes<MAX_SEALED_STORAGE_KEY>,
    now: Now,
) -> Result<Response, ServerError> {
    let (user, credential_id) = match login::take(core, &handshake, now).await? {
        Pending::Registration {
            user,
            credential_id,
        } => (user, credential_id),
        other => {
            login::abandon(core, other, now).await;
            return Err(ServerError::UnknownHandshake);
        }
    };
    if sealed_storage_key.len() != MAX_SEALED_STORAGE_KEY {
        return Err(ServerError::Malformed);
    }
    let record = registration::record(upload.as_slice())?;
    let key = sealed_storage_key.as_slice().to_vec();
    let secs = now.unix_secs();
    let created = core
        .storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move {
                let new = NewAccount {
                    user: &user,
                    record: &record,
                    credential_id: &credential_id,
                    sealed_storage_key: &key,
                    created: secs,
                };
                let Some(mut account) = tx.insert_account(&new).await? else {
                    return Ok(false);
                };
                let event = EventBody::new(EventKind::Register, Outcome::Ok);
                audit::append(tx, &mut account, event, secs).await?;
                tx.save_account(&account).await?;
                Ok(true)
            })
        })
        .await?;
    if !created {
        return Err(ServerError::UserExists);
    }
    Ok(Response::Registered)
}
