//! Transports carry request and response envelopes and nothing else: they read one
//! request's bytes (bounded by `MAX_MESSAGE`), hand them to [`crate::service::Core`], and
//! write back the bytes it returns. No protocol decision is made here.

pub mod limits;
pub mod quic;
pub mod relayed;
pub mod tcp;
pub mod tls;
pub mod web;

use std::sync::RwLock;

use tokio_util::sync::CancellationToken;

/// Closes every open connection at once (each connection watches a child of the current
/// token); new connections get the next token.
#[derive(Debug, Default)]
pub struct ConnectionKiller(RwLock<CancellationToken>);

impl ConnectionKiller {
    /// A token the next connection watches.
    pub fn token(&self) -> CancellationToken {
        self.0.read().map(|t| t.child_token()).unwrap_or_default()
    }

    /// Closes every connection open now.
    pub fn kill_all(&self) {
        if let Ok(mut t) = self.0.write() {
            t.cancel();
            *t = CancellationToken::new();
        }
    }
}
