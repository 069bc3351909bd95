//! `checkpoint`: keeps a checkpoint a client left (see `keyserver_protocol::checkpoint`),
//! and lists the account's newest. The server cannot check a checkpoint's MAC (it never has
//! the storage key); it keeps only checkpoints of positions that are in the account's chain,
//! and the newest few, so that a session cannot bury the real ones under made-up ones.

use keyserver_protocol::{
    OpResponse,
    ops::{CheckpointList, SaveCheckpoint, StoredCheckpoint, checkpoint::MAX_CHECKPOINTS},
};

use super::{Answer, Call, once, read, refused};
use crate::service::ServerError;

/// Handles `save_checkpoint`.
pub(super) async fn save(call: &Call<'_>, op: SaveCheckpoint) -> Result<Answer, ServerError> {
    let (account, secs) = (call.session.account, call.now.unix_secs());
    once(call, move |tx, _| {
        Box::pin(async move {
            let p = op.checkpoint.position;
            if p.seq == 0 || tx.event_hash(account, p.seq).await? != Some(p.head) {
                // Not a position of this account's chain.
                return Ok(refused(ServerError::Malformed));
            }
            let stored = StoredCheckpoint {
                checkpoint: op.checkpoint,
                time: secs,
            };
            tx.put_checkpoint(account, &stored).await?;
            tx.prune_checkpoints(account, MAX_CHECKPOINTS).await?;
            Ok(OpResponse::CheckpointSaved)
        })
    })
    .await
}

/// Handles `checkpoints`.
pub(super) async fn list(call: &Call<'_>) -> Result<Answer, ServerError> {
    let account = call.session.account;
    let checkpoints = read(call, move |tx, _| {
        Box::pin(async move { tx.checkpoints(account, MAX_CHECKPOINTS).await })
    })
    .await?;
    Ok(Answer::Fresh(OpResponse::Checkpoints(CheckpointList {
        checkpoints,
    })))
}
