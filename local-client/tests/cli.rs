#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is how a test fails"
)]
//! The `local-client` binary's usage errors (also makes `cargo test` build the binary for
//! the end-to-end tests).

use std::process::{Command, Stdio};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_local-client"))
        .args(args)
        .env_remove("KEYSERVER_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_missing_subcommand_or_flag_exits_2() {
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["store", "--user", "a"]).status.code(), Some(2));
}

#[test]
fn no_password_and_no_terminal_exits_2_with_a_sentence() {
    let out = run(&["list", "--user", "alice", "--ca", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no password"), "{err}");
}

#[test]
fn an_invalid_user_name_exits_2() {
    let out = run(&["list", "--user", "bad\nname"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn file_stdin_and_password_stdin_together_exit_2() {
    let out = run(&[
        "store",
        "--user",
        "a",
        "--name",
        "n",
        "--file",
        "-",
        "--password-stdin",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
