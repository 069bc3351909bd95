//! `delete`: removes a secret.

use keyserver_protocol::{OpRequest, OpResponse, SecretName, ops::Delete};

use crate::{ClientError, Session};

impl Session {
    /// Deletes `name`.
    ///
    /// Errors: [`ClientError::NotFound`] (nothing to delete);
    /// [`ClientError::SessionEnded`] (log in again); transport errors (retry: a delete is
    /// applied at most once).
    pub async fn delete(&self, name: &SecretName) -> Result<(), ClientError> {
        let op = OpRequest::Delete(Delete {
            tag: self.tag(name),
        });
        match self.call_recorded(&op, "delete").await?.0 {
            OpResponse::Deleted => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to Delete")),
        }
    }
}
