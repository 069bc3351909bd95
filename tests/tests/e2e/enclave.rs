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
    trust_dir(&e.dir)
}

fn trust_dir(dir: &Path) -> [(&'static str, String); 2] {
    let m = dir.join("simulated-attestation");
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

/// The whole CLI flow through the relay, on QUIC and on TCP, attested (no `--ca`): register,
/// store, retrieve, list, delete, audit, change-password, with the relay killed and started
/// again between two commands; a client expecting other PCRs is refused with exit 8.
fn through_the_relay(tmp: &Path, e: &Enclave) {
    let (mut first_relay, quic, tcp) = relay(e, "127.0.0.1:0");
    let trust = trust(e);
    let env: Vec<(&str, &str)> = trust.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut _relay = None;
    for (transport, addr, user) in [("quic", &quic, "alice"), ("tcp", &tcp, "bob")] {
        let c = Client {
            server: addr.clone(),
            ca: tmp.join("no-ca.pem"),
            server_name: None,
            state_dir: tmp.join(format!("state-{transport}")),
        };
        let run = |args: &[&str], pw: &str, stdin: &[u8]| {
            let mut all = args.to_vec();
            all.extend(["--transport", transport]);
            c.run(&all, Some(pw), &env, stdin)
        };
        run(&["register", "--user", user], "pw", b"").ok();
        for name in ["n", "gone"] {
            run(
                &["store", "--user", user, "--name", name, "--file", "-"],
                "pw",
                b"through the relay",
            )
            .ok();
        }
        if transport == "quic" {
            // The relay dies and comes back on the same port between two commands.
            first_relay.kill();
            let (second, quic2, tcp2) = relay(e, &quic);
            assert_eq!((&quic2, &tcp2), (&quic, &tcp));
            _relay = Some(second);
        }
        let got = run(&["retrieve", "--user", user, "--name", "n"], "pw", b"").ok();
        assert_eq!(got.stdout, b"through the relay");
        let listed = run(&["list", "--user", user], "pw", b"").ok().text();
        for name in ["n\t", "gone\t"] {
            assert!(listed.lines().any(|l| l.starts_with(name)), "{listed}");
        }
        run(&["delete", "--user", user, "--name", "gone"], "pw", b"").ok();
        assert_eq!(
            run(&["retrieve", "--user", user, "--name", "gone"], "pw", b"").code,
            4
        );
        let doc = run(&["audit", "--user", user, "--json"], "pw", b"")
            .ok()
            .json();
        assert_eq!(doc["chain_verified"], true);
        let all = ["change-password", "--user", user, "--transport", transport];
        let out = c.run(
            &all,
            Some("pw"),
            &[env[0], env[1], ("KEYSERVER_NEW_PASSWORD", "new pw")],
            b"",
        );
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(
            run(&["retrieve", "--user", user, "--name", "n"], "pw", b"").code,
            3
        );
        let got = run(&["retrieve", "--user", user, "--name", "n"], "new pw", b"").ok();
        assert_eq!(got.stdout, b"through the relay");

        // Another image: exit 8, naming the PCRs, before anything of the password is sent.
        let wrong = tmp.join("wrong-pcrs.json");
        std::fs::write(
            &wrong,
            format!(r#"{{"0": "{0}", "1": "{0}", "2": "{0}"}}"#, "11".repeat(48)),
        )
        .unwrap();
        let wrong_env = [("KEYSERVER_EXPECT_PCRS", wrong.to_str().unwrap()), env[1]];
        let out = c.run(
            &["list", "--user", user, "--transport", transport],
            Some("new pw"),
            &wrong_env,
            b"",
        );
        assert_eq!(out.code, 8, "{out:?}");
        assert!(out.stderr.contains("PCR"), "{}", out.stderr);
    }
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
    // And on the relay's own ports: junk datagrams, and TCP connections that send junk,
    // say nothing, or close at once.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..200usize {
        let _ = udp.send_to(&vec![0xc3; 1 + i * 5], &quic).await;
    }
    let mut relay_held = Vec::new();
    for j in [
        &b"\x16\x03\x01\xff\xffjunk"[..],
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(&tcp).await.unwrap();
        let _ = s.write_all(j).await;
        relay_held.push(s);
    }
    drop(tokio::net::TcpStream::connect(&tcp).await.unwrap());
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
    drop(relay_held);
}

/// `nitro-kms`: the enclave's keys come from KMS (a test double with a key policy that
/// requires the enclave's attestation) through the host, only encrypted to the enclave's
/// own RSA key. The host, with the same credentials, gets nothing; another image gets
/// nothing.
#[test]
fn an_enclave_gets_its_keys_from_kms_only_as_the_attested_recipient() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let module = dir.join("simulated-attestation");
    let double = keyserver_tests::kms_double::KmsDouble::start(module);
    let socket = tmp.path().join("enclave.sock");
    let calls = tmp.path().join("calls.sock");
    let (enclave_at, calls_at) = (
        format!("unix:{}", socket.display()),
        format!("unix:{}", calls.display()),
    );
    let host_env = [
        ("AWS_ACCESS_KEY_ID", "host-key"),
        ("AWS_SECRET_ACCESS_KEY", "host-secret"),
    ];
    let mut host_cmd = Command::new(bin("keyserver"));
    host_cmd
        .args(["host", "--listen", "127.0.0.1:0", "--enclave", &enclave_at])
        .args([
            "--enclave-calls",
            &calls_at,
            "--kms-endpoint",
            &double.endpoint,
        ])
        .envs(host_env)
        .env("KEYSERVER_LOG", "warn");
    let (_host, line) =
        Process::spawn_and_read_line(&mut host_cmd, Duration::from_secs(60)).unwrap();
    let quic = listening(&line, "quic").unwrap();
    // The enclave has no credentials of its own: the host lends them.
    let enclave_args = |cmd: &mut Command| {
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["--key-provider", "nitro-kms", "--kms-key-id"])
            .arg(keyserver_tests::kms_double::KEY_ARN)
            .args([
                "--kms-region",
                "us-east-1",
                "--kms-endpoint",
                &double.endpoint,
            ])
            .args(["--attestation", "simulated", "--host-calls", &calls_at])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("HOME", "/nonexistent")
            .env("KEYSERVER_LOG", "warn");
    };
    let mut init = Command::new(bin("keyserver"));
    init.args(["init", "--simulated-attestation"]);
    enclave_args(&mut init);
    let out = init.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("wrapped by the KMS key arn:aws:kms"),
        "{out:?}"
    );
    let made = double.answered();
    assert!(made >= 1, "the data keys were made for the enclave");
    let serve = |extra: &[&str]| {
        let mut cmd = Command::new(bin("keyserver"));
        enclave_args(&mut cmd);
        cmd.args(["--vsock", &enclave_at]).args(extra);
        Process::spawn_and_read_line(&mut cmd, Duration::from_secs(60))
    };
    let (mut enclave, line) = serve(&[]).unwrap();
    assert_eq!(line, format!("keyserver listening vsock={enclave_at}"));
    assert!(
        double.answered() > made,
        "opened with Decrypt for the recipient"
    );
    let trust = trust_dir(&dir);
    let env: Vec<(&str, &str)> = trust.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Client {
        server: quic,
        ca: tmp.path().join("no-ca.pem"),
        server_name: None,
        state_dir: tmp.path().join("state"),
    };
    c.run(&["register", "--user", "alice"], Some("pw"), &env, b"")
        .ok();
    enclave.terminate(Duration::from_secs(30)).unwrap();
    let (_enclave, _) = serve(&[]).unwrap();
    c.run(&["list", "--user", "alice"], Some("pw"), &env, b"")
        .ok();
    assert!(double.refused().is_empty(), "{:?}", double.refused());

    // What the host can do with its credentials: ask without a recipient. Refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = keyserver::kms::KmsClient::new(
        keyserver::kms::Endpoint::parse(&double.endpoint).unwrap(),
        "us-east-1".into(),
        keyserver::kms::Credentials::new("host-key", "host-secret", None),
        std::sync::Arc::new(keyserver::kms::TcpConnector),
    );
    let e = rt
        .block_on(client.generate_data_key(
            keyserver_tests::kms_double::KEY_ARN,
            &keyserver::kms::Context::new(),
            None,
        ))
        .err()
        .unwrap();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e}");

    // An answer that carries the key in clear as well (a KMS, or someone between it and the
    // enclave, that would have the key travel in clear): refused, the enclave does not start.
    drop(_enclave);
    double.leak_plaintext(true);
    let before = double.answered();
    let err = serve(&[]).unwrap_err();
    assert!(err.to_string().contains("no line"), "{err}");
    assert!(
        double.answered() > before,
        "it was answered, and refused the answer"
    );
    double.leak_plaintext(false);

    // Another enclave image: the key policy wants other PCRs; the enclave gets nothing and
    // does not start.
    double.expect_pcrs_instead([(0u8, vec![0x11; 48])].into_iter().collect());
    let err = serve(&[]).unwrap_err();
    assert!(err.to_string().contains("no line"), "{err}");
    assert!(
        double.refused().keys().any(|k| k.contains("PCR0")),
        "{:?}",
        double.refused()
    );
}

#[test]
fn the_doubles_ciphertext_for_recipient_opens_with_openssl_and_the_server() {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let tmp = tempfile::tempdir().unwrap();
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let data_key = keyserver_tests::random_bytes(32);
    let cms = keyserver_tests::kms_double::cms_for(&key.to_public_key(), &data_key);
    assert_eq!(
        keyserver::kms::cms::decrypt(&cms, &key).unwrap().as_slice(),
        data_key.as_slice()
    );
    let pem = tmp.path().join("key.pem");
    std::fs::write(&pem, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let input = tmp.path().join("cms.der");
    std::fs::write(&input, &cms).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-inform", "DER", "-in"])
        .arg(&input)
        .arg("-inkey")
        .arg(&pem)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, data_key);
}

/// Splits a test database URL (`postgres://[user@]host:port/rest`) into the address the
/// host connects to and the same URL naming an address nobody can reach.
fn database_behind_the_host(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = match rest.split_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let (address, path) = rest.split_once('/').unwrap();
    (
        address.to_string(),
        format!("{scheme}://{user}database.invalid:1/{path}"),
    )
}

/// Inside an enclave the database is reached only through the host: the enclave's URL
/// names an address that does not resolve, the host's `--database` the real one. A new
/// enclave (a restart, with a data dir of its own, as after a reboot that cleared its
/// memory) finds every account and secret where the first left them.
#[test]
fn an_enclave_keeps_its_data_in_postgres_through_the_host() {
    let Some(schema) = keyserver_tests::PgSchema::create() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (address, unreachable) = database_behind_the_host(&schema.url());
    let socket = tmp.path().join("enclave.sock");
    let calls = tmp.path().join("calls.sock");
    let (enclave_at, calls_at) = (
        format!("unix:{}", socket.display()),
        format!("unix:{}", calls.display()),
    );
    let mut host_cmd = Command::new(bin("keyserver"));
    host_cmd
        .args(["host", "--listen", "127.0.0.1:0", "--enclave", &enclave_at])
        .args(["--enclave-calls", &calls_at, "--database", &address])
        .env("KEYSERVER_LOG", "warn");
    let (_host, line) =
        Process::spawn_and_read_line(&mut host_cmd, Duration::from_secs(60)).unwrap();
    let quic = listening(&line, "quic").unwrap();
    let tcp = listening(&line, "tcp").unwrap();
    // One key file for both boots (in production: the KMS key, `nitro-kms`).
    let key = tmp.path().join("setup.key");
    let serve = |dir: &Path| {
        let out = Command::new(bin("keyserver"))
            .args(["init", "--simulated-attestation", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut cmd = Command::new(bin("keyserver"));
        cmd.arg("--data-dir")
            .arg(dir)
            .arg("--setup-key")
            .arg(&key)
            .args(["--database-url", &unreachable])
            .args(["--vsock", &enclave_at, "--host-calls", &calls_at])
            .args(["--attestation", "simulated"])
            .env("KEYSERVER_LOG", "warn");
        let (p, line) = Process::spawn_and_read_line(&mut cmd, Duration::from_secs(60)).unwrap();
        assert_eq!(line, format!("keyserver listening vsock={enclave_at}"));
        p
    };
    let first = tmp.path().join("first");
    let mut enclave = serve(&first);
    let env_of = |dir: &Path| trust_dir(dir);
    let trust = env_of(&first);
    let env: Vec<(&str, &str)> = trust.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Client {
        server: quic,
        ca: tmp.path().join("no-ca.pem"),
        server_name: None,
        state_dir: tmp.path().join("state"),
    };
    c.run(&["register", "--user", "alice"], Some("pw"), &env, b"")
        .ok();
    c.run(
        &["store", "--user", "alice", "--name", "n", "--file", "-"],
        Some("pw"),
        &env,
        b"kept outside the enclave, sealed",
    )
    .ok();
    enclave.terminate(Duration::from_secs(30)).unwrap();

    // A new boot: nothing of the first data dir, the same database and key.
    let second = tmp.path().join("second");
    let _enclave = serve(&second);
    let trust = env_of(&second);
    let env: Vec<(&str, &str)> = trust.iter().map(|(k, v)| (*k, v.as_str())).collect();
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
    assert_eq!(got.stdout, b"kept outside the enclave, sealed");
}
