//! `audit`: the account's audit log, verified here, and checked against what this client
//! saw before.

use std::collections::BTreeMap;

use keyserver_protocol::{
    NameTag, OpRequest, OpResponse, SecretName,
    audit_chain::{AuditEvent, AuditPosition, ChainError, ChainVerifier, EventKind, Outcome},
    limits::AUDIT_PAGE,
    ops::Audit,
};

use crate::{ClientError, Session, state::Rollback};

/// The audit log and whether its hash chain verified.
#[derive(Debug)]
pub struct AuditReport {
    /// Every event, oldest first.
    pub events: Vec<AuditEvent>,
    /// `Ok` if every event hashes to its stored hash and seqs run from 1 without gaps.
    pub verification: Result<(), ChainError>,
    /// The position this client remembered from earlier runs (or a checkpoint), through
    /// which the chain was checked to pass; `None` if it remembered none (the chain was
    /// trusted as first seen).
    pub pinned: Option<AuditPosition>,
    /// The names of the secrets the events refer to by tag, opened here (a tag of a name
    /// under an earlier storage key, before a key rotation, has none).
    pub names: BTreeMap<NameTag, SecretName>,
}

impl AuditReport {
    /// How to show the secret an event refers to: its name, or its tag's first bytes.
    pub fn secret_name(&self, tag: &NameTag) -> String {
        self.names.get(tag).map_or_else(
            || {
                format!(
                    "(tag {:02x}{:02x}{:02x}{:02x}…: named under an earlier key, or its \
                     sealed name was altered)",
                    tag.0[0], tag.0[1], tag.0[2], tag.0[3]
                )
            },
            |n| n.as_str().to_string(),
        )
    }
}

/// How far the path from the remembered position was checked (see
/// [`Session::check_recent_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathCheck {
    /// Nothing was remembered: the server's history is trusted as first seen.
    FirstSeen,
    /// The events from the remembered position to the newest one link up.
    Verified {
        /// The remembered position.
        from: AuditPosition,
        /// The newest position, reached through them.
        to: AuditPosition,
    },
    /// More events than one page followed: only the position was checked (`audit` checks
    /// the whole path).
    TooLong {
        /// The remembered position.
        from: AuditPosition,
        /// The newest position seen.
        to: AuditPosition,
    },
}

/// Checks that verified events pass through `pinned` (the chain at its seq has its head),
/// and remembers the version of every secret stored in them.
fn pass_through(
    session: &Session,
    events: &[AuditEvent],
    pinned: Option<AuditPosition>,
) -> Result<(), ClientError> {
    if let Some(p) = pinned.filter(|p| p.seq > 0) {
        match events.iter().find(|e| e.seq == p.seq) {
            Some(e) if e.hash == p.head => {}
            Some(e) => {
                return Err(ClientError::Rollback(Rollback::Forked {
                    seq: p.seq,
                    pinned: p.head,
                    seen: e.hash,
                }));
            }
            None if events.last().is_none_or(|e| e.seq < p.seq) => {
                let seen = events.last().map_or(
                    AuditPosition {
                        seq: 0,
                        head: [0; 32],
                    },
                    |e| AuditPosition {
                        seq: e.seq,
                        head: e.hash,
                    },
                );
                return Err(ClientError::Rollback(Rollback::Behind { pinned: p, seen }));
            }
            None => {}
        }
    }
    for e in events {
        if let (EventKind::Store, Outcome::Ok, Some(tag), Some(v)) =
            (e.body.kind, e.body.outcome, &e.body.secret, e.body.version)
        {
            session.saw_stored(tag, v);
        }
    }
    Ok(())
}

impl Session {
    async fn audit_page(&self, after: u64) -> Result<(Vec<AuditEvent>, bool), ClientError> {
        let OpResponse::Audit(page) = self.call(&OpRequest::Audit(Audit { after })).await? else {
            return Err(ClientError::Protocol("unexpected reply to Audit"));
        };
        if page.events.len() > AUDIT_PAGE
            || (page.more && page.events.is_empty())
            || page.events.first().is_some_and(|e| e.seq <= after)
        {
            return Err(ClientError::Protocol("bad audit page"));
        }
        Ok((page.events, page.more))
    }

    /// Reads the whole audit log, verifies its hash chain, and checks that it passes
    /// through the newest position this client saw before.
    ///
    /// A chain that does not verify is reported in [`AuditReport::verification`], not as
    /// an error: the events are still shown. Errors: [`ClientError::Rollback`] if the chain
    /// is behind or beside the position seen before; [`ClientError::SessionEnded`] (log
    /// in again); [`ClientError::Protocol`] for pages that do not follow each other;
    /// transport errors (retry).
    pub async fn audit(&self) -> Result<AuditReport, ClientError> {
        // The chain must pass through every position seen, in earlier runs and in this one.
        let newest = self.position();
        let mut events: Vec<AuditEvent> = Vec::new();
        let mut verifier = ChainVerifier::new(&self.user);
        let mut verification = Ok(());
        loop {
            let after = events.last().map_or(0, |e| e.seq);
            let (page, more) = self.audit_page(after).await?;
            for e in &page {
                if verification.is_ok() {
                    verification = verifier.push(e);
                }
            }
            events.extend(page);
            if !more {
                break;
            }
        }
        if verification.is_ok() {
            pass_through(self, &events, newest)?;
        }
        // The names, from the account's list (deleted secrets included), each checked
        // against its tag. One that does not open is shown as its tag: the log is still
        // shown, whatever else the server altered.
        let names = self
            .list_entries_opened(true, false)
            .await?
            .into_iter()
            .filter_map(|(name, e)| Some((e.tag, name?)))
            .collect();
        Ok(AuditReport {
            events,
            verification,
            pinned: self.remembered_position(),
            names,
        })
    }

    /// Checks the events since the position remembered from earlier runs
    /// ([`Session::remember`]): they must extend it, hash by hash, and pass through every
    /// newer position this session saw. Only when they fit in one page: past that, the
    /// positions alone were checked (answer by answer), and `audit` checks the rest.
    ///
    /// Errors: [`ClientError::Rollback`] if they do not; as [`Self::audit`] otherwise.
    pub async fn check_recent_events(&self) -> Result<PathCheck, ClientError> {
        let Some(from) = self.remembered_position() else {
            return Ok(PathCheck::FirstSeen);
        };
        let Some(to) = self.position() else {
            return Ok(PathCheck::FirstSeen);
        };
        if to.seq.saturating_sub(from.seq) > AUDIT_PAGE as u64 {
            return Ok(PathCheck::TooLong { from, to });
        }
        let (events, _) = self.audit_page(from.seq).await?;
        let mut verifier = ChainVerifier::resume(from);
        for e in &events {
            verifier.push(e).map_err(|why| {
                ClientError::Rollback(Rollback::Broken {
                    pinned: from,
                    why: why.to_string(),
                })
            })?;
        }
        // The page was read after every answer of this session: it reaches the newest.
        let newest = self.position().unwrap_or(to);
        pass_through(self, &events, Some(newest).filter(|n| n.seq > from.seq))?;
        Ok(PathCheck::Verified {
            from,
            to: verifier.position(),
        })
    }
}
