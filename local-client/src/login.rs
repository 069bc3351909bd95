//! Login: OPAQUE login, which yields the session's keys and the master key that opens the
//! account's storage key.

use keyserver_protocol::{
    Request, Response, SecretBytes, UserName, handshake::login, session::ClientChannel,
};
use rand::rngs::OsRng;

use crate::{ClientError, Connection, Session, error::handshake_error};

impl Connection {
    /// Logs in as `user`; the session runs on this connection.
    ///
    /// Errors: [`ClientError::AuthFailed`] (wrong password or unknown user, on purpose the
    /// same), [`ClientError::Locked`] (wait as long as it says); transport errors.
    pub async fn login(
        &self,
        user: &UserName,
        password: &SecretBytes,
    ) -> Result<Session, ClientError> {
        let (flow, message) = login::start(&mut OsRng, user, password).map_err(handshake_error)?;
        // A login start counts a guess: it is not sent again if the connection drops.
        let Response::LoginStarted { handshake, message } = self
            .call_once(&Request::LoginStart {
                user: user.clone(),
                message,
            })
            .await?
        else {
            return Err(ClientError::Protocol("unexpected reply to LoginStart"));
        };
        let ksf = self.ksf();
        let pw = password.clone();
        let finished =
            crate::rt::blocking(move || flow.finish(&mut OsRng, &pw, message.as_slice(), ksf))
                .await?;
        let fin = match finished {
            Ok(f) => f,
            Err(e) => {
                // Tell the server now rather than at the handshake's expiry (best effort);
                // it answers how many guesses are left.
                let guesses_left = match self.call(&Request::LoginAbort { handshake }).await {
                    Ok(Response::LoginAborted { guesses_left }) => guesses_left,
                    _ => None,
                };
                return Err(match handshake_error(e) {
                    ClientError::AuthFailed { .. } => ClientError::AuthFailed { guesses_left },
                    other => other,
                });
            }
        };
        let Response::LoggedIn {
            sealed_storage_key,
            epoch,
            ..
        } = self
            .call(&Request::LoginFinish {
                handshake,
                message: fin.message,
            })
            .await?
        else {
            return Err(ClientError::Protocol("unexpected reply to LoginFinish"));
        };
        let storage_key = fin
            .master_key
            .open_storage_key(user, epoch, sealed_storage_key.as_slice())
            .map_err(|_| {
                ClientError::Integrity(
                    "the sealed storage key from the server does not open (altered, or restored \
                     from before a password change)",
                )
            })?;
        let channel = ClientChannel::new(fin.session)
            .map_err(|_| ClientError::Protocol("unusable session keys"))?;
        Ok(Session::new(
            self.clone(),
            user.clone(),
            channel,
            storage_key,
            epoch,
            crate::state::ServerId::of(&fin.server_key),
        ))
    }
}
