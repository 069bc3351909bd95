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
}

impl Session {
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
            created: now,
            last_used: Mutex::new(now),
        };
        map.insert(keys.id, Arc::new(s));
        Ok(keys.id)
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
    fn logout_closes_the_session() {
        let t = table();
        let now = Instant::now();
        let id = t.open(&keys(1), 1, alice(), now).unwrap();
        t.close(&id);
        assert_eq!(t.get(&id, now).unwrap_err(), ErrorCode::UNKNOWN_SESSION);
    }
}
