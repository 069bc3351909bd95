#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a panic is how a test fails"
)]
//! The transports of a real server, in-process on loopback: what only sockets show and no
//! process needs to.

use std::sync::Arc;

use keyserver::{Server, clock::SystemClock, config::Config, server_setup::SetupKeySource};

/// A QUIC source address is not proven before the handshake, so a forger could take
/// connection slots with spoofed packets: once an address holds half its slots, its new
/// connections must answer a Retry first. A real client does, and gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_answer_a_retry_once_their_address_holds_half_its_slots() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections_per_address: 4,
        ..Config::default()
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
    let connect = || {
        local_client::connect::QuicLink::connect(
            server.quic_addr(),
            "localhost",
            local_client::connect::tls_config(&ca).unwrap(),
        )
    };
    let first = connect().await.unwrap();
    let second = connect().await.unwrap();
    assert_eq!(server.connections(), (2, 0));
    // Two of four: the third must prove its address, and does.
    let third = connect().await.unwrap();
    let req = keyserver_protocol::Request::LoginAbort {
        handshake: keyserver_protocol::HandshakeId([0; 16]),
    };
    assert!(
        local_client::Link::call(&third, &req.encode())
            .await
            .is_ok()
    );
    assert_eq!(server.connections(), (3, 1));
    drop((first, second, third));
    server.shutdown().await;
}
