#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! Online guessing through the real binaries: what the command line says and exits with.
//! The rules themselves (counting at login start, abandoned logins, unknown names, rate
//! limits, misused sealed requests) are tested in-process in `keyserver/tests/service/`.

use std::time::Duration;

use keyserver_protocol::{SecretBytes, UserName};
use keyserver_tests::{Server, init_data_dir};
use local_client::{ClientConfig, Connection};

fn server_with(config: &str) -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init_data_dir(&data);
    std::fs::write(data.join("keyserver.toml"), config).unwrap();
    let server = Server::start(&data, &[]);
    (tmp, server)
}

#[test]
fn wrong_passwords_lock_the_account_the_lockout_ends_and_a_success_resets_the_count() {
    let (_tmp, server) = server_with("max_failed_logins = 3\nlockout_base_secs = 2\n");
    let c = server.client();
    c.with_password("right", &["register", "--user", "alice"])
        .ok();
    for _ in 0..3 {
        assert_eq!(
            c.with_password("wrong", &["list", "--user", "alice"]).code,
            3
        );
    }
    let locked = c.with_password("right", &["list", "--user", "alice"]);
    assert_eq!(locked.code, 5, "{locked:?}");
    assert!(locked.stderr.contains("try again in"), "{}", locked.stderr);
    std::thread::sleep(Duration::from_millis(2100));
    c.with_password("right", &["list", "--user", "alice"]).ok();
    // The success reset the count: two more failures do not lock.
    for _ in 0..2 {
        assert_eq!(
            c.with_password("wrong", &["list", "--user", "alice"]).code,
            3
        );
    }
    c.with_password("right", &["list", "--user", "alice"]).ok();
    // An unknown name locks out alike, with the same message.
    for _ in 0..3 {
        assert_eq!(
            c.with_password("wrong", &["list", "--user", "nobody"]).code,
            3
        );
    }
    let nobody = c.with_password("right", &["list", "--user", "nobody"]);
    assert_eq!(nobody.code, 5, "{nobody:?}");
    assert!(nobody.stderr.contains("try again in"), "{}", nobody.stderr);
    let doc = c
        .with_password("right", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    let kinds: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"login_locked") && kinds.contains(&"login_failed"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_cannot_pile_up_sessions() {
    let (_tmp, server) = server_with("max_sessions_per_account = 2\n");
    server
        .client()
        .with_password("pw", &["register", "--user", "alice"])
        .ok();
    let config = ClientConfig::new(&server.addr, &server.data_dir.join("ca.pem")).unwrap();
    let conn = Connection::connect(&config).await.unwrap();
    let (alice, pw) = (
        UserName::new("alice").unwrap(),
        SecretBytes::new(b"pw".to_vec()),
    );
    let first = conn.login(&alice, &pw).await.unwrap();
    let _second = conn.login(&alice, &pw).await.unwrap();
    let c = server.client();
    let out =
        tokio::task::spawn_blocking(move || c.with_password("pw", &["list", "--user", "alice"]))
            .await
            .unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("slow down"), "{}", out.stderr);
    // Logging one out makes room.
    first.logout().await.unwrap();
    let c = server.client();
    tokio::task::spawn_blocking(move || c.with_password("pw", &["list", "--user", "alice"]))
        .await
        .unwrap()
        .ok();
}
