//! `reauth`: proves the password again inside the session, before a password change or a
//! key rotation.

use keyserver_protocol::{
    OpRequest, OpResponse, SecretBytes,
    handshake::login,
    ops::{ReauthAbort, ReauthFinish, ReauthStart},
    seal::MasterKey,
};
use rand::rngs::OsRng;

use crate::{ClientError, Session, error::handshake_error};

impl Session {
    /// Proves the account's current password in this session; the server then accepts one
    /// password change or key rotation from it, within a few minutes. Returns the master
    /// key of that password (which seals the storage key).
    ///
    /// Each reauth counts a password guess, like a login (and it is not sent again after a
    /// lost connection). Errors: [`ClientError::AuthFailed`] (wrong password),
    /// [`ClientError::Locked`] (too many guesses: wait), [`ClientError::SessionEnded`].
    pub async fn reauth(&self, password: &SecretBytes) -> Result<MasterKey, ClientError> {
        let (flow, message) =
            login::start(&mut OsRng, &self.user, password).map_err(handshake_error)?;
        let OpResponse::ReauthStarted(started) = self
            .call(&OpRequest::ReauthStart(ReauthStart { message }))
            .await?
        else {
            return Err(ClientError::Protocol("unexpected reply to ReauthStart"));
        };
        let ksf = self.connection().ksf();
        let pw = password.clone();
        let ke2 = started.message;
        let finished =
            crate::rt::blocking(move || flow.finish(&mut OsRng, &pw, ke2.as_slice(), ksf)).await?;
        let finished = match finished {
            Ok(f) => f,
            Err(e) => {
                // Recorded as failed now; the answer says how many guesses are left.
                let abort = OpRequest::ReauthAbort(ReauthAbort {
                    handshake: started.handshake,
                });
                let guesses_left = match self.call(&abort).await {
                    Ok(OpResponse::ReauthAborted(a)) => a.guesses_left,
                    _ => None,
                };
                return Err(match handshake_error(e) {
                    ClientError::AuthFailed { .. } => ClientError::AuthFailed { guesses_left },
                    other => other,
                });
            }
        };
        // The proof only: the session's keys stay those of the login.
        let master_key = finished.master_key;
        let op = OpRequest::ReauthFinish(ReauthFinish {
            handshake: started.handshake,
            message: finished.message,
        });
        match self.call_recorded(&op, "reauth").await?.0 {
            OpResponse::Reauthenticated(_) => Ok(master_key),
            _ => Err(ClientError::Protocol("unexpected reply to ReauthFinish")),
        }
    }
}
