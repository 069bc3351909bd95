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
    // The server knows the secrets by tags it cannot read; "a" was stored first.
    // Flip one bit of A's ciphertext.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM secrets WHERE rowid = 1")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let mut altered = sealed.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    sqlx::query("UPDATE secrets SET sealed = ? WHERE rowid = 1")
        .bind(&altered)
        .execute(&mut db)
        .await
        .unwrap();
    let out = c.with_password("pw", &["retrieve", "--user", "alice", "--name", "a"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "no garbage output");
    assert!(out.stderr.contains("integrity"), "{}", out.stderr);

    // Put B's (valid) ciphertext under A's name: detected too.
    sqlx::query(
        "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE rowid = 2) WHERE rowid = 1",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let out = c.with_password("pw", &["retrieve", "--user", "alice", "--name", "a"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty());

    // Roll A back to its real ciphertext but claim another version: detected.
    sqlx::query("UPDATE secrets SET sealed = ?, version = 2 WHERE rowid = 1")
        .bind(&sealed)
        .execute(&mut db)
        .await
        .unwrap();
    let out = c.with_password("pw", &["retrieve", "--user", "alice", "--name", "a"]);
    assert_eq!(out.code, 1, "{out:?}");

    // An audit event changed in the database breaks the chain the client checks. This
    // client had verified the chain past it: a history it verified was rewritten (exit 9,
    // nothing printed, nothing remembered).
    sqlx::query("UPDATE audit_events SET outcome = 2 WHERE seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    let out = c.with_password("pw", &["audit", "--user", "alice", "--json"]);
    assert_eq!(out.code, 9, "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("does not continue from event"),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.with_password("pw", &["audit", "--user", "alice", "--json"])
            .code,
        9,
        "and again: what it verified stays what it verified"
    );
    // A device that never saw the account shows the log, and that it does not verify.
    let fresh = c.device(&tmp.path().join("fresh-device"));
    let out = fresh.with_password("pw", &["audit", "--user", "alice", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json()["chain_verified"], false);
}

/// Every secret name a user used, through every operation that names a secret (store,
/// replace, retrieve, list, delete, audit, a key rotation), appears nowhere in the
/// database: the server knows secrets by tags and keeps their names sealed.
fn no_secret_name_reaches_the_database(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pg = if postgres {
        match keyserver_tests::PgSchema::create() {
            Some(pg) => Some(pg),
            None => return,
        }
    } else {
        None
    };
    let url = pg.as_ref().map(keyserver_tests::PgSchema::url);
    let args: Vec<&str> = url.as_deref().map_or(vec![], |u| vec!["--database-url", u]);
    let server = Server::start(&data, &args);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    let names = [
        "wallet-main",
        "exchange-api-key",
        "recovery-codes-2026",
        "deleted-later",
    ];
    for n in names {
        let f = file(tmp.path(), "s", b"x");
        c.with_password(
            "pw",
            &["store", "--user", "alice", "--name", n, "--file", &f],
        )
        .ok();
    }
    let f = file(tmp.path(), "s", b"y");
    c.with_password(
        "pw",
        &[
            "store",
            "--user",
            "alice",
            "--name",
            "wallet-main",
            "--file",
            &f,
            "--replace",
        ],
    )
    .ok();
    c.with_password(
        "pw",
        &["retrieve", "--user", "alice", "--name", "exchange-api-key"],
    )
    .ok();
    c.with_password(
        "pw",
        &["retrieve", "--user", "alice", "--name", "never-stored-name"],
    );
    c.with_password(
        "pw",
        &["delete", "--user", "alice", "--name", "deleted-later"],
    )
    .ok();
    let listed = c
        .with_password("pw", &["list", "--user", "alice"])
        .ok()
        .text();
    assert!(
        listed.contains("wallet-main") && listed.contains("recovery-codes-2026"),
        "{listed}"
    );
    let audit = c
        .with_password("pw", &["audit", "--user", "alice"])
        .ok()
        .text();
    assert!(audit.contains("store deleted-later"), "{audit}");
    c.with_password("pw", &["rotate-key", "--user", "alice"])
        .ok();
    let listed = c
        .with_password("pw", &["list", "--user", "alice"])
        .ok()
        .text();
    assert!(listed.contains("exchange-api-key"), "{listed}");
    let mut all = names.to_vec();
    all.push("never-stored-name");
    match &pg {
        None => {
            // The database file, its WAL and shared memory, and every other file.
            let mut disk = Vec::new();
            for f in std::fs::read_dir(&data).unwrap() {
                disk.extend(std::fs::read(f.unwrap().path()).unwrap());
            }
            for n in all {
                assert!(!contains(&disk, n.as_bytes()), "{n} is in the data dir");
            }
        }
        Some(pg) => {
            // Every row of every table, as text (bytes in hex).
            let dump = keyserver_tests::pg_dump_text(&pg.url());
            assert!(dump.len() > 1000, "the dump holds the rows");
            for n in all {
                assert!(!dump.contains(n), "{n} is in the database");
                assert!(
                    !dump.contains(&hex(n.as_bytes())),
                    "{n} is in the database, in hex"
                );
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn no_secret_name_reaches_the_database_on_sqlite() {
    no_secret_name_reaches_the_database(false);
}

#[test]
fn no_secret_name_reaches_the_database_on_postgres() {
    no_secret_name_reaches_the_database(true);
}
