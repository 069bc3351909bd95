//! The keyserver client: register, log in, and run operations in a session.
//!
//! - [`Connection`] (`connection`): one server, over QUIC, TLS over TCP ([`ClientConfig`])
//!   or any [`Link`]; reconnects by itself. `register` and `login` are its methods, each in
//!   a module of that name.
//! - [`Session`] (`session`): a login's sealed channel; each operation (`store`,
//!   `retrieve`, `list`, `delete`, `audit`, `change_password`, `logout`) is a method in a
//!   module of its own under `ops/`, named as in the protocol and the server.
//! - [`ClientError`] (`error`): what went wrong, sorted by what the caller can do.
//!
//! ```no_run
//! # async fn demo() -> Result<(), local_client::ClientError> {
//! use local_client::{ClientConfig, Connection};
//! use keyserver_protocol::{SecretBytes, SecretName, UserName};
//!
//! let config = ClientConfig::new("127.0.0.1:7443", "keyserver-data/ca.pem".as_ref())?;
//! let conn = Connection::connect(&config).await?;
//! let alice = UserName::new("alice").map_err(|e| local_client::ClientError::InvalidInput(e.to_string()))?;
//! let password = SecretBytes::new(b"correct horse battery staple".to_vec());
//! conn.register(&alice, &password).await?;
//! let session = conn.login(&alice, &password).await?;
//! let name = SecretName::new("wallet").map_err(|e| local_client::ClientError::InvalidInput(e.to_string()))?;
//! session.store(&name, &SecretBytes::new(b"seed words".to_vec()), false).await?;
//! let (secret, _version) = session.retrieve(&name).await?;
//! assert_eq!(secret.expose_secret(), b"seed words");
//! # Ok(()) }
//! ```
//!
//! The password never leaves this process: OPAQUE sends only blinded values. Secrets are
//! sealed here under a storage key that the server holds only sealed under a key derived
//! from the password, so the server sees ciphertext only.

#[cfg(feature = "native")]
pub mod attestation;
#[cfg(feature = "native")]
mod config;
#[cfg(feature = "native")]
pub mod connect;
mod connection;
pub mod error;
pub mod link;
mod login;
mod ops;
mod register;
mod rt;
mod session;
pub mod state;
#[cfg(feature = "native")]
pub mod tcp;

#[cfg(feature = "native")]
pub use config::ClientConfig;
pub use connection::Connection;
pub use error::ClientError;
pub use link::{Connector, Link, LinkError};
pub use ops::{AuditReport, Listed, PathCheck};
pub use session::Session;
#[cfg(feature = "native")]
pub use state::StateDir;
pub use state::{AccountState, Rollback, ServerId};

/// Which transport a connection uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// QUIC: one stream per request (the default).
    #[default]
    Quic,
    /// TLS 1.3 over TCP: framed requests with ids.
    Tcp,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quic" => Ok(Self::Quic),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!(
                "unknown transport {other:?} (expected quic or tcp)"
            )),
        }
    }
}

/// How many times a request is retried on a new connection after losing its own.
pub const RECONNECT_ATTEMPTS: u32 = 5;
