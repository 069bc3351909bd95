//! A server that goes back is caught by the client that saw it further on: a database
//! restored from an earlier copy, the newest audit events deleted, an older version of a
//! secret put back. The client exits 9, outputs nothing, and keeps what it remembers; a
//! client with no memory of the account (a fresh state directory) trusts what it sees.

use std::path::{Path, PathBuf};

use keyserver_tests::{Client, Output, PgSchema, Server, file, pg_exec, sqlite_exec};

/// Where a test's server keeps its data.
enum Db {
    Sqlite(PathBuf),
    Postgres(PgSchema),
}

impl Db {
    /// SQLite in `data`, or a fresh Postgres schema (`None`, after a loud SKIPPED, without
    /// `KEYSERVER_TEST_DATABASE_URL`).
    fn of(postgres: bool, data: &Path) -> Option<Self> {
        if postgres {
            PgSchema::create().map(Self::Postgres)
        } else {
            Some(Self::Sqlite(data.join("keyserver.db")))
        }
    }

    fn start(&self, data: &Path) -> Server {
        match self {
            Self::Sqlite(_) => Server::start(data, &[]),
            Self::Postgres(pg) => Server::start(data, &["--database-url", &pg.url()]),
        }
    }

    /// SQL an operator (or an intruder with the database) runs.
    fn exec(&self, sql: &str) {
        match self {
            Self::Sqlite(db) => sqlite_exec(db, sql),
            Self::Postgres(pg) => pg_exec(&pg.url(), sql),
        }
    }
}

#[track_caller]
fn went_back(out: &Output) {
    assert_eq!(out.code, 9, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("the server went back"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("contact the server's operator"),
        "{}",
        out.stderr
    );
}

fn retrieve(c: &Client, name: &str) -> Output {
    c.with_password("pw", &["retrieve", "--user", "alice", "--name", name])
}

fn store(c: &Client, dir: &Path, name: &str, data: &[u8], replace: bool) {
    let path = file(dir, name, data);
    let mut args = vec!["store", "--user", "alice", "--name", name, "--file", &path];
    if replace {
        args.push("--replace");
    }
    c.with_password("pw", &args).ok();
}

/// The database files put back from a copy taken earlier, under a stopped server.
#[test]
fn a_database_restored_from_an_earlier_copy_is_caught_by_a_client_that_saw_later() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    store(&c, tmp.path(), "wallet", b"first", false);
    server.terminate();
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let db_files = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("keyserver.db")
            })
            .collect::<Vec<_>>()
    };
    for f in db_files(&data) {
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let mut server = Server::start(&data, &[]);
    let c = Client {
        server: server.addr.clone(),
        ..c
    };
    store(&c, tmp.path(), "wallet", b"second", true);
    server.terminate();
    for f in db_files(&data) {
        std::fs::remove_file(f).unwrap();
    }
    for f in db_files(&copy) {
        std::fs::copy(&f, data.join(f.file_name().unwrap())).unwrap();
    }
    let server = Server::start(&data, &[]);
    let c = Client {
        server: server.addr.clone(),
        ..c
    };
    went_back(&retrieve(&c, "wallet"));
    // What this client remembers is kept: it goes on refusing.
    went_back(&c.with_password("pw", &["list", "--user", "alice"]));
    // A client that never saw the account trusts what it sees.
    let fresh = c.device(&tmp.path().join("fresh-device"));
    assert_eq!(retrieve(&fresh, "wallet").ok().stdout, b"first");
    drop(server);
}

fn newest_events_deleted(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let Some(db) = Db::of(postgres, &data) else {
        return;
    };
    let server = db.start(&data);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    store(&c, tmp.path(), "wallet", b"w", false);
    store(&c, tmp.path(), "other", b"o", false);
    // The last few events (the second store's login, store, logout) deleted, and the
    // account's head moved back to match: a consistent but shorter chain.
    db.exec("DELETE FROM audit_events WHERE seq > (SELECT MAX(seq) - 4 FROM audit_events)");
    db.exec(
        "UPDATE accounts SET audit_seq = (SELECT MAX(seq) FROM audit_events), \
         audit_head = (SELECT hash FROM audit_events WHERE seq = \
         (SELECT MAX(seq) FROM audit_events))",
    );
    // The next login and list write new events where the deleted ones were: the chain
    // is behind, or has other events at positions this client saw.
    let out = c.with_password("pw", &["list", "--user", "alice"]);
    went_back(&out);
    assert!(out.stderr.contains("audit"), "{}", out.stderr);
    went_back(&c.with_password("pw", &["audit", "--user", "alice"]));
}

#[test]
fn the_newest_audit_events_deleted_are_caught_on_sqlite() {
    newest_events_deleted(false);
}

#[test]
fn the_newest_audit_events_deleted_are_caught_on_postgres() {
    newest_events_deleted(true);
}

fn older_version_put_back(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let Some(db) = Db::of(postgres, &data) else {
        return;
    };
    let server = db.start(&data);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    store(&c, tmp.path(), "wallet", b"old seed", false);
    db.exec("CREATE TABLE kept AS SELECT version, sealed FROM secrets");
    store(&c, tmp.path(), "wallet", b"new seed", true);
    assert_eq!(retrieve(&c, "wallet").ok().stdout, b"new seed");
    // Version 1's row put back: its ciphertext opens (it was sealed for version 1), so
    // only the client's memory of version 2 tells.
    db.exec(
        "UPDATE secrets SET version = (SELECT version FROM kept), \
         sealed = (SELECT sealed FROM kept)",
    );
    let out = retrieve(&c, "wallet");
    went_back(&out);
    assert!(out.stderr.contains("version 1"), "{}", out.stderr);
    assert!(out.stderr.contains("version 2"), "{}", out.stderr);
}

#[test]
fn an_older_version_of_a_secret_put_back_is_refused_on_sqlite() {
    older_version_put_back(false);
}

#[test]
fn an_older_version_of_a_secret_put_back_is_refused_on_postgres() {
    older_version_put_back(true);
}

/// Another device stored version 2, then version 1's row was put back: a device that
/// never saw version 2 is served version 1, which is newer than anything it remembers, but
/// the chain it reads before printing shows version 2 stored before its retrieve.
#[test]
fn a_version_put_back_is_caught_by_a_device_that_learns_of_the_newer_one_from_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = Db::Sqlite(data.join("keyserver.db"));
    let server = db.start(&data);
    let laptop = server.client().device(&tmp.path().join("laptop"));
    let phone = server.client().device(&tmp.path().join("phone"));
    laptop
        .with_password("pw", &["register", "--user", "alice"])
        .ok();
    store(&laptop, tmp.path(), "wallet", b"old seed", false);
    assert_eq!(retrieve(&phone, "wallet").ok().stdout, b"old seed");
    db.exec("CREATE TABLE kept AS SELECT version, sealed FROM secrets");
    store(&laptop, tmp.path(), "wallet", b"new seed", true);
    db.exec(
        "UPDATE secrets SET version = (SELECT version FROM kept), \
         sealed = (SELECT sealed FROM kept)",
    );
    let out = retrieve(&phone, "wallet");
    went_back(&out);
    assert!(out.stderr.contains("version 1"), "{}", out.stderr);
    assert!(out.stderr.contains("version 2"), "{}", out.stderr);
    // It remembers nothing of that session, and refuses again.
    went_back(&retrieve(&phone, "wallet"));
}

/// Two devices of one user: each sees the other's work extend the history it saw, and
/// learns the versions stored from the verified chain.
#[test]
fn two_devices_each_see_the_chain_advance_and_verify_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let laptop = server.client().device(&tmp.path().join("laptop"));
    let phone = server.client().device(&tmp.path().join("phone"));
    laptop
        .with_password("pw", &["register", "--user", "alice"])
        .ok();
    store(&laptop, tmp.path(), "wallet", b"one", false);
    let first = phone
        .with_password("pw", &["audit", "--user", "alice"])
        .ok()
        .text();
    assert!(first.contains("trusted as first seen"), "{first}");
    // A history trusted as first seen is no ground for a checkpoint; the next audit, which
    // checks against it, leaves one.
    assert!(!first.contains("checkpoint left at event"), "{first}");
    let second = phone
        .with_password("pw", &["audit", "--user", "alice"])
        .ok()
        .text();
    assert!(second.contains("checkpoint left at event"), "{second}");
    store(&laptop, tmp.path(), "wallet", b"two", true);
    store(&laptop, tmp.path(), "wallet", b"three", true);
    let doc = phone
        .with_password("pw", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(doc["chain_verified"], true);
    let pinned = doc["pinned"]["seq"].as_u64().unwrap();
    let last = doc["events"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(pinned < last, "{doc}");
    assert_eq!(retrieve(&phone, "wallet").ok().stdout, b"three");
}

/// A checkpoint one device left lets a new device, which remembers nothing, catch a server
/// that went back behind it. (A server that withholds its checkpoints leaves a new device
/// trusting what it sees.)
#[test]
fn a_checkpoint_lets_a_new_device_catch_a_server_that_went_back_behind_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = Db::Sqlite(data.join("keyserver.db"));
    let server = db.start(&data);
    let laptop = server.client().device(&tmp.path().join("laptop"));
    laptop
        .with_password("pw", &["register", "--user", "alice"])
        .ok();
    store(&laptop, tmp.path(), "wallet", b"w", false);
    let doc = laptop
        .with_password("pw", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    let left = doc["checkpoint_left"]["seq"].as_u64().unwrap();
    // A new device starts from it.
    let phone = server.client().device(&tmp.path().join("phone"));
    let doc = phone
        .with_password("pw", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(doc["pinned_from"], "checkpoint", "{doc}");
    assert_eq!(doc["checkpoint"]["seq"].as_u64(), Some(left), "{doc}");
    // The chain cut back behind the checkpoint, the head moved to match.
    db.exec(&format!(
        "DELETE FROM audit_events WHERE seq > {}",
        left - 3
    ));
    db.exec(&format!(
        "UPDATE accounts SET audit_seq = {0}, \
         audit_head = (SELECT hash FROM audit_events WHERE seq = {0})",
        left - 3
    ));
    let tablet = server.client().device(&tmp.path().join("tablet"));
    went_back(&tablet.with_password("pw", &["list", "--user", "alice"]));
    // Without checkpoints a new device has nothing to go by.
    db.exec("DELETE FROM checkpoints");
    let watch = server.client().device(&tmp.path().join("watch"));
    watch.with_password("pw", &["list", "--user", "alice"]).ok();
}
