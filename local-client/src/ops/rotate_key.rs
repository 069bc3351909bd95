//! `rotate-key`: a new storage key. After a reauth, every secret is opened here, sealed again
//! under a new storage key (same name and version) and staged on the server in batches; the
//! finish swaps them all in at once, with the new key sealed for the next epoch. If this
//! dies half-way nothing changes: the old key goes on opening every secret, and what was
//! staged is dropped with the session.

use std::sync::Arc;

use keyserver_protocol::{
    OpRequest, OpResponse, SecretBytes,
    codec::Bytes,
    limits::MAX_SEALED_BODY,
    ops::{RotateKeyFinish, RotateKeyStage, StagedSecret},
    seal::StorageKey,
};
use rand::rngs::OsRng;

use crate::{ClientError, Session, session::AccountKeys};

/// Bytes of sealed secrets in one staging request (the rest of the message is names and
/// framing, well within the sealed body's bound).
const STAGE_BYTES: usize = MAX_SEALED_BODY / 2;

impl Session {
    /// Replaces the account's storage key and seals every secret again under the new one;
    /// `password` is the current password (proven again first). Returns how many secrets
    /// were sealed again. Every other session of the account ends.
    ///
    /// Errors: [`ClientError::AuthFailed`] (wrong password); [`ClientError::Server`] with
    /// `STALE` if the secrets changed while this ran (run it again); transport errors.
    pub async fn rotate_key(&self, password: &SecretBytes) -> Result<u64, ClientError> {
        let master_key = self.reauth(password).await?;
        let old = self.keys();
        let new_key = StorageKey::generate(&mut OsRng);
        let entries = self.list().await?;
        let mut batch: Vec<StagedSecret> = Vec::new();
        let mut batch_bytes = 0;
        for e in &entries {
            let (secret, version) = self.retrieve(&e.name).await?;
            let sealed = new_key
                .seal_secret(&mut OsRng, &self.user, &e.name, version, &secret)
                .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
            drop(secret);
            if batch_bytes + sealed.len() > STAGE_BYTES && !batch.is_empty() {
                self.stage(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += sealed.len();
            batch.push(StagedSecret {
                name: e.name.clone(),
                version,
                sealed: Bytes::new(sealed)
                    .ok_or(ClientError::Protocol("sealed secret too large"))?,
            });
        }
        if !batch.is_empty() {
            self.stage(batch).await?;
        }
        let epoch = old
            .epoch
            .checked_add(1)
            .ok_or(ClientError::Protocol("the account's epoch is exhausted"))?;
        let sealed = master_key.seal_storage_key(&mut OsRng, &self.user, epoch, &new_key);
        let secrets = entries.len() as u64;
        let op = OpRequest::RotateKeyFinish(RotateKeyFinish {
            epoch,
            sealed_storage_key: Bytes::new(sealed)
                .ok_or(ClientError::Protocol("sealed storage key too large"))?,
            secrets,
        });
        match self.call(&op).await? {
            OpResponse::KeyRotated(r) if r.epoch == epoch => {
                self.set_keys(AccountKeys {
                    storage_key: Arc::new(new_key),
                    epoch,
                });
                Ok(secrets)
            }
            _ => Err(ClientError::Protocol("unexpected reply to RotateKeyFinish")),
        }
    }

    async fn stage(&self, secrets: Vec<StagedSecret>) -> Result<u64, ClientError> {
        match self
            .call(&OpRequest::RotateKeyStage(RotateKeyStage { secrets }))
            .await?
        {
            OpResponse::Staged(s) => Ok(s.staged),
            _ => Err(ClientError::Protocol("unexpected reply to RotateKeyStage")),
        }
    }
}
