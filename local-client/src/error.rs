//! What can go wrong for a client, sorted by what the caller should do about it.

use keyserver_protocol::{ErrorCode, ErrorReply, handshake::HandshakeError};

/// A client operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server cannot be reached (address, network, timeout). Retry later.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The TLS handshake failed: certificate not signed by the given CA, wrong name, or no
    /// common protocol. Do not retry; check `--ca` and `--server-name`.
    #[error("the server's TLS certificate could not be verified or TLS failed: {0}")]
    Tls(String),
    /// The server's identity could not be established: it expected an attested enclave and
    /// the attestation was missing, invalid, expired, not bound to the TLS key of the
    /// connection, or for other PCRs. Nothing was sent but the attestation request. The
    /// message says which check failed.
    #[error("the server's identity could not be established: {0}")]
    NotAttested(String),
    /// Wrong user name or password. Deliberately no more precise than that: the guesses
    /// left are counted the same way for a name that does not exist.
    #[error("authentication failed: wrong user name or password{}", guesses_hint(*.guesses_left))]
    AuthFailed {
        /// Wrong guesses left before the account locks, if the server said.
        guesses_left: Option<u64>,
    },
    /// Too many failed logins; the account refuses logins for a while.
    #[error("the account is temporarily locked after too many failed logins{}", retry_hint(*.retry_after_secs))]
    Locked {
        /// Seconds to wait, if the server said.
        retry_after_secs: Option<u64>,
    },
    /// No secret of that name in this account.
    #[error("no such secret")]
    NotFound,
    /// The name holds a secret already; use replace to store a new version.
    #[error("a secret of that name already exists (use --replace to store a new version)")]
    NameExists,
    /// A concurrent writer changed the secret's version; seal again for `expected`.
    #[error("the secret's version changed during the store")]
    VersionMismatch {
        /// The version the server expects.
        expected: u64,
    },
    /// The user name is registered already.
    #[error("that user name is already registered")]
    UserExists,
    /// Sealed data from the server failed its integrity check: it was altered, swapped or
    /// rolled back. Nothing was output.
    #[error("integrity check failed: {0}")]
    Integrity(&'static str),
    /// The session ended (expired, logged out, or the server restarted). Log in again.
    #[error("the session ended; log in again")]
    SessionEnded,
    /// The server showed an older state than this client saw before (a database restored
    /// from a copy, events deleted, an older version of a secret put back), or another
    /// history than another device saw. Nothing was output. Contact the operator; `audit`
    /// shows the details.
    #[error("the server went back: {0}")]
    Rollback(crate::state::Rollback),
    /// The client's own state (the state directory) cannot be read or written.
    #[error("{0}")]
    State(String),
    /// The server refused the request for another reason.
    #[error("the server refused the request: {0}")]
    Server(ErrorCode),
    /// The server broke the protocol (an answer that does not fit the question).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The caller's input is invalid (a name too long, a secret too large…).
    #[error("{0}")]
    InvalidInput(String),
}

fn guesses_hint(left: Option<u64>) -> String {
    match left {
        Some(1) => " (1 guess left)".into(),
        Some(n) => format!(" ({n} guesses left)"),
        None => String::new(),
    }
}

fn retry_hint(secs: Option<u64>) -> String {
    secs.map(|s| format!("; try again in {s} s"))
        .unwrap_or_default()
}

impl From<ErrorReply> for ClientError {
    fn from(e: ErrorReply) -> Self {
        match e.code {
            ErrorCode::AUTH_FAILED => Self::AuthFailed {
                guesses_left: e.guesses_left,
            },
            ErrorCode::ACCOUNT_LOCKED => Self::Locked {
                retry_after_secs: e.retry_after_secs,
            },
            ErrorCode::NOT_FOUND => Self::NotFound,
            ErrorCode::NAME_EXISTS => Self::NameExists,
            ErrorCode::USER_EXISTS => Self::UserExists,
            ErrorCode::VERSION_MISMATCH => match e.expected_version {
                Some(expected) => Self::VersionMismatch { expected },
                None => Self::Server(e.code),
            },
            ErrorCode::UNKNOWN_SESSION | ErrorCode::SESSION_EXPIRED => Self::SessionEnded,
            code => Self::Server(code),
        }
    }
}

/// A handshake step that failed on this side.
pub(crate) fn handshake_error(e: HandshakeError) -> ClientError {
    match e {
        HandshakeError::AuthFailed => ClientError::AuthFailed { guesses_left: None },
        HandshakeError::Malformed => {
            ClientError::Protocol("malformed OPAQUE message from the server")
        }
        HandshakeError::BadKsfParams => {
            ClientError::InvalidInput("invalid key-stretching parameters".into())
        }
        HandshakeError::Internal => ClientError::Protocol("OPAQUE failure"),
    }
}
