#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! TLS versions and ALPN checked with openssl, and garbage on both transports while a normal
//! client keeps working.

use std::{process::Command, sync::Arc, time::Duration};

use keyserver_protocol::{ErrorCode, Response, SecretBytes, UserName, suite::KsfParams};
use keyserver_tests::Server;
use local_client::{ClientConfig, Connection, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn openssl(server: &Server, args: &[&str]) -> Option<(bool, String)> {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED: openssl is not installed; the TLS version and ALPN checks did not run");
        return None;
    }
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &server.tcp_addr, "-CAfile"])
        .arg(server.data_dir.join("ca.pem"))
        .args(["-servername", "localhost", "-verify_return_error"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((
        out.status.success() && text.contains("Verify return code: 0"),
        text,
    ))
}

#[test]
fn tls_1_2_is_refused_and_tls_1_3_with_our_alpn_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let Some((ok, text)) = openssl(&server, &["-tls1_2", "-alpn", "keyserver/5"]) else {
        return;
    };
    assert!(
        !ok && text.contains("alert protocol version"),
        "TLS 1.2 must fail: {text}"
    );
    let (ok, text) = openssl(&server, &["-tls1_3", "-alpn", "keyserver/5"]).unwrap();
    assert!(
        ok && text.contains("ALPN protocol: keyserver/5") && text.contains("TLSv1.3"),
        "{text}"
    );
    let (ok, text) = openssl(&server, &["-tls1_3", "-alpn", "http/1.1"]).unwrap();
    assert!(
        !ok && text.contains("no application protocol"),
        "wrong ALPN must fail: {text}"
    );
    let (ok, text) = openssl(&server, &["-tls1_3"]).unwrap();
    assert!(
        !ok && text.contains("no application protocol"),
        "no ALPN must fail: {text}"
    );
}

fn client_config(server: &Server, transport: Transport) -> ClientConfig {
    let mut c = ClientConfig::new(&server.addr, &server.data_dir.join("ca.pem")).unwrap();
    c.transport(transport).ksf(KsfParams::INSECURE_TEST_ONLY);
    c
}

async fn tls_stream(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = local_client::connect::load_ca(&server.data_dir.join("ca.pem")).unwrap();
    let tls = local_client::connect::tls_config(&ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(&server.tcp_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Reads until EOF or error (at most 10 s); returns what came.
async fn drain(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("server must close");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_both_transports_never_hurts_a_normal_client() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let conn = Connection::connect(&client_config(&server, Transport::Quic))
        .await
        .unwrap();
    let alice = UserName::new("alice").unwrap();
    let pw = SecretBytes::new(b"pw".to_vec());
    conn.register(&alice, &pw).await.unwrap();
    let session = conn.login(&alice, &pw).await.unwrap();
    let name = keyserver_protocol::SecretName::new("canary").unwrap();
    session
        .store(&name, &SecretBytes::new(b"still here".to_vec()), false)
        .await
        .unwrap();
    let check = || async {
        assert_eq!(
            session.retrieve(&name).await.unwrap().0.expose_secret(),
            b"still here"
        );
    };

    // TCP: a length prefix of 4 GiB gets an error frame and a closed connection.
    let mut s = tls_stream(&server).await;
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    s.flush().await.unwrap();
    let got = drain(&mut s).await;
    let (frames, _) = keyserver_protocol::frame::parse_all(&got).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(
        matches!(Response::decode(&frames[0].body).unwrap(), Response::Error(e) if e.code == ErrorCode::MALFORMED)
    );
    check().await;

    // TCP: a well-framed request of garbage gets MALFORMED under its id; the connection lives.
    let mut s = tls_stream(&server).await;
    s.write_all(&keyserver_protocol::frame::encode(77, b"\xff\xfe garbage"))
        .await
        .unwrap();
    s.flush().await.unwrap();
    let mut buf = vec![0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    let len = keyserver_protocol::frame::payload_len(buf.clone().try_into().unwrap()).unwrap();
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    let f = keyserver_protocol::frame::parse_payload(payload).unwrap();
    assert_eq!(f.id, 77);
    assert!(
        matches!(Response::decode(&f.body).unwrap(), Response::Error(e) if e.code == ErrorCode::MALFORMED)
    );
    // …then a truncated frame and a hang-up: the server just closes.
    s.write_all(&keyserver_protocol::frame::encode(78, b"abcdef")[..7])
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    drain(&mut s).await;
    check().await;

    // TCP: raw bytes that are not TLS at all.
    let mut raw = tokio::net::TcpStream::connect(&server.tcp_addr)
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink))
        .await
        .expect("closed");
    check().await;

    // QUIC: garbage streams, an oversized stream, and a stream reset half way.
    let ca = local_client::connect::load_ca(&server.data_dir.join("ca.pem")).unwrap();
    let link = local_client::connect::QuicLink::connect(
        server.addr.parse().unwrap(),
        "localhost",
        local_client::connect::tls_config(&ca).unwrap(),
    )
    .await
    .unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\x05\xff\xff\xff\xff\xff",
        &[0xAB; 1000][..],
    ] {
        let resp = link.call(junk).await.unwrap();
        assert!(
            matches!(Response::decode(&resp).unwrap(), Response::Error(e) if e.code == ErrorCode::MALFORMED),
            "{junk:?}"
        );
    }
    let big = vec![0u8; keyserver_protocol::limits::MAX_MESSAGE + 1];
    let resp = link.call(&big).await;
    if let Ok(r) = resp {
        assert!(
            matches!(Response::decode(&r).unwrap(), Response::Error(e) if e.code == ErrorCode::MALFORMED)
        );
    }
    check().await;

    // Concurrent garbage from many connections while the normal client works.
    let mut junk_tasks = Vec::new();
    for i in 0..20u8 {
        let addr = server.tcp_addr.clone();
        junk_tasks.push(tokio::spawn(async move {
            if let Ok(mut raw) = tokio::net::TcpStream::connect(&addr).await {
                let _ = raw.write_all(&[i; 300]).await;
            }
        }));
    }
    for _ in 0..10 {
        check().await;
    }
    for t in junk_tasks {
        t.await.unwrap();
    }
    check().await;
}

/// One address cannot take every connection slot: past `max_connections_per_address`
/// (QUIC and TCP counted together) its connections are refused, while another address is
/// served, and a slot comes back when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_capped_and_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    keyserver_tests::init_data_dir(&data);
    std::fs::write(
        data.join("keyserver.toml"),
        "max_connections_per_address = 3\n",
    )
    .unwrap();
    let server = Server::start(&data, &[]);
    let ca = local_client::connect::load_ca(&data.join("ca.pem")).unwrap();
    let tls = || local_client::connect::tls_config(&ca).unwrap();
    let quic_from = |ip: &str| {
        let bind: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
        let (addr, tls) = (server.addr.parse().unwrap(), tls());
        async move { local_client::connect::QuicLink::connect_from(bind, addr, "localhost", tls).await }
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(quic_from("127.0.0.1").await.unwrap());
    }
    let tcp =
        local_client::tcp::TcpLink::connect(server.tcp_addr.parse().unwrap(), "localhost", tls())
            .await
            .unwrap();
    // The fourth, on either transport, is refused.
    assert!(quic_from("127.0.0.1").await.is_err());
    assert!(
        local_client::tcp::TcpLink::connect(server.tcp_addr.parse().unwrap(), "localhost", tls())
            .await
            .is_err()
    );
    // Another address is served.
    let other = quic_from("127.0.0.2").await.unwrap();
    let req = keyserver_protocol::Request::LoginAbort {
        handshake: keyserver_protocol::HandshakeId([0; 16]),
    };
    assert!(other.call(&req.encode()).await.is_ok());
    // A closed connection gives its slot back.
    local_client::Link::close(&tcp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = quic_from("127.0.0.1").await.unwrap();
    assert!(again.call(&req.encode()).await.is_ok());
    drop(held);
}

/// Over TCP, rustls finishes a handshake in which the server chose no ALPN protocol: the
/// client checks that the server speaks keyserver/1 and refuses one that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_client_refuses_a_server_that_did_not_agree_on_the_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    keyserver::pki::create_dev_pki(tmp.path()).unwrap();
    let (certs, key) = keyserver::pki::load_server_identity(tmp.path()).unwrap();
    // A TLS 1.3 server with the right certificate and no ALPN at all.
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut s) = acceptor.accept(tcp).await {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
            }
        }
    });
    let ca = local_client::connect::load_ca(&tmp.path().join("ca.pem")).unwrap();
    let tls = local_client::connect::tls_config(&ca).unwrap();
    let r = local_client::tcp::TcpLink::connect(addr, "localhost", tls).await;
    assert!(
        matches!(&r, Err(local_client::ClientError::Tls(m)) if m.contains("ALPN")),
        "{r:?}"
    );
}
