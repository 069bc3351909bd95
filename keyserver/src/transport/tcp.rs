//! TLS 1.3 over TCP (tokio-rustls): frames tagged with a request id (see
//! `keyserver_protocol::frame`), so many requests are in flight on one connection and
//! their answers go back as soon as each is ready, in any order.
//!
//! Per connection, one task reads frames and spawns one task per request, at most
//! `max_streams_per_connection` at once: when that many are running, the reader stops
//! reading, which is back pressure on the client through TCP flow control. One task writes
//! the answers.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use keyserver_protocol::{
    ALPN, ErrorCode, Response,
    frame::{self, FrameError, HEADER_LEN},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter},
    net::TcpListener,
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{LazyConfigAcceptor, server::TlsStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info_span};

use super::limits::{ByteBudget, ConnectionLimits};
use crate::service::Core;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS alert record, sent in the clear before any key exists: fatal (2),
/// `no_application_protocol` (120). rustls accepts a ClientHello without ALPN for TLS over
/// TCP; this protocol requires it, like QUIC does.
const NO_APPLICATION_PROTOCOL_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x78];

/// Limits for TCP connections.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Connections overall and per address, shared with QUIC.
    pub connections: Arc<ConnectionLimits>,
    /// Most requests in flight per connection.
    pub max_in_flight: usize,
    /// A connection with no complete frame for this long is closed.
    pub idle_timeout: Duration,
}

/// Accepts connections until `shutdown`; `killer` closes the connections open at a time.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    core: Arc<Core>,
    limits: TcpLimits,
    shutdown: CancellationToken,
    killer: Arc<super::ConnectionKiller>,
    tasks: TaskTracker,
) {
    let ctx = Context::new(tls, core, limits, shutdown.clone(), killer, tasks);
    serve_with(listener, ctx, shutdown).await;
}

/// Accepts connections into `ctx` until `shutdown`.
pub async fn serve_with(listener: TcpListener, ctx: Context, shutdown: CancellationToken) {
    super::accept_loop(listener, &shutdown, |tcp, remote| ctx.accept(tcp, remote)).await;
}

/// What every connection of a listener shares.
#[derive(Debug, Clone)]
pub struct Context {
    tls: Arc<rustls::ServerConfig>,
    core: Arc<Core>,
    connections: Arc<ConnectionLimits>,
    limits: Limits,
    shutdown: CancellationToken,
    killer: Arc<super::ConnectionKiller>,
    tasks: TaskTracker,
}

impl Context {
    /// The context of connections served with `tls` by `core` under `limits`.
    pub fn new(
        tls: Arc<rustls::ServerConfig>,
        core: Arc<Core>,
        limits: TcpLimits,
        shutdown: CancellationToken,
        killer: Arc<super::ConnectionKiller>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            tls,
            core,
            connections: limits.connections.clone(),
            limits: Limits {
                max_in_flight: limits.max_in_flight,
                idle_timeout: limits.idle_timeout,
            },
            shutdown,
            killer,
            tasks,
        }
    }

    /// Serves one connection from `remote` (a TCP connection, or one relayed to the enclave
    /// over a stream), if the connection limits admit it.
    pub fn accept<S>(&self, io: S, remote: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let permit = match self.connections.admit(remote.ip()) {
            Ok(p) => p,
            Err(why) => {
                debug!(%remote, ?why, "connection refused");
                return;
            }
        };
        let kill = self.killer.token();
        let ctx = self.clone();
        self.tasks.spawn(
            async move {
                let _counted = ctx.core.metrics().connection("tcp");
                let budget = permit.budget().clone();
                tokio::select! {
                    () = connection(io, remote.ip(), &ctx, budget) => {},
                    () = kill.cancelled() => debug!("connection dropped"),
                }
                drop(permit);
            }
            .instrument(info_span!("conn", %remote, transport = "tcp")),
        );
    }
}

async fn handshake<S>(tcp: S, tls: Arc<rustls::ServerConfig>) -> Option<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let mut start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(error = %e, "bad ClientHello");
            return None;
        }
        Err(_) => return None,
    };
    let offers_ours = start
        .client_hello()
        .alpn()
        .is_some_and(|mut a| a.any(|p| p == ALPN));
    if !offers_ours {
        // A client offering other protocols gets the same alert from rustls; one offering
        // none would be let through by rustls, so answer it here.
        debug!("refused: client does not offer our ALPN");
        let _ = start.io.write_all(&NO_APPLICATION_PROTOCOL_ALERT).await;
        let _ = start.io.shutdown().await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(tls)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// The per-connection part of [`TcpLimits`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_in_flight: usize,
    idle_timeout: Duration,
}

async fn connection<S>(io: S, peer: std::net::IpAddr, ctx: &Context, budget: ByteBudget)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (core, limits, shutdown, tasks) = (&ctx.core, ctx.limits, &ctx.shutdown, &ctx.tasks);
    let Some(stream) = handshake(io, ctx.tls.clone()).await else {
        return;
    };
    let (mut reader, writer) = tokio::io::split(stream);
    // Answers are queued to one writer; the queue is bounded by the in-flight limit.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(limits.max_in_flight.max(1));
    // A peer that stops reading cannot hold the writer (and, through the queue, the
    // requests' byte reservations) longer than the idle timeout per write; the writer dies
    // with the connection, also when the connection is dropped (`drop_connections`).
    let idle = limits.idle_timeout;
    let write_task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let mut w = BufWriter::new(writer);
        let sent = |r: Result<std::io::Result<()>, _>| matches!(r, Ok(Ok(())));
        while let Some(frame) = rx.recv().await {
            if !sent(tokio::time::timeout(idle, w.write_all(&frame)).await) {
                return;
            }
            // Write every answer already queued before flushing: one TLS record and one
            // syscall for a burst of answers.
            while let Ok(more) = rx.try_recv() {
                if !sent(tokio::time::timeout(idle, w.write_all(&more)).await) {
                    return;
                }
            }
            if !sent(tokio::time::timeout(idle, w.flush()).await) {
                return;
            }
        }
        let _ = tokio::time::timeout(idle, w.shutdown()).await;
    }));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            // The writer gave up on a peer that does not read: so does the reader.
            () = tx.closed() => break,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut header = [0u8; HEADER_LEN];
        let read = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            r = tokio::time::timeout(limits.idle_timeout, reader.read_exact(&mut header)) => r,
        };
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "connection ended");
                break;
            }
            Err(_) => {
                debug!("idle timeout");
                break;
            }
        }
        let len = match frame::payload_len(header) {
            Ok(len) => len,
            Err(e) => {
                // The stream has lost its framing: answer once (id 0, the id is unknown)
                // and close.
                debug!(error = %e, "bad frame header");
                let _ = tx
                    .send(frame::encode(
                        0,
                        &Response::Error(ErrorCode::MALFORMED.into()).encode(),
                    ))
                    .await;
                break;
            }
        };
        // The frame's bytes are reserved before they are allocated: at its budget, the
        // connection is not read further until answers go out.
        let reserved = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            r = budget.reserve(len) => match r { Some(r) => r, None => break },
        };
        let mut payload = vec![0u8; len];
        match tokio::time::timeout(limits.idle_timeout, reader.read_exact(&mut payload)).await {
            Ok(Ok(_)) => {}
            _ => {
                debug!("truncated frame");
                break;
            }
        }
        let f = match frame::parse_payload(payload) {
            Ok(f) => f,
            Err(FrameError::TooLarge(_) | FrameError::TooShort(_)) => break,
        };
        let (core, tx, f_id) = (core.clone(), tx.clone(), f.id);
        tasks.spawn(
            async move {
                let response = core.handle(&f.body, peer).await;
                drop(f);
                let _ = tx.send(frame::encode(f_id, &response)).await;
                drop((permit, reserved));
            }
            .in_current_span(),
        );
    }
    drop(tx);
    let _ = write_task.await;
}

/// Binds the TCP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
