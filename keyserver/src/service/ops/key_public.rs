//! `key-public`: what the server holds of a key. The sealed private key is opened (and
//! dropped) first: it authenticates the public key the row shows.

use keyserver_protocol::{
    OpResponse,
    codec::Bytes,
    ops::{KeyInfo, KeyPublic},
};

use super::{Answer, Call};
use crate::{
    held_keys::{self, Owner},
    service::ServerError,
    storage::{HeldKeyRow, StorageError},
};

/// The key's owner: the call's account.
pub(super) fn owner<'a>(call: &'a Call<'_>) -> Owner<'a> {
    Owner {
        account: call.session.account,
        user: &call.session.user,
    }
}

/// How the protocol describes `row`.
pub(super) fn key_info(row: &HeldKeyRow) -> Result<KeyInfo, StorageError> {
    Ok(KeyInfo {
        name: row.name.clone(),
        algorithm: row.algorithm,
        public_key: Bytes::new(row.public_key.clone())
            .ok_or_else(|| StorageError::Corrupt("held key: public key too long".into()))?,
        exportable: row.exportable,
        created: row.created,
        signatures: row.usage.signatures,
    })
}

/// `row`, once its sealed key opened for it (which proves its public key is the key's).
pub(super) fn authenticated(call: &Call<'_>, row: HeldKeyRow) -> Result<KeyInfo, ServerError> {
    held_keys::open(call.core.keys.server_held_keys(), owner(call), &row)?;
    Ok(key_info(&row)?)
}

/// Handles `key-public`.
pub(super) async fn handle(call: &Call<'_>, op: KeyPublic) -> Result<Answer, ServerError> {
    let account = call.session.account;
    let row = super::read(call, move |tx, _| {
        Box::pin(async move { tx.held_key(account, &op.name).await })
    })
    .await?
    .ok_or(ServerError::NotFound)?;
    Ok(Answer::Fresh(OpResponse::Key(authenticated(call, row)?)))
}
