//! `audit`: the account's audit log, verified here.

use keyserver_protocol::{
    OpRequest, OpResponse,
    audit_chain::{AuditEvent, ChainError, ChainVerifier},
    limits::AUDIT_PAGE,
    ops::Audit,
};

use crate::{ClientError, Session};

/// The audit log and whether its hash chain verified.
#[derive(Debug)]
pub struct AuditReport {
    /// Every event, oldest first.
    pub events: Vec<AuditEvent>,
    /// `Ok` if every event hashes to its stored hash and seqs run from 1 without gaps.
    pub verification: Result<(), ChainError>,
}

impl Session {
    /// Reads the whole audit log and verifies its hash chain.
    ///
    /// A chain that does not verify is reported in [`AuditReport::verification`], not as
    /// an error: the events are still shown. Errors: [`ClientError::SessionEnded`] (log in
    /// again); [`ClientError::Protocol`] for pages that do not follow each other;
    /// transport errors (retry).
    pub async fn audit(&self) -> Result<AuditReport, ClientError> {
        let mut events: Vec<AuditEvent> = Vec::new();
        let mut verifier = ChainVerifier::new(&self.user);
        let mut verification = Ok(());
        loop {
            let after = events.last().map_or(0, |e| e.seq);
            let OpResponse::Audit(page) = self.call(&OpRequest::Audit(Audit { after })).await?
            else {
                return Err(ClientError::Protocol("unexpected reply to Audit"));
            };
            if page.events.len() > AUDIT_PAGE
                || (page.more && page.events.is_empty())
                || page.events.first().is_some_and(|e| e.seq <= after)
            {
                return Err(ClientError::Protocol("bad audit page"));
            }
            for e in &page.events {
                if verification.is_ok() {
                    verification = verifier.push(e);
                }
            }
            events.extend(page.events);
            if !page.more {
                return Ok(AuditReport {
                    events,
                    verification,
                });
            }
        }
    }
}
