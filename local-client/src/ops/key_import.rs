//! `key-import`: the user gives the server a private key to hold.

use keyserver_protocol::{
    KeyName, OpRequest, OpResponse,
    ops::{KeyImport, KeyInfo, KeyMaterial},
    signing::PrivateKey,
};

use super::key_generate::check_info;
use crate::{ClientError, Session};

impl Session {
    /// Gives the server `key` to hold as `name`; returns what it holds of it. The public key
    /// it answers must be `key`'s, computed here.
    ///
    /// Errors: as [`Session::generate_key`].
    pub async fn import_key(
        &self,
        name: &KeyName,
        key: &PrivateKey,
        exportable: bool,
    ) -> Result<KeyInfo, ClientError> {
        let public = key
            .public_key()
            .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        let op = OpRequest::KeyImport(KeyImport {
            name: name.clone(),
            algorithm: key.algorithm(),
            private_key: KeyMaterial::new(*key.expose_secret()),
            exportable,
        });
        let (OpResponse::Key(info), at) = self.call_recorded(&op, "key import").await? else {
            return Err(ClientError::Protocol("unexpected reply to KeyImport"));
        };
        check_info(&info, name, Some(key.algorithm()))?;
        if info.exportable != exportable || info.signatures != 0 {
            return Err(ClientError::Protocol(
                "the server described another key than the one asked for",
            ));
        }
        if info.public_key.as_slice() != public.as_slice() {
            return Err(ClientError::Integrity(
                "the server holds another public key than the key imported",
            ));
        }
        self.saw_key(name, info.public_key.as_slice(), at)?;
        Ok(info)
    }
}
