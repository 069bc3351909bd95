//! QUIC (quinn): one bidirectional stream per request, so a slow request never blocks
//! another. The client writes the request and finishes its side; the server answers and
//! finishes its side.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use keyserver_protocol::{ErrorCode, Response, limits::MAX_MESSAGE};
use quinn::{Endpoint, Incoming, VarInt, crypto::rustls::QuicServerConfig};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info_span, warn};

use super::limits::{
    ByteBudget, ConnectionLimits, QUIC_RECEIVE_WINDOW, QUIC_STREAM_WINDOW, Reserved,
};
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
        // What a peer may send before the server reads it: one whole request per stream,
        // a bounded amount per connection (see `limits`).
        .stream_receive_window(VarInt::from_u32(QUIC_STREAM_WINDOW))
        .receive_window(VarInt::from_u32(QUIC_RECEIVE_WINDOW))
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
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    killer: Arc<super::ConnectionKiller>,
    tasks: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        let peer = incoming.remote_address().ip();
        if !incoming.remote_address_validated() && limits.under_pressure(peer) {
            // The source address could be forged: the client must answer a Retry first,
            // which proves that it receives there, before it takes a slot.
            debug!(%peer, "asking for address validation");
            limits.validation_asked();
            if let Err(e) = incoming.retry() {
                e.into_incoming().refuse();
            }
            continue;
        }
        let permit = match limits.admit(peer) {
            Ok(p) => p,
            Err(why) => {
                debug!(?why, "connection refused");
                incoming.refuse();
                continue;
            }
        };
        let (core, shutdown, t, kill) = (
            core.clone(),
            shutdown.clone(),
            tasks.clone(),
            killer.token(),
        );
        tasks.spawn(async move {
            let counted = core.metrics().connection("quic");
            let budget = permit.budget().clone();
            connection(incoming, core, budget, shutdown, kill, t).await;
            drop(permit);
            drop(counted);
        });
    }
}

async fn connection(
    incoming: Incoming,
    core: Arc<Core>,
    budget: ByteBudget,
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
            let (core, budget) = (core.clone(), budget.clone());
            tasks.spawn(stream(send, recv, core, budget, remote.ip()).in_current_span());
        }
    }
    .instrument(span)
    .await;
}

/// What reading a request from a stream gave.
enum Read {
    /// The whole request, and the bytes it holds of the connection's budget.
    Request(Vec<u8>, Reserved),
    /// More than a request may be.
    TooLong,
    /// The stream failed.
    Failed,
}

/// Reads one request, chunk by chunk, each reserved from the connection's budget before
/// the next is read.
async fn read_request(recv: &mut quinn::RecvStream, budget: &ByteBudget) -> Read {
    let mut buf = Vec::new();
    let mut reserved = Reserved::default();
    loop {
        match recv.read_chunk(MAX_MESSAGE + 1, true).await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.bytes.len() > MAX_MESSAGE {
                    return Read::TooLong;
                }
                let Some(r) = budget.reserve(chunk.bytes.len()).await else {
                    return Read::TooLong;
                };
                reserved.merge(r);
                buf.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => return Read::Request(buf, reserved),
            Err(e) => {
                debug!(error = %e, "stream read failed");
                return Read::Failed;
            }
        }
    }
}

async fn stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    core: Arc<Core>,
    budget: ByteBudget,
    peer: std::net::IpAddr,
) {
    let (response, _reserved) = match read_request(&mut recv, &budget).await {
        Read::Request(req, reserved) => (core.handle(&req, peer).await, reserved),
        Read::TooLong => {
            let _ = recv.stop(VarInt::from_u32(1));
            (
                Response::Error(ErrorCode::MALFORMED.into()).encode(),
                Reserved::default(),
            )
        }
        Read::Failed => return,
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
