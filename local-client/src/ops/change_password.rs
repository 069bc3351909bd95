//! `change-password`: proves the current password (reauth), then a new OPAQUE registration
//! inside the session; the same storage key, sealed under the new password's master key for
//! the next epoch. No secret is re-encrypted; every other session of the account ends.

use std::sync::Arc;

use keyserver_protocol::{
    OpRequest, OpResponse, SecretBytes,
    codec::Bytes,
    handshake::registration,
    ops::{ChangePasswordFinish, ChangePasswordStart},
};
use rand::rngs::OsRng;

use crate::{ClientError, Session, error::handshake_error, session::AccountKeys};

impl Session {
    /// Changes the password from `current` to `new`.
    ///
    /// Errors: [`ClientError::AuthFailed`] (`current` is wrong: it counts as a guess);
    /// [`ClientError::Locked`]; [`ClientError::SessionEnded`] (log in again); transport
    /// errors (retry: the change is applied at most once).
    pub async fn change_password(
        &self,
        current: &SecretBytes,
        new: &SecretBytes,
    ) -> Result<(), ClientError> {
        self.reauth(current).await?;
        let (flow, message) =
            registration::start(&mut OsRng, &self.user, new).map_err(handshake_error)?;
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
        let keys = self.keys();
        let epoch = keys
            .epoch
            .checked_add(1)
            .ok_or(ClientError::Protocol("the account's epoch is exhausted"))?;
        let (ksf, pw, user, sk) = (
            self.connection().ksf(),
            new.clone(),
            self.user.clone(),
            keys.storage_key.clone(),
        );
        let (upload, sealed) = crate::rt::blocking(move || {
            let fin = flow
                .finish(&mut OsRng, &pw, started.message.as_slice(), ksf)
                .map_err(handshake_error)?;
            Ok::<_, ClientError>((
                fin.upload,
                fin.master_key
                    .seal_storage_key(&mut OsRng, &user, epoch, &sk),
            ))
        })
        .await??;
        let sealed_storage_key =
            Bytes::new(sealed).ok_or(ClientError::Protocol("sealed storage key too large"))?;
        let op = OpRequest::ChangePasswordFinish(ChangePasswordFinish {
            epoch,
            upload,
            sealed_storage_key,
        });
        match self.call_recorded(&op, "password change").await?.0 {
            OpResponse::PasswordChanged(r) if r.epoch == epoch => {
                self.set_keys(AccountKeys {
                    storage_key: Arc::clone(&keys.storage_key),
                    epoch,
                });
                Ok(())
            }
            _ => Err(ClientError::Protocol(
                "unexpected reply to ChangePasswordFinish",
            )),
        }
    }
}
