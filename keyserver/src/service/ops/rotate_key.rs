//! `rotate-key`: after a reauth, the client stages every live secret sealed again under a
//! new storage key; the finish swaps them all in, with the new sealed storage key and the
//! next epoch, and ends every other session, in one transaction, or refuses (swapping
//! nothing, and dropping what was staged) unless exactly the account's secrets are staged,
//! live and deleted, each at its current version, with their names tagged and sealed under
//! the new key. Staging is bounded by the account's count of secrets.

use keyserver_protocol::{
    OpResponse,
    audit_chain::{EventBody, EventKind, Outcome},
    limits::MAX_SEALED_STORAGE_KEY,
    ops::{Rekeyed, RotateKeyFinish, RotateKeyStage, Staged},
};

use super::{Answer, Call, once, refused, sealed_for_epoch};
use crate::{
    audit,
    service::ServerError,
    storage::{self, Credentials, StagedRow, StorageError},
};

/// Stages secrets sealed under the new key.
pub(super) async fn stage(call: &Call<'_>, op: RotateKeyStage) -> Result<Answer, ServerError> {
    let (core, session, _req, now) = (call.core, call.session, call.req, call.now);
    let id = session.channel.id();
    let (account, secs, window) = (
        session.account,
        now.unix_secs(),
        core.config.reauth_window_secs,
    );
    once(call, move |tx, live| {
        Box::pin(async move {
            if !live.reauthed(secs, window) {
                return Ok(refused(ServerError::ReauthRequired));
            }
            // A rotation stages each of the account's secrets (live and deleted) once: more
            // is not a rotation, and must not fill the database.
            let incoming = u64::try_from(op.secrets.len()).unwrap_or(u64::MAX);
            let rows = tx.count_secret_rows(account).await?;
            if tx.staged_count(id.0).await?.saturating_add(incoming) > rows {
                return Ok(refused(ServerError::Quota));
            }
            for s in op.secrets {
                let row = StagedRow {
                    tag: s.tag,
                    new_tag: s.new_tag,
                    sealed_name: s.sealed_name.into_vec(),
                    version: s.version,
                    sealed: s.sealed.map(|b| b.into_vec()),
                };
                tx.stage_secret(id.0, account, &row).await?;
            }
            let staged = tx.staged_count(id.0).await?;
            Ok(OpResponse::Staged(Staged { staged }))
        })
    })
    .await
}

/// Swaps the staged secrets and the new storage key in.
pub(super) async fn finish(call: &Call<'_>, op: RotateKeyFinish) -> Result<Answer, ServerError> {
    let (core, session, _req, now) = (call.core, call.session, call.req, call.now);
    if op.sealed_storage_key.len() != MAX_SEALED_STORAGE_KEY {
        return Err(ServerError::Malformed);
    }
    let id = session.channel.id();
    let (account, secs, window) = (
        session.account,
        now.unix_secs(),
        core.config.reauth_window_secs,
    );
    let sealed_storage_key = op.sealed_storage_key.into_vec();
    // This session goes on into the new epoch; every other one stays behind, and ends.
    let resealed = sealed_for_epoch(call, op.epoch);
    let answer = once(call, move |tx, live| {
        Box::pin(async move {
            if !live.reauthed(secs, window) {
                return Ok(refused(ServerError::ReauthRequired));
            }
            let mut a = storage::account(tx, account).await?;
            let staged = tx.staged_count(id.0).await?;
            let stale = Some(op.epoch) != a.epoch.checked_add(1)
                || staged != tx.count_secret_rows(account).await?
                || staged != op.secrets
                || tx.staged_mismatches(id.0, account).await? != 0;
            if stale {
                // Another change of the key or the password, a secret stored, deleted or
                // replaced since it was staged, or one the client missed: nothing is
                // swapped, and what was staged is dropped, so that the client's next
                // attempt (in this session too) starts from nothing.
                tx.delete_staged(id.0).await?;
                return Ok(refused(ServerError::Stale));
            }
            if tx.apply_staged(id.0, account).await? != staged {
                return Err(StorageError::Corrupt(
                    "the staged secrets did not all apply".into(),
                ));
            }
            let old = tx
                .credentials(account)
                .await?
                .ok_or_else(|| StorageError::Corrupt("an account without credentials".into()))?;
            let credentials = Credentials {
                sealed_storage_key,
                ..old
            };
            tx.set_credentials(account, &credentials).await?;
            a.epoch = op.epoch;
            tx.set_session_epoch(id.0, op.epoch, &resealed).await?;
            tx.delete_other_sessions(account, id.0).await?;
            tx.set_session_reauth(id.0, None).await?;
            tx.delete_staged(id.0).await?;
            // Made with the old key's checkpoint key: they no longer verify.
            tx.delete_checkpoints(account).await?;
            let event = EventBody::new(EventKind::RotateKey, Outcome::Ok);
            audit::append(tx, &mut a, event, secs).await?;
            tx.save_account(&a).await?;
            Ok(OpResponse::KeyRotated(Rekeyed { epoch: a.epoch }))
        })
    })
    .await?;
    if matches!(answer, Answer::Fresh(OpResponse::KeyRotated(_))) {
        core.sessions.close_others(account, &id);
    }
    Ok(answer)
}
