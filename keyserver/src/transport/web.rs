//! WebSocket over TLS 1.3 (tokio-rustls, tokio-tungstenite), for browsers: they cannot open
//! QUIC streams or a raw TLS socket, but they can open `wss://HOST:PORT/v1`.
//!
//! One binary WebSocket message carries exactly one frame of the TCP transport
//! (`keyserver_protocol::frame`: length, request id, envelope), so a session moves freely
//! between QUIC, TCP and WebSocket, and answers come back in any order.
//!
//! What a browser connection must pass before a request is read:
//! - TLS 1.3 with ALPN `http/1.1` (or none), under the web listener's own certificate: a
//!   browser needs one it trusts, not the development CA's.
//! - An upgrade to path `/v1` whose `Origin` is on the allow-list (`web_origins`): another
//!   site's page must not be able to use a visitor's browser as a client. A request with no
//!   `Origin` is not from a page and is refused too; nothing else speaks this port.
//! - The connection limits shared with QUIC and TCP (overall, per address, bytes held).
//!
//! Then the same as TCP: at most `max_streams_per_connection` requests in flight (reading
//! stops at the limit), each message bounded by the frame's limit before it is parsed, the
//! same idle timeout, and the same per-address rate limits in [`Core`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use keyserver_protocol::{
    ErrorCode, Response,
    frame::{self, HEADER_LEN, MAX_PAYLOAD},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{Semaphore, mpsc},
};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response as UpgradeResponse},
    http::StatusCode,
    protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info_span};

use super::limits::{ByteBudget, ConnectionLimits};
use crate::service::Core;

/// The one path served.
pub const PATH: &str = "/v1";

/// How long a client may take over the TLS handshake and the WebSocket upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message: one frame of the largest request.
const MAX_WS_MESSAGE: usize = HEADER_LEN + MAX_PAYLOAD;

/// Limits and the allow-list of a web listener.
#[derive(Debug, Clone)]
pub struct WebLimits {
    /// Connections overall and per address, shared with QUIC and TCP.
    pub connections: Arc<ConnectionLimits>,
    /// Most requests in flight per connection.
    pub max_in_flight: usize,
    /// A connection with no complete message for this long is closed.
    pub idle_timeout: Duration,
    /// Origins (`scheme://host[:port]`, as browsers send them) allowed to upgrade.
    pub origins: Arc<[String]>,
}

/// What every connection of the web listener shares.
#[derive(Debug, Clone)]
pub struct Context {
    tls: Arc<rustls::ServerConfig>,
    core: Arc<Core>,
    limits: WebLimits,
    shutdown: CancellationToken,
    killer: Arc<super::ConnectionKiller>,
    tasks: TaskTracker,
}

impl Context {
    /// The context of connections served with `tls` (see [`server_config`]) by `core`.
    pub fn new(
        tls: Arc<rustls::ServerConfig>,
        core: Arc<Core>,
        limits: WebLimits,
        shutdown: CancellationToken,
        killer: Arc<super::ConnectionKiller>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            tls,
            core,
            limits,
            shutdown,
            killer,
            tasks,
        }
    }
}

/// The web listener's TLS configuration: TLS 1.3 only, ALPN `http/1.1` (a client offering
/// only other protocols, `keyserver/1` or `h2` alone, is refused; WebSocket over HTTP/2 is
/// not served).
pub fn server_config(
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, super::tls::TlsConfigError> {
    let mut config = super::tls::server_config(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts connections until `shutdown`.
pub async fn serve(listener: TcpListener, ctx: Context) {
    let shutdown = ctx.shutdown.clone();
    super::accept_loop(listener, &shutdown, |tcp, remote| accept(&ctx, tcp, remote)).await;
}

fn accept<S>(ctx: &Context, io: S, remote: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let permit = match ctx.limits.connections.admit(remote.ip()) {
        Ok(p) => p,
        Err(why) => {
            debug!(%remote, ?why, "connection refused");
            return;
        }
    };
    let kill = ctx.killer.token();
    let ctx = ctx.clone();
    ctx.tasks.clone().spawn(
        async move {
            let _counted = ctx.core.metrics().connection("web");
            let budget = permit.budget().clone();
            tokio::select! {
                () = connection(io, remote.ip(), &ctx, budget) => {},
                () = kill.cancelled() => debug!("connection dropped"),
            }
            drop(permit);
        }
        .instrument(info_span!("conn", %remote, transport = "web")),
    );
}

/// Whether an upgrade request may proceed: the path, then the origin.
#[allow(clippy::result_large_err)] // the callback's type is tungstenite's
fn check_upgrade(request: &Request, origins: &[String]) -> Result<(), ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_string()));
        *r.status_mut() = status;
        r
    };
    if request.uri().path() != PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "not found: the path is /v1\n",
        ));
    }
    let origin = request
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    match origin {
        Some(o) if origins.iter().any(|allowed| allowed == o) => Ok(()),
        _ => {
            debug!(?origin, "upgrade refused: origin not allowed");
            Err(refuse(
                StatusCode::FORBIDDEN,
                "forbidden: this origin may not use this server\n",
            ))
        }
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE))
}

async fn connection<S>(io: S, peer: std::net::IpAddr, ctx: &Context, budget: ByteBudget)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let origins = ctx.limits.origins.clone();
    let upgrade = async {
        let acceptor = tokio_rustls::TlsAcceptor::from(ctx.tls.clone());
        let tls = match acceptor.accept(io).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "TLS handshake failed");
                return None;
            }
        };
        #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
        let callback =
            |req: &Request, resp: UpgradeResponse| check_upgrade(req, &origins).map(|()| resp);
        match tokio_tungstenite::accept_hdr_async_with_config(tls, callback, Some(ws_config()))
            .await
        {
            Ok(ws) => Some(ws),
            Err(e) => {
                debug!(error = %e, "WebSocket upgrade failed");
                None
            }
        }
    };
    let Ok(Some(ws)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let limits = &ctx.limits;
    // Answers are queued to one writer; the queue is bounded by the in-flight limit. `None`
    // closes the connection with a policy-violation close frame.
    let (tx, mut rx) = mpsc::channel::<Option<Vec<u8>>>(limits.max_in_flight.max(1));
    // A peer that stops reading cannot hold the writer (and, through the queue, the
    // requests' byte reservations) longer than the idle timeout per write; the writer dies
    // with the connection, also when the connection is dropped (`drop_connections`).
    let idle = limits.idle_timeout;
    let write_task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let sent = |r: Result<Result<(), _>, _>| matches!(r, Ok(Ok(())));
        // `None` in the queue: the connection is refused for what it sent; everything
        // queued before it goes out first, then a policy-violation close.
        let mut closing = false;
        while let Some(next) = rx.recv().await {
            let mut batch = vec![next];
            // Every answer already queued goes out with one flush.
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            for item in batch {
                let Some(frame) = item else {
                    closing = true;
                    break;
                };
                if !sent(tokio::time::timeout(idle, sink.feed(Message::Binary(frame.into()))).await)
                {
                    return;
                }
            }
            if !sent(tokio::time::timeout(idle, sink.flush()).await) {
                return;
            }
            if closing {
                let close = CloseFrame {
                    code: CloseCode::Policy,
                    reason: "not a frame of this protocol".into(),
                };
                let _ = tokio::time::timeout(idle, sink.send(Message::Close(Some(close)))).await;
                return;
            }
        }
        let _ = tokio::time::timeout(idle, sink.close()).await;
    }));
    let (core, shutdown, tasks) = (&ctx.core, &ctx.shutdown, &ctx.tasks);
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    // Whether the last message was a request: the idle timer starts again once the next
    // read begins (time spent waiting for a slot or for bytes of budget is not idle), but
    // pings never start it again.
    let mut rearm = false;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        if std::mem::take(&mut rearm) {
            idle_timer.set(tokio::time::sleep(idle));
        }
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            // The writer gave up on a peer that does not read: so does the reader.
            () = tx.closed() => break,
            () = &mut idle_timer => {
                debug!("idle timeout");
                break;
            }
            m = stream.next() => m,
        };
        let data = match next {
            Some(Ok(Message::Binary(data))) => data,
            // tungstenite answers pings itself; pongs carry nothing for us. Neither counts
            // as traffic: only a request keeps a connection from idling out, as on TCP.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(Message::Text(_) | Message::Frame(_))) => {
                debug!("text message: only binary frames are spoken here");
                let _ = tx.send(None).await;
                break;
            }
            Some(Err(e)) => {
                debug!(error = %e, "connection ended");
                break;
            }
        };
        rearm = true;
        let Some(f) = frame::parse_exact(&data) else {
            // The id is unknown: answer once with id 0, as TCP does, and close.
            debug!(len = data.len(), "malformed frame");
            let answer = frame::encode(0, &Response::Error(ErrorCode::MALFORMED.into()).encode());
            let _ = tx.send(Some(answer)).await;
            let _ = tx.send(None).await;
            break;
        };
        drop(data);
        // Accounted like TCP's, though tungstenite has read the bytes already (bounded by
        // the message limit): at its budget, the connection is not read further.
        let reserved = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            r = budget.reserve(f.body.len() + frame::ID_LEN) => match r { Some(r) => r, None => break },
        };
        let (core, tx, f_id) = (core.clone(), tx.clone(), f.id);
        tasks.spawn(
            async move {
                let response = core.handle(&f.body, peer).await;
                drop(f);
                let _ = tx.send(Some(frame::encode(f_id, &response))).await;
                drop((permit, reserved));
            }
            .in_current_span(),
        );
    }
    drop(tx);
    let _ = write_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_exactly_one_frame() {
        let parse = frame::parse_exact;
        let f = frame::encode(7, b"body");
        assert_eq!(
            parse(&f),
            Some(frame::Frame {
                id: 7,
                body: b"body".to_vec()
            })
        );
        // Short, long, truncated header, two frames in one message, an oversized length.
        assert_eq!(parse(&f[..f.len() - 1]), None);
        let mut long = f.clone();
        long.push(0);
        assert_eq!(parse(&long), None);
        assert_eq!(parse(&f[..3]), None);
        assert_eq!(parse(&[f.clone(), f].concat()), None);
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&huge), None);
        assert_eq!(parse(&[0, 0, 0, 4, 1, 2, 3, 4]), None);
    }

    #[test]
    fn the_upgrade_needs_the_path_and_an_allowed_origin() {
        let origins: Vec<String> = vec!["https://app.example".into()];
        let req = |path: &str, origin: Option<&str>| {
            let mut b = Request::builder().uri(path);
            if let Some(o) = origin {
                b = b.header("Origin", o);
            }
            b.body(()).unwrap_or_default()
        };
        let status = |r: Result<(), ErrorResponse>| r.err().map(|e| e.status());
        assert_eq!(
            status(check_upgrade(
                &req("/v1", Some("https://app.example")),
                &origins
            )),
            None
        );
        assert_eq!(
            status(check_upgrade(
                &req("/v2", Some("https://app.example")),
                &origins
            )),
            Some(StatusCode::NOT_FOUND)
        );
        for bad in [
            None,
            Some("https://evil.example"),
            Some("https://app.example.evil"),
            Some("http://app.example"),
            Some("null"),
        ] {
            assert_eq!(
                status(check_upgrade(&req("/v1", bad), &origins)),
                Some(StatusCode::FORBIDDEN),
                "{bad:?}"
            );
        }
    }
}
