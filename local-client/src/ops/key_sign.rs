//! `key-sign`: a signature by a key the server holds, checked here before it is returned.

use keyserver_protocol::{
    KeyName, OpRequest, OpResponse,
    codec::Bytes,
    limits::MAX_SIGN_MESSAGE,
    ops::{KeySign, KeySignature},
    signing::{MessageHash, SignOptions, verify},
};

use super::key_generate::check_info;
use crate::{ClientError, Session};

impl Session {
    /// Asks the server to sign `message` with the key `name`, as `options` say; returns the
    /// signature and the key (whose public key it was checked against: a signature that does
    /// not verify is never returned).
    ///
    /// Errors: [`ClientError::NotFound`] (no such key); [`ClientError::InvalidInput`] (a
    /// message over 64 KiB, or not a 32-byte digest with [`MessageHash::Prehashed`], or an
    /// option the key's algorithm does not take); [`ClientError::Server`] with `SLOW_DOWN`
    /// (the key's or the account's signatures per minute are used up);
    /// [`ClientError::Integrity`] (the signature does not verify); transport errors.
    pub async fn sign(
        &self,
        name: &KeyName,
        message: &[u8],
        options: SignOptions,
    ) -> Result<KeySignature, ClientError> {
        if options.hash == Some(MessageHash::Prehashed) && message.len() != 32 {
            return Err(ClientError::InvalidInput(format!(
                "with --hash none the message must be a 32-byte digest (it is {} bytes)",
                message.len()
            )));
        }
        let message = Bytes::<MAX_SIGN_MESSAGE>::new(message.to_vec()).ok_or_else(|| {
            ClientError::InvalidInput(format!(
                "the message is larger than {MAX_SIGN_MESSAGE} bytes: hash it and sign the \
                 digest (--hash none)"
            ))
        })?;
        let op = OpRequest::KeySign(KeySign {
            name: name.clone(),
            message,
            options,
        });
        let answer = self.call_recorded(&op, "key sign").await;
        let (OpResponse::Signature(signed), at) = answer.map_err(not_for_algorithm)? else {
            return Err(ClientError::Protocol("unexpected reply to KeySign"));
        };
        check_info(&signed.key, name, None)?;
        self.saw_key(name, signed.key.public_key.as_slice(), at)?;
        let OpRequest::KeySign(op) = op else {
            unreachable!("built above")
        };
        verify(
            signed.key.algorithm,
            signed.key.public_key.as_slice(),
            op.message.as_slice(),
            options,
            signed.signature.as_slice(),
        )
        .map_err(|_| {
            ClientError::Integrity("the server's signature does not verify under the key")
        })?;
        Ok(signed)
    }
}

/// The server's `NOT_FOR_ALGORITHM`, said as the caller's mistake.
fn not_for_algorithm(e: ClientError) -> ClientError {
    match e {
        ClientError::Server(keyserver_protocol::ErrorCode::NOT_FOR_ALGORITHM) => {
            ClientError::InvalidInput(
                "ed25519 signs the message as given: --hash and --recoverable do not apply".into(),
            )
        }
        other => other,
    }
}
