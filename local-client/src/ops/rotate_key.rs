//! `rotate-key`: a new storage key. After a reauth, every secret is opened here, sealed again
//! under a new storage key (same name and version), its name tagged and sealed under the new
//! key (deleted secrets' names too), and staged on the server in batches; the finish swaps
//! them all in at once, with the new key sealed for the next epoch. If this
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
        // Every secret, deleted ones too: under the new key every name has a new tag, and a
        // deleted name's row keeps its version count for when it is stored again.
        let entries = self.list_entries(true).await?;
        let mut batch: Vec<StagedSecret> = Vec::new();
        let mut batch_bytes = 0;
        let mut moves = Vec::with_capacity(entries.len());
        let mut live = 0u64;
        let known = self.state();
        for (name, listed) in &entries {
            let e = &listed.entry;
            // Deleted secrets too: a deleted name's version count must not go back either.
            self.saw_version(
                name,
                &e.tag,
                known.newest_known(name, &e.tag),
                e.version,
                listed.at,
            )?;
            let sealed = if e.deleted {
                None
            } else {
                let (secret, version) = self.retrieve(name).await?;
                if version != e.version {
                    // Stored again since the listing: start over.
                    return Err(ClientError::Server(keyserver_protocol::ErrorCode::STALE));
                }
                let sealed = new_key
                    .seal_secret(&mut OsRng, &self.user, name, version, &secret)
                    .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
                live += 1;
                Some(Bytes::new(sealed).ok_or(ClientError::Protocol("sealed secret too large"))?)
            };
            let new_tag = new_key.name_tag(name);
            let sealed_name = Bytes::new(new_key.seal_name(&mut OsRng, &self.user, name))
                .ok_or(ClientError::Protocol("sealed name too large"))?;
            let size = sealed.as_ref().map_or(0, |s| s.len()) + sealed_name.len() + 2 * 32 + 16;
            if batch_bytes + size > STAGE_BYTES && !batch.is_empty() {
                self.stage(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += size;
            moves.push((name.clone(), new_tag));
            batch.push(StagedSecret {
                tag: e.tag,
                new_tag,
                sealed_name,
                version: e.version,
                sealed,
            });
        }
        if !batch.is_empty() {
            self.stage(batch).await?;
        }
        // Every version read for the rotation is checked against the chain before the
        // rotation commits: an older one served now would be sealed again for good.
        self.check_recent_events().await?;
        let epoch = old
            .epoch
            .checked_add(1)
            .ok_or(ClientError::Protocol("the account's epoch is exhausted"))?;
        let sealed = master_key.seal_storage_key(&mut OsRng, &self.user, epoch, &new_key);
        let op = OpRequest::RotateKeyFinish(RotateKeyFinish {
            epoch,
            sealed_storage_key: Bytes::new(sealed)
                .ok_or(ClientError::Protocol("sealed storage key too large"))?,
            secrets: entries.len() as u64,
        });
        match self.call_recorded(&op, "key rotation").await?.0 {
            OpResponse::KeyRotated(r) if r.epoch == epoch => {
                {
                    let mut c = self.checks();
                    c.state.tags_under(new_key.tag_key_id());
                    for (name, tag) in &moves {
                        c.state.learn_tag(tag, name);
                    }
                }
                self.set_keys(AccountKeys {
                    storage_key: Arc::new(new_key),
                    epoch,
                });
                Ok(live)
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
