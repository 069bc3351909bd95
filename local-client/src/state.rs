//! What a client remembers of an account between runs, so that it can catch a server that
//! goes back: the newest audit position it verified, the newest epoch, and for each secret
//! the newest version it stored or saw.
//!
//! A server (or whoever can write its database) can restore yesterday's database, delete
//! the newest audit events, serve version n−1 of a secret or show two devices two different
//! histories. Each answer carries the account's audit position
//! (`keyserver_protocol::ops::OpAnswer`); a [`Session`](crate::Session) given an
//! [`AccountState`] refuses any position behind the one it verified, any other head at the
//! same position, and any secret older than the version it remembers, with
//! [`ClientError::Rollback`]. The remembered position moves only once the chain from it to
//! the new one has been read and verified.
//!
//! Versions are kept by a keyed hash of the secret's name, under a key of the state's own
//! (so they outlive a rotation of the storage key, which changes every tag the server
//! knows secrets by), with a map from the current tags to those hashes. The file names no
//! secret; someone who can read it can test guesses of names against it, as they could
//! test them against the user's shell history.
//!
//! [`StateDir`] keeps one file per (server, user) in a directory: created 0700, files 0600,
//! written whole (write, fsync, rename) and merged under a lock with what another process
//! wrote meanwhile. Applications that keep the state elsewhere use [`AccountState`]'s
//! [`AccountState::to_json`] and [`AccountState::from_json`]. A client with no state trusts
//! the history it first sees (after checking that it hashes together).

use std::collections::BTreeMap;
#[cfg(feature = "native")]
use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac};
use keyserver_protocol::{KeyName, NameTag, SecretName, UserName, audit_chain::AuditPosition};
use rand::{RngCore, rngs::OsRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ClientError;

/// The most secrets whose versions one account's state keeps (ten times the server's
/// default quota). Past it, new secrets are not tracked; their versions are still checked
/// within a session.
pub const MAX_TRACKED: usize = 100_000;
/// The largest state file read: [`MAX_TRACKED`] versions and tags, with room.
const MAX_STATE_FILE: u64 = 64 * 1024 * 1024;
/// The state file's format.
const FORMAT: u32 = 2;
/// Hash label of a server's id.
const SERVER_ID_LABEL: &[u8] = b"keyserver/3 server id";

/// Names a server: a hash of its long-term public key, which OPAQUE authenticates at every
/// login and every instance of a fleet shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerId(pub [u8; 16]);

impl ServerId {
    /// The id of the server whose public key is `server_key`.
    pub fn of(server_key: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(SERVER_ID_LABEL);
        h.update(server_key);
        let d = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        Self(id)
    }

    /// In hex, as in file names.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// How a server was caught going back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollback {
    /// The account's audit chain is behind a position this client saw.
    Behind {
        /// The newest position this client saw.
        pinned: AuditPosition,
        /// What the server says now.
        seen: AuditPosition,
    },
    /// At a position this client saw, another event: the server shows another history.
    Forked {
        /// The event's seq.
        seq: u64,
        /// Its hash as this client saw it.
        pinned: [u8; 32],
        /// Its hash now.
        seen: [u8; 32],
    },
    /// The events after a position this client verified (or, at seq 0, from the chain's
    /// start) do not extend it.
    Broken {
        /// The position.
        pinned: AuditPosition,
        /// Why.
        why: String,
    },
    /// An answer to an operation that records an audit event carried a position that does
    /// not include it: the server hid the event, or what came before it.
    Unrecorded {
        /// The operation.
        what: &'static str,
        /// The newest position seen before it was sent.
        at: AuditPosition,
    },
    /// A secret's version is older than one this client stored or saw.
    Version {
        /// The secret's name.
        name: String,
        /// The newest version seen.
        newest: u64,
        /// The version the server gave now.
        seen: u64,
    },
    /// A server-held key's public key is not the one the verified audit log recorded for
    /// it (its generate or import event carries the SHA-256 of the public key): the key
    /// was swapped.
    KeySwapped {
        /// The key's name.
        name: String,
    },
    /// The account's epoch (it grows with every password change and key rotation) is
    /// older than one this client saw: the account's credentials were restored.
    Epoch {
        /// The newest epoch seen.
        newest: u64,
        /// The epoch the server gave now.
        seen: u64,
    },
}

fn short(h: &[u8; 32]) -> String {
    hex::encode(&h[..8])
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Behind { pinned, seen } => write!(
                f,
                "the audit log ends at event {} ({}…), but this client saw it reach event {} \
                 ({}…): events were removed or the database was restored from an older copy",
                seen.seq,
                short(&seen.head),
                pinned.seq,
                short(&pinned.head)
            ),
            Self::Forked { seq, pinned, seen } => write!(
                f,
                "audit event {seq} is {}… now, but was {}… when this client saw it: the \
                 server shows another history",
                short(seen),
                short(pinned)
            ),
            Self::Broken { pinned, why } if pinned.seq == 0 => {
                write!(
                    f,
                    "the audit log does not hash together from its start: {why}"
                )
            }
            Self::Broken { pinned, why } => write!(
                f,
                "the audit log does not continue from event {} ({}…) that this client \
                 verified: {why}",
                pinned.seq,
                short(&pinned.head)
            ),
            Self::Unrecorded { what, at } => write!(
                f,
                "the server answered a {what} at audit event {} ({}…), which this client had \
                 seen before it asked: the {what} left no event in the log",
                at.seq,
                short(&at.head)
            ),
            Self::Version { name, newest, seen } => write!(
                f,
                "the server gave version {seen} of {name}, but this client stored or saw \
                 version {newest}: an older version was put back"
            ),
            Self::KeySwapped { name } => write!(
                f,
                "the server gave a public key for its key {name} that the audit log does not \
                 record for it: the key was swapped"
            ),
            Self::Epoch { newest, seen } => write!(
                f,
                "the account is at epoch {seen}, but this client saw epoch {newest}: its \
                 password or key was set back to an older one"
            ),
        }
    }
}

/// A secret as the state knows it: a keyed hash of its name (see the module's doc).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct NameId([u8; 32]);

/// What a client remembers of one account on one server.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountState {
    /// The newest audit position verified: the chain from the one before to it was read
    /// and hashed together (`None`: nothing yet, so the first history seen is trusted).
    pub pinned: Option<AuditPosition>,
    /// The newest epoch seen.
    pub epoch: u64,
    /// The key of [`NameId`]s.
    names_key: Zeroizing<[u8; 32]>,
    /// Per secret, the newest version stored or seen.
    versions: BTreeMap<NameId, u64>,
    /// Which tag key `tags` are under (`StorageKey::tag_key_id`).
    tags_of: Option<[u8; 16]>,
    /// The secrets of the current tags, for versions the audit chain names by tag.
    tags: BTreeMap<NameTag, NameId>,
    /// Versions the verified chain stored under current tags this client could not name
    /// yet: taken in when it learns the tag's name, and checked against until then.
    pending: BTreeMap<NameTag, u64>,
    /// Positions verified by another process of this client that the pinned one was not
    /// shown to extend (two processes saved at once): the next check reads the chain from
    /// the oldest of them, through the pinned one.
    unconfirmed: Vec<AuditPosition>,
    /// Per server-held key (by a keyed hash of its name), the SHA-256 of its public key, as
    /// the verified chain recorded it when the key was made or imported (or, for a key made
    /// before this client's verified position, as first seen).
    keys: BTreeMap<NameId, [u8; 32]>,
}

/// The most positions kept to confirm (see [`AccountState`]).
const MAX_UNCONFIRMED: usize = 64;

impl std::fmt::Debug for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountState")
            .field("pinned", &self.pinned)
            .field("epoch", &self.epoch)
            .field("secrets", &self.versions.len())
            .field("unconfirmed", &self.unconfirmed)
            .finish_non_exhaustive()
    }
}

impl Default for AccountState {
    fn default() -> Self {
        Self::new()
    }
}

/// The file form of [`AccountState`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    user: String,
    audit: Option<PositionFile>,
    epoch: u64,
    names_key: String,
    versions: BTreeMap<String, u64>,
    tags_of: Option<String>,
    tags: BTreeMap<String, String>,
    pending: BTreeMap<String, u64>,
    unconfirmed: Vec<PositionFile>,
    /// Absent before server-held keys, and written only when there are some (so that an
    /// older client still reads the file of an account without keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    keys: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionFile {
    seq: u64,
    head: String,
}

fn bad(why: &str) -> ClientError {
    ClientError::State(format!("the state file is invalid: {why}"))
}

fn hex_n<const N: usize>(s: &str) -> Result<[u8; N], ClientError> {
    let v = hex::decode(s).map_err(|_| bad("not hex"))?;
    v.try_into()
        .map_err(|_| bad("a field has the wrong length"))
}

impl AccountState {
    /// Nothing seen yet (with a fresh key for its names' hashes).
    pub fn new() -> Self {
        let mut names_key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut names_key[..]);
        Self {
            pinned: None,
            epoch: 0,
            names_key,
            versions: BTreeMap::new(),
            tags_of: None,
            tags: BTreeMap::new(),
            pending: BTreeMap::new(),
            unconfirmed: Vec::new(),
            keys: BTreeMap::new(),
        }
    }

    fn key_id(&self, name: &KeyName) -> NameId {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.names_key[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        // Apart from secrets' names: a key and a secret may share a name.
        m.update(b"key\0");
        m.update(name.as_str().as_bytes());
        NameId(m.finalize().into_bytes().into())
    }

    /// The SHA-256 of `name`'s public key as remembered.
    pub fn key_pin(&self, name: &KeyName) -> Option<[u8; 32]> {
        self.keys.get(&self.key_id(name)).copied()
    }

    /// Remembers `digest` as the SHA-256 of `name`'s public key (`None`: the key was
    /// deleted). Past [`MAX_TRACKED`] keys, new ones are not remembered.
    pub fn pin_key(&mut self, name: &KeyName, digest: Option<[u8; 32]>) {
        let id = self.key_id(name);
        match digest {
            Some(d) if self.keys.len() < MAX_TRACKED || self.keys.contains_key(&id) => {
                self.keys.insert(id, d);
            }
            Some(_) => {}
            None => {
                self.keys.remove(&id);
            }
        }
    }

    fn id(&self, name: &SecretName) -> NameId {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.names_key[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        m.update(name.as_str().as_bytes());
        NameId(m.finalize().into_bytes().into())
    }

    /// Takes the tags as being under tag key `id`: if they were under another (the storage
    /// key was rotated), the map from tags to secrets is forgotten (the versions are not).
    pub fn tags_under(&mut self, id: [u8; 16]) {
        if self.tags_of != Some(id) {
            self.tags.clear();
            self.pending.clear();
            self.tags_of = Some(id);
        }
    }

    /// Notes that `tag` is `name`'s under the current tag key (and takes in a version the
    /// chain stored under it).
    pub fn learn_tag(&mut self, tag: &NameTag, name: &SecretName) {
        let id = self.id(name);
        if self.tags.len() < MAX_TRACKED || self.tags.contains_key(tag) {
            self.tags.insert(*tag, id);
        }
        if let Some(v) = self.pending.remove(tag) {
            self.raise(id, v);
        }
    }

    /// Whether the secret tagged `tag` is known (see [`Self::learn_tag`]).
    pub fn knows_tag(&self, tag: &NameTag) -> bool {
        self.tags.contains_key(tag)
    }

    /// The newest version of `name` stored or seen.
    pub fn newest_version(&self, name: &SecretName) -> Option<u64> {
        self.versions.get(&self.id(name)).copied()
    }

    /// The newest version of `name`, tagged `tag`, known: stored or seen, or stored under
    /// its tag in the verified chain.
    pub fn newest_known(&self, name: &SecretName, tag: &NameTag) -> Option<u64> {
        match (self.newest_version(name), self.pending.get(tag).copied()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn raise(&mut self, id: NameId, seen: u64) {
        if let Some(v) = self.versions.get_mut(&id) {
            *v = (*v).max(seen);
        } else if self.versions.len() < MAX_TRACKED {
            self.versions.insert(id, seen);
        }
    }

    /// Checks version `seen` of `name` (tagged `tag`), from an answer to a request sent
    /// when the newest version seen was `at_send`, and remembers it if it is newer.
    /// (Answers to requests sent concurrently may come back in any order: only what was
    /// known when the request left counts.)
    pub fn saw_version(
        &mut self,
        name: &SecretName,
        tag: &NameTag,
        at_send: Option<u64>,
        seen: u64,
    ) -> Result<(), Rollback> {
        if let Some(newest) = at_send.filter(|n| seen < *n) {
            return Err(Rollback::Version {
                name: name.to_string(),
                newest,
                seen,
            });
        }
        self.learn_tag(tag, name);
        self.raise(self.id(name), seen);
        Ok(())
    }

    /// Remembers version `seen` of the secret tagged `tag` (a version from the verified
    /// audit chain: another device stored it): under its name if the tag is known, else
    /// under the tag until it is. Returns whether the tag was known.
    pub fn remember_version(&mut self, tag: &NameTag, seen: u64) -> bool {
        match self.tags.get(tag) {
            Some(id) => {
                self.raise(*id, seen);
                true
            }
            None => {
                if let Some(v) = self.pending.get_mut(tag) {
                    *v = (*v).max(seen);
                } else if self.pending.len() < MAX_TRACKED {
                    self.pending.insert(*tag, seen);
                }
                false
            }
        }
    }

    /// Positions another process verified that the pinned one is not yet shown to extend.
    pub fn unconfirmed(&self) -> &[AuditPosition] {
        &self.unconfirmed
    }

    /// Notes that the chain was verified from every unconfirmed position through the
    /// pinned one.
    pub fn confirm(&mut self) {
        self.unconfirmed.clear();
    }

    fn unconfirm(&mut self, p: AuditPosition) -> Result<(), Rollback> {
        match self.unconfirmed.iter().find(|u| u.seq == p.seq) {
            Some(u) if u.head != p.head => Err(Rollback::Forked {
                seq: p.seq,
                pinned: u.head,
                seen: p.head,
            }),
            Some(_) => Ok(()),
            None => {
                if self.unconfirmed.len() >= MAX_UNCONFIRMED {
                    // The oldest goes: the chain from the next one is still checked.
                    if let Some(i) =
                        (0..self.unconfirmed.len()).min_by_key(|i| self.unconfirmed[*i].seq)
                    {
                        self.unconfirmed.swap_remove(i);
                    }
                }
                self.unconfirmed.push(p);
                Ok(())
            }
        }
    }

    /// Checks epoch `seen` against the newest seen, and remembers it.
    pub fn saw_epoch(&mut self, seen: u64) -> Result<(), Rollback> {
        if seen < self.epoch {
            return Err(Rollback::Epoch {
                newest: self.epoch,
                seen,
            });
        }
        self.epoch = seen;
        Ok(())
    }

    /// Takes in what `other` saw (another process's state of the same account): the newer
    /// of each. Versions are taken in only from a state with the same names' key (the
    /// same file). Of two verified positions, the newer is kept, and the older is kept to
    /// be confirmed (nothing shows yet that the newer extends it); two heads at one seq
    /// are refused.
    pub fn merge(&mut self, other: &Self) -> Result<(), Rollback> {
        for u in other.unconfirmed.clone() {
            self.unconfirm(u)?;
        }
        match (self.pinned, other.pinned) {
            (Some(a), Some(b)) if a.seq == b.seq && a.head != b.head => {
                return Err(Rollback::Forked {
                    seq: a.seq,
                    pinned: b.head,
                    seen: a.head,
                });
            }
            (Some(a), Some(b)) if a.seq == b.seq => {}
            (Some(a), Some(b)) if a.seq > b.seq => self.unconfirm(b)?,
            (Some(a), Some(b)) => {
                self.unconfirm(a)?;
                self.pinned = Some(b);
            }
            (None, Some(b)) => self.pinned = Some(b),
            (_, None) => {}
        }
        self.epoch = self.epoch.max(other.epoch);
        if other.names_key == self.names_key {
            for (k, v) in &other.versions {
                self.raise(*k, *v);
            }
            if other.tags_of == self.tags_of {
                for (t, id) in &other.tags {
                    if self.tags.len() < MAX_TRACKED {
                        self.tags.entry(*t).or_insert(*id);
                    }
                }
                for (t, v) in &other.pending {
                    self.remember_version(t, *v);
                }
            }
            for (k, d) in &other.keys {
                if self.keys.len() < MAX_TRACKED {
                    self.keys.entry(*k).or_insert(*d);
                }
            }
        }
        Ok(())
    }

    /// The state as JSON, for `user`.
    pub fn to_json(&self, user: &UserName) -> String {
        let f = StateFile {
            format: FORMAT,
            user: user.as_str().to_string(),
            audit: self.pinned.map(|p| PositionFile {
                seq: p.seq,
                head: hex::encode(p.head),
            }),
            epoch: self.epoch,
            names_key: hex::encode(&self.names_key[..]),
            versions: self
                .versions
                .iter()
                .map(|(k, v)| (hex::encode(k.0), *v))
                .collect(),
            tags_of: self.tags_of.map(hex::encode),
            tags: self
                .tags
                .iter()
                .map(|(t, id)| (hex::encode(t.0), hex::encode(id.0)))
                .collect(),
            pending: self
                .pending
                .iter()
                .map(|(t, v)| (hex::encode(t.0), *v))
                .collect(),
            unconfirmed: self
                .unconfirmed
                .iter()
                .map(|p| PositionFile {
                    seq: p.seq,
                    head: hex::encode(p.head),
                })
                .collect(),
            keys: self
                .keys
                .iter()
                .map(|(k, d)| (hex::encode(k.0), hex::encode(d)))
                .collect(),
        };
        serde_json::to_string_pretty(&f).unwrap_or_else(|_| unreachable!("plain data"))
    }

    /// A state from [`Self::to_json`], which must be `user`'s.
    pub fn from_json(json: &[u8], user: &UserName) -> Result<Self, ClientError> {
        if json.len() as u64 > MAX_STATE_FILE {
            return Err(bad("too large"));
        }
        let f: StateFile = serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))?;
        if f.format != FORMAT {
            return Err(bad(&format!(
                "format {} (this client reads format {FORMAT}); move the file away to \
                 start afresh",
                f.format
            )));
        }
        if f.user != user.as_str() {
            return Err(bad("it is another user's"));
        }
        if f.versions.len() > MAX_TRACKED
            || f.tags.len() > MAX_TRACKED
            || f.pending.len() > MAX_TRACKED
            || f.unconfirmed.len() > MAX_UNCONFIRMED
            || f.keys.len() > MAX_TRACKED
        {
            return Err(bad("it tracks too many secrets or positions"));
        }
        let pinned = f
            .audit
            .map(|p| {
                Ok::<_, ClientError>(AuditPosition {
                    seq: p.seq,
                    head: hex_n(&p.head)?,
                })
            })
            .transpose()?;
        let versions = f
            .versions
            .iter()
            .map(|(k, v)| Ok((NameId(hex_n(k)?), *v)))
            .collect::<Result<_, ClientError>>()?;
        let tags = f
            .tags
            .iter()
            .map(|(t, id)| Ok((NameTag(hex_n(t)?), NameId(hex_n(id)?))))
            .collect::<Result<_, ClientError>>()?;
        let pending = f
            .pending
            .iter()
            .map(|(t, v)| Ok((NameTag(hex_n(t)?), *v)))
            .collect::<Result<_, ClientError>>()?;
        let unconfirmed = f
            .unconfirmed
            .iter()
            .map(|p| {
                Ok(AuditPosition {
                    seq: p.seq,
                    head: hex_n(&p.head)?,
                })
            })
            .collect::<Result<_, ClientError>>()?;
        let keys = f
            .keys
            .iter()
            .map(|(k, d)| Ok((NameId(hex_n(k)?), hex_n(d)?)))
            .collect::<Result<_, ClientError>>()?;
        let tags_of = f.tags_of.map(|t| hex_n::<16>(&t)).transpose()?;
        let names_key = Zeroizing::new(hex_n::<32>(&f.names_key)?);
        Ok(Self {
            pinned,
            epoch: f.epoch,
            names_key,
            versions,
            tags_of,
            tags,
            pending,
            unconfirmed,
            keys,
        })
    }
}

/// The name the state of `user` on `server` is kept under: `SERVER/USER`, the server's id
/// and the first half of the user name's SHA-256, both hex; a file's path in [`StateDir`]
/// (natively), a key in the page's storage (in a browser).
pub fn state_name(server: &ServerId, user: &UserName) -> String {
    let mut h = Sha256::new();
    h.update(user.as_str().as_bytes());
    format!("{}/{}", server.hex(), hex::encode(&h.finalize()[..16]))
}

#[cfg(feature = "native")]
/// A directory of account states, one file per (server, user).
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

#[cfg(feature = "native")]
/// `$XDG_STATE_HOME/keyserver`, else `~/.local/state/keyserver`; `None` without either.
pub fn default_state_dir() -> Option<PathBuf> {
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").and_then(nonempty) {
        return Some(d.join("keyserver"));
    }
    std::env::var_os("HOME")
        .and_then(nonempty)
        .map(|h| h.join(".local/state/keyserver"))
}

#[cfg(feature = "native")]
fn io(what: &str, path: &Path, e: std::io::Error) -> ClientError {
    ClientError::State(format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(feature = "native")]
/// Makes `path` (and its missing parents) 0700. A directory that existed keeps its mode,
/// unless `ours` (a directory only this client makes) and open to others.
fn private_dir(path: &Path, ours: bool) -> Result<(), ClientError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io("create", path, e))?;
    if ours {
        let meta = fs::metadata(path).map_err(|e| io("read", path, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(|e| io("make private", path, e))?;
        }
    }
    Ok(())
}

#[cfg(feature = "native")]
impl StateDir {
    /// The directory `root` (made when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the state of `user` on `server` lives.
    pub fn file(&self, server: &ServerId, user: &UserName) -> PathBuf {
        self.root.join(format!("{}.json", state_name(server, user)))
    }

    /// The state of `user` on `server`, if this directory has one.
    pub fn load(
        &self,
        server: &ServerId,
        user: &UserName,
    ) -> Result<Option<AccountState>, ClientError> {
        let path = self.file(server, user);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io("read", &path, e))?;
        AccountState::from_json(&bytes, user).map(Some)
    }

    /// The state of `user` on `server`: the one this directory has, or a new one, saved
    /// at once (so that every process of this client shares its names' key).
    pub fn open(&self, server: &ServerId, user: &UserName) -> Result<AccountState, ClientError> {
        match self.load(server, user)? {
            Some(s) => Ok(s),
            None => self.save(server, user, &AccountState::new()),
        }
    }

    /// Saves `state` as the state of `user` on `server`, merged with what is there (another
    /// process may have saved since this one loaded): the newer of each. Returns the state
    /// saved. Written whole or not at all.
    pub fn save(
        &self,
        server: &ServerId,
        user: &UserName,
        state: &AccountState,
    ) -> Result<AccountState, ClientError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.file(server, user);
        let dir = path
            .parent()
            .ok_or_else(|| ClientError::State("the state file has no directory".into()))?;
        private_dir(&self.root, false)?;
        private_dir(dir, true)?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io("open", &lock_path, e))?;
        lock.lock().map_err(|e| io("lock", &lock_path, e))?;
        // What is there comes first: its names' key is the one every process uses (a
        // state made by a process that raced another to make the file takes it).
        let merged = match self.load(server, user)? {
            Some(mut there) => {
                there.merge(state).map_err(ClientError::Rollback)?;
                there
            }
            None => state.clone(),
        };
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(merged.to_json(user).as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io("write", &path, e));
        }
        drop(lock);
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: u64, h: u8) -> AuditPosition {
        AuditPosition { seq, head: [h; 32] }
    }

    fn name(n: &str) -> SecretName {
        SecretName::new(n).unwrap()
    }

    #[test]
    fn versions_and_epochs_never_go_back() {
        let mut s = AccountState::new();
        s.tags_under([1; 16]);
        let w = name("wallet");
        let t = NameTag([1; 32]);
        s.saw_version(&w, &t, None, 3).unwrap();
        s.saw_version(&w, &t, Some(3), 3).unwrap();
        assert!(matches!(
            s.saw_version(&w, &t, s.newest_version(&w), 2),
            Err(Rollback::Version {
                newest: 3,
                seen: 2,
                ..
            })
        ));
        // An answer to a request sent before version 3 was seen may be older.
        s.saw_version(&w, &t, Some(1), 2).unwrap();
        assert_eq!(s.newest_version(&w), Some(3));
        // Versions from the chain come by tag, for tags known.
        assert!(s.remember_version(&t, 5));
        assert_eq!(s.newest_version(&w), Some(5));
        assert!(!s.remember_version(&NameTag([9; 32]), 7));
        s.saw_epoch(2).unwrap();
        assert!(s.saw_epoch(1).is_err());
    }

    #[test]
    fn versions_outlive_a_change_of_tag_key() {
        // Another device rotated the storage key: every tag changed, the versions stay.
        let mut s = AccountState::new();
        s.tags_under([1; 16]);
        let w = name("wallet");
        s.saw_version(&w, &NameTag([1; 32]), None, 4).unwrap();
        s.tags_under([2; 16]);
        assert!(!s.knows_tag(&NameTag([1; 32])));
        assert_eq!(s.newest_version(&w), Some(4));
        let moved = NameTag([2; 32]);
        assert!(matches!(
            s.saw_version(&w, &moved, s.newest_version(&w), 3),
            Err(Rollback::Version { newest: 4, .. })
        ));
        s.learn_tag(&moved, &w);
        assert!(s.remember_version(&moved, 6));
        assert_eq!(s.newest_version(&w), Some(6));
    }

    #[test]
    fn a_state_round_trips_through_its_file_which_names_no_secret() {
        let alice = UserName::new("alice").unwrap();
        let mut s = AccountState::new();
        s.pinned = Some(pos(9, 7));
        s.tags_under([5; 16]);
        s.saw_version(&name("wallet-main"), &NameTag([3; 32]), None, 4)
            .unwrap();
        s.saw_epoch(3).unwrap();
        // A file without server-held keys has no `keys` field (older clients read it).
        assert!(!s.to_json(&alice).contains("\"keys\""));
        let eth = KeyName::new("eth-hot").unwrap();
        s.pin_key(&eth, Some([8; 32]));
        let json = s.to_json(&alice);
        assert!(!json.contains("wallet") && !json.contains("eth-hot"));
        assert_eq!(AccountState::from_json(json.as_bytes(), &alice).unwrap(), s);
        assert_eq!(
            AccountState::from_json(json.as_bytes(), &alice)
                .unwrap()
                .key_pin(&eth),
            Some([8; 32])
        );
        let bob = UserName::new("bob").unwrap();
        assert!(AccountState::from_json(json.as_bytes(), &bob).is_err());
        for junk in [&b"{"[..], b"[]", b"{\"format\":1}", &[0xff; 10]] {
            assert!(AccountState::from_json(junk, &alice).is_err());
        }
        let old = json.replace("\"format\": 2", "\"format\": 1");
        let e = AccountState::from_json(old.as_bytes(), &alice).unwrap_err();
        assert!(e.to_string().contains("format 1"), "{e}");
    }

    #[test]
    fn merging_takes_the_newer_of_each_and_refuses_two_heads_at_one_seq() {
        let mut a = AccountState::new();
        a.tags_under([1; 16]);
        let mut b = a.clone();
        a.pinned = Some(pos(10, 1));
        b.pinned = Some(pos(8, 5));
        b.saw_version(&name("w"), &NameTag([4; 32]), None, 2)
            .unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.pinned, Some(pos(10, 1)));
        assert_eq!(a.newest_version(&name("w")), Some(2));
        // Nothing shows yet that 10 extends 8: 8 waits to be confirmed by a check.
        assert_eq!(a.unconfirmed(), [pos(8, 5)]);
        a.confirm();
        assert!(a.unconfirmed().is_empty());
        b.pinned = Some(pos(10, 2));
        assert!(matches!(a.merge(&b), Err(Rollback::Forked { seq: 10, .. })));
        // Another key's versions cannot be read: they are not taken in.
        let mut c = AccountState::new();
        c.saw_version(&name("x"), &NameTag([6; 32]), None, 9)
            .unwrap();
        a.merge(&c).unwrap();
        assert_eq!(a.newest_version(&name("x")), None);
    }

    #[test]
    fn a_newer_pin_from_another_process_keeps_the_older_one_to_confirm() {
        let mut a = AccountState::new();
        a.pinned = Some(pos(5, 1));
        let mut b = AccountState::new();
        b.pinned = Some(pos(9, 2));
        a.merge(&b).unwrap();
        assert_eq!(a.pinned, Some(pos(9, 2)));
        assert_eq!(a.unconfirmed(), [pos(5, 1)]);
        // Another head at an unconfirmed seq is refused as two heads at one seq.
        let mut c = AccountState::new();
        c.pinned = Some(pos(9, 2));
        c.unconfirmed = vec![pos(5, 7)];
        assert!(matches!(a.merge(&c), Err(Rollback::Forked { seq: 5, .. })));
        // At most MAX_UNCONFIRMED are kept, the newest.
        let mut d = AccountState::new();
        for seq in 0..MAX_UNCONFIRMED as u64 + 10 {
            let mut e = AccountState::new();
            e.pinned = Some(pos(seq, 3));
            d.merge(&e).unwrap();
        }
        assert_eq!(d.unconfirmed().len(), MAX_UNCONFIRMED);
        assert!(d.unconfirmed().iter().all(|p| p.seq >= 9));
        // It goes through the file.
        let alice = UserName::new("alice").unwrap();
        let back = AccountState::from_json(a.to_json(&alice).as_bytes(), &alice).unwrap();
        assert_eq!(back.unconfirmed(), [pos(5, 1)]);
    }

    #[test]
    fn a_version_stored_under_a_tag_not_yet_named_is_checked_once_named() {
        let mut s = AccountState::new();
        s.tags_under([1; 16]);
        let (w, t) = (name("wallet"), NameTag([1; 32]));
        // The chain shows version 4 under a tag this client cannot name yet.
        assert!(!s.remember_version(&t, 4));
        assert_eq!(s.newest_version(&w), None);
        assert_eq!(s.newest_known(&w, &t), Some(4));
        // Kept through the file, dropped with a change of tag key.
        let alice = UserName::new("alice").unwrap();
        let mut back = AccountState::from_json(s.to_json(&alice).as_bytes(), &alice).unwrap();
        assert_eq!(back.newest_known(&w, &t), Some(4));
        back.tags_under([2; 16]);
        assert_eq!(back.newest_known(&w, &t), None);
        // Once named, the version is the name's: an older one is refused.
        s.learn_tag(&t, &w);
        assert_eq!(s.newest_version(&w), Some(4));
        assert!(matches!(
            s.saw_version(&w, &t, s.newest_version(&w), 3),
            Err(Rollback::Version {
                newest: 4,
                seen: 3,
                ..
            })
        ));
    }

    #[test]
    fn saving_merges_with_what_another_process_saved_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let (server, alice) = (ServerId([1; 16]), UserName::new("alice").unwrap());
        assert!(dir.load(&server, &alice).unwrap().is_none());
        let mut first = dir.open(&server, &alice).unwrap();
        // A second process that opened it too shares its names' key.
        let mut second = dir.open(&server, &alice).unwrap();
        first.pinned = Some(pos(10, 1));
        dir.save(&server, &alice, &first).unwrap();
        // The second saw less of the chain, and a secret: the newer of each stays.
        second.pinned = Some(pos(8, 5));
        second
            .saw_version(&name("w"), &NameTag([4; 32]), None, 2)
            .unwrap();
        let saved = dir.save(&server, &alice, &second).unwrap();
        assert_eq!(saved.pinned, Some(pos(10, 1)));
        let back = dir.load(&server, &alice).unwrap().unwrap();
        assert_eq!(back.newest_version(&name("w")), Some(2));
        // A process that made its own state while racing to make the file takes the
        // file's key: what it learnt under its own is dropped, not mixed in.
        let stray = AccountState::new();
        let saved = dir.save(&server, &alice, &stray).unwrap();
        assert_eq!(saved.newest_version(&name("w")), Some(2));
        let file = dir.file(&server, &alice);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
    }

    #[test]
    fn a_state_dir_that_exists_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("shared");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let dir = StateDir::new(&root);
        let (server, alice) = (ServerId([2; 16]), UserName::new("alice").unwrap());
        dir.open(&server, &alice).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(dir.file(&server, &alice).parent().unwrap()), 0o700);
        assert_eq!(mode(&dir.file(&server, &alice)), 0o600);
    }
}
