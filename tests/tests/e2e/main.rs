#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! End-to-end tests: the real `keyserver` and `local-client` binaries, over real QUIC and
//! TLS on loopback, against SQLite and a real Postgres. One test binary, so that its tests
//! (which mostly wait on child processes) run side by side.
//!
//! What a process adds is tested here: the command line and its exit codes, TLS and the
//! transports, processes killed, restarted and cut from their database. The server's rules
//! are tested in-process in `keyserver/tests/service/`.

mod attestation;
mod browser;
mod corpus;
mod enclave;
mod fleet;
mod flow;
mod guessing;
mod hostile_transport;
mod keys;
mod kms;
mod operability;
mod rollback;
mod security;
mod storage;
mod transport;
