#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a panic is how a test fails"
)]
//! The web listener (WebSocket over TLS for browsers) of a real server, in-process on
//! loopback: what it refuses, and that a session moves between it, QUIC and TCP.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use keyserver::{Server, clock::SystemClock, config::Config, server_setup::SetupKeySource};
use keyserver_protocol::{ErrorCode, Response, SecretBytes, SecretName, UserName, frame};
use local_client::{ClientError, Connection, Connector, Link, LinkError};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message, client::IntoClientRequest, protocol::frame::coding::CloseCode,
    },
};

const ORIGIN: &str = "https://app.example";

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

struct Fixture {
    _tmp: tempfile::TempDir,
    server: Server,
    ca: Vec<CertificateDer<'static>>,
}

async fn start() -> Fixture {
    start_with(Config::default()).await
}

async fn start_with(config: Config) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        web_listen: Some("127.0.0.1:0".parse().unwrap()),
        web_origins: vec![ORIGIN.into(), "http://127.0.0.1:8080".into()],
        ..config
    };
    let server = Server::start_with(
        data.clone(),
        config,
        SetupKeySource::default_for(&data),
        Arc::new(SystemClock::default()),
    )
    .await
    .unwrap();
    let ca = local_client::connect::load_ca(&data.join("ca.pem")).unwrap();
    Fixture {
        _tmp: tmp,
        server,
        ca,
    }
}

fn tls(ca: &[CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut config = local_client::connect::tls_config(ca).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_stream(
    addr: SocketAddr,
    ca: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls(ca, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn upgrade(
    addr: SocketAddr,
    ca: &[CertificateDer<'static>],
    path: &str,
    origin: Option<&str>,
) -> Result<Ws, WsError> {
    let stream = tls_stream(addr, ca, &[b"http/1.1"]).await?;
    let mut req = format!("wss://localhost{path}").into_client_request()?;
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    Ok(ws)
}

/// The next binary message's frame, or `None` once the server closed.
async fn next_frame(ws: &mut Ws) -> Option<frame::Frame> {
    loop {
        match ws.next().await? {
            Ok(Message::Binary(b)) => {
                let (mut frames, used) = frame::parse_all(&b).unwrap();
                assert_eq!((frames.len(), used), (1, b.len()), "one frame per message");
                return frames.pop();
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads until the server closes; the code of its close frame, if it sent one.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.next().await? {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Waits (2 s at most) until the server holds no connection.
async fn slots_given_back(server: &Server) {
    for _ in 0..200 {
        if server.connections().0 == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.connections().0, 0, "connections still held");
}

fn status(e: &WsError) -> Option<u16> {
    match e {
        WsError::Http(r) => Some(r.status().as_u16()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_port_refuses_other_origins_paths_protocols_and_malformed_messages() {
    let f = start().await;
    let web = f.server.web_addr().unwrap();
    assert!(
        f.server.listening_line().contains(&format!(" web={web}")),
        "{}",
        f.server.listening_line()
    );

    // Another site's page, no page at all, an origin that only starts like ours, another path.
    for (path, origin, want) in [
        ("/v1", Some("https://evil.example"), 403),
        ("/v1", None, 403),
        ("/v1", Some("https://app.example.evil.example"), 403),
        ("/", Some(ORIGIN), 404),
        ("/v1/x", Some(ORIGIN), 404),
    ] {
        let e = upgrade(web, &f.ca, path, origin).await.err().unwrap();
        assert_eq!(status(&e), Some(want), "{path} {origin:?}: {e}");
    }

    // The web port speaks HTTP/1.1 only; the main port still speaks keyserver/1 only.
    let ours = keyserver_protocol::ALPN;
    assert!(tls_stream(web, &f.ca, &[ours]).await.is_err());
    assert!(tls_stream(web, &f.ca, &[b"h2"]).await.is_err());
    assert!(
        tls_stream(f.server.tcp_addr(), &f.ca, &[b"http/1.1"])
            .await
            .is_err()
    );

    // A well-formed frame of a garbage envelope: answered under its id, connection kept.
    let mut ws = upgrade(web, &f.ca, "/v1", Some(ORIGIN)).await.unwrap();
    for id in [42, 7] {
        ws.send(Message::Binary(
            frame::encode(id, b"\xffnot an envelope").into(),
        ))
        .await
        .unwrap();
        let answer = next_frame(&mut ws).await.unwrap();
        assert_eq!(answer.id, id);
        assert!(matches!(
            Response::decode(&answer.body),
            Ok(Response::Error(_))
        ));
    }
    // A message that is not one frame: answered MALFORMED under id 0, then closed.
    let mut bad = frame::encode(9, b"x");
    bad.push(0);
    ws.send(Message::Binary(bad.into())).await.unwrap();
    let answer = next_frame(&mut ws).await.unwrap();
    assert_eq!(answer.id, 0);
    match Response::decode(&answer.body) {
        Ok(Response::Error(e)) => assert_eq!(e.code, ErrorCode::MALFORMED),
        other => panic!("{other:?}"),
    }
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Policy));

    // Text is not spoken here; a message over the frame limit is refused before it is kept.
    // Both close at once, not at the idle timeout (60 s).
    let soon = Duration::from_secs(5);
    let mut ws = upgrade(web, &f.ca, "/v1", Some(ORIGIN)).await.unwrap();
    ws.send(Message::Text("hello".into())).await.unwrap();
    let code = tokio::time::timeout(soon, close_code(&mut ws))
        .await
        .unwrap();
    assert_eq!(code, Some(CloseCode::Policy));
    let mut ws = upgrade(web, &f.ca, "/v1", Some(ORIGIN)).await.unwrap();
    let huge = vec![0u8; frame::HEADER_LEN + frame::MAX_PAYLOAD + 1];
    let _ = ws.send(Message::Binary(huge.into())).await;
    assert!(
        tokio::time::timeout(soon, next_frame(&mut ws))
            .await
            .unwrap()
            .is_none()
    );
    // Every refused or closed connection gave its slot back.
    slots_given_back(&f.server).await;
    f.server.shutdown().await;
}

/// Pings are answered but are not traffic: a connection that only pings idles out, as a
/// TCP connection sending nothing does, and gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_only_pings_idles_out() {
    let f = start_with(Config {
        connection_idle_timeout_secs: 1,
        ..Config::default()
    })
    .await;
    let mut ws = upgrade(f.server.web_addr().unwrap(), &f.ca, "/v1", Some(ORIGIN))
        .await
        .unwrap();
    let pinging = async {
        loop {
            if ws.send(Message::Ping(vec![1, 2, 3].into())).await.is_err() {
                return;
            }
            let read = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
            if let Ok(None | Some(Err(_) | Ok(Message::Close(_)))) = read {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), pinging)
        .await
        .expect("a connection that only pinged was kept open past its idle timeout");
    slots_given_back(&f.server).await;
    f.server.shutdown().await;
}

/// A link over WebSocket, one request at a time (what the browser's link does, natively).
#[derive(Debug)]
struct WsLink(tokio::sync::Mutex<Ws>, std::sync::atomic::AtomicU64);

#[async_trait]
impl Link for WsLink {
    async fn call(&self, request: &[u8]) -> Result<Vec<u8>, LinkError> {
        let id = self.1.fetch_add(1, Ordering::Relaxed);
        let mut ws = self.0.lock().await;
        ws.send(Message::Binary(frame::encode(id, request).into()))
            .await
            .map_err(|e| LinkError::Lost(e.to_string()))?;
        match next_frame(&mut ws).await {
            Some(f) if f.id == id => Ok(f.body),
            Some(_) => Err(LinkError::Lost("answer under another id".into())),
            None => Err(LinkError::Lost("closed".into())),
        }
    }

    fn close(&self) {}
}

/// Opens WebSocket, QUIC and TCP links in turn: every reconnection changes transport.
#[derive(Debug)]
struct Rotating {
    web: SocketAddr,
    quic: SocketAddr,
    ca: Vec<CertificateDer<'static>>,
    opened: AtomicUsize,
}

#[async_trait]
impl Connector for Rotating {
    async fn connect(&self) -> Result<Arc<dyn Link>, ClientError> {
        let tls = || local_client::connect::tls_config(&self.ca);
        Ok(match self.opened.fetch_add(1, Ordering::Relaxed) % 3 {
            0 => {
                let ws = upgrade(self.web, &self.ca, "/v1", Some(ORIGIN))
                    .await
                    .map_err(|e| ClientError::Unreachable(e.to_string()))?;
                Arc::new(WsLink(tokio::sync::Mutex::new(ws), 1.into()))
            }
            1 => Arc::new(
                local_client::connect::QuicLink::connect(self.quic, "localhost", tls()?).await?,
            ),
            _ => {
                Arc::new(local_client::tcp::TcpLink::connect(self.quic, "localhost", tls()?).await?)
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_over_websocket_carries_on_over_quic_and_tcp() {
    let f = start().await;
    let rotating = Arc::new(Rotating {
        web: f.server.web_addr().unwrap(),
        quic: f.server.quic_addr(),
        ca: f.ca.clone(),
        opened: AtomicUsize::new(0),
    });
    let conn = Connection::with_connector(
        rotating.clone(),
        keyserver_protocol::suite::KsfParams::INSECURE_TEST_ONLY,
    )
    .await
    .unwrap();
    let alice = UserName::new("alice").unwrap();
    let password = SecretBytes::new(b"correct horse battery staple".to_vec());
    conn.register(&alice, &password).await.unwrap();
    let session = conn.login(&alice, &password).await.unwrap();
    let name = SecretName::new("wallet").unwrap();
    let secret = SecretBytes::new(b"seed words".to_vec());
    session.store(&name, &secret, false).await.unwrap();
    assert_eq!(
        rotating.opened.load(Ordering::Relaxed),
        1,
        "all over WebSocket"
    );
    for transport in ["QUIC", "TCP", "WebSocket again"] {
        f.server.drop_connections();
        let (back, _) = session.retrieve(&name).await.unwrap();
        assert_eq!(back.expose_secret(), b"seed words", "over {transport}");
    }
    assert_eq!(rotating.opened.load(Ordering::Relaxed), 4);
    f.server.shutdown().await;
}
