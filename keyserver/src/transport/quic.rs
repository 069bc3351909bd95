//! QUIC (quinn): one bidirectional stream per request, so a slow request never blocks
//! another. The client writes the request and finishes its side; the server answers and
//! finishes its side.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use keyserver_protocol::{ErrorCode, Response, limits::MAX_MESSAGE};
use quinn::{Endpoint, Incoming, VarInt, crypto::rustls::QuicServerConfig};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info_span, warn};

use crate::{config::Config, service::Core, transport::tls::TlsConfigError};

/// Builds the QUIC endpoint configuration from the TLS configuration and limits.
pub fn server_config(
    tls: rustls::ServerConfig,
    config: &Config,
) -> Result<quinn::ServerConfig, TlsConfigError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsConfigError(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(
            u32::try_from(config.max_streams_per_connection).unwrap_or(u32::MAX),
        ))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            Duration::from_secs(config.connection_idle_timeout_secs)
                .try_into()
                .map_err(|_| TlsConfigError("idle timeout out of range".into()))?,
        ));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// Binds a QUIC endpoint.
pub fn bind(addr: SocketAddr, config: quinn::ServerConfig) -> std::io::Result<Endpoint> {
    Endpoint::server(config, addr)
}

/// Accepts connections until `shutdown`; every request task is tracked by `tasks` so that
/// shutdown can wait for requests in flight.
pub async fn serve(
    endpoint: Endpoint,
    core: Arc<Core>,
    max_connections: usize,
    shutdown: CancellationToken,
    killer: Arc<super::ConnectionKiller>,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!("connection refused: at max_connections");
            incoming.refuse();
            continue;
        };
        let (core, shutdown, t, kill) = (
            core.clone(),
            shutdown.clone(),
            tasks.clone(),
            killer.token(),
        );
        tasks.spawn(async move {
            connection(incoming, core, shutdown, kill, t).await;
            drop(permit);
        });
    }
}

async fn connection(
    incoming: Incoming,
    core: Arc<Core>,
    shutdown: CancellationToken,
    kill: CancellationToken,
    tasks: TaskTracker,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    let span = info_span!("conn", %remote, transport = "quic");
    async {
        loop {
            let (send, recv) = tokio::select! {
                () = shutdown.cancelled() => break,
                () = kill.cancelled() => {
                    conn.close(VarInt::from_u32(0), b"connection dropped");
                    return;
                }
                s = conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(error = %e, "connection ended");
                        return;
                    }
                },
            };
            let core = core.clone();
            tasks.spawn(stream(send, recv, core, remote.ip()).in_current_span());
        }
    }
    .instrument(span)
    .await;
}

async fn stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    core: Arc<Core>,
    peer: std::net::IpAddr,
) {
    let response = match recv.read_to_end(MAX_MESSAGE).await {
        Ok(req) => core.handle(&req, peer).await,
        Err(quinn::ReadToEndError::TooLong) => {
            let _ = recv.stop(VarInt::from_u32(1));
            Response::Error(ErrorCode::MALFORMED.into()).encode()
        }
        Err(e) => {
            debug!(error = %e, "stream read failed");
            return;
        }
    };
    if let Err(e) = send.write_all(&response).await {
        debug!(error = %e, "stream write failed");
        return;
    }
    if let Err(e) = send.finish() {
        warn!(error = %e, "stream finish failed");
    }
    // Dropping a finished stream does not abort it: quinn goes on delivering the response
    // while the connection lives. Waiting here for the peer's acknowledgement would keep
    // this task (and a graceful shutdown) waiting on clients that vanished.
}
