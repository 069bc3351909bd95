//! Open sessions, by session id. A session is not tied to a connection: any request that
//! names it and opens under its key belongs to it, whatever connection carried it.
//!
//! The table is this instance's memory of sessions. The database holds every session of the
//! fleet (sealed keys, creation, last use); an instance meeting a session it does not hold
//! adopts it from there (`super::sealed`), and confirms the sessions it holds with the
//! database every few seconds, so a logout on another instance ends them here too.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use keyserver_protocol::{
    UserName,
    session::{ReplayWindow, ServerChannel, SessionId, SessionKeys},
};

use crate::{clock::Now, storage::AccountId};

/// Why a session cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// This instance holds no such session.
    Unknown,
    /// It passed its idle timeout or its lifetime.
    Expired,
}

/// One open session.
#[derive(Debug)]
pub struct Session {
    /// Keys of the channel.
    pub channel: ServerChannel,
    /// Sequence numbers already used.
    pub window: Mutex<ReplayWindow>,
    /// The account it is logged in to.
    pub account: AccountId,
    /// The account's user name.
    pub user: UserName,
    created: Now,
    last_used: Mutex<Now>,
    /// When this instance last confirmed the session with the shared database.
    checked: Mutex<Now>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a single read or assignment: a panic cannot leave the
    // value half-written, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    /// Whether it is time to confirm the session with the database (another instance may
    /// have logged it out); if so, records that it is being done now.
    pub fn due_for_check(&self, now: Now, every: Duration) -> bool {
        let mut c = lock(&self.checked);
        if now.since(*c) >= every {
            *c = now;
            true
        } else {
            false
        }
    }

    fn expired(&self, now: Now, idle: Duration, lifetime: Duration) -> bool {
        let last = *lock(&self.last_used);
        now.since(self.created) >= lifetime || now.since(last) >= idle
    }

    /// When it was opened.
    pub fn created(&self) -> Now {
        self.created
    }

    /// Records activity (after a request opened).
    pub fn touch(&self, now: Now) {
        let mut last = lock(&self.last_used);
        *last = (*last).max(now);
    }
}

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Session ids recently found missing in the database, so that a client repeating one
/// (a session that ended, or junk) costs no further lookup for a while. Bounded: when
/// full it is emptied (a stale entry only costs a lookup).
#[derive(Debug)]
pub struct Misses {
    map: Mutex<HashMap<SessionId, Now>>,
    max: usize,
    ttl: Duration,
}

impl Misses {
    /// At most `max` ids, each remembered for `ttl`.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
            ttl,
        }
    }

    /// Remembers that `id` was missing at `now`.
    pub fn insert(&self, id: SessionId, now: Now) {
        let mut map = lock(&self.map);
        if map.len() >= self.max {
            map.clear();
        }
        map.insert(id, now.plus(self.ttl));
    }

    /// Whether `id` was found missing within the last `ttl`.
    pub fn contains(&self, id: &SessionId, now: Now) -> bool {
        lock(&self.map).get(id).is_some_and(|until| *until > now)
    }

    /// Forgets `id` (a login made it exist).
    pub fn remove(&self, id: &SessionId) {
        lock(&self.map).remove(id);
    }
}

/// A session as the database holds it, to be taken in by this instance.
#[derive(Debug)]
pub struct Adopted<'a> {
    /// Its keys, opened from the vault.
    pub keys: &'a SessionKeys,
    /// Its account.
    pub account: AccountId,
    /// The account's user name.
    pub user: UserName,
    /// When it was opened.
    pub created: Now,
    /// When it was last used anywhere (as the fleet last recorded it).
    pub last_used: Now,
}

/// Every session this instance holds.
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
        account: AccountId,
        user: UserName,
        now: Now,
    ) -> Result<SessionId, Full> {
        let s = Adopted {
            keys,
            account,
            user,
            created: now,
            last_used: now,
        };
        self.adopt(s, now).map(|s| s.channel.id())
    }

    /// Takes in a session opened earlier (on this instance before a restart, or on another
    /// instance). If the session is here already (two of its first requests raced to adopt
    /// it), the one here is kept and returned: a session has one replay window per
    /// instance, never two.
    pub fn adopt(&self, s: Adopted<'_>, now: Now) -> Result<Arc<Session>, Full> {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = map.get(&s.keys.id) {
            return Ok(held.clone());
        }
        if map.len() >= self.max {
            let (idle, lifetime) = (self.idle, self.lifetime);
            map.retain(|_, s| !s.expired(now, idle, lifetime));
            if map.len() >= self.max {
                return Err(Full);
            }
        }
        let session = Arc::new(Session {
            channel: ServerChannel::new(s.keys),
            window: Mutex::new(ReplayWindow::new()),
            account: s.account,
            user: s.user,
            created: s.created,
            last_used: Mutex::new(s.last_used),
            checked: Mutex::new(now),
        });
        map.insert(s.keys.id, session.clone());
        Ok(session)
    }

    /// Whether a session created at `created` and last used at `last_used` (Unix seconds,
    /// as stored) is still alive at `now`.
    pub fn alive(&self, created: i64, last_used: i64, now: Now) -> bool {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let now = now.unix_secs();
        now.saturating_sub(created) < secs(self.lifetime)
            && now.saturating_sub(last_used) < secs(self.idle)
    }

    /// The live session `id`, or why there is none. An expired one is dropped.
    pub fn get(&self, id: &SessionId, now: Now) -> Result<Arc<Session>, SessionError> {
        let s = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or(SessionError::Unknown)?;
        if s.expired(now, self.idle, self.lifetime) {
            self.close(id);
            return Err(SessionError::Expired);
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

    /// Closes every session of `account` but `keep` (a password change or a key rotation in
    /// `keep`); returns how many.
    pub fn close_others(&self, account: AccountId, keep: &SessionId) -> usize {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = map.len();
        map.retain(|id, s| s.account != account || id == keep);
        before - map.len()
    }

    /// Drops expired sessions; returns how many.
    pub fn sweep(&self, now: Now) -> usize {
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

    fn at(secs: u64) -> Now {
        Now::from_unix_secs(1_000).plus(Duration::from_secs(secs))
    }

    #[test]
    fn a_session_expires_when_idle_and_activity_keeps_it() {
        let t = table();
        let id = t.open(&keys(1), 1, alice(), at(0)).unwrap();
        let s = t.get(&id, at(9)).unwrap();
        s.touch(at(9));
        assert!(t.get(&id, at(18)).is_ok());
        assert_eq!(t.get(&id, at(28)).unwrap_err(), SessionError::Expired);
        assert_eq!(t.get(&id, at(28)).unwrap_err(), SessionError::Unknown);
    }

    #[test]
    fn a_session_ends_at_its_lifetime_even_when_busy() {
        let t = table();
        let id = t.open(&keys(1), 1, alice(), at(0)).unwrap();
        for i in 1..10 {
            t.get(&id, at(i * 9)).unwrap().touch(at(i * 9));
        }
        assert_eq!(t.get(&id, at(100)).unwrap_err(), SessionError::Expired);
    }

    #[test]
    fn a_full_table_refuses_new_sessions_until_some_expire() {
        let t = table();
        t.open(&keys(1), 1, alice(), at(0)).unwrap();
        t.open(&keys(2), 1, alice(), at(0)).unwrap();
        assert_eq!(t.open(&keys(3), 1, alice(), at(0)), Err(Full));
        assert!(t.open(&keys(3), 1, alice(), at(11)).is_ok());
    }

    #[test]
    fn a_stored_session_is_alive_by_its_stored_times() {
        let t = table();
        let now = at(50);
        let secs = now.unix_secs();
        assert!(t.alive(secs - 99, secs - 9, now));
        assert!(!t.alive(secs - 100, secs, now));
        assert!(!t.alive(secs, secs - 10, now));
    }

    #[test]
    fn adopting_a_session_held_already_keeps_the_one_held_and_its_window() {
        let t = table();
        let k = keys(1);
        let adopted = || Adopted {
            keys: &k,
            account: 1,
            user: alice(),
            created: at(0),
            last_used: at(0),
        };
        let first = t.adopt(adopted(), at(1)).unwrap();
        first.window.lock().unwrap().accept(5).unwrap();
        let second = t.adopt(adopted(), at(1)).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert!(second.window.lock().unwrap().check(5).is_err());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn closing_the_others_keeps_one_session_and_other_accounts() {
        let t = SessionTable::new(10, Duration::from_secs(10), Duration::from_secs(100));
        let keep = t.open(&keys(1), 1, alice(), at(0)).unwrap();
        t.open(&keys(2), 1, alice(), at(0)).unwrap();
        t.open(&keys(3), 1, alice(), at(0)).unwrap();
        let bob = t
            .open(&keys(4), 2, UserName::new("bob").unwrap(), at(0))
            .unwrap();
        assert_eq!(t.close_others(1, &keep), 2);
        assert!(t.get(&keep, at(0)).is_ok());
        assert!(t.get(&bob, at(0)).is_ok());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_missing_id_is_remembered_for_a_while_and_the_cache_stays_bounded() {
        let m = Misses::new(3, Duration::from_secs(10));
        let id = SessionId([1; 16]);
        m.insert(id, at(0));
        assert!(m.contains(&id, at(9)));
        assert!(!m.contains(&id, at(10)));
        for i in 2..10u8 {
            m.insert(SessionId([i; 16]), at(0));
            assert!(lock(&m.map).len() <= 3);
        }
        m.insert(id, at(0));
        m.remove(&id);
        assert!(!m.contains(&id, at(1)));
    }

    #[test]
    fn logout_closes_the_session() {
        let t = table();
        let id = t.open(&keys(1), 1, alice(), at(0)).unwrap();
        t.close(&id);
        assert_eq!(t.get(&id, at(0)).unwrap_err(), SessionError::Unknown);
    }
}
