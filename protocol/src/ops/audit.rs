//! `audit`: the account's hash-chained audit log, a page at a time; the client verifies
//! the chain (`crate::audit_chain`).

use serde::{Deserialize, Serialize};

use crate::audit_chain::AuditEvent;

/// One page of the account's audit events with seq greater than `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// The seq of the last event already received (0 for the start).
    pub after: u64,
}

/// A page of `audit`: at most [`crate::limits::AUDIT_PAGE`] events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The events, in seq order.
    pub events: Vec<AuditEvent>,
    /// Whether more pages follow.
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        OpRequest, OpResponse,
        audit_chain::{EventBody, EventKind, Outcome},
        limits::{AUDIT_PAGE, MAX_SEALED_BODY},
        names::NameTag,
    };

    #[test]
    fn an_audit_request_round_trips() {
        let r = OpRequest::Audit(Audit { after: 7 });
        assert_eq!(OpRequest::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn a_full_page_of_the_largest_events_fits_in_a_sealed_body() {
        // Every optional part at once (no real event has them all).
        let mut body = EventBody::about(EventKind::Store, &NameTag([0xff; 32]), Outcome::Refused)
            .at_version(u64::MAX)
            .with_digest([0xff; 32]);
        body.key = Some(
            crate::names::KeyName::new("\u{10ffff}".repeat(crate::limits::MAX_SECRET_NAME / 4))
                .unwrap(),
        );
        let ev = AuditEvent {
            seq: u64::MAX,
            time: i64::MIN,
            body,
            hash: [0xff; 32],
        };
        let page = crate::ops::OpAnswer {
            position: Some(crate::audit_chain::AuditPosition {
                seq: u64::MAX,
                head: [0xff; 32],
            }),
            response: OpResponse::Audit(AuditPage {
                events: vec![ev; AUDIT_PAGE],
                more: true,
            }),
        };
        let sealed = page.encode().len() + crate::session::channel::RESPONSE_OVERHEAD;
        assert!(sealed <= MAX_SEALED_BODY);
        assert_eq!(crate::ops::OpAnswer::decode(&page.encode()).unwrap(), page);
    }
}
