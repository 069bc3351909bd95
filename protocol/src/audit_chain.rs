//! The per-user audit chain.
//!
//! Every event of a user carries `hash = SHA-256(prev_hash || encoding(event))`, where
//! `prev_hash` is the previous event's hash and, for the first event, the user's genesis
//! hash `SHA-256("keyserver/1 audit genesis" || user)`. A deleted, reordered or altered event
//! breaks every later hash, and the client recomputes them all. (A server that rewrites the
//! whole chain consistently is detected only by a client that remembers an earlier head; see
//! `spec/threat-model.md`.)
//!
//! `encoding(event)` = `"keyserver/1 audit" || seq (u64 BE) || time (i64 BE) || kind (u8) ||
//! tag length (u16 BE: 0, or 32 for an event about a secret) || the secret's name tag ||
//! outcome (u8) [|| version (u64 BE), for an event about one version of a secret]
//! [|| key name length (u16 BE) || key name || digest length (u8: 0 or 32) || digest, for an
//! event about a server-held key]`.
//!
//! Which optional parts an event has is fixed by its kind ([`EventBody::is_well_formed`],
//! which the verifier checks), so no two events encode alike.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::names::{KeyName, NameTag, UserName};

const GENESIS_LABEL: &[u8] = b"keyserver/1 audit genesis";
const EVENT_LABEL: &[u8] = b"keyserver/1 audit";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum EventKind {
    /// The account was created.
    Register = 1,
    /// A login started: a password guess was counted.
    LoginStarted = 2,
    /// A login finished: the password was right.
    LoginSucceeded = 3,
    /// A login failed: wrong password, abandoned, or expired before finishing.
    LoginFailed = 4,
    /// A login was refused because the account was locked.
    LoginLocked = 5,
    /// A secret was stored (a new version).
    Store = 6,
    /// A secret was read.
    Retrieve = 7,
    /// A secret was deleted.
    Delete = 8,
    /// The list of secrets was read.
    List = 9,
    /// The password was changed.
    ChangePassword = 10,
    /// A session was closed by its user.
    Logout = 11,
    /// The storage key was replaced and every secret sealed again under the new one.
    RotateKey = 12,
    /// The server made a key for the user and holds it.
    KeyGenerate = 13,
    /// The user gave the server a key to hold.
    KeyImport = 14,
    /// The server signed a message with a key it holds (the event carries the message's
    /// SHA-256).
    KeySign = 15,
    /// A key the server holds was exported to the user.
    KeyExport = 16,
    /// A key the server held was deleted.
    KeyDelete = 17,
}

impl EventKind {
    /// The name printed by clients and stored in databases.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::LoginStarted => "login_started",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginLocked => "login_locked",
            Self::Store => "store",
            Self::Retrieve => "retrieve",
            Self::Delete => "delete",
            Self::List => "list",
            Self::ChangePassword => "change_password",
            Self::Logout => "logout",
            Self::RotateKey => "rotate_key",
            Self::KeyGenerate => "key_generate",
            Self::KeyImport => "key_import",
            Self::KeySign => "key_sign",
            Self::KeyExport => "key_export",
            Self::KeyDelete => "key_delete",
        }
    }

    /// Whether the event is about a key the server holds (and names it).
    pub fn is_about_a_key(self) -> bool {
        matches!(
            self,
            Self::KeyGenerate | Self::KeyImport | Self::KeySign | Self::KeyExport | Self::KeyDelete
        )
    }

    /// The kind stored as `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Register,
            2 => Self::LoginStarted,
            3 => Self::LoginSucceeded,
            4 => Self::LoginFailed,
            5 => Self::LoginLocked,
            6 => Self::Store,
            7 => Self::Retrieve,
            8 => Self::Delete,
            9 => Self::List,
            10 => Self::ChangePassword,
            11 => Self::Logout,
            12 => Self::RotateKey,
            13 => Self::KeyGenerate,
            14 => Self::KeyImport,
            15 => Self::KeySign,
            16 => Self::KeyExport,
            17 => Self::KeyDelete,
            _ => return None,
        })
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Outcome {
    /// It happened.
    Ok = 1,
    /// It was attempted and failed.
    Failed = 2,
    /// The secret did not exist.
    NotFound = 3,
    /// It was refused (a name that exists, a version that is not next, a locked account).
    Refused = 4,
}

impl Outcome {
    /// The name printed by clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::NotFound => "not_found",
            Self::Refused => "refused",
        }
    }

    /// The outcome stored as `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Ok,
            2 => Self::Failed,
            3 => Self::NotFound,
            4 => Self::Refused,
            _ => return None,
        })
    }
}

/// The content of an event, before it is chained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBody {
    /// What happened.
    pub kind: EventKind,
    /// The secret it concerned, if any, by its name tag (the client knows the name).
    pub secret: Option<NameTag>,
    /// How it ended.
    pub outcome: Outcome,
    /// The secret's version it concerned: the one stored, read or deleted. A verified
    /// chain thus shows which version of each secret is current.
    pub version: Option<u64>,
    /// The server-held key it concerned, by name.
    pub key: Option<KeyName>,
    /// For a signature: the SHA-256 of the message signed, as the user sent it. For a key
    /// generated or imported: the SHA-256 of its public key (the chain then records which
    /// public key each name was given).
    pub digest: Option<[u8; 32]>,
}

impl EventBody {
    /// An event about no secret.
    pub fn new(kind: EventKind, outcome: Outcome) -> Self {
        Self {
            kind,
            secret: None,
            outcome,
            version: None,
            key: None,
            digest: None,
        }
    }

    /// An event about a secret.
    pub fn about(kind: EventKind, secret: &NameTag, outcome: Outcome) -> Self {
        Self {
            secret: Some(*secret),
            ..Self::new(kind, outcome)
        }
    }

    /// An event about a server-held key.
    pub fn about_key(kind: EventKind, key: &KeyName, outcome: Outcome) -> Self {
        Self {
            key: Some(key.clone()),
            ..Self::new(kind, outcome)
        }
    }

    /// This event, with `digest` (of a signed message, or of a new key's public key).
    #[must_use]
    pub fn with_digest(self, digest: [u8; 32]) -> Self {
        Self {
            digest: Some(digest),
            ..self
        }
    }

    /// Whether its optional parts are the ones its kind has: a key's events name the key
    /// and nothing else (a digest only for a signature, a generate or an import, and always
    /// for a generate or an import that succeeded); other events name no key.
    pub fn is_well_formed(&self) -> bool {
        if self.kind.is_about_a_key() {
            let made = matches!(self.kind, EventKind::KeyGenerate | EventKind::KeyImport);
            self.key.is_some()
                && self.secret.is_none()
                && self.version.is_none()
                && (self.digest.is_none() || made || self.kind == EventKind::KeySign)
                && !(made && self.outcome == Outcome::Ok && self.digest.is_none())
        } else {
            self.key.is_none() && self.digest.is_none()
        }
    }

    /// This event, about version `version` of its secret.
    #[must_use]
    pub fn at_version(self, version: u64) -> Self {
        Self {
            version: Some(version),
            ..self
        }
    }
}

/// Where an account's audit chain stands: its last event's seq and hash (seq 0 and the
/// user's genesis hash before the first event). A client that saw a position refuses any
/// later answer that is behind it, or that does not extend it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPosition {
    /// The last event's seq.
    pub seq: u64,
    /// The last event's hash.
    pub head: [u8; 32],
}

impl AuditPosition {
    /// Before `user`'s first event.
    pub fn start(user: &UserName) -> Self {
        Self {
            seq: 0,
            head: genesis(user),
        }
    }
}

/// One chained event, as stored and as sent to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the user's chain, from 1, without gaps.
    pub seq: u64,
    /// Unix time in seconds, by the server's clock.
    pub time: i64,
    /// What happened.
    pub body: EventBody,
    /// `SHA-256(prev_hash || encoding(event))`.
    pub hash: [u8; 32],
}

/// The hash before a user's first event.
pub fn genesis(user: &UserName) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(GENESIS_LABEL);
    h.update(user.as_str().as_bytes());
    h.finalize().into()
}

/// The hash of the event `(seq, time, body)` that follows `prev`.
pub fn link(prev: &[u8; 32], seq: u64, time: i64, body: &EventBody) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(EVENT_LABEL);
    h.update(seq.to_be_bytes());
    h.update(time.to_be_bytes());
    h.update([body.kind as u8]);
    let name = body.secret.as_ref().map_or(&[][..], |t| &t.0[..]);
    // A name tag is 32 bytes (a secret name was at most 128 before names were sealed).
    h.update(u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
    h.update(name);
    h.update([body.outcome as u8]);
    // Only when there is one: the events of chains written before versions were recorded
    // keep their hashes. (Unambiguous: the name's length fixes where the outcome is, so a
    // hash input with a version is 8 bytes longer than any without.)
    if let Some(v) = body.version {
        h.update(v.to_be_bytes());
    }
    // Only events about a key have these (their kinds are new with them).
    if let Some(key) = &body.key {
        let key = key.as_str().as_bytes();
        h.update(u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
        h.update(key);
        let digest = body.digest.as_ref().map_or(&[][..], |d| &d[..]);
        h.update([u8::try_from(digest.len()).unwrap_or(u8::MAX)]);
        h.update(digest);
    }
    h.finalize().into()
}

/// Why a chain did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An event's seq is not the one after the previous event's.
    #[error("event {found} follows event {previous}: events are missing or reordered")]
    Gap {
        /// The previous event's seq.
        previous: u64,
        /// This event's seq.
        found: u64,
    },
    /// An event's hash is not the hash of its content and its predecessor.
    #[error("event {0} does not match its hash: it or an earlier event was changed")]
    BadHash(u64),
    /// An event has parts its kind does not have (a key named by a secret's event, say).
    #[error("event {0} is malformed for its kind")]
    Malformed(u64),
}

impl ChainError {
    /// The seq of the first event that did not verify.
    pub fn seq(&self) -> u64 {
        match *self {
            Self::Gap { previous, .. } => previous.saturating_add(1),
            Self::BadHash(seq) | Self::Malformed(seq) => seq,
        }
    }
}

/// Verifies events incrementally, page by page, as a client receives them.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    prev: [u8; 32],
    last_seq: u64,
}

impl ChainVerifier {
    /// A verifier for `user`'s chain from its start.
    pub fn new(user: &UserName) -> Self {
        Self::resume(AuditPosition::start(user))
    }

    /// A verifier for the events after `position` (a head verified earlier): they must
    /// extend it.
    pub fn resume(position: AuditPosition) -> Self {
        Self {
            prev: position.head,
            last_seq: position.seq,
        }
    }

    /// Where the events checked so far bring the chain.
    pub fn position(&self) -> AuditPosition {
        AuditPosition {
            seq: self.last_seq,
            head: self.prev,
        }
    }

    /// Checks the next event.
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainError> {
        if Some(e.seq) != self.last_seq.checked_add(1) {
            return Err(ChainError::Gap {
                previous: self.last_seq,
                found: e.seq,
            });
        }
        if !e.body.is_well_formed() {
            return Err(ChainError::Malformed(e.seq));
        }
        let expected = link(&self.prev, e.seq, e.time, &e.body);
        if !bool::from(expected.ct_eq(&e.hash)) {
            return Err(ChainError::BadHash(e.seq));
        }
        self.prev = e.hash;
        self.last_seq = e.seq;
        Ok(())
    }

    /// The hash of the last event checked (the chain's head).
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }

    /// The seq of the last event checked.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(user: &UserName, n: u64) -> Vec<AuditEvent> {
        let mut prev = genesis(user);
        (1..=n)
            .map(|seq| {
                let body = if seq % 2 == 0 {
                    EventBody::about(
                        EventKind::Store,
                        &NameTag([u8::try_from(seq % 251).unwrap(); 32]),
                        Outcome::Ok,
                    )
                    .at_version(seq)
                } else {
                    EventBody::new(EventKind::LoginSucceeded, Outcome::Ok)
                };
                let hash = link(&prev, seq, 1_700_000_000 + seq as i64, &body);
                prev = hash;
                AuditEvent {
                    seq,
                    time: 1_700_000_000 + seq as i64,
                    body,
                    hash,
                }
            })
            .collect()
    }

    fn verify(user: &UserName, events: &[AuditEvent]) -> Result<(), ChainError> {
        let mut v = ChainVerifier::new(user);
        events.iter().try_for_each(|e| v.push(e))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let alice = UserName::new("alice").unwrap();
        assert_eq!(verify(&alice, &chain(&alice, 10)), Ok(()));
    }

    #[test]
    fn detects_a_deleted_event() {
        let alice = UserName::new("alice").unwrap();
        let mut c = chain(&alice, 10);
        c.remove(4);
        assert_eq!(
            verify(&alice, &c),
            Err(ChainError::Gap {
                previous: 4,
                found: 6
            })
        );
    }

    #[test]
    fn detects_a_changed_event_even_with_its_hash_recomputed() {
        let alice = UserName::new("alice").unwrap();
        let mut c = chain(&alice, 10);
        c[3].body.outcome = Outcome::Failed;
        assert_eq!(verify(&alice, &c), Err(ChainError::BadHash(4)));
        c[3].hash = link(&c[2].hash, 4, c[3].time, &c[3].body);
        assert_eq!(verify(&alice, &c), Err(ChainError::BadHash(5)));
    }

    #[test]
    fn a_chain_of_one_user_does_not_verify_as_another() {
        let alice = UserName::new("alice").unwrap();
        let bob = UserName::new("bob").unwrap();
        assert_eq!(verify(&bob, &chain(&alice, 2)), Err(ChainError::BadHash(1)));
    }

    #[test]
    fn key_events_are_chained_with_their_key_and_digest() {
        let alice = UserName::new("alice").unwrap();
        let key = KeyName::new("eth-hot").unwrap();
        let body = EventBody::about_key(EventKind::KeySign, &key, Outcome::Ok).with_digest([7; 32]);
        assert!(body.is_well_formed());
        let prev = genesis(&alice);
        let hash = link(&prev, 1, 5, &body);
        let e = AuditEvent {
            seq: 1,
            time: 5,
            body,
            hash,
        };
        assert_eq!(ChainVerifier::new(&alice).push(&e), Ok(()));
        // Another key, another message, no message: each another hash.
        let other = KeyName::new("eth-cold").unwrap();
        for changed in [
            EventBody::about_key(EventKind::KeySign, &other, Outcome::Ok).with_digest([7; 32]),
            EventBody::about_key(EventKind::KeySign, &key, Outcome::Ok).with_digest([8; 32]),
            EventBody::about_key(EventKind::KeySign, &key, Outcome::Ok),
        ] {
            assert_ne!(link(&prev, 1, 5, &changed), hash);
        }
        // A key's event that also names a secret, or a secret's event that names a key, is
        // refused before its hash is even checked.
        let mut bad = e.clone();
        bad.body.secret = Some(NameTag([1; 32]));
        bad.hash = link(&prev, 1, 5, &bad.body);
        assert_eq!(
            ChainVerifier::new(&alice).push(&bad),
            Err(ChainError::Malformed(1))
        );
        let mut bad = e;
        bad.body.kind = EventKind::Store;
        bad.hash = link(&prev, 1, 5, &bad.body);
        assert_eq!(
            ChainVerifier::new(&alice).push(&bad),
            Err(ChainError::Malformed(1))
        );
    }

    #[test]
    fn codes_round_trip() {
        for c in 1..=17 {
            assert_eq!(EventKind::from_code(c).map(|k| k as u8), Some(c));
        }
        for c in 1..=4 {
            assert_eq!(Outcome::from_code(c).map(|k| k as u8), Some(c));
        }
        assert_eq!(EventKind::from_code(0), None);
        assert_eq!(Outcome::from_code(9), None);
    }
}
