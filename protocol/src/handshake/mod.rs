//! OPAQUE registration and login, both sides, as steps that consume their state so that
//! none can be skipped or run twice. The network is the caller's business.
//!
//! ```text
//! client                                   server
//! registration::start ── RegisterStart ──▶ registration::respond
//!                     ◀─ RegisterStarted ─
//! RegistrationFlow::finish ─ RegisterFinish ▶ registration::record   (stores it)
//!
//! login::start ───────── LoginStart ─────▶ login::respond            (counts a guess)
//!              ◀──────── LoginStarted ────
//! LoginFlow::finish ──── LoginFinish ────▶ ServerLoginState::finish  (session keys)
//!              ◀──────── LoggedIn ────────
//! ```

pub mod login;
pub mod registration;

/// A handshake step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// An OPAQUE message did not parse (wrong length, not a valid group element…).
    #[error("malformed OPAQUE message")]
    Malformed,
    /// Authentication failed. Says nothing more, so it is not an oracle: wrong password,
    /// unknown user and a tampered transcript all look the same.
    #[error("authentication failed")]
    AuthFailed,
    /// The key-stretching parameters are invalid.
    #[error("invalid key-stretching parameters")]
    BadKsfParams,
    /// opaque-ke failed for a reason that is no one's input (should not happen).
    #[error("internal OPAQUE error")]
    Internal,
}

impl From<opaque_ke::errors::ProtocolError> for HandshakeError {
    fn from(e: opaque_ke::errors::ProtocolError) -> Self {
        use opaque_ke::errors::ProtocolError as P;
        match e {
            P::InvalidLoginError | P::ReflectedValueError => Self::AuthFailed,
            P::SerializationError | P::SizeError { .. } => Self::Malformed,
            P::LibraryError(_) | P::Custom(_) => Self::Internal,
        }
    }
}
