#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! What is on disk: durable across restarts, ciphertext only, tamper-evident.

use keyserver_tests::{Server, file, random_bytes};

fn db_files(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["keyserver.db", "keyserver.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn everything_survives_a_restart_and_sigterm_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    let secret = random_bytes(5000);
    let f = file(tmp.path(), "s", &secret);
    c.with_password(
        "pw",
        &["store", "--user", "alice", "--name", "wallet", "--file", &f],
    )
    .ok();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");

    let server = Server::start(&data, &[]);
    let c = server.client();
    assert_eq!(
        c.with_password("pw", &["retrieve", "--user", "alice", "--name", "wallet"])
            .ok()
            .stdout,
        secret
    );
    let doc = c
        .with_password("pw", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(doc["chain_verified"], true);
}

#[test]
fn the_database_holds_neither_the_secret_nor_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let c = server.client();
    let password = "a very memorable passphrase 1234";
    c.with_password(password, &["register", "--user", "alice"])
        .ok();
    let secret = b"SEED-WORDS abandon abandon abandon ability";
    let f = file(tmp.path(), "s", secret);
    c.with_password(
        password,
        &["store", "--user", "alice", "--name", "wallet", "--file", &f],
    )
    .ok();
    let disk = db_files(&data);
    assert!(!disk.is_empty());
    assert!(contains(&disk, b"wallet"), "sanity: the name is stored");
    assert!(!contains(&disk, secret), "plaintext secret on disk");
    assert!(
        !contains(&disk, &secret[..16]),
        "part of the plaintext secret on disk"
    );
    assert!(!contains(&disk, password.as_bytes()), "password on disk");
    for f in std::fs::read_dir(&data).unwrap() {
        let b = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!contains(&b, password.as_bytes()) && !contains(&b, secret));
    }
}

#[tokio::test]
async fn a_ciphertext_altered_or_swapped_in_the_database_is_detected() {
    use sqlx::Connection;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    let f = file(tmp.path(), "a", b"secret A");
    let g = file(tmp.path(), "b", b"secret B");
    c.with_password(
        "pw",
        &["store", "--user", "alice", "--name", "a", "--file", &f],
    )
    .ok();
    c.with_password(
        "pw",
        &["store", "--user", "alice", "--name", "b", "--file", &g],
    )
    .ok();

    let url = format!("sqlite://{}", data.join("keyserver.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    // Flip one bit of A's ciphertext.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM secrets WHERE name = 'a'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let mut altered = sealed.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    sqlx::query("UPDATE secrets SET sealed = ? WHERE name = 'a'")
        .bind(&altered)
        .execute(&mut db)
        .await
        .unwrap();
    let out = c.with_password("pw", &["retrieve", "--user", "alice", "--name", "a"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "no garbage output");
    assert!(out.stderr.contains("integrity"), "{}", out.stderr);

    // Put B's (valid) ciphertext under A's name: detected too.
    sqlx::query("UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'b') WHERE name = 'a'")
        .execute(&mut db)
        .await
        .unwrap();
    let out = c.with_password("pw", &["retrieve", "--user", "alice", "--name", "a"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty());

    // Roll A back to its real ciphertext but claim another version: detected.
    sqlx::query("UPDATE secrets SET sealed = ?, version = 2 WHERE name = 'a'")
        .bind(&sealed)
        .execute(&mut db)
        .await
        .unwrap();
    let out = c.with_password("pw", &["retrieve", "--user", "alice", "--name", "a"]);
    assert_eq!(out.code, 1, "{out:?}");

    // An audit event changed in the database breaks the chain the client checks.
    sqlx::query("UPDATE audit_events SET outcome = 2 WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    let out = c.with_password("pw", &["audit", "--user", "alice", "--json"]);
    assert_ne!(out.code, 0);
    assert_eq!(out.json()["chain_verified"], false);
}
