//! Open sessions, by session id. A session is not tied to a connection: any request that
//! names it and opens under its key belongs to it, whatever connection carried it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use keyserver_protocol::{
    ErrorCode, UserName,
    session::{ReplayWindow, ServerChannel, SessionId, SessionKeys},
};
use tokio::time::Instant;

/// One open session.
#[derive(Debug)]
pub struct Session {
    /// Keys of the channel.
    pub channel: ServerChannel,
    /// Sequence numbers already used.
    pub window: Mutex<ReplayWindow>,
    /// The account it is logged in to.
    pub account: i64,
    /// The account's user name.
    pub user: UserName,
    created: Instant,
    last_used: Mutex<Instant>,
    /// When this instance last confirmed the session with the shared database.
    checked: Mutex<Instant>,
}

impl Session {
    /// Whether it is time to confirm the session with the database (another instance may
    /// have logged it out); if so, records that it is being done now.
    pub fn due_for_check(&self, now: Instant, every: Duration) -> bool {
        let mut c = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(*c) >= every {
            *c = now;
            true
        } else {
            false
        }
    }

    fn expired(&self, now: Instant, idle: Duration, lifetime: Duration) -> bool {
        let last = *self
            .last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        now.saturating_duration_since(self.created) >= lifetime
            || now.saturating_duration_since(last) >= idle
    }

    /// Records activity (after a request opened).
    pub fn touch(&self, now: Instant) {
        *self
            .last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

/// Seals session keys for the shared database, so that any instance can take a session
/// over while a database thief learns nothing: ChaCha20-Poly1305 under a key derived from
/// the server's OPAQUE setup (which every instance of a fleet shares, sealed in its data dir),
/// with the session id as associated data. `blob = nonce (12) || ciphertext || tag`.
pub struct SessionVault(ring::aead::LessSafeKey);

impl std::fmt::Debug for SessionVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionVault(REDACTED)")
    }
}

/// HKDF label of the key that seals session keys at rest.
const VAULT_LABEL: &[u8] = b"keyserver/1 sessions at rest";

impl SessionVault {
    /// The vault of the server with this OPAQUE setup.
    pub fn from_setup(setup: &keyserver_protocol::ServerSetup) -> Self {
        let key = crate::server_setup::derive_key(setup, VAULT_LABEL);
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key.as_ref());
        // A 32-byte key is always accepted by ChaCha20-Poly1305.
        let unbound = unbound.unwrap_or_else(|_| unreachable_key());
        Self(ring::aead::LessSafeKey::new(unbound))
    }

    /// Seals a session's keys.
    pub fn seal(&self, keys: &SessionKeys) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(64 + 16));
        buf.extend_from_slice(keys.c2s.expose_secret());
        buf.extend_from_slice(keys.s2c.expose_secret());
        let n = ring::aead::Nonce::assume_unique_for_key(nonce);
        if self
            .0
            .seal_in_place_append_tag(n, ring::aead::Aad::from(keys.id.0), &mut *buf)
            .is_err()
        {
            return Vec::new();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    /// Opens sealed keys of session `id`; `None` if they do not open.
    pub fn open(&self, id: SessionId, blob: &[u8]) -> Option<SessionKeys> {
        let (nonce, ct) = blob.split_at_checked(12)?;
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = zeroize::Zeroizing::new(ct.to_vec());
        let plain = self
            .0
            .open_in_place(nonce, ring::aead::Aad::from(id.0), &mut buf)
            .ok()?;
        let (c2s, s2c) = plain.split_at_checked(32)?;
        Some(SessionKeys {
            id,
            c2s: keyserver_protocol::secret::Key32::from_bytes(c2s.try_into().ok()?),
            s2c: keyserver_protocol::secret::Key32::from_bytes(s2c.try_into().ok()?),
        })
    }
}

#[cold]
fn unreachable_key() -> ring::aead::UnboundKey {
    #[allow(clippy::panic)]
    {
        panic!("ChaCha20-Poly1305 refused a 32-byte key")
    }
}

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Every open session.
#[derive(Debug)]
pub struct SessionTable {
    map: RwLock<HashMap<SessionId, Arc<Session>>>,
    max: usize,
    idle: Duration,
    lifetime: Duration,
}

impl SessionTable {
    /// A table of at most `max` sessions with the given timeouts.
    pub fn new(max: usize, idle: Duration, lifetime: Duration) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            max,
            idle,
            lifetime,
        }
    }

    /// Opens a session from a finished login.
    pub fn open(
        &self,
        keys: &SessionKeys,
        account: i64,
        user: UserName,
        now: Instant,
    ) -> Result<SessionId, Full> {
        self.adopt(keys, account, user, now, now, now)
            .map(|s| s.channel.id())
    }

    /// Takes in a session opened earlier (on this instance before a restart, or on another
    /// instance), with when it was created and last used.
    pub fn adopt(
        &self,
        keys: &SessionKeys,
        account: i64,
        user: UserName,
        created: Instant,
        last_used: Instant,
        now: Instant,
    ) -> Result<Arc<Session>, Full> {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max {
            let (idle, lifetime) = (self.idle, self.lifetime);
            map.retain(|_, s| !s.expired(now, idle, lifetime));
            if map.len() >= self.max {
                return Err(Full);
            }
        }
        let s = Session {
            channel: ServerChannel::new(keys),
            window: Mutex::new(ReplayWindow::new()),
            account,
            user,
            created,
            last_used: Mutex::new(last_used),
            checked: Mutex::new(now),
        };
        let s = Arc::new(s);
        map.insert(keys.id, s.clone());
        Ok(s)
    }

    /// Whether a session created at `created` and last used at `last_used` (Unix seconds)
    /// is still alive at `now`.
    pub fn alive(&self, created: i64, last_used: i64, now: i64) -> bool {
        let idle = i64::try_from(self.idle.as_secs()).unwrap_or(i64::MAX);
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        now.saturating_sub(created) < lifetime && now.saturating_sub(last_used) < idle
    }

    /// The live session `id`, or why there is none.
    pub fn get(&self, id: &SessionId, now: Instant) -> Result<Arc<Session>, ErrorCode> {
        let s = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or(ErrorCode::UNKNOWN_SESSION)?;
        if s.expired(now, self.idle, self.lifetime) {
            self.close(id);
            return Err(ErrorCode::SESSION_EXPIRED);
        }
        Ok(s)
    }

    /// Closes a session (logout); later requests in it get `UNKNOWN_SESSION`.
    pub fn close(&self, id: &SessionId) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// Drops expired sessions; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, s| !s.expired(now, self.idle, self.lifetime));
        before - map.len()
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SessionTable {
        SessionTable::new(2, Duration::from_secs(10), Duration::from_secs(100))
    }

    fn keys(b: u8) -> SessionKeys {
        SessionKeys::derive(&[b; 64])
    }

    fn alice() -> UserName {
        UserName::new("alice").unwrap()
    }

    #[test]
    fn a_session_expires_when_idle_and_activity_keeps_it() {
        let t = table();
        let now = Instant::now();
        let id = t.open(&keys(1), 1, alice(), now).unwrap();
        let s = t.get(&id, now + Duration::from_secs(9)).unwrap();
        s.touch(now + Duration::from_secs(9));
        assert!(t.get(&id, now + Duration::from_secs(18)).is_ok());
        assert_eq!(
            t.get(&id, now + Duration::from_secs(28)).unwrap_err(),
            ErrorCode::SESSION_EXPIRED
        );
        assert_eq!(
            t.get(&id, now + Duration::from_secs(28)).unwrap_err(),
            ErrorCode::UNKNOWN_SESSION
        );
    }

    #[test]
    fn a_session_ends_at_its_lifetime_even_when_busy() {
        let t = table();
        let now = Instant::now();
        let id = t.open(&keys(1), 1, alice(), now).unwrap();
        for i in 1..10 {
            t.get(&id, now + Duration::from_secs(i * 9))
                .unwrap()
                .touch(now + Duration::from_secs(i * 9));
        }
        assert_eq!(
            t.get(&id, now + Duration::from_secs(100)).unwrap_err(),
            ErrorCode::SESSION_EXPIRED
        );
    }

    #[test]
    fn a_full_table_refuses_new_sessions_until_some_expire() {
        let t = table();
        let now = Instant::now();
        t.open(&keys(1), 1, alice(), now).unwrap();
        t.open(&keys(2), 1, alice(), now).unwrap();
        assert_eq!(t.open(&keys(3), 1, alice(), now), Err(Full));
        assert!(
            t.open(&keys(3), 1, alice(), now + Duration::from_secs(11))
                .is_ok()
        );
    }

    #[test]
    fn sealed_session_keys_open_only_under_their_id_and_setup() {
        let mut rng = rand::rngs::OsRng;
        let setup = keyserver_protocol::ServerSetup::new(&mut rng);
        let vault = SessionVault::from_setup(&setup);
        let k = keys(1);
        let blob = vault.seal(&k);
        let back = vault.open(k.id, &blob).unwrap();
        assert_eq!(back.c2s.expose_secret(), k.c2s.expose_secret());
        assert_eq!(back.s2c.expose_secret(), k.s2c.expose_secret());
        assert!(vault.open(keys(2).id, &blob).is_none());
        let other = SessionVault::from_setup(&keyserver_protocol::ServerSetup::new(&mut rng));
        assert!(other.open(k.id, &blob).is_none());
        assert!(!blob.windows(32).any(|w| w == k.c2s.expose_secret()));
    }

    #[test]
    fn logout_closes_the_session() {
        let t = table();
        let now = Instant::now();
        let id = t.open(&keys(1), 1, alice(), now).unwrap();
        t.close(&id);
        assert_eq!(t.get(&id, now).unwrap_err(), ErrorCode::UNKNOWN_SESSION);
    }
}
