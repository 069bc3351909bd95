//! The session channel: what a successful login turns into.
//!
//! Both sides derive from OPAQUE's `session_key` a session id and one AEAD key per
//! direction ([`keys`]). Every request is `(session_id, seq, ciphertext)` sealed with
//! ChaCha20-Poly1305 under the client-to-server key with a nonce made from `seq`; its
//! response is sealed under the server-to-client key with the same `seq` ([`channel`]). The
//! server accepts each `seq` at most once, within a sliding window ([`replay`]).
//!
//! Nothing here refers to a connection: a session is resumed on another connection, or on
//! another transport, by sending its next sealed request there.

pub mod channel;
pub mod keys;
pub mod replay;
pub mod vault;

pub use channel::{ChannelError, ClientChannel, ServerChannel};
pub use keys::{SessionId, SessionKeys};
pub use replay::{ReplayError, ReplayWindow};
pub use vault::SessionVault;
