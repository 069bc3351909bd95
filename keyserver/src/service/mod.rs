//! The protocol service: turns one request's bytes into one response's bytes. Transports
//! call [`Core::handle`] and know nothing else; everything a request can do starts here.
//!
//! ```text
//! handle ─ decode ─ admission ─┬─ registration   RegisterStart / RegisterFinish
//!   (reads the clock once)     ├─ login          LoginStart / LoginFinish / LoginAbort
//!                              └─ sealed         open, replay, recorded answers
//!                                   └─ ops::<op> one module per operation
//! ```
//!
//! - [`state`]: what the service holds ([`Core`]).
//! - [`admission`]: rate limits on handshake starts, per address and overall.
//! - [`pending`]: handshakes between their two steps.
//! - [`sessions`]: open sessions, their expiry and adoption into memory.
//! - [`error`]: why a request failed, mapped to a wire code in one place.
//! - `upkeep`: the periodic sweep of memory and purge of storage.
//!
//! Time is read once per request, here, and passed down as `now`; with a
//! [`crate::clock::ManualClock`] a test moves it.

pub mod admission;
pub mod error;
pub mod gates;
pub(crate) mod login;
pub(crate) mod ops;
pub mod pending;
mod registration;
mod sealed;
pub mod sessions;
mod state;
mod upkeep;

use std::net::IpAddr;

use keyserver_protocol::{ErrorCode, Request, Response};
use tracing::debug;

pub use self::{error::ServerError, state::Core};
use crate::clock::Now;

impl Core {
    /// Handles one request from `peer`. Never fails: every problem becomes an error
    /// response.
    pub async fn handle(&self, bytes: &[u8], peer: IpAddr) -> Vec<u8> {
        let now = self.clock.now();
        let response = match Request::decode(bytes) {
            Ok(req) => {
                let kind = req.kind();
                let response = match self.dispatch(req, peer, now).await {
                    Ok(r) => r,
                    Err(e) => {
                        let reply = e.reply();
                        debug!(request = kind, code = reply.code.name(), "request refused");
                        Response::Error(reply)
                    }
                };
                self.count(kind, &response);
                response
            }
            Err(e) => {
                debug!(error = %e, "undecodable request");
                Response::Error(ServerError::Malformed.reply())
            }
        };
        response.encode()
    }

    async fn dispatch(
        &self,
        req: Request,
        peer: IpAddr,
        now: Now,
    ) -> Result<Response, ServerError> {
        // Handshake starts cost an OPAQUE evaluation and a durable write, and an attestation
        // a call to the security module: they are what a flood costs the server most, so
        // they are what the rate limits meter.
        if matches!(
            req,
            Request::RegisterStart { .. } | Request::LoginStart { .. } | Request::Attest { .. }
        ) {
            self.limiter
                .check(peer, now)
                .map_err(|secs| ServerError::SlowDown {
                    retry_after_secs: Some(secs),
                })?;
        }
        match req {
            Request::RegisterStart { user, message } => {
                registration::start(self, user, &message, now).await
            }
            Request::RegisterFinish {
                handshake,
                upload,
                sealed_storage_key,
            } => registration::finish(self, handshake, &upload, &sealed_storage_key, now).await,
            Request::LoginStart { user, message } => login::start(self, user, &message, now).await,
            Request::LoginFinish { handshake, message } => {
                login::finish(self, handshake, &message, now).await
            }
            Request::LoginAbort { handshake } => login::abort(self, handshake, now).await,
            Request::Sealed(req) => sealed::handle(self, &req, peer, now).await,
            Request::Attest { nonce } => self.attest(nonce).await,
        }
    }

    /// An attestation document bound to this server's TLS key and `nonce`.
    async fn attest(
        &self,
        nonce: [u8; keyserver_protocol::limits::ATTESTATION_NONCE],
    ) -> Result<Response, ServerError> {
        let attester = self.attester.as_ref().ok_or(ServerError::NoAttestation)?;
        let document = attester.document(nonce).await.map_err(|e| {
            tracing::error!(error = %e, "no attestation document");
            ServerError::Internal("the security module gave no document")
        })?;
        Ok(Response::Attestation {
            document: keyserver_protocol::codec::Bytes::new(document)
                .ok_or(ServerError::Internal("an attestation document too large"))?,
        })
    }

    /// Counts request `kind` answered with `response` (a sealed answer counts as `ok` here;
    /// its operation is counted by name where it runs).
    fn count(&self, kind: &'static str, response: &Response) {
        use crate::metrics::{Login, Op, Outcome};
        let code = match response {
            Response::Error(e) => Some(e.code),
            _ => None,
        };
        let outcome = code.map_or("ok", |c| c.name());
        let m = &self.metrics;
        m.requests
            .get_or_create(&Outcome { op: kind, outcome })
            .inc();
        if code == Some(ErrorCode::SLOW_DOWN) {
            m.rate_limited.get_or_create(&Op { op: kind }).inc();
        }
        let event = match (kind, code) {
            ("login_start", None) => Some("started"),
            ("login_start", Some(ErrorCode::ACCOUNT_LOCKED)) => Some("locked"),
            ("login_finish", None) => Some("succeeded"),
            // A client that cannot finish (a wrong password) aborts: a guess counted.
            ("login_finish", Some(ErrorCode::AUTH_FAILED)) | ("login_abort", None) => {
                Some("failed")
            }
            _ => None,
        };
        if let Some(event) = event {
            m.logins.get_or_create(&Login { event }).inc();
        }
    }

    /// Drops expired handshakes (recording abandoned logins) and expired sessions.
    pub async fn sweep(&self) {
        upkeep::sweep(self, self.clock.now()).await;
    }

    /// Deletes from storage what can no longer be used (see [`upkeep`]).
    pub async fn purge(&self) {
        upkeep::purge(self, self.clock.now()).await;
    }
}
