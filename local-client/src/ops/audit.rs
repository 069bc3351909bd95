//! `audit`: the account's audit log, verified here, and checked against what this client
//! saw before.

use std::collections::BTreeMap;

use keyserver_protocol::{
    NameTag, OpRequest, OpResponse, SecretName,
    audit_chain::{AuditEvent, AuditPosition, ChainError, ChainVerifier, EventKind, Outcome},
    limits::AUDIT_PAGE,
    ops::Audit,
};

use crate::{ClientError, Session, ops::list::Entry, state::Rollback};

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

/// How far the chain was checked after a command (see [`Session::check_recent_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathCheck {
    /// The events from the verified position (`None`: from the chain's start, since this
    /// client remembered nothing) to the newest one hash together, and pass through every
    /// position this session was shown.
    Verified {
        /// The position verified before.
        from: Option<AuditPosition>,
        /// The newest position, now verified.
        to: AuditPosition,
    },
    /// More events followed than a command reads: those read hash together and the
    /// verified position moved to the last of them; the rest are checked by the next
    /// commands, or at once by `audit`.
    Partial {
        /// The position verified before.
        from: Option<AuditPosition>,
        /// The position verified now.
        to: AuditPosition,
        /// The newest position shown.
        newest: Option<AuditPosition>,
    },
}

/// Most pages of events a command reads after its work (see [`Session::check_recent_events`]).
const PATH_PAGES: usize = 16;
/// Most events `audit` reads (at about 150 bytes each in memory).
const MAX_AUDIT_EVENTS: u64 = 1_000_000;

impl Session {
    async fn audit_page(&self, after: u64) -> Result<(Vec<AuditEvent>, bool), ClientError> {
        let OpResponse::Audit(page) = self.call(&OpRequest::Audit(Audit { after })).await? else {
            return Err(ClientError::Protocol("unexpected reply to Audit"));
        };
        if page.events.len() > AUDIT_PAGE
            || (page.more && page.events.is_empty())
            || page.events.first().is_some_and(|e| e.seq <= after)
            || page.events.windows(2).any(|w| w[0].seq >= w[1].seq)
        {
            return Err(ClientError::Protocol("bad audit page"));
        }
        Ok((page.events, page.more))
    }

    /// Takes in a verified stretch of the chain: `events`, which extend the verified
    /// position `from` hash by hash. They must pass through every position this session
    /// was shown up to their end, and (if `complete`, the chain's end) reach the newest of
    /// those shown before they were read (`target`). The versions their store events carry
    /// are remembered (by the names in `names` or, for tags not known, in a fresh list),
    /// every version this session was given is checked against them, and the verified
    /// position moves to their end.
    async fn take_verified(
        &self,
        from: AuditPosition,
        events: &[AuditEvent],
        target: Option<AuditPosition>,
        complete: bool,
        names: Option<&[Entry]>,
    ) -> Result<AuditPosition, ClientError> {
        let end = events.last().map_or(from, |e| AuditPosition {
            seq: e.seq,
            head: e.hash,
        });
        {
            let mut c = self.checks();
            // Every position shown must be on the chain; the verifier made the seqs run
            // from `from.seq + 1` without gaps.
            let off_chain = c
                .seen()
                .filter(|p| p.seq > from.seq && p.seq <= end.seq)
                .find_map(|p| {
                    let e = usize::try_from(p.seq - from.seq - 1)
                        .ok()
                        .and_then(|i| events.get(i))?;
                    (e.hash != p.head).then_some((p, e.hash))
                });
            if let Some((p, hash)) = off_chain {
                return Err(c.caught(Rollback::Forked {
                    seq: p.seq,
                    pinned: p.head,
                    seen: hash,
                }));
            }
            if let Some(t) = target.filter(|t| complete && t.seq > end.seq) {
                return Err(c.caught(Rollback::Behind {
                    pinned: t,
                    seen: end,
                }));
            }
        }
        let stored: Vec<(u64, NameTag, u64)> = events
            .iter()
            .filter_map(
                |e| match (e.body.kind, e.body.outcome, e.body.secret, e.body.version) {
                    (EventKind::Store, Outcome::Ok, Some(tag), Some(v)) => Some((e.seq, tag, v)),
                    _ => None,
                },
            )
            .collect();
        let unknown = {
            let c = self.checks();
            stored.iter().any(|(_, t, _)| !c.state.knows_tag(t))
        };
        let listed;
        let names = match names {
            Some(n) => n,
            None if unknown => {
                // Stored by another device under names this one has not seen: their tags
                // are learnt from the list, where each name is checked against its tag.
                listed = self.list_entries_opened(true, false).await?;
                &listed[..]
            }
            None => &[],
        };
        let mut c = self.checks();
        for e in names {
            if let Some(name) = &e.name {
                c.state.learn_tag(&e.entry.tag, name);
            }
        }
        // Tags of no listed name (events from before a key rotation) say nothing here.
        for (_, tag, v) in &stored {
            c.state.remember_version(tag, *v);
        }
        c.recheck_served(&stored, end.seq)?;
        c.pin_verified(end);
        Ok(end)
    }

    /// Reads the whole audit log, verifies its hash chain, and checks it against what this
    /// client verified before: it must pass through that position and every position this
    /// session was shown. Then that position moves to the chain's end.
    ///
    /// A chain that does not verify after the verified position is reported in
    /// [`AuditReport::verification`], not as an error: the events are still shown. Errors:
    /// [`ClientError::Rollback`] if the chain is behind or beside a position seen before,
    /// or does not hash together up to the verified position; [`ClientError::SessionEnded`]
    /// (log in again); [`ClientError::Protocol`] for pages that do not follow each other,
    /// or a log of more than a million events; transport errors (retry).
    pub async fn audit(&self) -> Result<AuditReport, ClientError> {
        // The chain must reach every position shown before it is read.
        let target = self.position();
        let pinned = self.verified_position();
        let mut events: Vec<AuditEvent> = Vec::new();
        let mut verifier = ChainVerifier::new(&self.user);
        let mut verification = Ok(());
        loop {
            let after = events.last().map_or(0, |e| e.seq);
            let (page, more) = self.audit_page(after).await?;
            if events.len() as u64 + page.len() as u64 > MAX_AUDIT_EVENTS {
                return Err(ClientError::Protocol(
                    "the audit log is longer than this client reads",
                ));
            }
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
        // The names, from the account's list (deleted secrets included), each checked
        // against its tag. One that does not open is shown as its tag: the log is still
        // shown, whatever else the server altered.
        let listed = self.list_entries_opened(true, false).await?;
        match (&verification, pinned) {
            (Ok(()), Some(p)) => {
                // The chain passes through the verified position, and goes on from it
                // (verified, its seqs run from 1 without gaps).
                let at = usize::try_from(p.seq)
                    .ok()
                    .and_then(|s| s.checked_sub(1))
                    .and_then(|i| events.get(i));
                match at {
                    _ if p.seq == 0 => {}
                    Some(e) if e.hash == p.head => {}
                    Some(e) => {
                        return Err(self.checks().caught(Rollback::Forked {
                            seq: p.seq,
                            pinned: p.head,
                            seen: e.hash,
                        }));
                    }
                    None => {
                        return Err(self.checks().caught(Rollback::Behind {
                            pinned: p,
                            seen: verifier.position(),
                        }));
                    }
                }
                let after = usize::try_from(p.seq)
                    .unwrap_or(usize::MAX)
                    .min(events.len());
                self.take_verified(p, &events[after..], target, true, Some(&listed))
                    .await?;
            }
            (Ok(()), None) => {
                let start = AuditPosition::start(&self.user);
                self.take_verified(start, &events, target, true, Some(&listed))
                    .await?;
            }
            (Err(why), Some(p)) if why.seq() <= p.seq || verifier.position().seq < p.seq => {
                // What this client verified before no longer hashes together.
                return Err(self.checks().caught(Rollback::Broken {
                    pinned: p,
                    why: why.to_string(),
                }));
            }
            // Broken past what was verified: shown, and the verified position stays.
            (Err(_), _) => {}
        }
        let names = listed
            .into_iter()
            .filter_map(|e| Some((e.entry.tag, e.name?)))
            .collect();
        Ok(AuditReport {
            events,
            verification,
            pinned: self.remembered_position(),
            names,
        })
    }

    /// Reads the events since the verified position (or, if this client remembers none,
    /// from the chain's start), at most 16 pages: they must extend it hash by hash, pass
    /// through every position this session was shown, and reach the newest. The versions
    /// their store events carry are remembered, and every version this session was given
    /// is checked against them (another device may have stored a newer one). Then the
    /// verified position moves to the last event read.
    ///
    /// Call it after a command's work and before using what the server gave: a secret
    /// retrieved is not known to be current until this passed.
    ///
    /// Errors: [`ClientError::Rollback`] if the events do not; as [`Self::audit`]
    /// otherwise.
    pub async fn check_recent_events(&self) -> Result<PathCheck, ClientError> {
        let target = self.position();
        let pinned = self.verified_position();
        let from = pinned.unwrap_or_else(|| AuditPosition::start(&self.user));
        let mut verifier = ChainVerifier::resume(from);
        let mut events = Vec::new();
        let mut complete = false;
        for _ in 0..PATH_PAGES {
            let (page, more) = self.audit_page(verifier.position().seq).await?;
            for e in &page {
                if let Err(why) = verifier.push(e) {
                    return Err(self.checks().caught(Rollback::Broken {
                        pinned: from,
                        why: why.to_string(),
                    }));
                }
            }
            events.extend(page);
            if !more {
                complete = true;
                break;
            }
        }
        let to = self
            .take_verified(from, &events, target, complete, None)
            .await?;
        Ok(if complete {
            PathCheck::Verified { from: pinned, to }
        } else {
            PathCheck::Partial {
                from: pinned,
                to,
                newest: self.position(),
            }
        })
    }
}
