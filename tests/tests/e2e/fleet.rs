#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! Several instances on one Postgres, durability under kill -9 on both backends, and the
//! database going away under a running server.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use keyserver_protocol::{ErrorCode, SecretBytes, SecretName, UserName, suite::KsfParams};
use keyserver_tests::{PgSchema, Server, copy_data_dir, init_data_dir};
use local_client::{ClientConfig, ClientError, Connection, Transport};

fn config(server: &Server) -> ClientConfig {
    let mut c = ClientConfig::new(&server.addr, &server.data_dir.join("ca.pem")).unwrap();
    c.ksf(KsfParams::INSECURE_TEST_ONLY);
    c
}

fn user(n: &str) -> UserName {
    UserName::new(n).unwrap()
}

fn name(n: &str) -> SecretName {
    SecretName::new(n).unwrap()
}

fn pw(p: &str) -> SecretBytes {
    SecretBytes::new(p.as_bytes().to_vec())
}

/// `n` data dirs made from one `keyserver init`: same CA, certificate and OPAQUE setup.
fn fleet_dirs(root: &Path, n: usize, config: &str) -> Vec<PathBuf> {
    let first = root.join("instance-0");
    init_data_dir(&first);
    std::fs::write(first.join("keyserver.toml"), config).unwrap();
    let mut dirs = vec![first.clone()];
    for i in 1..n {
        let d = root.join(format!("instance-{i}"));
        copy_data_dir(&first, &d);
        dirs.push(d);
    }
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_postgres_serve_as_one() {
    let Some(pg) = PgSchema::create() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fleet_dirs(tmp.path(), 3, "");
    let url = pg.url();
    let servers: Vec<_> = dirs
        .iter()
        .map(|d| Server::start(d, &["--database-url", &url]))
        .collect();
    let conns: Vec<_> = {
        let mut v = Vec::new();
        for s in &servers {
            v.push(Connection::connect(&config(s)).await.unwrap());
        }
        v
    };
    conns[0].register(&user("alice"), &pw("pw")).await.unwrap();
    let session = conns[1].login(&user("alice"), &pw("pw")).await.unwrap();
    session.move_to(&conns[2]);
    session
        .store(
            &name("wallet"),
            &SecretBytes::new(b"fleet secret".to_vec()),
            false,
        )
        .await
        .unwrap();
    session.move_to(&conns[0]);
    assert_eq!(
        session
            .retrieve(&name("wallet"))
            .await
            .unwrap()
            .0
            .expose_secret(),
        b"fleet secret"
    );
    // A registration on one instance is seen as taken on another.
    assert!(matches!(
        conns[2].register(&user("alice"), &pw("x")).await,
        Err(ClientError::UserExists)
    ));
    // The same session on all three at once: every store lands once, the chain holds.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let s = session.clone();
        let c = conns[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let s2 = s.clone();
            s2.move_to(&c);
            s.store(
                &name(&format!("n{i}")),
                &SecretBytes::new(format!("{i}").into_bytes()),
                false,
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(session.list().await.unwrap().len(), 31);
    let audit = session.audit().await.unwrap();
    audit.verification.unwrap();
    // Logout on one instance ends the session on all of them (within the check interval).
    let other = conns[0].login(&user("alice"), &pw("pw")).await.unwrap();
    other.list().await.unwrap();
    other.move_to(&conns[1]);
    other.list().await.unwrap();
    other.move_to(&conns[2]);
    other.logout().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for c in &conns {
        other.move_to(c);
        assert!(matches!(other.list().await, Err(ClientError::SessionEnded)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_on_three_instances_add_up_to_one_count() {
    let Some(pg) = PgSchema::create() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fleet_dirs(
        tmp.path(),
        3,
        "max_failed_logins = 3\nlockout_base_secs = 60\n",
    );
    let url = pg.url();
    let servers: Vec<_> = dirs
        .iter()
        .map(|d| Server::start(d, &["--database-url", &url]))
        .collect();
    let c0 = Connection::connect(&config(&servers[0])).await.unwrap();
    c0.register(&user("bob"), &pw("right")).await.unwrap();
    for s in &servers {
        let c = Connection::connect(&config(s)).await.unwrap();
        assert!(matches!(
            c.login(&user("bob"), &pw("wrong")).await,
            Err(ClientError::AuthFailed { .. })
        ));
    }
    for s in &servers {
        let c = Connection::connect(&config(s)).await.unwrap();
        match c.login(&user("bob"), &pw("right")).await {
            Err(ClientError::Locked {
                retry_after_secs: Some(secs),
            }) => assert!(secs > 0 && secs <= 60),
            other => panic!("expected a lockout, got {other:?}"),
        }
    }
}

/// Streams stores, 64 at a time (so that SQLite's group commit writes them in batches),
/// killing the server with SIGKILL in the middle; every acknowledged store must be there
/// after a restart, intact.
async fn acknowledged_stores_survive_kill_9(data: &Path, args: &[&str]) {
    let mut server = Server::start(data, args);
    // TCP: a dead server is noticed at once (connection refused), so the run stays short.
    let mut cfg = config(&server);
    cfg.transport(Transport::Tcp);
    let conn = Connection::connect(&cfg).await.unwrap();
    conn.register(&user("carol"), &pw("pw")).await.unwrap();
    let session = conn.login(&user("carol"), &pw("pw")).await.unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..64 {
        let (s, acked) = (session.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let n = format!("t{t}-{i}");
                let content = format!("content of {n}").into_bytes();
                match s.store(&name(&n), &SecretBytes::new(content), false).await {
                    Ok(_) => acked.lock().unwrap().push(n),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} stores acknowledged before the kill",
        acked.len()
    );
    let server = Server::start(data, args);
    let conn = Connection::connect(&config(&server)).await.unwrap();
    let session = conn.login(&user("carol"), &pw("pw")).await.unwrap();
    for n in &acked {
        let (got, _) = session
            .retrieve(&name(n))
            .await
            .unwrap_or_else(|e| panic!("{n} acknowledged but lost: {e}"));
        assert_eq!(got.expose_secret(), format!("content of {n}").as_bytes());
    }
    // No half-written record: everything listed opens, and the chain verifies.
    for e in session.list().await.unwrap() {
        session.retrieve(&e.name).await.unwrap();
    }
    session.audit().await.unwrap().verification.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_store_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    acknowledged_stores_survive_kill_9(&tmp.path().join("data"), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_store_on_postgres() {
    let Some(pg) = PgSchema::create() else { return };
    let tmp = tempfile::tempdir().unwrap();
    acknowledged_stores_survive_kill_9(&tmp.path().join("data"), &["--database-url", &pg.url()])
        .await;
}

#[test]
fn an_unreachable_database_at_start_is_a_clear_error_and_a_failed_start() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(keyserver_tests::bin("keyserver"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://nobody@127.0.0.1:9/none",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use the database"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A TCP proxy the test can cut and restore, standing between the server and Postgres.
pub(crate) struct Proxy {
    pub(crate) addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    pub(crate) async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (u, c) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !u.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let (target, c) = (target.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = c.notified() => {}
                    }
                });
            }
        });
        Self { addr, up, cut }
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            self.cut.notify_waiters();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_gives_storage_unavailable_and_the_server_recovers() {
    let Some(pg) = PgSchema::create() else { return };
    let base: sqlx::postgres::PgConnectOptions = pg.base().parse().unwrap();
    let proxy = Proxy::start(format!("{}:{}", base.get_host(), base.get_port())).await;
    let url = pg.url().replacen(
        &format!("{}:{}", base.get_host(), base.get_port()),
        &proxy.addr.to_string(),
        1,
    );
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--database-url", &url]);
    let mut cfg = config(&server);
    cfg.transport(Transport::Tcp);
    let conn = Connection::connect(&cfg).await.unwrap();
    conn.register(&user("dave"), &pw("pw")).await.unwrap();
    let session = conn.login(&user("dave"), &pw("pw")).await.unwrap();
    session
        .store(&name("before"), &SecretBytes::new(b"1".to_vec()), false)
        .await
        .unwrap();

    proxy.set_up(false);
    match session
        .store(&name("during"), &SecretBytes::new(b"2".to_vec()), false)
        .await
    {
        Err(ClientError::Server(ErrorCode::STORAGE_UNAVAILABLE)) => {}
        other => panic!("expected storage unavailable, got {other:?}"),
    }
    assert!(matches!(
        session.retrieve(&name("before")).await,
        Err(ClientError::Server(ErrorCode::STORAGE_UNAVAILABLE))
    ));

    proxy.set_up(true);
    let mut recovered = false;
    for _ in 0..50 {
        if session.retrieve(&name("before")).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "the server did not recover when the database came back"
    );
    session
        .store(&name("after"), &SecretBytes::new(b"3".to_vec()), false)
        .await
        .unwrap();
    let names: Vec<_> = session
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(names, ["after", "before"]);
}

#[test]
fn instances_starting_together_on_an_empty_database_do_not_race_their_migrations() {
    let Some(pg) = PgSchema::create() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fleet_dirs(tmp.path(), 3, "");
    let url = pg.url();
    let starts: Vec<_> = dirs
        .into_iter()
        .map(|d| {
            let url = url.clone();
            std::thread::spawn(move || Server::start(&d, &["--database-url", &url]))
        })
        .collect();
    let servers: Vec<Server> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let c = servers[2].client();
    c.with_password("pw", &["register", "--user", "erin"]).ok();
    for s in &servers {
        s.client()
            .with_password("pw", &["list", "--user", "erin"])
            .ok();
    }
}
