//! Transports carry request and response envelopes and nothing else: they read one
//! request's bytes (bounded by `MAX_MESSAGE`), hand them to [`crate::service::Core`], and
//! write back the bytes it returns. No protocol decision is made here.

pub mod limits;
pub mod quic;
pub mod relayed;
pub mod tcp;
pub mod tls;
pub mod web;

use std::{net::SocketAddr, sync::RwLock, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Accepts TCP connections (Nagle off) and hands each to `accept`, until `shutdown`; a
/// failed accept (out of file descriptors, say) is retried after a pause. The accept loop
/// of TLS over TCP and of the web listener.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shutdown: &CancellationToken,
    mut accept: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let (tcp, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        accept(tcp, remote);
    }
}

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
