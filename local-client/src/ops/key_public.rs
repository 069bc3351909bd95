//! `key-public`: what the server holds of a key, its public key among it.

use keyserver_protocol::{
    KeyName, OpRequest, OpResponse,
    ops::{KeyInfo, KeyPublic},
};

use super::key_generate::check_info;
use crate::{ClientError, Session};

impl Session {
    /// What the server holds of the key `name`.
    ///
    /// Errors: [`ClientError::NotFound`] (no such key); [`ClientError::SessionEnded`];
    /// transport errors (retry).
    pub async fn key(&self, name: &KeyName) -> Result<KeyInfo, ClientError> {
        let op = OpRequest::KeyPublic(KeyPublic { name: name.clone() });
        let OpResponse::Key(info) = self.call(&op).await? else {
            return Err(ClientError::Protocol("unexpected reply to KeyPublic"));
        };
        check_info(&info, name, None)?;
        Ok(info)
    }
}
