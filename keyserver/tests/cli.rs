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
        "setup.key",
        "server-setup.sealed",
        "keyserver.toml",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let key = std::fs::read(dir.join("setup.key")).unwrap();
    let second = run();
    assert!(second.status.success());
    assert_eq!(std::fs::read(dir.join("setup.key")).unwrap(), key);
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
