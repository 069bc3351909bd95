//! The envelopes every transport carries: one [`Request`] in, one [`Response`] out.
//!
//! Handshake messages travel in the clear inside TLS (they are OPAQUE messages, designed to
//! be public). Everything after login travels as [`SealedRequest`]/[`SealedResponse`], whose
//! bodies are an [`crate::ops::OpRequest`]/[`crate::ops::OpResponse`] sealed in the session
//! channel.

use serde::{Deserialize, Serialize};

use crate::{
    codec::{self, Bytes},
    error::{DecodeError, ErrorReply},
    limits::{
        ATTESTATION_NONCE, MAX_ATTESTATION_DOCUMENT, MAX_MESSAGE, MAX_OPAQUE_MESSAGE,
        MAX_SEALED_BODY, MAX_SEALED_STORAGE_KEY,
    },
    names::UserName,
    session::SessionId,
};

/// Names a handshake in progress on the server. Random, short-lived, single-use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandshakeId(pub [u8; 16]);

impl std::fmt::Debug for HandshakeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HandshakeId({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// An OPAQUE message, checked for size here and for exact form by opaque-ke.
pub type OpaqueBytes = Bytes<MAX_OPAQUE_MESSAGE>;

/// Everything a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Registration, step 1: the blinded password (OPAQUE `RegistrationRequest`).
    RegisterStart {
        /// The name to register.
        user: UserName,
        /// OPAQUE `RegistrationRequest`.
        message: OpaqueBytes,
    },
    /// Registration, step 2: the record to store and the sealed storage key.
    RegisterFinish {
        /// From the server's reply to `RegisterStart`.
        handshake: HandshakeId,
        /// OPAQUE `RegistrationUpload`.
        upload: OpaqueBytes,
        /// The storage key sealed under the master key.
        sealed_storage_key: Bytes<MAX_SEALED_STORAGE_KEY>,
    },
    /// Login, step 1 (OPAQUE KE1). The server counts a guess here.
    LoginStart {
        /// Who logs in.
        user: UserName,
        /// OPAQUE `CredentialRequest`.
        message: OpaqueBytes,
    },
    /// Login, step 2 (OPAQUE KE3).
    LoginFinish {
        /// From the server's reply to `LoginStart`.
        handshake: HandshakeId,
        /// OPAQUE `CredentialFinalization`.
        message: OpaqueBytes,
    },
    /// The client found the password wrong (or gave up) after `LoginStart`. Optional: a
    /// login that is never finished counts as failed anyway, this only says so sooner.
    LoginAbort {
        /// From the server's reply to `LoginStart`.
        handshake: HandshakeId,
    },
    /// An operation inside a session.
    Sealed(SealedRequest),
    /// The server's attestation document, bound to the TLS key of this connection and to
    /// `nonce` (see `crate::attestation`). Needs no session; a client that expects an
    /// attested server sends it first on every connection.
    Attest {
        /// Fresh random bytes of the client's, returned inside the signed document.
        nonce: [u8; ATTESTATION_NONCE],
    },
}

/// An operation sealed in a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRequest {
    /// Which session.
    pub session_id: SessionId,
    /// The request's sequence number: unique within the session, starting at 1.
    pub seq: u64,
    /// The sealed [`crate::ops::OpRequest`].
    pub body: Bytes<MAX_SEALED_BODY>,
}

/// The answer to a [`SealedRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedResponse {
    /// The request's sequence number.
    pub seq: u64,
    /// The sealed [`crate::ops::OpResponse`].
    pub body: Bytes<MAX_SEALED_BODY>,
}

/// Everything a server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Reply to `RegisterStart`.
    RegisterStarted {
        /// Names this registration in `RegisterFinish`.
        handshake: HandshakeId,
        /// OPAQUE `RegistrationResponse`.
        message: OpaqueBytes,
    },
    /// Reply to `RegisterFinish`: the account exists now.
    Registered,
    /// Reply to `LoginStart` (OPAQUE KE2).
    LoginStarted {
        /// Names this login in `LoginFinish`.
        handshake: HandshakeId,
        /// OPAQUE `CredentialResponse`.
        message: OpaqueBytes,
    },
    /// Reply to `LoginFinish`: the session is open.
    LoggedIn {
        /// The storage key, sealed under the master key.
        sealed_storage_key: Bytes<MAX_SEALED_STORAGE_KEY>,
        /// The account's epoch, which the sealed storage key is bound to (see
        /// [`crate::seal::MasterKey::open_storage_key`]).
        epoch: u64,
        /// The session ends after this many seconds without a request.
        idle_timeout_secs: u64,
        /// The session ends this many seconds after login, whatever happens.
        lifetime_secs: u64,
    },
    /// Reply to `LoginAbort`.
    LoginAborted {
        /// Wrong guesses left before the account locks, if the login was still pending
        /// (see [`crate::ErrorReply::guesses_left`]).
        guesses_left: Option<u64>,
    },
    /// Reply to `Sealed`.
    Sealed(SealedResponse),
    /// The request failed.
    Error(ErrorReply),
    /// Reply to `Attest`: a COSE_Sign1 attestation document, as the Nitro security module
    /// makes it.
    Attestation {
        /// The document.
        document: Bytes<MAX_ATTESTATION_DOCUMENT>,
    },
}

impl Request {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes one whole request of at most [`MAX_MESSAGE`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_MESSAGE)
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RegisterStart { .. } => "register_start",
            Self::RegisterFinish { .. } => "register_finish",
            Self::LoginStart { .. } => "login_start",
            Self::LoginFinish { .. } => "login_finish",
            Self::LoginAbort { .. } => "login_abort",
            Self::Sealed(_) => "sealed",
            Self::Attest { .. } => "attest",
        }
    }
}

impl Response {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes one whole response of at most [`MAX_MESSAGE`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_MESSAGE)
    }
}

impl From<ErrorReply> for Response {
    fn from(e: ErrorReply) -> Self {
        Self::Error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    fn bytes<const N: usize>(v: &[u8]) -> Bytes<N> {
        Bytes::new(v.to_vec()).unwrap()
    }

    fn samples() -> Vec<Request> {
        let user = UserName::new("alice").unwrap();
        vec![
            Request::RegisterStart {
                user: user.clone(),
                message: bytes(&[1; 32]),
            },
            Request::RegisterFinish {
                handshake: HandshakeId([2; 16]),
                upload: bytes(&[3; 192]),
                sealed_storage_key: bytes(&[4; 73]),
            },
            Request::LoginStart {
                user,
                message: bytes(&[5; 96]),
            },
            Request::LoginFinish {
                handshake: HandshakeId([6; 16]),
                message: bytes(&[7; 64]),
            },
            Request::LoginAbort {
                handshake: HandshakeId([8; 16]),
            },
            Request::Sealed(SealedRequest {
                session_id: SessionId([9; 16]),
                seq: 42,
                body: bytes(&[10; 100]),
            }),
            Request::Attest { nonce: [11; 32] },
        ]
    }

    #[test]
    fn every_request_round_trips() {
        for r in samples() {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let rs = vec![
            Response::RegisterStarted {
                handshake: HandshakeId([1; 16]),
                message: bytes(&[1; 64]),
            },
            Response::Registered,
            Response::LoginStarted {
                handshake: HandshakeId([1; 16]),
                message: bytes(&[1; 320]),
            },
            Response::LoggedIn {
                sealed_storage_key: bytes(&[1; 73]),
                epoch: 3,
                idle_timeout_secs: 1,
                lifetime_secs: 2,
            },
            Response::LoginAborted {
                guesses_left: Some(4),
            },
            Response::Sealed(SealedResponse {
                seq: 1,
                body: bytes(&[0; 17]),
            }),
            Response::Error(ErrorReply {
                code: ErrorCode::ACCOUNT_LOCKED,
                retry_after_secs: Some(30),
                expected_version: None,
                guesses_left: None,
            }),
            Response::Attestation {
                document: bytes(&[0xd2; 4500]),
            },
        ];
        for r in rs {
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn rejects_truncated_requests() {
        for r in samples() {
            let b = r.encode();
            for n in 0..b.len() {
                assert!(Request::decode(&b[..n]).is_err(), "{r:?} truncated to {n}");
            }
        }
    }

    #[test]
    fn rejects_an_oversized_opaque_message() {
        let mut b = vec![0u8]; // variant RegisterStart
        b.extend(codec::encode(&"alice".to_string()));
        b.extend(codec::encode(
            &Bytes::<1024>::new(vec![0; MAX_OPAQUE_MESSAGE + 1]).unwrap(),
        ));
        assert_eq!(Request::decode(&b), Err(DecodeError::Malformed));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Request::decode(&b);
            let _ = Response::decode(&b);
        }
    }
}
