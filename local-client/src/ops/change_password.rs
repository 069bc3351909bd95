//! `change-password`: a new OPAQUE registration inside the session; the same storage key,
//! sealed under the new password's master key. No secret is re-encrypted.

use keyserver_protocol::{
    OpRequest, OpResponse, SecretBytes,
    codec::Bytes,
    handshake::registration,
    ops::{ChangePasswordFinish, ChangePasswordStart},
};
use rand::rngs::OsRng;

use crate::{ClientError, Session, error::handshake_error};

impl Session {
    /// Changes the password to `new_password`.
    ///
    /// Errors: [`ClientError::SessionEnded`] (log in again); transport errors (retry: the
    /// change is applied at most once).
    pub async fn change_password(&self, new_password: &SecretBytes) -> Result<(), ClientError> {
        let (flow, message) =
            registration::start(&mut OsRng, &self.user, new_password).map_err(handshake_error)?;
        let OpResponse::ChangePasswordStarted(started) = self
            .call(&OpRequest::ChangePasswordStart(ChangePasswordStart {
                message,
            }))
            .await?
        else {
            return Err(ClientError::Protocol(
                "unexpected reply to ChangePasswordStart",
            ));
        };
        let (ksf, pw, user, sk) = (
            self.connection().ksf(),
            new_password.clone(),
            self.user.clone(),
            self.storage_key.clone(),
        );
        let (upload, sealed) = tokio::task::spawn_blocking(move || {
            let fin = flow
                .finish(&mut OsRng, &pw, started.message.as_slice(), ksf)
                .map_err(handshake_error)?;
            Ok::<_, ClientError>((
                fin.upload,
                fin.master_key.seal_storage_key(&mut OsRng, &user, &sk),
            ))
        })
        .await
        .map_err(|_| ClientError::Protocol("password change task failed"))??;
        let sealed_storage_key =
            Bytes::new(sealed).ok_or(ClientError::Protocol("sealed storage key too large"))?;
        let op = OpRequest::ChangePasswordFinish(ChangePasswordFinish {
            upload,
            sealed_storage_key,
        });
        match self.call(&op).await? {
            OpResponse::PasswordChanged => Ok(()),
            _ => Err(ClientError::Protocol(
                "unexpected reply to ChangePasswordFinish",
            )),
        }
    }
}
