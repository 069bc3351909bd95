//! The keyserver protocol: every message, parser, key derivation and state machine, with no
//! I/O.
//!
//! ```text
//!   local-client                                        keyserver
//!  ┌──────────────────────┐                           ┌──────────────────────┐
//!  │ handshake::*::start  │── envelope::Request ─────▶│ handshake::*::respond│
//!  │ handshake::*::finish │◀─ envelope::Response ─────│ ServerLoginState     │
//!  │ seal (secrets, keys) │                           │                      │
//!  │ session::ClientChannel ── SealedRequest(ops) ───▶│ session::ServerChannel
//!  │ audit_chain::verify  │◀─ SealedResponse(ops) ────│ + ReplayWindow       │
//!  └──────────────────────┘                           └──────────────────────┘
//! ```
//!
//! This crate never touches a socket, a file, a clock or the operating system's random
//! number generator: callers pass `rng` and times in. So every part can be unit-tested,
//! checked against vectors and fuzzed alone. Every decoder here has a size bound
//! ([`limits`]) and refuses trailing bytes ([`codec`]).
//!
//! The protocol is written down in `spec/protocol.md`; this crate follows it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attestation;
pub mod audit_chain;
pub mod checkpoint;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod limits;
pub mod names;
pub mod ops;
pub mod seal;
pub mod secret;
pub mod server_keys;
pub mod session;
pub mod signing;
pub mod suite;

pub use envelope::{HandshakeId, Request, Response, SealedRequest, SealedResponse};
pub use error::{DecodeError, ErrorCode, ErrorReply};
pub use names::{KeyName, NameTag, SecretName, UserName};
pub use ops::{OpRequest, OpResponse};
pub use secret::SecretBytes;

/// The ALPN protocol id of this protocol on every transport.
pub const ALPN: &[u8] = b"keyserver/5";

/// Re-exported so that the server can hold its OPAQUE setup without depending on
/// opaque-ke's generics.
pub type ServerSetup = opaque_ke::ServerSetup<suite::Suite>;
