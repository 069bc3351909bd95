//! `store`: seals a secret here and stores it as the name's next version.

use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, SecretBytes, SecretName, codec::Bytes, ops::Store,
};
use rand::rngs::OsRng;

use crate::{ClientError, Session, state::Rollback};

/// Most attempts at a store whose version moved under it (concurrent writers).
const STORE_ATTEMPTS: usize = 4;

impl Session {
    /// Stores `secret` as `name`. Returns the version stored.
    ///
    /// Errors: [`ClientError::NameExists`] without `replace` if the name holds a secret
    /// (store with `replace`); [`ClientError::Server`] with `QUOTA` when the account is
    /// full (delete something); [`ClientError::InvalidInput`] for a secret over the size
    /// limit; [`ClientError::SessionEnded`] (log in again); transport errors (retry).
    pub async fn store(
        &self,
        name: &SecretName,
        secret: &SecretBytes,
        replace: bool,
    ) -> Result<u64, ClientError> {
        // Versions are sealed into the ciphertext, so the client must know the next one:
        // one past the newest it knows of (1 for a name it never saw); if the server has
        // another, it says which and we seal again, unless that goes back.
        let storage_key = self.keys().storage_key;
        // The server knows the name only by its tag, and keeps it sealed (for `list`).
        let tag = storage_key.name_tag(name);
        let known = self.newest_known(name, &tag);
        let mut version = known.map_or(1, |v| v.saturating_add(1));
        let sealed_name = Bytes::new(storage_key.seal_name(&mut OsRng, &self.user, name))
            .ok_or(ClientError::Protocol("sealed name too large"))?;
        for _ in 0..STORE_ATTEMPTS {
            let sealed = storage_key
                .seal_secret(&mut OsRng, &self.user, name, version, secret)
                .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
            let sealed = Bytes::new(sealed)
                .ok_or_else(|| ClientError::InvalidInput("secret too large".into()))?;
            let op = OpRequest::Store(Store {
                tag,
                sealed_name: sealed_name.clone(),
                version,
                replace,
                sealed,
            });
            match self.call_recorded(&op, "store").await {
                Ok((OpResponse::Stored(s), at)) if s.version == version => {
                    self.saw_version(name, &tag, known, s.version, at)?;
                    return Ok(s.version);
                }
                Ok((OpResponse::Stored(_), _)) => {
                    // It was sealed for `version`: any other is a lie about what was kept.
                    return Err(ClientError::Protocol(
                        "the server says it stored another version than the one sent",
                    ));
                }
                Ok(_) => return Err(ClientError::Protocol("unexpected reply to Store")),
                Err(ClientError::VersionMismatch { expected }) if expected > 0 => {
                    if let Some(newest) = known.filter(|n| expected <= *n) {
                        // The next version would be one this client already knows of.
                        return Err(self.checks().caught(Rollback::Version {
                            name: name.to_string(),
                            newest,
                            seen: expected.saturating_sub(1),
                        }));
                    }
                    version = expected;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Server(ErrorCode::VERSION_MISMATCH))
    }
}
