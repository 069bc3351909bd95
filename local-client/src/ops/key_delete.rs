//! `key-delete`: the server forgets a key it holds, after proving the password again.

use keyserver_protocol::{KeyName, OpRequest, OpResponse, SecretBytes, ops::KeyDelete};

use crate::{ClientError, Session};

impl Session {
    /// Deletes the key `name`; `password` is the account's (proven again first: a key that
    /// was not exportable is gone for good).
    ///
    /// Errors: [`ClientError::NotFound`] (no such key); [`ClientError::AuthFailed`] (wrong
    /// password); transport errors (retry: it is applied at most once).
    pub async fn delete_key(
        &self,
        name: &KeyName,
        password: &SecretBytes,
    ) -> Result<(), ClientError> {
        self.reauth(password).await?;
        let op = OpRequest::KeyDelete(KeyDelete { name: name.clone() });
        match self.call_recorded(&op, "key delete").await?.0 {
            OpResponse::KeyDeleted => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to KeyDelete")),
        }
    }
}
