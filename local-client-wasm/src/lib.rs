//! The keyserver client in the browser: `local-client`'s portable core (OPAQUE, sessions,
//! sealing, the checks that catch a lying server) compiled to WebAssembly, with requests
//! carried over WebSocket (`wss://HOST:PORT/v1`, the server's web listener).
//!
//! ```js
//! import init, { Client } from "./pkg/local_client_wasm.js";
//! await init();
//! const client = await Client.connect("wss://keys.example:8443/v1");
//! await client.register("alice", password);
//! const session = await client.login("alice", password);
//! await session.store("wallet", new TextEncoder().encode("seed words"), false);
//! const secret = await session.retrieve("wallet"); // Uint8Array
//! ```
//!
//! - Every call returns a Promise; failures are `KeyserverError`s whose `code` carries the
//!   meaning of the command line's exit code (`exitCode`).
//! - The password is taken by the call that needs it and not kept in JavaScript's reach
//!   (a `Uint8Array` passed as a password is zeroed once copied; a string cannot be). The
//!   keys derived from it never leave WebAssembly memory, and are zeroized when dropped.
//! - Secrets come back as `Uint8Array`.
//! - Randomness is the browser's `crypto.getRandomValues`.
//! - What the client knows of an account (the audit position it verified) is kept in the
//!   store the page passes, IndexedDB by default, and checked on every login: a server
//!   that goes back or forks the account's history is caught as on the command line.

#![cfg(target_arch = "wasm32")]

mod api;
mod error;
mod link;
mod store;

pub use api::{Client, Session, stretch_once};
