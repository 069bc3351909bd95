//! `key-sign`: a signature by a key the server holds. The key is read and the signature made
//! outside the write transaction (signing costs tens of microseconds, which the database's
//! single writer should not wait for); the signature leaves only once the transaction that
//! counts it against the rate limits and appends its audit event (with the message's
//! SHA-256) has committed, durably. A signature refused there is dropped unseen.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    codec::Bytes,
    ops::{KeySign, KeySignature},
    signing::{SigningError, message_digest},
};

use super::{
    Answer, Call,
    key_public::{key_info, owner},
    once, refused,
};
use crate::{
    audit,
    held_keys::{self, decide_sign, window_start},
    service::ServerError,
    storage::{self, HeldKeyRow},
};

/// Handles `key-sign`.
pub(super) async fn handle(call: &Call<'_>, op: KeySign) -> Result<Answer, ServerError> {
    let (account, secs, limits) = (
        call.session.account,
        call.now.unix_secs(),
        call.core.config.sign_limits(),
    );
    let (name, req) = (op.name.clone(), call.req);
    // The key, and whether the limits leave room (checked again when it counts). A request
    // applied before gets its recorded answer below, without signing again.
    let found = super::read(call, move |tx, _| {
        Box::pin(async move {
            if tx.recorded(req).await?.is_some() {
                return Ok(Found::Recorded);
            }
            let Some(row) = tx.held_key(account, &name).await? else {
                return Ok(Found::Missing);
            };
            let in_window = tx.signatures_in_window(account, window_start(secs)).await?;
            Ok(Found::Key(row, in_window))
        })
    })
    .await?;
    let signed = match found {
        Found::Key(row, in_window) => {
            if let Err(wait) = decide_sign(limits, secs, row.usage, in_window) {
                return Err(ServerError::SlowDown {
                    retry_after_secs: Some(wait),
                });
            }
            let key = held_keys::open(call.core.keys.server_held_keys(), owner(call), &row)?;
            let signature = key
                .sign(op.message.as_slice(), op.options)
                .map_err(|e| match e {
                    SigningError::OptionNotForAlgorithm => ServerError::NotForAlgorithm,
                    _ => ServerError::Malformed,
                })?;
            Some((row, signature))
        }
        // Not found: said in the audit log, as a retrieve of a missing secret is. (Recorded:
        // `once` answers what it recorded.)
        Found::Missing | Found::Recorded => None,
    };
    let digest = message_digest(op.message.as_slice());
    let name = op.name;
    once(call, move |tx, _| {
        Box::pin(async move {
            let mut a = storage::account(tx, account).await?;
            let current = tx.held_key(account, &name).await?;
            let (outcome, answer) = match (current, signed) {
                (Some(now), Some((then, signature))) if same_key(&now, &then) => {
                    let in_window = tx.signatures_in_window(account, window_start(secs)).await?;
                    match decide_sign(limits, secs, now.usage, in_window) {
                        Ok(usage) => {
                            tx.save_key_usage(account, &name, &usage).await?;
                            let row = HeldKeyRow { usage, ..now };
                            let signature = Bytes::new(signature).ok_or_else(|| {
                                storage::StorageError::Corrupt("signature too long".into())
                            })?;
                            let key = key_info(&row)?;
                            (
                                Outcome::Ok,
                                OpResponse::Signature(KeySignature { signature, key }),
                            )
                        }
                        // Used up meanwhile by another request: nothing is logged, as for a
                        // refusal before signing.
                        Err(wait) => {
                            return Ok(refused(ServerError::SlowDown {
                                retry_after_secs: Some(wait),
                            }));
                        }
                    }
                }
                // Deleted (or deleted and made again) since it was read: not this key.
                (_, Some(_)) => return Ok(refused(ServerError::Stale)),
                (_, None) => (Outcome::NotFound, refused(ServerError::NotFound)),
            };
            let event =
                EventBody::about_key(EventKind::KeySign, &name, outcome).with_digest(digest);
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(answer)
        })
    })
    .await
}

/// What the first look at a sign request found.
enum Found {
    /// The request was applied before.
    Recorded,
    /// No key of that name.
    Missing,
    /// The key, and the account's signatures in the current window.
    Key(HeldKeyRow, u64),
}

/// Whether two reads of a key's row are the same key (not one deleted and made again under
/// the same name in between).
fn same_key(a: &HeldKeyRow, b: &HeldKeyRow) -> bool {
    a.sealed_key == b.sealed_key && a.created == b.created
}
