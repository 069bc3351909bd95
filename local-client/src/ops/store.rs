//! `store`: seals a secret here and stores it as the name's next version.

use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, SecretBytes, SecretName, codec::Bytes, ops::Store,
};
use rand::rngs::OsRng;

use crate::{ClientError, Session};

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
        // Versions are sealed into the ciphertext, so the client must know the next one; a
        // fresh name is version 1, otherwise the server says which and we seal again.
        let mut version = 1;
        let storage_key = self.keys().storage_key;
        // The server knows the name only by its tag, and keeps it sealed (for `list`).
        let tag = storage_key.name_tag(name);
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
                    self.saw_version(name, &tag, None, s.version, at)?;
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
                    version = expected;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Server(ErrorCode::VERSION_MISMATCH))
    }
}
