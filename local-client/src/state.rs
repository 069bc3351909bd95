//! What a client remembers of an account between runs, so that it can catch a server that
//! goes back: the newest audit position it saw, the newest epoch, and for each secret the
//! newest version it stored or saw.
//!
//! A server (or whoever can write its database) can restore yesterday's database, delete
//! the newest audit events, serve version n−1 of a secret or show two devices two different
//! histories. Each answer carries the account's audit position
//! (`keyserver_protocol::ops::OpAnswer`); a [`Session`](crate::Session) given an
//! [`AccountState`] refuses any position behind it, any other head at the same position,
//! and any secret older than the version it remembers, with [`ClientError::Rollback`].
//!
//! [`StateDir`] keeps one file per (server, user) in a directory: created 0700, files 0600,
//! written whole (write, fsync, rename) and merged under a lock with what another process
//! wrote meanwhile. Applications that keep the state elsewhere use [`AccountState`]'s
//! [`AccountState::to_json`] and [`AccountState::from_json`]. A client with no state trusts
//! what it first sees.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
};

use keyserver_protocol::{NameTag, SecretName, UserName, audit_chain::AuditPosition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ClientError;

/// The largest state file read (about 100,000 secrets' versions).
const MAX_STATE_FILE: u64 = 16 * 1024 * 1024;
/// The state file's format.
const FORMAT: u32 = 1;
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
    /// The events after a position this client saw do not extend it.
    Broken {
        /// The position.
        pinned: AuditPosition,
        /// Why.
        why: String,
    },
    /// A secret's version is older than one this client stored or saw.
    Version {
        /// The secret's name (or its tag, for one known only from the audit log).
        name: String,
        /// The newest version seen.
        newest: u64,
        /// The version the server gave now.
        seen: u64,
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
            Self::Broken { pinned, why } => write!(
                f,
                "the audit log does not continue from event {} ({}…) that this client saw: \
                 {why}",
                pinned.seq,
                short(&pinned.head)
            ),
            Self::Version { name, newest, seen } => write!(
                f,
                "the server gave version {seen} of {name}, but this client stored or saw \
                 version {newest}: an older version was put back"
            ),
            Self::Epoch { newest, seen } => write!(
                f,
                "the account is at epoch {seen}, but this client saw epoch {newest}: its \
                 password or key was set back to an older one"
            ),
        }
    }
}

/// What a client remembers of one account on one server.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountState {
    /// The newest audit position seen (`None`: nothing yet, so the first one seen is
    /// trusted).
    pub pinned: Option<AuditPosition>,
    /// The newest epoch seen.
    pub epoch: u64,
    /// Per secret, the newest version stored or seen, by the secret's name tag (what the
    /// server knows it by: the file lists no names).
    versions: BTreeMap<NameTag, u64>,
    /// Which tag key those tags are under (`StorageKey::tag_key_id`): a key rotation
    /// changes every tag.
    tags_of: Option<[u8; 16]>,
}

impl std::fmt::Debug for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountState")
            .field("pinned", &self.pinned)
            .field("epoch", &self.epoch)
            .field("secrets", &self.versions.len())
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
    tags_of: Option<String>,
    versions: BTreeMap<String, u64>,
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

fn hex32(s: &str) -> Result<[u8; 32], ClientError> {
    let v = hex::decode(s).map_err(|_| bad("not hex"))?;
    v.try_into().map_err(|_| bad("a hash is not 32 bytes"))
}

impl AccountState {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self {
            pinned: None,
            epoch: 0,
            versions: BTreeMap::new(),
            tags_of: None,
        }
    }

    /// Takes the versions as being under tag key `id`: if they were under another (the
    /// storage key was rotated elsewhere), they are forgotten, since no tag they name is in
    /// use any more.
    pub fn tags_under(&mut self, id: [u8; 16]) {
        if self.tags_of != Some(id) {
            self.versions.clear();
            self.tags_of = Some(id);
        }
    }

    /// Moves every remembered version to its secret's new tag (a key rotation this client
    /// made), under tag key `id`.
    pub fn retag(&mut self, moves: &[(NameTag, NameTag)], id: [u8; 16]) {
        let old = std::mem::take(&mut self.versions);
        for (from, to) in moves {
            if let Some(v) = old.get(from) {
                self.versions.insert(*to, *v);
            }
        }
        self.tags_of = Some(id);
    }

    /// The newest version of the secret tagged `tag` stored or seen.
    pub fn newest_version(&self, tag: &NameTag) -> Option<u64> {
        self.versions.get(tag).copied()
    }

    /// Checks version `seen` of `name`, from an answer to a request sent when the newest
    /// version seen was `at_send`, and remembers it if it is newer. (Answers to requests
    /// sent concurrently may come back in any order: only what was known when the request
    /// left counts.)
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
        let newest = self.versions.entry(*tag).or_insert(seen);
        *newest = (*newest).max(seen);
        Ok(())
    }

    /// Remembers version `seen` of the secret tagged `tag`, if newer (a version known from
    /// the verified audit chain: another device stored it).
    pub fn remember_version(&mut self, tag: &NameTag, seen: u64) {
        let newest = self.versions.entry(*tag).or_insert(seen);
        *newest = (*newest).max(seen);
    }

    /// Checks audit position `seen`, from an answer to a request sent when the newest
    /// position seen was `at_send`, and remembers it if it is newer.
    pub fn saw_position(
        &mut self,
        at_send: Option<AuditPosition>,
        seen: AuditPosition,
    ) -> Result<(), Rollback> {
        if let Some(p) = at_send.filter(|p| seen.seq < p.seq) {
            return Err(Rollback::Behind { pinned: p, seen });
        }
        match self.pinned {
            Some(p) if p.seq == seen.seq && p.head != seen.head => Err(Rollback::Forked {
                seq: p.seq,
                pinned: p.head,
                seen: seen.head,
            }),
            Some(p) if p.seq >= seen.seq => Ok(()),
            _ => {
                self.pinned = Some(seen);
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
    /// of each.
    pub fn merge(&mut self, other: &Self) -> Result<(), Rollback> {
        if let Some(p) = other.pinned {
            self.saw_position(None, p)?;
        }
        self.epoch = self.epoch.max(other.epoch);
        if other.tags_of == self.tags_of {
            for (k, v) in &other.versions {
                let e = self.versions.entry(*k).or_insert(*v);
                *e = (*e).max(*v);
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
            tags_of: self.tags_of.map(hex::encode),
            versions: self
                .versions
                .iter()
                .map(|(k, v)| (hex::encode(k.0), *v))
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
            return Err(bad("unknown format"));
        }
        if f.user != user.as_str() {
            return Err(bad("it is another user's"));
        }
        let pinned = f
            .audit
            .map(|p| {
                Ok::<_, ClientError>(AuditPosition {
                    seq: p.seq,
                    head: hex32(&p.head)?,
                })
            })
            .transpose()?;
        let versions = f
            .versions
            .iter()
            .map(|(k, v)| Ok((NameTag(hex32(k)?), *v)))
            .collect::<Result<_, ClientError>>()?;
        let tags_of = f
            .tags_of
            .map(|t| {
                hex::decode(t)
                    .ok()
                    .and_then(|v| <[u8; 16]>::try_from(v).ok())
                    .ok_or_else(|| bad("tags_of is not 16 bytes of hex"))
            })
            .transpose()?;
        Ok(Self {
            pinned,
            epoch: f.epoch,
            versions,
            tags_of,
        })
    }
}

/// A directory of account states, one file per (server, user).
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

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

fn io(what: &str, path: &Path, e: std::io::Error) -> ClientError {
    ClientError::State(format!("cannot {what} {}: {e}", path.display()))
}

fn private_dir(path: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io("create", path, e))?;
    // A directory that existed keeps its mode unless it is open to others.
    let meta = fs::metadata(path).map_err(|e| io("read", path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("make private", path, e))?;
    }
    Ok(())
}

impl StateDir {
    /// The directory `root` (made when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the state of `user` on `server` lives.
    pub fn file(&self, server: &ServerId, user: &UserName) -> PathBuf {
        let mut h = Sha256::new();
        h.update(user.as_str().as_bytes());
        let name = hex::encode(&h.finalize()[..16]);
        self.root.join(server.hex()).join(format!("{name}.json"))
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
        private_dir(&self.root)?;
        private_dir(dir)?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io("open", &lock_path, e))?;
        lock.lock().map_err(|e| io("lock", &lock_path, e))?;
        let mut merged = state.clone();
        if let Some(there) = self.load(server, user)? {
            merged.merge(&there).map_err(ClientError::Rollback)?;
        }
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

    #[test]
    fn positions_behind_or_beside_the_pinned_one_are_refused() {
        let mut s = AccountState::new();
        s.saw_position(None, pos(5, 1)).unwrap();
        assert_eq!(s.pinned, Some(pos(5, 1)));
        // Answers sent before the pin may arrive late: older than the pin is fine…
        s.saw_position(None, pos(4, 9)).unwrap();
        // …but not older than what was pinned when the request left.
        assert!(matches!(
            s.saw_position(Some(pos(5, 1)), pos(4, 9)),
            Err(Rollback::Behind { .. })
        ));
        assert!(matches!(
            s.saw_position(None, pos(5, 2)),
            Err(Rollback::Forked { seq: 5, .. })
        ));
        s.saw_position(Some(pos(5, 1)), pos(7, 3)).unwrap();
        assert_eq!(s.pinned, Some(pos(7, 3)));
    }

    #[test]
    fn versions_and_epochs_never_go_back() {
        let mut s = AccountState::new();
        let w = SecretName::new("wallet").unwrap();
        let t = NameTag([1; 32]);
        s.saw_version(&w, &t, None, 3).unwrap();
        s.saw_version(&w, &t, Some(3), 3).unwrap();
        assert!(matches!(
            s.saw_version(&w, &t, s.newest_version(&t), 2),
            Err(Rollback::Version {
                newest: 3,
                seen: 2,
                ..
            })
        ));
        // An answer to a request sent before version 3 was seen may be older.
        s.saw_version(&w, &t, Some(1), 2).unwrap();
        assert_eq!(s.newest_version(&t), Some(3));
        // Under another tag key (a rotation elsewhere) the versions are forgotten; a
        // rotation made here moves them to the new tags.
        s.tags_under([1; 16]);
        assert_eq!(s.newest_version(&t), None);
        s.saw_version(&w, &t, None, 3).unwrap();
        let moved = NameTag([2; 32]);
        s.retag(&[(t, moved)], [2; 16]);
        assert_eq!(s.newest_version(&moved), Some(3));
        assert_eq!(s.newest_version(&t), None);
        s.saw_epoch(2).unwrap();
        assert!(s.saw_epoch(1).is_err());
    }

    #[test]
    fn a_state_round_trips_through_its_file_which_names_no_secret() {
        let alice = UserName::new("alice").unwrap();
        let mut s = AccountState::new();
        s.saw_position(None, pos(9, 7)).unwrap();
        s.saw_version(
            &SecretName::new("wallet-main").unwrap(),
            &NameTag([3; 32]),
            None,
            4,
        )
        .unwrap();
        s.saw_epoch(3).unwrap();
        let json = s.to_json(&alice);
        assert!(!json.contains("wallet"));
        assert_eq!(AccountState::from_json(json.as_bytes(), &alice).unwrap(), s);
        let bob = UserName::new("bob").unwrap();
        assert!(AccountState::from_json(json.as_bytes(), &bob).is_err());
        for junk in [&b"{"[..], b"[]", b"{\"format\":1}", &[0xff; 10]] {
            assert!(AccountState::from_json(junk, &alice).is_err());
        }
    }

    #[test]
    fn saving_merges_with_what_another_process_saved_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let (server, alice) = (ServerId([1; 16]), UserName::new("alice").unwrap());
        assert!(dir.load(&server, &alice).unwrap().is_none());
        let mut first = AccountState::new();
        first.saw_position(None, pos(10, 1)).unwrap();
        dir.save(&server, &alice, &first).unwrap();
        // Another process, which loaded before, saw less: the newer position stays.
        let mut second = first.clone();
        second.pinned = Some(pos(8, 5));
        second
            .saw_version(&SecretName::new("w").unwrap(), &NameTag([4; 32]), None, 2)
            .unwrap();
        let saved = dir.save(&server, &alice, &second).unwrap();
        assert_eq!(saved.pinned, Some(pos(10, 1)));
        let back = dir.load(&server, &alice).unwrap().unwrap();
        assert_eq!(back.newest_version(&NameTag([4; 32])), Some(2));
        let file = dir.file(&server, &alice);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
    }
}
