#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! What the server and client refuse: wrong passwords, other users, other CAs, tampering.

use keyserver_tests::{Client, Server, file};

#[test]
fn a_wrong_password_and_an_unknown_user_look_the_same_count_down_alike_and_the_audit_shows_the_failure()
 {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = server.client();
    c.with_password("right", &["register", "--user", "alice"])
        .ok();
    // Each failure says the same thing, with the same count of guesses left, for a real
    // account and for a name that does not exist.
    for left in ["9 guesses left", "8 guesses left"] {
        let wrong = c.with_password("wrong", &["list", "--user", "alice"]);
        let unknown = c.with_password("right", &["list", "--user", "nobody"]);
        assert_eq!(wrong.code, 3, "{wrong:?}");
        assert_eq!(unknown.code, 3, "{unknown:?}");
        assert_eq!(wrong.stderr, unknown.stderr);
        assert!(
            wrong.stderr.contains("wrong user name or password") && wrong.stderr.contains(left),
            "{}",
            wrong.stderr
        );
        assert!(wrong.stdout.is_empty() && unknown.stdout.is_empty());
    }
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
    assert!(kinds.contains(&"login_failed"), "{kinds:?}");
    assert_eq!(doc["chain_verified"], true);
}

#[test]
fn registering_a_taken_name_fails_and_leaves_the_account_working() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = server.client();
    c.with_password("one", &["register", "--user", "alice"])
        .ok();
    let again = c.with_password("two", &["register", "--user", "alice"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains("already registered"),
        "{}",
        again.stderr
    );
    c.with_password("one", &["list", "--user", "alice"]).ok();
    assert_eq!(c.with_password("two", &["list", "--user", "alice"]).code, 3);
}

#[test]
fn users_cannot_see_read_or_delete_each_others_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = server.client();
    c.with_password("a", &["register", "--user", "alice"]).ok();
    c.with_password("b", &["register", "--user", "bob"]).ok();
    let f = file(tmp.path(), "s", b"alice only");
    c.with_password(
        "a",
        &["store", "--user", "alice", "--name", "wallet", "--file", &f],
    )
    .ok();
    assert_eq!(
        c.with_password("b", &["retrieve", "--user", "bob", "--name", "wallet"])
            .code,
        4
    );
    assert_eq!(
        c.with_password("b", &["delete", "--user", "bob", "--name", "wallet"])
            .code,
        4
    );
    assert_eq!(
        c.with_password("b", &["list", "--user", "bob"]).ok().stdout,
        b""
    );
    // Bob storing the same name makes his own secret; Alice's is untouched.
    let g = file(tmp.path(), "t", b"bob's");
    c.with_password(
        "b",
        &["store", "--user", "bob", "--name", "wallet", "--file", &g],
    )
    .ok();
    assert_eq!(
        c.with_password("a", &["retrieve", "--user", "alice", "--name", "wallet"])
            .ok()
            .stdout,
        b"alice only"
    );
    assert_eq!(
        c.with_password("b", &["retrieve", "--user", "bob", "--name", "wallet"])
            .ok()
            .stdout,
        b"bob's"
    );
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_with_exit_6() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let other = tmp.path().join("other");
    let st = std::process::Command::new(keyserver_tests::bin("keyserver"))
        .arg("init")
        .arg("--data-dir")
        .arg(&other)
        .output()
        .unwrap();
    assert!(st.status.success());
    let c = Client {
        ca: other.join("ca.pem"),
        ..server.client()
    };
    let out = c.with_password("pw", &["register", "--user", "alice"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    // The right CA but a name the certificate does not carry: also refused.
    let mut c = server.client();
    c.server_name = Some("example.com".into());
    assert_eq!(
        c.with_password("pw", &["register", "--user", "alice"]).code,
        6
    );
}

#[test]
fn an_unreachable_server_exits_6() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let mut c = server.client();
    drop(server);
    c.server = "127.0.0.1:9".into();
    let out = c.with_password("pw", &["list", "--user", "alice"]);
    assert_eq!(out.code, 6, "{out:?}");
}
