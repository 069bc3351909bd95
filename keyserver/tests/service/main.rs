#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    unreachable_pub,
    reason = "tests: a panic is how a test fails"
)]
//! The server's service tested in-process: the protocol's client states (through the
//! client library, or by hand) against [`keyserver::service::Core`] over a scratch database,
//! with a clock the tests move. No process, no socket, no real key-stretching: every
//! operation, both handshakes, expiry, replay and lockout in a few seconds. Tests whose
//! outcome depends on the database (concurrency, locking) run on SQLite and on Postgres.
//!
//! The end-to-end tests in `tests/` (the workspace crate) keep what only real binaries can
//! show: the command line, TLS, QUIC and TCP, processes killed and restarted.

mod guessing;
mod handshakes;
mod harness;
mod held_keys;
mod operations;
mod rekey;
mod replay;
mod review;
mod sessions;
