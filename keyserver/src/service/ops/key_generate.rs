//! `key-generate`: a new key pair, made here from the operating system's generator, its
//! private key sealed at once; the row, its audit event and the recorded answer in one
//! transaction.

use keyserver_protocol::{
    KeyName, OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    ops::KeyGenerate,
    signing::{PrivateKey, message_digest},
};
use rand::rngs::OsRng;

use super::{
    Answer, Call,
    key_public::{key_info, owner},
    once, refused,
};
use crate::{
    audit, held_keys,
    service::ServerError,
    storage::{self, HeldKeyRow, KeyUsage},
};

/// Handles `key-generate`.
pub(super) async fn handle(call: &Call<'_>, op: KeyGenerate) -> Result<Answer, ServerError> {
    let key = PrivateKey::generate(op.algorithm, &mut OsRng);
    add(call, op.name, &key, op.exportable, EventKind::KeyGenerate).await
}

/// Adds `key` to the account as `name` (a generate or an import, `kind`), unless the name is
/// taken or the account holds as many keys as it may. Only its sealed form leaves here.
pub(super) async fn add(
    call: &Call<'_>,
    name: KeyName,
    key: &PrivateKey,
    exportable: bool,
    kind: EventKind,
) -> Result<Answer, ServerError> {
    let (account, secs, quota) = (
        call.session.account,
        call.now.unix_secs(),
        call.core.config.max_keys_per_account,
    );
    let (public_key, sealed_key) = held_keys::seal(
        call.core.keys.server_held_keys(),
        owner(call),
        &name,
        key,
        exportable,
    )
    .map_err(|_| ServerError::Malformed)?;
    let row = HeldKeyRow {
        name,
        algorithm: key.algorithm(),
        public_key,
        sealed_key,
        exportable,
        created: secs,
        usage: KeyUsage::default(),
    };
    once(call, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let outcome = if tx.count_held_keys(account).await? >= quota {
                Err(ServerError::Quota)
            } else if !tx.insert_held_key(account, &row).await? {
                Err(ServerError::NameExists)
            } else {
                Ok(())
            };
            let event = match outcome {
                // The chain records which public key the name was given.
                Ok(()) => EventBody::about_key(kind, &row.name, Outcome::Ok)
                    .with_digest(message_digest(&row.public_key)),
                Err(_) => EventBody::about_key(kind, &row.name, Outcome::Refused),
            };
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(match outcome {
                Ok(()) => OpResponse::Key(key_info(&row)?),
                Err(e) => refused(e),
            })
        })
    })
    .await
}
