#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! The whole user journey through the real binaries.

use keyserver_tests::{Server, file, random_bytes};

#[test]
fn register_store_retrieve_list_replace_delete_audit_change_password_and_rotate_key() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    assert!(
        server
            .line
            .starts_with("keyserver listening quic=127.0.0.1:"),
        "{}",
        server.line
    );
    let c = server.client();
    let pw = "correct horse battery staple";

    c.with_password(pw, &["register", "--user", "alice"]).ok();

    // Binary secrets of several sizes, the largest 64 KiB, come back byte for byte.
    let small = (0u8..=255).collect::<Vec<_>>();
    let big = random_bytes(64 * 1024);
    let small_path = file(tmp.path(), "small.bin", &small);
    let big_path = file(tmp.path(), "big.bin", &big);
    c.with_password(
        pw,
        &[
            "store",
            "--user",
            "alice",
            "--name",
            "wallet",
            "--file",
            &small_path,
        ],
    )
    .ok();
    c.with_password(
        pw,
        &[
            "store", "--user", "alice", "--name", "big", "--file", &big_path,
        ],
    )
    .ok();
    assert_eq!(
        c.with_password(pw, &["retrieve", "--user", "alice", "--name", "wallet"])
            .ok()
            .stdout,
        small
    );
    assert_eq!(
        c.with_password(pw, &["retrieve", "--user", "alice", "--name", "big"])
            .ok()
            .stdout,
        big
    );

    // A secret from stdin.
    let out = c.run(
        &["store", "--user", "alice", "--name", "piped", "--file", "-"],
        Some(pw),
        &[],
        b"from stdin\0\xff",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        c.with_password(pw, &["retrieve", "--user", "alice", "--name", "piped"])
            .ok()
            .stdout,
        b"from stdin\0\xff"
    );

    // list, plain and JSON.
    let text = c
        .with_password(pw, &["list", "--user", "alice"])
        .ok()
        .text();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().any(|l| l.starts_with("wallet\t")), "{text}");
    let json = c
        .with_password(pw, &["list", "--user", "alice", "--json"])
        .ok()
        .json();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let big_entry = entries.iter().find(|e| e["name"] == "big").unwrap();
    assert_eq!(big_entry["size"], 64 * 1024);
    assert_eq!(big_entry["version"], 1);
    let created = big_entry["created"].as_str().unwrap();
    assert!(
        created.len() >= 20 && created.ends_with('Z') && &created[4..5] == "-",
        "{created}"
    );

    // Storing over an existing name needs --replace, which makes version 2.
    let out = c.with_password(
        pw,
        &[
            "store", "--user", "alice", "--name", "wallet", "--file", &big_path,
        ],
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(
        c.with_password(pw, &["retrieve", "--user", "alice", "--name", "wallet"])
            .ok()
            .stdout,
        small
    );
    c.with_password(
        pw,
        &[
            "store",
            "--user",
            "alice",
            "--name",
            "wallet",
            "--file",
            &big_path,
            "--replace",
        ],
    )
    .ok();
    assert_eq!(
        c.with_password(pw, &["retrieve", "--user", "alice", "--name", "wallet"])
            .ok()
            .stdout,
        big
    );
    let json = c
        .with_password(pw, &["list", "--user", "alice", "--json"])
        .ok()
        .json();
    let wallet = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "wallet")
        .unwrap()
        .clone();
    assert_eq!(wallet["version"], 2);

    // delete, then the name is gone.
    c.with_password(pw, &["delete", "--user", "alice", "--name", "piped"])
        .ok();
    assert_eq!(
        c.with_password(pw, &["retrieve", "--user", "alice", "--name", "piped"])
            .code,
        4
    );
    assert_eq!(
        c.with_password(pw, &["delete", "--user", "alice", "--name", "piped"])
            .code,
        4
    );

    // audit: every event, a verified chain.
    let doc = c
        .with_password(pw, &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(doc["chain_verified"], true);
    let events = doc["events"].as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        for k in ["time", "kind", "secret", "outcome"] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "register",
        "login_started",
        "login_succeeded",
        "store",
        "retrieve",
        "delete",
        "list",
        "logout",
    ] {
        assert!(kinds.contains(&k), "{k} not in {kinds:?}");
    }
    let text = c
        .with_password(pw, &["audit", "--user", "alice"])
        .ok()
        .text();
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    assert!(tail[2].starts_with("chain verified"), "{text}");
    // This client saw the account before (every command above): the chain is checked to
    // extend what it saw, and a checkpoint is left for other devices.
    assert!(
        tail[1].contains("the newest this client had verified"),
        "{text}"
    );
    assert!(tail[0].starts_with("checkpoint left at event"), "{text}");

    // change-password: old refused, new works, secrets intact.
    let out = c.run(
        &["change-password", "--user", "alice"],
        Some(pw),
        &[("KEYSERVER_NEW_PASSWORD", "new password")],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = c.with_password(pw, &["retrieve", "--user", "alice", "--name", "wallet"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        c.with_password(
            "new password",
            &["retrieve", "--user", "alice", "--name", "wallet"]
        )
        .ok()
        .stdout,
        big
    );
    assert_eq!(
        c.with_password(
            "new password",
            &["retrieve", "--user", "alice", "--name", "big"]
        )
        .ok()
        .stdout,
        big
    );
    let doc = c
        .with_password("new password", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(doc["chain_verified"], true);
    assert!(
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "change_password")
    );

    // rotate-key: every secret sealed again under a new storage key, all readable.
    let out = c.with_password("new password", &["rotate-key", "--user", "alice"]);
    assert_eq!(out.code, 0, "{out:?}");
    for (name, data) in [("wallet", &big), ("big", &big)] {
        assert_eq!(
            c.with_password(
                "new password",
                &["retrieve", "--user", "alice", "--name", name]
            )
            .ok()
            .stdout,
            *data
        );
    }
    let doc = c
        .with_password("new password", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(doc["chain_verified"], true);
    assert!(
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "rotate_key")
    );
    // A wrong password rotates nothing.
    let out = c.with_password("wrong", &["rotate-key", "--user", "alice"]);
    assert_eq!(out.code, 3, "{out:?}");
}

#[test]
fn passwords_from_stdin_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = server.client();
    let out = c.run(
        &["register", "--user", "bob", "--password-stdin"],
        None,
        &[],
        b"first pw\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = c.run(
        &["change-password", "--user", "bob", "--password-stdin"],
        None,
        &[],
        b"first pw\nsecond pw\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = c.run(
        &["list", "--user", "bob", "--password-stdin"],
        None,
        &[],
        b"second pw\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = c.run(
        &["list", "--user", "bob", "--password-stdin"],
        None,
        &[],
        b"first pw\n",
    );
    assert_eq!(out.code, 3, "{out:?}");
    // A password line longer than the limit is refused whole: cut at the limit, its rest
    // would have become the second line, the *new* password of change-password.
    let mut long = vec![b'x'; 5000];
    long.extend_from_slice(b"\nnew pw\n");
    let out = c.run(
        &["change-password", "--user", "bob", "--password-stdin"],
        None,
        &[],
        &long,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("longer than 4096 bytes"),
        "{}",
        out.stderr
    );
    let out = c.run(
        &["list", "--user", "bob", "--password-stdin"],
        None,
        &[],
        b"second pw\n",
    );
    assert_eq!(out.code, 0, "the password did not change: {out:?}");
}

#[test]
fn fifty_clients_at_once_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = server.client();
    let secret = file(tmp.path(), "s.bin", b"shared secret bytes");
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let (c, secret) = (c.clone(), secret.clone());
            std::thread::spawn(move || {
                let user = format!("user{i}");
                c.with_password("pw", &["register", "--user", &user]).ok();
                c.with_password(
                    "pw",
                    &["store", "--user", &user, "--name", "s", "--file", &secret],
                )
                .ok();
                c.with_password("pw", &["retrieve", "--user", &user, "--name", "s"])
                    .ok()
                    .stdout
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), b"shared secret bytes");
    }
}
