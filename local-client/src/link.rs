//! What carries a client's requests: a [`Link`] sends one encoded request and brings back
//! its encoded response; a [`Connector`] opens links, the first one and a new one whenever
//! the current one is lost. QUIC ([`crate::connect::QuicLink`]) and TLS over TCP
//! ([`crate::tcp::TcpLink`]) are the links this crate has; an application (or a test that
//! runs the server in the same process) may bring its own.

use std::sync::Arc;

use async_trait::async_trait;

use crate::ClientError;

/// A request on one link failed.
#[derive(Debug)]
pub enum LinkError {
    /// The connection is gone (or timed out); the request may or may not have reached the
    /// server. Reconnect and send the same bytes again.
    Lost(String),
    /// Anything else: do not retry.
    Fatal(ClientError),
}

/// One connection to a server.
#[async_trait]
pub trait Link: Send + Sync + std::fmt::Debug {
    /// Sends one encoded request and returns the encoded response.
    async fn call(&self, request: &[u8]) -> Result<Vec<u8>, LinkError>;

    /// Closes the connection; requests in flight fail with [`LinkError::Lost`].
    fn close(&self);

    /// The certificate (DER) the server presented in the TLS handshake, if the link knows
    /// it: what an attestation document must be bound to.
    fn peer_certificate(&self) -> Option<Vec<u8>> {
        None
    }

    /// Closes the connection and waits (briefly) until the server has been told, so that a
    /// process about to exit does not leave the server holding a dead connection.
    async fn close_and_wait(&self) {
        self.close();
    }
}

/// Opens links to one server.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// A new link, with the server authenticated.
    async fn connect(&self) -> Result<Arc<dyn Link>, ClientError>;
}
