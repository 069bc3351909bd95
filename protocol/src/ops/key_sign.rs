//! `key-sign`: the server signs a message with a key it holds. Every signature is an audit
//! event carrying the SHA-256 of the message, committed before the signature is answered.

use serde::{Deserialize, Serialize};

use super::key_public::KeyInfo;
use crate::{
    codec::Bytes,
    limits::MAX_SIGN_MESSAGE,
    names::KeyName,
    signing::{SignOptions, SignatureBytes},
};

/// Sign `message` with the key `name`, as `options` say. Refused with `NOT_FOUND` (no such
/// key), `NOT_FOR_ALGORITHM` (an option the key's algorithm does not take), `MALFORMED` (a
/// message that is not the 32-byte digest `MessageHash::Prehashed` says it is), `SLOW_DOWN`
/// with `retry_after_secs` (the key's or the account's signatures per minute are used up).
/// Answered with [`crate::OpResponse::Signature`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySign {
    /// The key's name.
    pub name: KeyName,
    /// The message, as given (the server hashes it if the options say so).
    pub message: Bytes<MAX_SIGN_MESSAGE>,
    /// How to sign it.
    pub options: SignOptions,
}

/// A signature, with the key that made it (the client checks the one against the other).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySignature {
    /// The signature: 64 bytes, or 65 for a recoverable secp256k1 signature.
    pub signature: SignatureBytes,
    /// The key, its signature count including this one.
    pub key: KeyInfo,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        OpRequest, OpResponse,
        signing::{Algorithm, MessageHash},
    };

    #[test]
    fn a_sign_and_its_answer_round_trip() {
        let r = OpRequest::KeySign(KeySign {
            name: KeyName::new("eth-hot").unwrap(),
            message: Bytes::new(vec![1; MAX_SIGN_MESSAGE]).unwrap(),
            options: SignOptions {
                hash: Some(MessageHash::Keccak256),
                recoverable: true,
            },
        });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
        // The largest message fits in a sealed request.
        assert!(
            r.encode().len() + crate::session::channel::REQUEST_OVERHEAD
                <= crate::limits::MAX_SEALED_BODY
        );
        let a = OpResponse::Signature(KeySignature {
            signature: Bytes::new(vec![3; 65]).unwrap(),
            key: KeyInfo {
                name: KeyName::new("eth-hot").unwrap(),
                algorithm: Algorithm::Secp256k1,
                public_key: Bytes::new(vec![2; 33]).unwrap(),
                exportable: false,
                created: 1,
                signatures: 1,
            },
        });
        assert_eq!(OpResponse::decode(&a.encode()).unwrap(), a);
    }
}
