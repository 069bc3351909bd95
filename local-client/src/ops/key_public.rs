//! `key-public`: what the server holds of a key, its public key among it.

use keyserver_protocol::{
    KeyName, OpRequest, OpResponse,
    ops::{KeyInfo, KeyPublic},
};

use super::key_generate::check_info;
use crate::{ClientError, Session};

impl Session {
    /// What the server holds of the key `name`. Its public key must be the one the audit
    /// chain records for the name: [`Session::check_recent_events`] checks it (call it
    /// before using the key).
    ///
    /// Errors: [`ClientError::NotFound`] (no such key); [`ClientError::SessionEnded`];
    /// transport errors (retry).
    pub async fn key(&self, name: &KeyName) -> Result<KeyInfo, ClientError> {
        let op = OpRequest::KeyPublic(KeyPublic { name: name.clone() });
        let (OpResponse::Key(info), at) = self.call_at(&op).await? else {
            return Err(ClientError::Protocol("unexpected reply to KeyPublic"));
        };
        check_info(&info, name, None)?;
        self.saw_key(name, info.public_key.as_slice(), at)?;
        Ok(info)
    }
}
