//! `logout`: ends the session on every instance of the server.

use keyserver_protocol::{OpRequest, OpResponse};

use crate::{ClientError, Session};

impl Session {
    /// Ends the session on the server.
    ///
    /// Errors: [`ClientError::SessionEnded`] (it had ended already); transport errors
    /// (retry: a logout is applied at most once).
    pub async fn logout(&self) -> Result<(), ClientError> {
        match self.call_recorded(&OpRequest::Logout, "logout").await?.0 {
            OpResponse::LoggedOut => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to Logout")),
        }
    }
}
