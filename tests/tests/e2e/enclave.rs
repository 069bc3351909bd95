#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! The server as it runs in a Nitro enclave, behind `keyserver host` on the parent: the same
//! relay code over a Unix socket (this machine has no vsock loopback). Clients on QUIC and
//! TCP reach the enclave through the relay and check its attestation (the simulated module);
//! a relay restart loses no session; garbage on the enclave's socket hurts no one.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use keyserver_protocol::{SecretBytes, SecretName, UserName, suite::KsfParams};
use keyserver_tests::{Client, Process, bin, listening};
use local_client::{ClientConfig, Connection, Transport, attestation::Policy};
use tokio::io::AsyncWriteExt;

/// An enclave server (data dir with a simulated module) listening on a Unix socket (or on
/// vsock, where the machine has a loopback).
struct Enclave {
    _process: Process,
    dir: PathBuf,
    socket: PathBuf,
    /// What the relay's `--enclave` takes.
    target: String,
}

fn enclave(tmp: &Path) -> Enclave {
    let socket = tmp.join("enclave.sock");
    let vsock = format!("unix:{}", socket.display());
    enclave_at(tmp, &vsock, &vsock)
}

fn enclave_at(tmp: &Path, vsock: &str, target: &str) -> Enclave {
    let dir = tmp.join("data");
    let out = Command::new(bin("keyserver"))
        .args(["init", "--simulated-attestation", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let socket = tmp.join("enclave.sock");
    let mut cmd = Command::new(bin("keyserver"));
    cmd.arg("--data-dir")
        .arg(&dir)
        .args(["--vsock", vsock, "--attestation", "simulated"])
        .env("KEYSERVER_LOG", "warn");
    let (process, line) = Process::spawn_and_read_line(&mut cmd, Duration::from_secs(60)).unwrap();
    assert_eq!(line, format!("keyserver listening vsock={vsock}"));
    Enclave {
        _process: process,
        dir,
        socket,
        target: target.to_string(),
    }
}

/// A relay on `listen` to `enclave`; its QUIC and TCP addresses.
fn relay(enclave: &Enclave, listen: &str) -> (Process, String, String) {
    let mut cmd = Command::new(bin("keyserver"));
    cmd.args(["host", "--listen", listen, "--enclave", &enclave.target])
        .env("KEYSERVER_LOG", "warn");
    let (process, line) = Process::spawn_and_read_line(&mut cmd, Duration::from_secs(60)).unwrap();
    assert!(line.starts_with("keyserver-host listening "), "{line}");
    let quic = listening(&line, "quic").unwrap();
    let tcp = listening(&line, "tcp").unwrap();
    (process, quic, tcp)
}

fn trust(e: &Enclave) -> [(&'static str, String); 2] {
    let m = e.dir.join("simulated-attestation");
    [
        (
            "KEYSERVER_EXPECT_PCRS",
            m.join("pcrs.json").display().to_string(),
        ),
        (
            "KEYSERVER_ATTESTATION_ROOT",
            m.join("root.pem").display().to_string(),
        ),
    ]
}

#[test]
fn clients_reach_the_enclave_through_the_relay_on_quic_and_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    through_the_relay(tmp.path(), &enclave(tmp.path()));
}

/// The same over real vsock (context id 1, the local loopback), on machines that have it:
/// `KEYSERVER_VSOCK_TESTS=1`.
#[test]
fn clients_reach_the_enclave_over_vsock_where_the_machine_has_a_loopback() {
    if std::env::var_os("KEYSERVER_VSOCK_TESTS").is_none() {
        println!(
            "SKIPPED: vsock is not tested without KEYSERVER_VSOCK_TESTS=1 (it needs the \
             vsock_loopback module); the same relay code ran over a Unix socket"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = 20_000 + std::process::id() % 20_000;
    let e = enclave_at(tmp.path(), &port.to_string(), &format!("1:{port}"));
    through_the_relay(tmp.path(), &e);
}

fn through_the_relay(tmp: &Path, e: &Enclave) {
    let (_relay, quic, tcp) = relay(e, "127.0.0.1:0");
    let trust = trust(e);
    let env: Vec<(&str, &str)> = trust.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Client {
        server: quic,
        ca: tmp.join("no-ca.pem"),
        server_name: None,
        state_dir: tmp.join("state"),
    };
    c.run(&["register", "--user", "alice"], Some("pw"), &env, b"")
        .ok();
    c.run(
        &["store", "--user", "alice", "--name", "n", "--file", "-"],
        Some("pw"),
        &env,
        b"through the relay",
    )
    .ok();
    let over_tcp = Client { server: tcp, ..c };
    let got = over_tcp
        .run(
            &[
                "retrieve",
                "--user",
                "alice",
                "--name",
                "n",
                "--transport",
                "tcp",
            ],
            Some("pw"),
            &env,
            b"",
        )
        .ok();
    assert_eq!(got.stdout, b"through the relay");
}

async fn connect(e: &Enclave, addr: &str, transport: Transport) -> Connection {
    let m = e.dir.join("simulated-attestation");
    let policy = Policy {
        pcrs: local_client::attestation::read_expected_pcrs(&m.join("pcrs.json")).unwrap(),
        root: Some(local_client::attestation::read_root(&m.join("root.pem")).unwrap()),
        allow_debug: false,
    };
    let mut config = ClientConfig::attested(addr, policy);
    config
        .transport(transport)
        .ksf(KsfParams::INSECURE_TEST_ONLY);
    Connection::connect(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restart_loses_no_session_on_either_transport() {
    let tmp = tempfile::tempdir().unwrap();
    let e = enclave(tmp.path());
    let (mut first, quic, tcp) = relay(&e, "127.0.0.1:0");
    let user = UserName::new("alice").unwrap();
    let pw = SecretBytes::new(b"pw".to_vec());
    let on_quic = connect(&e, &quic, Transport::Quic).await;
    let on_tcp = connect(&e, &tcp, Transport::Tcp).await;
    on_quic.register(&user, &pw).await.unwrap();
    let sessions = [
        on_quic.login(&user, &pw).await.unwrap(),
        on_tcp.login(&user, &pw).await.unwrap(),
    ];
    for (i, s) in sessions.iter().enumerate() {
        let name = SecretName::new(format!("before-{i}")).unwrap();
        s.store(&name, &SecretBytes::new(vec![7; 100]), false)
            .await
            .unwrap();
    }
    first.kill();
    // The same port again: QUIC clients' packets reach the new relay.
    let (_second, quic2, tcp2) = relay(&e, &quic);
    assert_eq!((quic2, tcp2), (quic, tcp));
    for (i, s) in sessions.iter().enumerate() {
        let name = SecretName::new(format!("before-{i}")).unwrap();
        let (got, _) = s.retrieve(&name).await.unwrap();
        assert_eq!(got.expose_secret(), &[7; 100][..]);
        let after = SecretName::new(format!("after-{i}")).unwrap();
        s.store(&after, &SecretBytes::new(vec![8; 10]), false)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_enclaves_socket_never_hurts_a_normal_client() {
    let tmp = tempfile::tempdir().unwrap();
    let e = enclave(tmp.path());
    let (_relay, quic, tcp) = relay(&e, "127.0.0.1:0");
    let mut junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        b"KSR1\x07".to_vec(),
        b"KSR1\x01\x09".to_vec(),
        // A TCP connection whose "TLS" is garbage.
        [&b"KSR1\x01\x04\x7f\x00\x00\x01\x00\x50"[..], &[0x16; 4000]].concat(),
        // Datagram channels: a truncated address, a bad family, a frame cut short, and
        // junk datagrams (for quinn to drop).
        b"KSR1\x02\x00\x02\x04\x01".to_vec(),
        b"KSR1\x02\x00\x08\x09\x00\x00\x00\x00\x00\x00\x00".to_vec(),
        b"KSR1\x02\xff\xff\x04\x01\x02\x03\x04\x00\x01".to_vec(),
    ];
    let mut datagrams = b"KSR1\x02".to_vec();
    for i in 0..200u16 {
        let payload = vec![u8::try_from(i % 256).unwrap(); usize::from(i) * 7];
        let len = u16::try_from(7 + payload.len()).unwrap();
        datagrams.extend_from_slice(&len.to_be_bytes());
        datagrams.extend_from_slice(&[4, 10, 0, 0, 1]);
        datagrams.extend_from_slice(&i.to_be_bytes());
        datagrams.extend_from_slice(&payload);
    }
    junk.push(datagrams);
    let mut held = Vec::new();
    for j in &junk {
        let mut s = tokio::net::UnixStream::connect(&e.socket).await.unwrap();
        let _ = s.write_all(j).await;
        held.push(s);
    }
    // A channel that says nothing, held open.
    held.push(tokio::net::UnixStream::connect(&e.socket).await.unwrap());
    let user = UserName::new("bob").unwrap();
    let pw = SecretBytes::new(b"pw".to_vec());
    for (addr, transport) in [(&quic, Transport::Quic), (&tcp, Transport::Tcp)] {
        let conn = connect(&e, addr, transport).await;
        if transport == Transport::Quic {
            conn.register(&user, &pw).await.unwrap();
        }
        let s = conn.login(&user, &pw).await.unwrap();
        s.list().await.unwrap();
    }
    drop(held);
}
