//! Registration: OPAQUE registration, and the account's storage key made here and sealed
//! under the password's master key.

use keyserver_protocol::{
    Request, Response, SecretBytes, UserName, codec::Bytes, handshake::registration,
    seal::StorageKey,
};
use rand::rngs::OsRng;

use crate::{ClientError, Connection, error::handshake_error};

impl Connection {
    /// Registers `user` with `password`, and makes the account's storage key.
    ///
    /// Errors: [`ClientError::UserExists`] (choose another name); transport errors.
    pub async fn register(
        &self,
        user: &UserName,
        password: &SecretBytes,
    ) -> Result<(), ClientError> {
        let (flow, message) =
            registration::start(&mut OsRng, user, password).map_err(handshake_error)?;
        let Response::RegisterStarted { handshake, message } = self
            .call(&Request::RegisterStart {
                user: user.clone(),
                message,
            })
            .await?
        else {
            return Err(ClientError::Protocol("unexpected reply to RegisterStart"));
        };
        let ksf = self.ksf();
        let password = password.clone();
        let user2 = user.clone();
        // argon2 takes a while and much memory: off the async threads.
        let (upload, sealed) = crate::rt::blocking(move || {
            let fin = flow
                .finish(&mut OsRng, &password, message.as_slice(), ksf)
                .map_err(handshake_error)?;
            let storage_key = StorageKey::generate(&mut OsRng);
            // A new account starts at epoch 1.
            let sealed = fin
                .master_key
                .seal_storage_key(&mut OsRng, &user2, 1, &storage_key);
            Ok::<_, ClientError>((fin.upload, sealed))
        })
        .await??;
        let sealed_storage_key =
            Bytes::new(sealed).ok_or(ClientError::Protocol("sealed storage key too large"))?;
        match self
            .call(&Request::RegisterFinish {
                handshake,
                upload,
                sealed_storage_key,
            })
            .await?
        {
            Response::Registered => Ok(()),
            _ => Err(ClientError::Protocol("unexpected reply to RegisterFinish")),
        }
    }
}
