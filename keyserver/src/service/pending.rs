//! Handshakes in progress: registration and login state between their two steps, named by
//! a random single-use id, not by a connection, with a short lifetime and a cap.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use keyserver_protocol::{
    HandshakeId, UserName, handshake::login::ServerLoginState, session::SessionId,
};
use rand::{RngCore, rngs::OsRng};

use crate::{clock::Now, storage::AccountId};

/// The account a login is for, as loaded when it started.
#[derive(Debug, Clone)]
pub struct LoginAccount {
    /// Internal account id.
    pub id: AccountId,
    /// Returned to the client when the login finishes.
    pub sealed_storage_key: Vec<u8>,
    /// The account's epoch when the login started: if it moved (a password change, a key
    /// rotation) the login was run against credentials that are gone, and fails.
    pub epoch: u64,
}

/// What a handshake remembers between its steps.
#[derive(Debug)]
pub enum Pending {
    /// A registration: the name and the random credential identifier its OPRF key was
    /// evaluated under (the server side of OPAQUE registration is otherwise stateless).
    Registration {
        /// The name being registered.
        user: UserName,
        /// The credential identifier drawn for it.
        credential_id: [u8; 32],
    },
    /// A reauth: an OPAQUE login inside session `session`, which only that session may
    /// finish.
    Reauth {
        /// The session it proves the password for.
        session: SessionId,
        /// Its account, as the login started.
        account: LoginAccount,
        /// opaque-ke's server state (zeroized on drop).
        state: ServerLoginState,
    },
    /// A login.
    Login {
        /// Who logs in.
        user: UserName,
        /// `None` for an unknown user: the login runs on a fake record and always fails.
        account: Option<LoginAccount>,
        /// opaque-ke's server state (zeroized on drop).
        state: ServerLoginState,
    },
}

struct Entry {
    pending: Pending,
    expires: Now,
}

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Pending handshakes.
pub struct HandshakeTable {
    map: Mutex<HashMap<HandshakeId, Entry>>,
    max: usize,
    ttl: Duration,
}

impl std::fmt::Debug for HandshakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeTable")
            .field("pending", &self.len())
            .finish_non_exhaustive()
    }
}

impl HandshakeTable {
    /// A table of at most `max` handshakes that live `ttl` each.
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HandshakeId, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // operation on it is a single insert or remove), so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Parks `pending` under a new id. When full, first drops expired entries and returns
    /// them (logins among them must be recorded as failed); if still full, refuses.
    pub fn insert(&self, pending: Pending, now: Now) -> (Result<HandshakeId, Full>, Vec<Pending>) {
        let mut map = self.lock();
        let mut expired = Vec::new();
        if map.len() >= self.max {
            expired = Self::drain_expired(&mut map, now);
            if map.len() >= self.max {
                return (Err(Full), expired);
            }
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let id = HandshakeId(id);
        map.insert(
            id,
            Entry {
                pending,
                expires: now.plus(self.ttl),
            },
        );
        (Ok(id), expired)
    }

    /// Takes the handshake `id` out: it can be finished once. An expired one comes back as
    /// `Err` so that the caller can record it.
    pub fn take(&self, id: &HandshakeId, now: Now) -> Option<Result<Pending, Pending>> {
        let e = self.lock().remove(id)?;
        Some(if e.expires > now {
            Ok(e.pending)
        } else {
            Err(e.pending)
        })
    }

    /// Removes and returns every expired handshake.
    pub fn sweep(&self, now: Now) -> Vec<Pending> {
        Self::drain_expired(&mut self.lock(), now)
    }

    /// How many are pending.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn drain_expired(map: &mut HashMap<HandshakeId, Entry>, now: Now) -> Vec<Pending> {
        let ids: Vec<_> = map
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| map.remove(&id))
            .map(|e| e.pending)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(n: &str) -> Pending {
        Pending::Registration {
            user: UserName::new(n).unwrap(),
            credential_id: [1; 32],
        }
    }

    #[test]
    fn a_handshake_is_taken_once() {
        let t = HandshakeTable::new(10, Duration::from_secs(30));
        let now = Now::from_unix_secs(1_000);
        let id = t.insert(reg("a"), now).0.unwrap();
        assert!(matches!(t.take(&id, now), Some(Ok(_))));
        assert!(t.take(&id, now).is_none());
    }

    #[test]
    fn an_expired_handshake_comes_back_as_expired() {
        let t = HandshakeTable::new(10, Duration::from_secs(30));
        let now = Now::from_unix_secs(1_000);
        let id = t.insert(reg("a"), now).0.unwrap();
        assert!(matches!(
            t.take(&id, now.plus(Duration::from_secs(31))),
            Some(Err(_))
        ));
    }

    #[test]
    fn a_full_table_refuses_until_entries_expire() {
        let t = HandshakeTable::new(2, Duration::from_secs(30));
        let now = Now::from_unix_secs(1_000);
        t.insert(reg("a"), now).0.unwrap();
        t.insert(reg("b"), now).0.unwrap();
        assert_eq!(t.insert(reg("c"), now).0, Err(Full));
        let (r, expired) = t.insert(reg("c"), now.plus(Duration::from_secs(30)));
        assert!(r.is_ok());
        assert_eq!(expired.len(), 2);
        assert_eq!(t.len(), 1);
    }
}
