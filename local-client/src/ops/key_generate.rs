//! `key-generate`: the server makes a key pair and keeps the private key.

use keyserver_protocol::{
    KeyName, OpRequest, OpResponse,
    ops::{KeyGenerate, KeyInfo},
    signing::{Algorithm, check_public_key},
};

use crate::{ClientError, Session};

/// Checks that `info`, the server's description of a key asked for as `name` (of
/// `algorithm`, if known), describes such a key: the name and algorithm asked for, a public key that decodes.
pub(crate) fn check_info(
    info: &KeyInfo,
    name: &KeyName,
    algorithm: Option<Algorithm>,
) -> Result<(), ClientError> {
    let bad = || ClientError::Protocol("the server described another key than the one asked for");
    if &info.name != name || algorithm.is_some_and(|a| a != info.algorithm) {
        return Err(bad());
    }
    // A public key that does not decode cannot verify anything.
    check_public_key(info.algorithm, info.public_key.as_slice()).map_err(|_| bad())
}

impl Session {
    /// Asks the server to make a key `name` of `algorithm` and hold it (exportable later if
    /// `exportable`); returns what the server holds of it, its public key among it.
    ///
    /// Errors: [`ClientError::NameExists`] (the account has a key of that name);
    /// [`ClientError::Server`] with `QUOTA` (the account holds as many keys as it may);
    /// [`ClientError::SessionEnded`]; transport errors (retry: it is applied at most once).
    pub async fn generate_key(
        &self,
        name: &KeyName,
        algorithm: Algorithm,
        exportable: bool,
    ) -> Result<KeyInfo, ClientError> {
        let op = OpRequest::KeyGenerate(KeyGenerate {
            name: name.clone(),
            algorithm,
            exportable,
        });
        let (OpResponse::Key(info), at) = self.call_recorded(&op, "key generate").await? else {
            return Err(ClientError::Protocol("unexpected reply to KeyGenerate"));
        };
        check_info(&info, name, Some(algorithm))?;
        self.saw_key(name, info.public_key.as_slice(), at)?;
        if info.exportable != exportable || info.signatures != 0 {
            return Err(ClientError::Protocol(
                "the server described another key than the one asked for",
            ));
        }
        Ok(info)
    }
}
