//! Why a request failed, and the one place where that becomes a code on the wire.
//!
//! Variants are sorted by who is at fault: the client (bad bytes, a step out of order), a
//! rule (a well-formed request refused), or the server (storage, a bug). Only the server's
//! faults are logged above debug level, and no message carries a secret.

use keyserver_protocol::{ErrorCode, ErrorReply, handshake::HandshakeError};
use tracing::warn;

use super::sessions::SessionError;
use crate::storage::StorageError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request could not be parsed, or broke a size bound.
    #[error("malformed request")]
    Malformed,
    /// A handshake id that is not pending (never issued, used, or expired).
    #[error("unknown handshake")]
    UnknownHandshake,
    /// A sealed request that did not authenticate under its session's key.
    #[error("the sealed request did not authenticate")]
    BadSeal,
    /// A sequence number already used, or older than the replay window.
    #[error("replayed request")]
    Replayed,

    /// Login failed: wrong password or unknown user, deliberately the same.
    #[error("authentication failed")]
    AuthFailed {
        /// Wrong guesses left before the lockout, once the failure is recorded.
        guesses_left: Option<u64>,
    },
    /// Registration of a name that is taken.
    #[error("user exists")]
    UserExists,
    /// Too many failed logins.
    #[error("account locked for {retry_after_secs} s")]
    Locked {
        /// Seconds until logins are accepted again.
        retry_after_secs: u64,
    },
    /// No such session here or in the database (logged out, purged, never existed).
    #[error("unknown session")]
    UnknownSession,
    /// The session passed its idle timeout or lifetime.
    #[error("session expired")]
    SessionExpired,
    /// No secret of that name.
    #[error("not found")]
    NotFound,
    /// A secret of that name exists and the store did not ask to replace it.
    #[error("name exists")]
    NameExists,
    /// A store that does not carry the next version.
    #[error("version mismatch, expected {expected}")]
    VersionMismatch {
        /// The version a store must carry.
        expected: u64,
    },
    /// The account reached a limit.
    #[error("quota")]
    Quota,
    /// The key was not made exportable.
    #[error("not exportable")]
    NotExportable,
    /// An option the key's algorithm does not take.
    #[error("option not for the key's algorithm")]
    NotForAlgorithm,
    /// This server has no security module to attest with.
    #[error("no attestation")]
    NoAttestation,
    /// The operation needs a fresh proof of the password (reauth) in this session.
    #[error("reauth required")]
    ReauthRequired,
    /// The account changed since the request was prepared.
    #[error("stale request")]
    Stale,
    /// A limit of the server or of this client was reached.
    #[error("slow down")]
    SlowDown {
        /// When to try again, if known.
        retry_after_secs: Option<u64>,
    },

    /// The database failed; nothing was changed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The server failed in a way that is no one's input.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<HandshakeError> for ServerError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Malformed => Self::Malformed,
            HandshakeError::AuthFailed => Self::AuthFailed { guesses_left: None },
            HandshakeError::BadKsfParams | HandshakeError::Internal => {
                Self::Internal("OPAQUE failure on the server side")
            }
        }
    }
}

impl From<SessionError> for ServerError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Unknown => Self::UnknownSession,
            SessionError::Expired => Self::SessionExpired,
        }
    }
}

impl ServerError {
    /// The reply the client gets. Server faults are logged here, once.
    pub fn reply(&self) -> ErrorReply {
        let code = |code| ErrorReply::new(code);
        match self {
            Self::Malformed => code(ErrorCode::MALFORMED),
            Self::UnknownHandshake => code(ErrorCode::UNKNOWN_HANDSHAKE),
            Self::BadSeal => code(ErrorCode::BAD_SEAL),
            Self::Replayed => code(ErrorCode::REPLAYED),
            Self::AuthFailed { guesses_left } => ErrorReply {
                guesses_left: *guesses_left,
                ..code(ErrorCode::AUTH_FAILED)
            },
            Self::UserExists => code(ErrorCode::USER_EXISTS),
            Self::Locked { retry_after_secs } => ErrorReply {
                retry_after_secs: Some(*retry_after_secs),
                ..code(ErrorCode::ACCOUNT_LOCKED)
            },
            Self::UnknownSession => code(ErrorCode::UNKNOWN_SESSION),
            Self::SessionExpired => code(ErrorCode::SESSION_EXPIRED),
            Self::NotFound => code(ErrorCode::NOT_FOUND),
            Self::NameExists => code(ErrorCode::NAME_EXISTS),
            Self::VersionMismatch { expected } => ErrorReply {
                expected_version: Some(*expected),
                ..code(ErrorCode::VERSION_MISMATCH)
            },
            Self::Quota => code(ErrorCode::QUOTA),
            Self::NotExportable => code(ErrorCode::NOT_EXPORTABLE),
            Self::NotForAlgorithm => code(ErrorCode::NOT_FOR_ALGORITHM),
            Self::NoAttestation => code(ErrorCode::NO_ATTESTATION),
            Self::ReauthRequired => code(ErrorCode::REAUTH_REQUIRED),
            Self::Stale => code(ErrorCode::STALE),
            Self::SlowDown { retry_after_secs } => ErrorReply {
                retry_after_secs: *retry_after_secs,
                ..code(ErrorCode::SLOW_DOWN)
            },
            Self::Storage(StorageError::Unavailable(why)) => {
                warn!(error = %why, "storage unavailable");
                code(ErrorCode::STORAGE_UNAVAILABLE)
            }
            Self::Storage(StorageError::Corrupt(why)) => {
                warn!(error = %why, "corrupt stored data");
                code(ErrorCode::INTERNAL)
            }
            Self::Internal(why) => {
                warn!(error = why, "internal error");
                code(ErrorCode::INTERNAL)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_carries_the_details_a_client_acts_on() {
        let r = ServerError::Locked {
            retry_after_secs: 30,
        }
        .reply();
        assert_eq!(
            (r.code, r.retry_after_secs),
            (ErrorCode::ACCOUNT_LOCKED, Some(30))
        );
        let r = ServerError::VersionMismatch { expected: 4 }.reply();
        assert_eq!(
            (r.code, r.expected_version),
            (ErrorCode::VERSION_MISMATCH, Some(4))
        );
        let r = ServerError::Storage(StorageError::Unavailable("down".into())).reply();
        assert_eq!(r.code, ErrorCode::STORAGE_UNAVAILABLE);
        // A corrupt row is the server's problem; the client hears no detail.
        let r = ServerError::Storage(StorageError::Corrupt("row 7".into())).reply();
        assert_eq!(r, ErrorReply::new(ErrorCode::INTERNAL));
    }
}
