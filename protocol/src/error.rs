//! Error codes on the wire, and the errors of this crate.
//!
//! Errors are split by who is at fault: [`DecodeError`] is bad bytes from a peer,
//! [`ErrorCode`] is what a server tells a client. Every error that a peer can cause maps to
//! exactly one code in [`ErrorCode::from`] impls here or in the server.

use serde::{Deserialize, Serialize};

/// An error code sent by the server. A newtype rather than an enum, so that a client meets an
/// unknown (newer) code as a value it can still print instead of a parse failure.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorCode(pub u16);

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr, $text:expr;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// One human sentence for this code.
            pub fn description(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                    _ => "unknown error",
                }
            }

            /// The constant's name, for logs and metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($name),)*
                    _ => "UNKNOWN",
                }
            }
        }
    };
}

error_codes! {
    /// The request could not be parsed, or broke a size bound.
    MALFORMED = 1, "the request was malformed";
    /// The handshake id is unknown: never issued, already used, or expired.
    UNKNOWN_HANDSHAKE = 2, "the handshake expired or is unknown; start again";
    /// Login failed. Deliberately says nothing about why (wrong password, unknown user).
    AUTH_FAILED = 3, "authentication failed";
    /// Registration of a user name that is taken.
    USER_EXISTS = 4, "that user name is already registered";
    /// Too many failed logins; `retry_after_secs` says when to try again.
    ACCOUNT_LOCKED = 5, "the account is temporarily locked after too many failed logins";
    /// The session id is unknown (never existed, logged out, or forgotten by the server).
    UNKNOWN_SESSION = 6, "the session is unknown or was closed; log in again";
    /// The session passed its idle timeout or its absolute lifetime.
    SESSION_EXPIRED = 7, "the session expired; log in again";
    /// The sequence number was already used, or is older than the replay window.
    REPLAYED = 8, "the request was a replay and was refused";
    /// The sealed request did not authenticate under the session's key.
    BAD_SEAL = 9, "the sealed request did not authenticate";
    /// No secret of that name in this account.
    NOT_FOUND = 10, "no such secret";
    /// A secret of that name exists and the store did not ask to replace it.
    NAME_EXISTS = 11, "a secret of that name already exists";
    /// The version in a store is not the next one; `expected_version` says which is.
    VERSION_MISMATCH = 12, "the secret's version changed; seal again with the expected version";
    /// The server's storage is unavailable; the request did nothing and may be retried.
    STORAGE_UNAVAILABLE = 13, "the server's storage is unavailable; try again later";
    /// The server or this client is over a limit; `retry_after_secs` may say when to retry.
    SLOW_DOWN = 14, "the server is busy or a limit was reached; slow down";
    /// A limit of the account was reached (for example, the number of secrets).
    QUOTA = 15, "the account reached a limit";
    /// The server failed in a way that is not the client's fault.
    INTERNAL = 16, "internal server error";
    /// The operation needs a fresh proof of the password in this session (a reauth).
    REAUTH_REQUIRED = 17, "prove the password again first (reauth)";
    /// The account changed since the request was prepared (another password change or key
    /// rotation, or a rotation that did not stage every secret); start again.
    STALE = 18, "the account changed since this was prepared; start again";
    /// The key was not made exportable: its private key never leaves the server.
    NOT_EXPORTABLE = 19, "the key was not made exportable; its private key never leaves the server";
    /// An option the key's algorithm does not take (a hash or recovery id for Ed25519).
    NOT_FOR_ALGORITHM = 20, "that option does not apply to the key's algorithm";
    /// The server runs without a security module: it has no attestation to give.
    NO_ATTESTATION = 21, "this server runs outside an enclave and has no attestation";
}

impl std::fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

/// An error reply: a code and the few details a client needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub code: ErrorCode,
    /// For [`ErrorCode::ACCOUNT_LOCKED`] and [`ErrorCode::SLOW_DOWN`]: seconds to wait.
    pub retry_after_secs: Option<u64>,
    /// For [`ErrorCode::VERSION_MISMATCH`]: the version the store must carry.
    pub expected_version: Option<u64>,
    /// For [`ErrorCode::AUTH_FAILED`]: wrong guesses left before the account locks (the
    /// same count for a name that does not exist, whose guesses are counted alike).
    pub guesses_left: Option<u64>,
}

impl ErrorReply {
    /// A reply with a code and no details.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            retry_after_secs: None,
            expected_version: None,
            guesses_left: None,
        }
    }
}

impl From<ErrorCode> for ErrorReply {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

/// Bytes from a peer that are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the bound for this message.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The bytes do not decode as the expected message.
    #[error("malformed message")]
    Malformed,
    /// The message decoded, but from an encoding other than the canonical one.
    #[error("message is not canonically encoded")]
    NonCanonical,
    /// The message decoded but left bytes unread.
    #[error("message has {0} trailing bytes")]
    TrailingBytes(usize),
}

impl From<DecodeError> for ErrorCode {
    fn from(_: DecodeError) -> Self {
        Self::MALFORMED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_has_a_name_and_a_sentence() {
        for v in 1..=18u16 {
            let code = ErrorCode(v);
            assert_ne!(code.name(), "UNKNOWN", "code {v}");
            assert_ne!(code.description(), "unknown error", "code {v}");
        }
    }

    #[test]
    fn an_unknown_code_still_prints() {
        assert_eq!(ErrorCode(999).to_string(), "unknown error");
        assert_eq!(format!("{:?}", ErrorCode(999)), "UNKNOWN(999)");
    }
}
