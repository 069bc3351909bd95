#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is how a test fails"
)]
//! The `keyserver` binary's own command line (also makes `cargo test` build the binary for
//! the end-to-end tests).

use std::process::Command;

#[test]
fn init_creates_the_data_dir_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_keyserver"))
            .arg("init")
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    for f in [
        "ca.pem",
        "server.pem",
        "server.key",
        "keyserver.toml",
        "keyserver.db",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // The setup key is next to the data dir, not in it, and init says where and why.
    let key_file = root.path().join("data.setup.key");
    let key = std::fs::read(&key_file).unwrap();
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains(&key_file.display().to_string()), "{said}");
    assert!(said.contains("backups"), "{said}");
    assert!(!dir.join("setup.key").exists() && !dir.join("ca.key").exists());
    // No server secret is in the data dir: the keys are in the database, wrapped.
    assert!(!dir.join("server-setup.sealed").exists());
    assert!(said.contains("wrapped by a key file"), "{said}");
    let second = run();
    assert!(second.status.success());
    assert_eq!(std::fs::read(&key_file).unwrap(), key);
}

/// The setup key lives where it is told: a file anywhere (`--setup-key`), or the
/// environment (`KEYSERVER_SETUP_KEY`), and the server starts from it; another key does not
/// unwrap the deployment's keys.
#[test]
fn the_setup_key_lives_where_it_is_told() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let elsewhere = root.path().join("vault").join("keyserver.key");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_keyserver"))
        .args(["init", "--data-dir"])
        .arg(&dir)
        .arg("--setup-key")
        .arg(&elsewhere)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    assert_eq!(std::fs::read(&elsewhere).unwrap().len(), 32);
    assert!(!root.path().join("data.setup.key").exists());
    // Serving without being told where the key is fails clearly (no key is made up).
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyserver"));
        c.arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KEYSERVER_SETUP_KEY");
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = serve(&[], &[]).wait_with_output().unwrap();
    assert!(!out.status.success());
    // A key in the environment, as a secret manager injects it.
    let hex: String = std::fs::read(&elsewhere)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for env in [vec![("KEYSERVER_SETUP_KEY", hex.as_str())], vec![]] {
        let args: Vec<&str> = if env.is_empty() {
            vec!["--setup-key", elsewhere.to_str().unwrap()]
        } else {
            vec![]
        };
        let mut child = serve(&args, &env);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(line.starts_with("keyserver listening"), "{line:?} {env:?}");
    }
    let wrong = "00".repeat(32);
    let out = serve(&[], &[("KEYSERVER_SETUP_KEY", wrong.as_str())])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrapped by a key file"), "{err}");
    assert!(
        !err.contains(&wrong),
        "the key itself is never printed: {err}"
    );
}

#[test]
fn a_bad_config_file_is_a_clear_error_and_a_failed_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let ok = Command::new(env!("CARGO_BIN_EXE_keyserver"))
        .arg("init")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(ok.status.success());
    std::fs::write(dir.join("keyserver.toml"), "max_failed_logins = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyserver"))
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_failed_logins must be between 1 and 1000"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyserver"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
