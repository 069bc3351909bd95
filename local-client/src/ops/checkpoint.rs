//! `checkpoint`: leaves a checkpoint of an audit position this client verified, for the
//! account's other devices, and starts a client that remembers nothing of the account from
//! the newest checkpoint that verifies (see `keyserver_protocol::checkpoint`).

use keyserver_protocol::{
    OpRequest, OpResponse,
    audit_chain::AuditPosition,
    checkpoint::Checkpoint,
    ops::{SaveCheckpoint, StoredCheckpoint, checkpoint::MAX_CHECKPOINTS},
};

use crate::{ClientError, Session};

impl Session {
    /// Leaves a checkpoint of `position`, which this client verified (the chain up to it
    /// hashed and extended what it remembered).
    pub async fn save_checkpoint(&self, position: AuditPosition) -> Result<(), ClientError> {
        let checkpoint = Checkpoint::new(&self.keys().storage_key, &self.user, position);
        match self
            .call(&OpRequest::SaveCheckpoint(SaveCheckpoint { checkpoint }))
            .await?
        {
            OpResponse::CheckpointSaved => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to SaveCheckpoint")),
        }
    }

    /// The newest checkpoint on the server that verifies under this account's storage key
    /// (made by a device of the account); `None` if there is none. Made-up ones, or ones
    /// made under an earlier storage key, are passed over.
    pub async fn newest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, ClientError> {
        let OpResponse::Checkpoints(list) = self.call(&OpRequest::Checkpoints).await? else {
            return Err(ClientError::Protocol("unexpected reply to Checkpoints"));
        };
        if list.checkpoints.len() > MAX_CHECKPOINTS {
            return Err(ClientError::Protocol("too many checkpoints"));
        }
        let key = self.keys().storage_key;
        Ok(list
            .checkpoints
            .into_iter()
            .filter(|c| c.checkpoint.verifies(&key, &self.user))
            .max_by_key(|c| c.checkpoint.position.seq))
    }

    /// For a client that has verified nothing of the account: starts from the newest
    /// checkpoint that verifies, as if it had verified that position itself, so that a
    /// server that went back behind it is caught. Returns it (`None`: there is none, and
    /// the server's history is trusted as first seen).
    pub async fn start_from_checkpoint(&self) -> Result<Option<StoredCheckpoint>, ClientError> {
        let Some(c) = self.newest_checkpoint().await? else {
            return Ok(None);
        };
        // Every position shown so far (the answer that listed the checkpoints) must be at
        // or past it; the events from it on are checked after the command, as for a
        // remembered position.
        self.started_from(c)?;
        Ok(Some(c))
    }
}
