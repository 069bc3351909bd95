//! `key-export`: the private key of a key made exportable, after proving the password again.

use keyserver_protocol::{
    KeyName, OpRequest, OpResponse, SecretBytes, ops::KeyExport, signing::PrivateKey,
};

use crate::{ClientError, Session};

impl Session {
    /// Exports the private key of `name`; `password` is the account's (proven again first).
    /// The key is checked here against the public key the server answers with it.
    ///
    /// Errors: [`ClientError::NotFound`] (no such key); [`ClientError::Server`] with
    /// `NOT_EXPORTABLE` (it was not made exportable: its private key never leaves the
    /// server); [`ClientError::AuthFailed`] (wrong password); transport errors.
    pub async fn export_key(
        &self,
        name: &KeyName,
        password: &SecretBytes,
    ) -> Result<PrivateKey, ClientError> {
        self.reauth(password).await?;
        let op = OpRequest::KeyExport(KeyExport { name: name.clone() });
        let (OpResponse::ExportedKey(exported), at) = self.call_recorded(&op, "key export").await?
        else {
            return Err(ClientError::Protocol("unexpected reply to KeyExport"));
        };
        let bad = ClientError::Integrity("the exported key is not the key the server names");
        let key = PrivateKey::from_bytes(exported.algorithm, exported.private_key.expose_secret())
            .map_err(|_| bad)?;
        let public = key.public_key().map_err(|_| {
            ClientError::Integrity("the exported key is not the key the server names")
        })?;
        if public.as_slice() != exported.public_key.as_slice() {
            return Err(ClientError::Integrity(
                "the exported key is not the key the server names",
            ));
        }
        self.saw_key(name, &public, at)?;
        Ok(key)
    }
}
