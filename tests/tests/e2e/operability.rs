//! What an operator relies on: online backups that restore, logs a machine can read, a
//! client that is comfortable in a shell.

use std::{
    io::BufRead,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use keyserver_protocol::{SecretBytes, SecretName, UserName, suite::KsfParams};
use keyserver_tests::{Server, bin, random_bytes, setup_key_of};
use local_client::{ClientConfig, Connection};

fn config(server: &Server) -> ClientConfig {
    let mut c = ClientConfig::new(&server.addr, &server.data_dir.join("ca.pem")).unwrap();
    c.ksf(KsfParams::INSECURE_TEST_ONLY);
    c
}

/// Stores acknowledged: name and value.
type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn keyserver(args: &[&str]) -> std::process::Output {
    Command::new(bin("keyserver"))
        .args(args)
        .env("KEYSERVER_LOG", "warn")
        .output()
        .unwrap()
}

/// A backup taken while four writers store without pause restores to a server on which
/// every store acknowledged before the backup began is there, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_writes_restores_every_store_acknowledged_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("live");
    let server = Server::start(&a, &[]);
    let conn = Connection::connect(&config(&server)).await.unwrap();
    let alice = UserName::new("alice").unwrap();
    let pw = SecretBytes::new(b"pw".to_vec());
    conn.register(&alice, &pw).await.unwrap();
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let session = conn.login(&alice, &pw).await.unwrap();
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{w}-{n}");
                let value = random_bytes(32);
                session
                    .store(
                        &SecretName::new(&name).unwrap(),
                        &SecretBytes::new(value.clone()),
                        false,
                    )
                    .await
                    .unwrap();
                acked.lock().unwrap().push((name, value));
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before: Vec<_> = acked.lock().unwrap().clone();
    let file = tmp.path().join("backup.db");
    let (data, to) = (a.clone(), file.clone());
    let out = tokio::task::spawn_blocking(move || {
        keyserver(&[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(before.len() >= 4, "the writers stored {}", before.len());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // A backup never overwrites, and a running server's data dir is not restored over.
    let again = keyserver(&[
        "backup",
        "--data-dir",
        a.to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let busy = keyserver(&[
        "restore",
        "--data-dir",
        a.to_str().unwrap(),
        "--from",
        file.to_str().unwrap(),
    ]);
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("running"),
        "{busy:?}"
    );
    // Another data dir with the same TLS material and key file, restored from the backup.
    let b = tmp.path().join("restored");
    std::fs::create_dir(&b).unwrap();
    for f in ["ca.pem", "server.pem", "server.key", "keyserver.toml"] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    std::fs::copy(setup_key_of(&a), setup_key_of(&b)).unwrap();
    let restored = keyserver(&[
        "restore",
        "--data-dir",
        b.to_str().unwrap(),
        "--from",
        file.to_str().unwrap(),
    ]);
    assert!(restored.status.success(), "{restored:?}");
    // Junk is refused before anything moves.
    let junk = tmp.path().join("junk.db");
    std::fs::write(&junk, b"not a database").unwrap();
    let refused = keyserver(&[
        "restore",
        "--data-dir",
        b.to_str().unwrap(),
        "--from",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let second = Server::start(&b, &[]);
    let conn = Connection::connect(&config(&second)).await.unwrap();
    let session = conn.login(&alice, &pw).await.unwrap();
    for (name, value) in &before {
        let (got, _) = session
            .retrieve(&SecretName::new(name).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}, acknowledged before the backup: {e}"));
        assert_eq!(got.expose_secret(), value.as_slice(), "{name}");
    }
    session.audit().await.unwrap().verification.unwrap();
}

/// `--log-format json` writes one JSON object per line; text written to a file carries no
/// colour codes.
#[test]
fn json_logs_parse_line_by_line_and_text_logs_carry_no_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    for format in ["json", "text"] {
        let log = tmp.path().join(format!("{format}.log"));
        let mut child = Command::new(bin("keyserver"))
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", format])
            .env("KEYSERVER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("keyserver listening"), "{line}");
        let addr = keyserver_tests::listening(&line, "quic").unwrap();
        let client = keyserver_tests::Client {
            server: addr,
            ca: dir.join("ca.pem"),
            server_name: None,
            state_dir: tmp.path().join("state"),
        };
        // The user from the environment.
        let user = format!("user-{format}");
        client
            .run(&["register"], Some("pw"), &[("KEYSERVER_USER", &user)], b"")
            .ok();
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains('\u{1b}'), "colour codes in {format}: {text}");
        assert!(!text.contains(&user), "a user name in the log: {text}");
        if format == "json" {
            let mut lines = 0;
            for l in text.lines().filter(|l| !l.is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
                lines += 1;
            }
            assert!(lines > 0);
            assert!(
                text.contains("\"op\":\"register") || text.contains("serving"),
                "{text}"
            );
        }
    }
}

#[test]
fn completions_generate_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(bin("local-client"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("local-client") && text.contains("retrieve"),
            "{shell}"
        );
    }
    let bad = Command::new(bin("local-client"))
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `GET path` on `addr`: the status and the body.
async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The body is sent whole (content-length), never chunked.
    (status, body.to_string())
}

/// The samples of a scrape, parsed by a Prometheus text parser: (name, labels) → value.
async fn scrape(addr: &str) -> (std::collections::BTreeMap<String, f64>, String) {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for s in parsed.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    (out, body)
}

/// The metrics move by exactly what a known sequence of operations does, and name no user,
/// secret or address; health answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_and_name_no_user_secret_or_address() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let addr = keyserver_tests::listening(&server.line, "metrics").expect("metrics= in the line");
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    assert_eq!(http_get(&addr, "/readyz").await.0, 200);
    assert_eq!(http_get(&addr, "/nothing").await.0, 404);
    let (before, _) = scrape(&addr).await;
    let conn = Connection::connect(&config(&server)).await.unwrap();
    let user = UserName::new("alice-metrics").unwrap();
    let pw = SecretBytes::new(b"pw".to_vec());
    conn.register(&user, &pw).await.unwrap();
    let session = conn.login(&user, &pw).await.unwrap();
    let name = SecretName::new("wallet-metrics").unwrap();
    session
        .store(&name, &SecretBytes::new(b"s".to_vec()), false)
        .await
        .unwrap();
    session.retrieve(&name).await.unwrap();
    assert!(
        conn.login(&user, &SecretBytes::new(b"wrong".to_vec()))
            .await
            .is_err()
    );
    let (after, text) = scrape(&addr).await;
    let moved =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    for (k, by) in [
        ("keyserver_operations_total{op=store,outcome=ok}", 1.0),
        ("keyserver_operations_total{op=retrieve,outcome=ok}", 1.0),
        ("keyserver_logins_total{event=started}", 2.0),
        ("keyserver_logins_total{event=succeeded}", 1.0),
        ("keyserver_logins_total{event=failed}", 1.0),
        (
            "keyserver_requests_total{op=register_start,outcome=ok}",
            1.0,
        ),
        (
            "keyserver_requests_total{op=register_finish,outcome=ok}",
            1.0,
        ),
        ("keyserver_operation_seconds_count{op=store}", 1.0),
    ] {
        assert_eq!(moved(k), by, "{k} in {after:?}");
    }
    assert!(after["keyserver_connections_open{transport=quic}"] >= 1.0);
    assert!(after["keyserver_sessions_open{}"] >= 1.0);
    assert!(
        after.keys().any(|k| k.starts_with("keyserver_build_info")
            && k.contains("storage=sqlite")
            && k.contains("key_provider=file")),
        "{after:?}"
    );
    for private in ["alice", "wallet", "127.0.0.1"] {
        assert!(!text.contains(private), "{private} in the metrics");
    }
}

/// `/readyz` says 503 while the Postgres database is cut away, and 200 once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let Some(pg) = keyserver_tests::PgSchema::create() else {
        return;
    };
    let base: sqlx::postgres::PgConnectOptions = pg.base().parse().unwrap();
    let target = format!("{}:{}", base.get_host(), base.get_port());
    let proxy = crate::fleet::Proxy::start(target.clone()).await;
    let url = pg.url().replacen(&target, &proxy.addr.to_string(), 1);
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--database-url", &url, "--metrics-listen", "127.0.0.1:0"],
    );
    let addr = keyserver_tests::listening(&server.line, "metrics").unwrap();
    assert_eq!(http_get(&addr, "/readyz").await.0, 200);
    proxy.set_up(false);
    let (status, why) = http_get(&addr, "/readyz").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.starts_with("storage"), "{why}");
    assert_eq!(http_get(&addr, "/healthz").await.0, 200);
    proxy.set_up(true);
    let mut back = false;
    for _ in 0..50 {
        if http_get(&addr, "/readyz").await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "/readyz did not come back with the database");
}
