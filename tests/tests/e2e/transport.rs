#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! Sessions above transports: TLS over TCP beside QUIC, many sessions on one connection,
//! sessions moving between connections and surviving dropped ones, replays, and hostile
//! bytes.

use std::{sync::Arc, time::Duration};

use keyserver_protocol::{
    OpRequest, OpResponse, Request, Response, SecretBytes, SecretName, UserName, codec::Bytes,
    handshake::login, ops, session::ClientChannel, suite::KsfParams,
};
use keyserver_tests::Server;
use local_client::{ClientConfig, Connection, Transport, connect::QuicLink};
use rand::rngs::OsRng;

const KSF: KsfParams = KsfParams::INSECURE_TEST_ONLY;

fn config(server: &Server, transport: Transport) -> ClientConfig {
    let mut c = ClientConfig::new(&server.addr, &server.data_dir.join("ca.pem")).unwrap();
    c.transport(transport).ksf(KSF);
    c
}

fn user(n: &str) -> UserName {
    UserName::new(n).unwrap()
}

fn name(n: &str) -> SecretName {
    SecretName::new(n).unwrap()
}

fn pw() -> SecretBytes {
    SecretBytes::new(b"pw".to_vec())
}

#[test]
fn the_listening_line_names_both_transports_on_one_port() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let quic_port = server.addr.rsplit(':').next().unwrap();
    let tcp_port = server.tcp_addr.rsplit(':').next().unwrap();
    assert_eq!(quic_port, tcp_port, "{}", server.line);
}

async fn many_sessions_over_one_connection(transport: Transport) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let conn = Connection::connect(&config(&server, transport))
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for i in 0..100 {
        let u = user(&format!("user{i}"));
        conn.register(&u, &pw()).await.unwrap();
        sessions.push(conn.login(&u, &pw()).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        for j in 0..10 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let n = name(&format!("secret-{j}"));
                let content = format!("user {i} secret {j}").into_bytes();
                s.store(&n, &SecretBytes::new(content.clone()), false)
                    .await
                    .unwrap();
                let (got, version) = s.retrieve(&n).await.unwrap();
                assert_eq!(
                    got.expose_secret(),
                    content.as_slice(),
                    "user {i} secret {j}"
                );
                assert_eq!(version, 1);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (i, s) in sessions.iter().enumerate() {
        let list = s.list().await.unwrap();
        assert_eq!(list.len(), 10, "user {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sessions_times_ten_concurrent_requests_over_one_quic_connection() {
    many_sessions_over_one_connection(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sessions_times_ten_concurrent_requests_over_one_tcp_connection() {
    many_sessions_over_one_connection(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_from_quic_to_tcp_and_back_without_logging_in_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let quic = Connection::connect(&config(&server, Transport::Quic))
        .await
        .unwrap();
    let tcp = Connection::connect(&config(&server, Transport::Tcp))
        .await
        .unwrap();
    quic.register(&user("alice"), &pw()).await.unwrap();
    let s = quic.login(&user("alice"), &pw()).await.unwrap();
    s.store(&name("a"), &SecretBytes::new(b"over quic".to_vec()), false)
        .await
        .unwrap();
    s.move_to(&tcp);
    quic.close();
    assert_eq!(
        s.retrieve(&name("a")).await.unwrap().0.expose_secret(),
        b"over quic"
    );
    s.store(&name("b"), &SecretBytes::new(b"over tcp".to_vec()), false)
        .await
        .unwrap();
    // And the other way: a session opened over TCP goes on over QUIC.
    let t = tcp.login(&user("alice"), &pw()).await.unwrap();
    let quic2 = Connection::connect(&config(&server, Transport::Quic))
        .await
        .unwrap();
    t.move_to(&quic2);
    tcp.close();
    assert_eq!(
        t.retrieve(&name("b")).await.unwrap().0.expose_secret(),
        b"over tcp"
    );
    assert_eq!(
        s.list().await.unwrap().len(),
        2,
        "the first session goes on too (it reconnects)"
    );
}

async fn stores_survive_dropped_connections(transport: Transport) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = keyserver::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let server = keyserver::Server::start(tmp.path().join("data"), cfg)
        .await
        .unwrap();
    let mut client = ClientConfig::new(
        &server.quic_addr().to_string(),
        &tmp.path().join("data/ca.pem"),
    )
    .unwrap();
    client.transport(transport).ksf(KSF);
    let conn = Connection::connect(&client).await.unwrap();
    conn.register(&user("alice"), &pw()).await.unwrap();
    let s = conn.login(&user("alice"), &pw()).await.unwrap();

    let server = Arc::new(server);
    let dropper = {
        let server = server.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                server.drop_connections();
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let n = format!("t{t}-{i}");
                s.store(&name(&n), &SecretBytes::new(n.clone().into_bytes()), false)
                    .await
                    .unwrap();
                acked.push(n);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    dropper.await.unwrap();
    let listed: Vec<String> = s
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(listed.len(), 160);
    for n in &acked {
        assert!(listed.contains(n), "{n} acknowledged but missing");
        assert_eq!(
            s.retrieve(&name(n)).await.unwrap().0.expose_secret(),
            n.as_bytes()
        );
    }
    // Exactly once: one successful store event per name, and every version is 1.
    let audit = s.audit().await.unwrap();
    audit.verification.unwrap();
    for n in &acked {
        let stores = audit
            .events
            .iter()
            .filter(|e| {
                e.body.kind.as_str() == "store"
                    && e.body
                        .secret
                        .as_ref()
                        .is_some_and(|t| audit.secret_name(t) == *n)
            })
            .count();
        assert_eq!(stores, 1, "{n} stored {stores} times");
    }
    assert!(s.list().await.unwrap().iter().all(|e| e.version == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_over_quic_survive_dropped_connections_and_apply_exactly_once() {
    stores_survive_dropped_connections(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_over_tcp_survive_dropped_connections_and_apply_exactly_once() {
    stores_survive_dropped_connections(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_after_the_server_idles_its_connection_out() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let init = std::process::Command::new(keyserver_tests::bin("keyserver"))
        .arg("init")
        .arg("--data-dir")
        .arg(&data)
        .status()
        .unwrap();
    assert!(init.success());
    std::fs::write(
        data.join("keyserver.toml"),
        "connection_idle_timeout_secs = 1\n",
    )
    .unwrap();
    let server = Server::start(&data, &[]);
    for transport in [Transport::Quic, Transport::Tcp] {
        let conn = Connection::connect(&config(&server, transport))
            .await
            .unwrap();
        let u = user(&format!("idle-{transport:?}"));
        conn.register(&u, &pw()).await.unwrap();
        let s = conn.login(&u, &pw()).await.unwrap();
        for i in 0..3 {
            s.store(&name(&format!("s{i}")), &SecretBytes::new(vec![i]), false)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
        assert_eq!(s.list().await.unwrap().len(), 3);
    }
}

/// Logs in by hand, so that the test holds the session channel and can capture requests.
async fn raw_login(link: &QuicLink, u: &UserName) -> ClientChannel {
    let (flow, ke1) = login::start(&mut OsRng, u, &pw()).unwrap();
    let resp = Response::decode(
        &link
            .call(
                &Request::LoginStart {
                    user: u.clone(),
                    message: ke1,
                }
                .encode(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let Response::LoginStarted { handshake, message } = resp else {
        panic!("{resp:?}")
    };
    let fin = flow
        .finish(&mut OsRng, &pw(), message.as_slice(), KSF)
        .unwrap();
    let resp = Response::decode(
        &link
            .call(
                &Request::LoginFinish {
                    handshake,
                    message: fin.message,
                }
                .encode(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(matches!(resp, Response::LoggedIn { .. }), "{resp:?}");
    ClientChannel::new(fin.session).unwrap()
}

async fn quic_link(server: &Server) -> QuicLink {
    let ca = local_client::connect::load_ca(&server.data_dir.join("ca.pem")).unwrap();
    let tls = local_client::connect::tls_config(&ca).unwrap();
    QuicLink::connect(server.addr.parse().unwrap(), "localhost", tls)
        .await
        .unwrap()
}

fn op_response(channel: &ClientChannel, seq: u64, bytes: &[u8]) -> OpResponse {
    match Response::decode(bytes).unwrap() {
        Response::Sealed(r) => {
            ops::OpAnswer::decode(&channel.open_response(seq, &r).unwrap())
                .unwrap()
                .response
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_sealed_request_never_changes_data_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let conn = Connection::connect(&config(&server, Transport::Quic))
        .await
        .unwrap();
    conn.register(&user("alice"), &pw()).await.unwrap();
    let link = quic_link(&server).await;
    let channel = raw_login(&link, &user("alice")).await;

    // A tag and a sealed name the server cannot check: it stores what it is given.
    let tag = keyserver_protocol::NameTag([7; 32]);
    let store = OpRequest::Store(ops::Store {
        tag,
        sealed_name: Bytes::new(vec![2; 60]).unwrap(),
        version: 1,
        replace: true,
        sealed: Bytes::new(vec![1; 60]).unwrap(),
    });
    let captured = Request::Sealed(channel.seal_request(&store.encode()).unwrap());
    let first = link.call(&captured.encode()).await.unwrap();
    assert!(matches!(
        op_response(&channel, 1, &first),
        OpResponse::Stored(ops::Stored { version: 1, .. })
    ));
    let delete = Request::Sealed(
        channel
            .seal_request(&OpRequest::Delete(ops::Delete { tag }).encode())
            .unwrap(),
    );
    let deleted = link.call(&delete.encode()).await.unwrap();
    assert_eq!(op_response(&channel, 2, &deleted), OpResponse::Deleted);

    // The captured store, re-sent on a new connection, gets its first answer (sealed again
    // under a fresh nonce) and changes nothing: the secret stays deleted.
    let other = quic_link(&server).await;
    let replayed = other.call(&captured.encode()).await.unwrap();
    assert_eq!(
        op_response(&channel, 1, &replayed),
        op_response(&channel, 1, &first)
    );
    assert_ne!(
        replayed, first,
        "a response is never sealed twice under one nonce"
    );
    let replayed_delete = other.call(&delete.encode()).await.unwrap();
    assert_eq!(
        op_response(&channel, 2, &replayed_delete),
        OpResponse::Deleted
    );
    let retrieve = Request::Sealed(
        channel
            .seal_request(&OpRequest::Retrieve(ops::Retrieve { tag }).encode())
            .unwrap(),
    );
    let seq = 3;
    match op_response(
        &channel,
        seq,
        &other.call(&retrieve.encode()).await.unwrap(),
    ) {
        OpResponse::Error(e) => assert_eq!(e.code, keyserver_protocol::ErrorCode::NOT_FOUND),
        r => panic!("{r:?}"),
    }
    // A replayed read is refused outright.
    match Response::decode(&other.call(&retrieve.encode()).await.unwrap()).unwrap() {
        Response::Error(e) => assert_eq!(e.code, keyserver_protocol::ErrorCode::REPLAYED),
        r => panic!("{r:?}"),
    }
    // A captured request with its body altered does not authenticate.
    let Request::Sealed(mut forged) = captured.clone() else {
        unreachable!()
    };
    let mut body = forged.body.into_vec();
    body[0] ^= 1;
    forged.body = Bytes::new(body).unwrap();
    match Response::decode(&other.call(&Request::Sealed(forged).encode()).await.unwrap()).unwrap() {
        Response::Error(e) => assert_eq!(e.code, keyserver_protocol::ErrorCode::BAD_SEAL),
        r => panic!("{r:?}"),
    }
    let s = conn.login(&user("alice"), &pw()).await.unwrap();
    assert!(s.list().await.unwrap().is_empty());
    let audit = s.audit().await.unwrap();
    let stores = audit
        .events
        .iter()
        .filter(|e| e.body.kind.as_str() == "store")
        .count();
    assert_eq!(stores, 1);
}
