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

/// What [`Session::check_recent_events`] checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathCheck {
    /// The position verified before (`None`: none, and the chain was read from its start).
    pub from: Option<AuditPosition>,
    /// The chain's end, now verified.
    pub to: AuditPosition,
}

/// Most events read in one check or audit (at about 150 bytes each in memory).
const MAX_AUDIT_EVENTS: u64 = 1_000_000;

impl Session {
    async fn audit_page(&self, after: u64) -> Result<(Vec<AuditEvent>, bool), ClientError> {
        let OpResponse::Audit(page) = self.call(&OpRequest::Audit(Audit { after })).await? else {
            return Err(ClientError::Protocol("unexpected reply to Audit"));
        };
        if page.events.len() > AUDIT_PAGE
            || (page.more && page.events.len() != AUDIT_PAGE)
            || page.events.first().is_some_and(|e| e.seq <= after)
            || page.events.windows(2).any(|w| w[0].seq >= w[1].seq)
        {
            return Err(ClientError::Protocol("bad audit page"));
        }
        Ok((page.events, page.more))
    }

    /// Reads the chain after `from` to its end (at most [`MAX_AUDIT_EVENTS`] events),
    /// verifying each event against the one before when `verify`; returns the events and
    /// the first break (`None` if not verifying or none).
    async fn read_chain(
        &self,
        from: AuditPosition,
        verify: bool,
    ) -> Result<(Vec<AuditEvent>, Result<(), ChainError>, AuditPosition), ClientError> {
        let mut events: Vec<AuditEvent> = Vec::new();
        let mut verifier = ChainVerifier::resume(from);
        let mut verification = Ok(());
        loop {
            let after = events.last().map_or(from.seq, |e| e.seq);
            let (page, more) = self.audit_page(after).await?;
            if events.len() as u64 + page.len() as u64 > MAX_AUDIT_EVENTS {
                return Err(ClientError::Protocol(
                    "the audit log is longer than this client reads",
                ));
            }
            for e in &page {
                if verify && verification.is_ok() {
                    verification = verifier.push(e);
                }
            }
            events.extend(page);
            if !more {
                return Ok((events, verification, verifier.position()));
            }
        }
    }

    /// Takes in a verified stretch of the chain: `events`, which extend `from` hash by hash
    /// to the chain's end. They must pass through every position this session was shown
    /// (or must pass through) past `from`, and reach the newest of those. The versions
    /// their store events carry are remembered (by the names in `names` or, for tags not
    /// known, in a fresh list; tags that no name explains are kept as they are), every
    /// version this session was given is checked against them, and the verified position
    /// moves to their end.
    async fn take_verified(
        &self,
        from: AuditPosition,
        events: &[AuditEvent],
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
            let off_chain = c.seen().filter(|p| p.seq > from.seq).find_map(|p| {
                let e = usize::try_from(p.seq - from.seq - 1)
                    .ok()
                    .and_then(|i| events.get(i));
                match e {
                    Some(e) if e.hash == p.head => None,
                    Some(e) => Some(Rollback::Forked {
                        seq: p.seq,
                        pinned: p.head,
                        seen: e.hash,
                    }),
                    None => Some(Rollback::Behind {
                        pinned: p,
                        seen: end,
                    }),
                }
            });
            if let Some(r) = off_chain {
                return Err(c.caught(r));
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
        for (_, tag, v) in &stored {
            c.state.remember_version(tag, *v);
        }
        c.recheck_served(&stored, end.seq)?;
        // The public key each server-held key was made or imported with, and deletions.
        let keys: Vec<_> = events
            .iter()
            .filter(|e| e.body.outcome == Outcome::Ok)
            .filter_map(|e| match (e.body.kind, &e.body.key) {
                (EventKind::KeyGenerate | EventKind::KeyImport, Some(k)) => {
                    e.body.digest.map(|d| (k.clone(), Some(d)))
                }
                (EventKind::KeyDelete, Some(k)) => Some((k.clone(), None)),
                _ => None,
            })
            .collect();
        c.recheck_served_keys(&keys, end.seq)?;
        c.state.confirm();
        c.pin_verified(end);
        Ok(end)
    }

    /// The position the chain is read from in a check: the verified one, or the oldest one
    /// another process verified that it is not yet shown to extend, or (with none) the
    /// chain's start. Those past it must be passed through.
    fn check_start(&self) -> Result<(AuditPosition, Option<AuditPosition>), ClientError> {
        let mut c = self.checks();
        let pinned = c.state.pinned;
        let unconfirmed = c.state.unconfirmed().to_vec();
        let from = unconfirmed
            .iter()
            .chain(pinned.iter())
            .min_by_key(|p| p.seq)
            .copied()
            .unwrap_or_else(|| AuditPosition::start(&self.user));
        for p in unconfirmed.iter().chain(pinned.iter()) {
            if p.seq > from.seq {
                c.must_pass(*p)?;
            }
        }
        Ok((from, pinned))
    }

    /// Reads the whole audit log, verifies its hash chain, and checks it against what this
    /// client verified before (or the checkpoint it started from): it must pass through
    /// that position and every position this session was shown. Then the verified position
    /// moves to the chain's end.
    ///
    /// A chain that does not verify is reported in [`AuditReport::verification`] if this
    /// client had verified nothing of it (the events are still shown); otherwise it is a
    /// [`ClientError::Rollback`]. Errors: [`ClientError::Rollback`] if the chain is behind
    /// or beside a position seen before, or does not hash together through the verified
    /// position; [`ClientError::SessionEnded`] (log in again); [`ClientError::Protocol`]
    /// for pages that do not follow each other, or a log of more than a million events;
    /// transport errors (retry).
    pub async fn audit(&self) -> Result<AuditReport, ClientError> {
        let (from, pinned) = self.check_start()?;
        // The names, from the account's list (deleted secrets included), each checked
        // against its tag. One that does not open is shown as its tag: the log is still
        // shown, whatever else the server altered. Listed first: the list's own event is
        // then on the chain read after it.
        let listed = self.list_entries_opened(true, false).await?;
        let start = AuditPosition::start(&self.user);
        let (events, verification, _) = self.read_chain(start, true).await?;
        let anchor = pinned.or(self.remembered_position());
        match (&verification, anchor) {
            (Ok(()), _) => {
                // The chain passes through what was verified, and goes on from it
                // (verified, its seqs run from 1 without gaps).
                if from.seq > 0 {
                    let at = usize::try_from(from.seq - 1)
                        .ok()
                        .and_then(|i| events.get(i));
                    match at {
                        Some(e) if e.hash == from.head => {}
                        Some(e) => {
                            return Err(self.checks().caught(Rollback::Forked {
                                seq: from.seq,
                                pinned: from.head,
                                seen: e.hash,
                            }));
                        }
                        None => {
                            let seen = events.last().map_or(start, |e| AuditPosition {
                                seq: e.seq,
                                head: e.hash,
                            });
                            return Err(self
                                .checks()
                                .caught(Rollback::Behind { pinned: from, seen }));
                        }
                    }
                }
                let after = usize::try_from(from.seq)
                    .unwrap_or(usize::MAX)
                    .min(events.len());
                self.take_verified(from, &events[after..], Some(&listed))
                    .await?;
            }
            (Err(why), Some(p)) => {
                // This client had verified the chain (or a device of the account had, for
                // its checkpoint): the server shows one that does not hash together.
                return Err(self.checks().caught(Rollback::Broken {
                    pinned: p,
                    why: why.to_string(),
                }));
            }
            // Nothing verified before: shown as it is.
            (Err(_), None) => {}
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

    /// Reads the events since the verified position (or, if this client verified none,
    /// from the chain's start) to the chain's end: they must extend it hash by hash, pass
    /// through every position this session was shown, and reach the newest. The versions
    /// their store events carry are remembered, and every version this session was given
    /// is checked against them (another device may have stored a newer one). Then the
    /// verified position moves to the chain's end.
    ///
    /// Call it after a command's work and before using what the server gave: a secret
    /// retrieved is not known to be current until this passed. Long sessions call it from
    /// time to time: a session keeps at most 262,144 answers unchecked.
    ///
    /// Errors: [`ClientError::Rollback`] if the events do not; as [`Self::audit`]
    /// otherwise.
    pub async fn check_recent_events(&self) -> Result<PathCheck, ClientError> {
        let (from, pinned) = self.check_start()?;
        let (events, verification, _) = self.read_chain(from, true).await?;
        if let Err(why) = verification {
            return Err(self.checks().caught(Rollback::Broken {
                pinned: from,
                why: why.to_string(),
            }));
        }
        let to = self.take_verified(from, &events, None).await?;
        Ok(PathCheck { from: pinned, to })
    }
}
