//! `key-export`: the private key of an exportable key, after a fresh reauth, with its audit
//! event committed (durably) before the key leaves. Its answer is never recorded: that would
//! put the key in the database in clear.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    codec::Bytes,
    ops::{ExportedKey, KeyExport, KeyMaterial},
};

use keyserver_protocol::signing::PrivateKey;

use super::{Answer, Call};
use crate::{
    audit,
    held_keys::{self, Owner},
    service::ServerError,
    storage::{self, Durability, HeldKeyRow},
};

/// Handles `key-export`.
pub(super) async fn handle(call: &Call<'_>, op: KeyExport) -> Result<Answer, ServerError> {
    let (account, secs, window) = (
        call.session.account,
        call.now.unix_secs(),
        call.core.config.reauth_window_secs,
    );
    let (dek, user) = (
        call.core.keys.server_held_keys().clone(),
        call.session.user.clone(),
    );
    let found: Result<(HeldKeyRow, PrivateKey), ServerError> =
        super::write(call, Durability::Disk, move |tx, live| {
            Box::pin(async move {
                if !live.reauthed(secs, window) {
                    return Ok(Err(ServerError::ReauthRequired));
                }
                let mut a = storage::account(tx, account).await?;
                let (outcome, found) = match tx.held_key(account, &op.name).await? {
                    Some(row) if row.exportable => {
                        // Opened here, in the transaction: a key that does not open (its row
                        // was altered) fails the whole export, event and all.
                        let owner = Owner {
                            account,
                            user: &user,
                        };
                        let key = held_keys::open(&dek, owner, &row)?;
                        (Outcome::Ok, Ok((row, key)))
                    }
                    Some(_) => (Outcome::Refused, Err(ServerError::NotExportable)),
                    None => (Outcome::NotFound, Err(ServerError::NotFound)),
                };
                let event = EventBody::about_key(EventKind::KeyExport, &op.name, outcome);
                audit::append(tx, &mut a, event, secs).await?;
                tx.save_account(&a).await?;
                Ok(found)
            })
        })
        .await?;
    let (row, key) = found?;
    Ok(Answer::Fresh(OpResponse::ExportedKey(ExportedKey {
        algorithm: row.algorithm,
        public_key: Bytes::new(row.public_key)
            .ok_or(ServerError::Internal("held key: public key too long"))?,
        private_key: KeyMaterial::new(*key.expose_secret()),
    })))
}
