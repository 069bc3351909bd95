//! What one peer can hold of the server before any request is authenticated: connections
//! (overall and per source address, across both transports), and bytes of requests
//! buffered per connection.
//!
//! Memory per connection is bounded by [`ByteBudget`]: a request's bytes are reserved from
//! its connection's budget as they are read (a QUIC stream chunk by chunk, a TCP frame from
//! its header before its body is allocated) and given back once its answer is sent; a
//! connection at its budget stops being read, which is back pressure through flow control.
//! With QUIC's own receive window ([`QUIC_RECEIVE_WINDOW`]) this bounds a connection's
//! buffers at budget + window.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::service::admission::peer_key;

/// Bytes a peer may send on one QUIC connection before the server has read them (all
/// streams together).
pub const QUIC_RECEIVE_WINDOW: u32 = 2 * 1024 * 1024;

/// Bytes a peer may send on one QUIC stream before the server has read them: one request,
/// whole.
pub const QUIC_STREAM_WINDOW: u32 = 128 * 1024;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds `max_connections` already.
    Full,
    /// This address holds `max_connections_per_address` already.
    AddressFull,
}

/// The connection limits of one server, shared by its transports.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
    buffered_bytes: usize,
}

impl ConnectionLimits {
    /// At most `max` connections, `max_per_address` from one address (an IPv6 address by
    /// its /64), each buffering at most `buffered_bytes` of requests.
    pub fn new(max: usize, max_per_address: usize, buffered_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            per_address: Mutex::new(HashMap::new()),
            max_per_address,
            buffered_bytes: buffered_bytes.min(u32::MAX as usize),
        })
    }

    /// Admits a connection from `peer`; it counts until the slot is dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, Refused> {
        let key = peer_key(peer);
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        let mut map = self
            .per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key).or_insert(0);
        if *n >= self.max_per_address {
            return Err(Refused::AddressFull);
        }
        *n += 1;
        Ok(ConnectionSlot {
            _total: total,
            limits: self.clone(),
            key,
            budget: ByteBudget::new(self.buffered_bytes),
        })
    }

    /// Connections open from `peer`'s address.
    pub fn from_address(&self, peer: IpAddr) -> usize {
        self.per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&peer_key(peer))
            .copied()
            .unwrap_or(0)
    }
}

/// One admitted connection; it stops counting when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    _total: OwnedSemaphorePermit,
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
    budget: ByteBudget,
}

impl ConnectionSlot {
    /// The connection's budget of buffered request bytes.
    pub fn budget(&self) -> &ByteBudget {
        &self.budget
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self
            .limits
            .per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Bytes of requests a connection may hold at once.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    max: usize,
}

impl ByteBudget {
    fn new(max: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Reserves `n` bytes, waiting while the connection holds too many; `None` if `n` is
    /// more than the whole budget (the request cannot be taken at all).
    pub async fn reserve(&self, n: usize) -> Option<Reserved> {
        if n > self.max {
            return None;
        }
        let n = u32::try_from(n).ok()?;
        let permit = self.bytes.clone().acquire_many_owned(n).await.ok()?;
        Some(Reserved(Some(permit)))
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.max - self.bytes.available_permits()
    }
}

/// Bytes reserved from a [`ByteBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct Reserved(Option<OwnedSemaphorePermit>);

impl Reserved {
    /// Adds `more` to these.
    pub fn merge(&mut self, more: Self) {
        match (&mut self.0, more.0) {
            (Some(p), Some(q)) => p.merge(q),
            (slot @ None, q) => *slot = q,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_slot_and_slots_come_back() {
        let l = ConnectionLimits::new(5, 2, 1024);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = l.admit(a).unwrap();
        let _s2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refused::AddressFull);
        let _s3 = l.admit(b).unwrap();
        drop(s1);
        assert_eq!(l.from_address(a), 1);
        let _s4 = l.admit(a).unwrap();
        let _s5 = l.admit(b).unwrap();
        let _s6 = l.admit("10.0.0.3".parse().unwrap()).unwrap();
        assert_eq!(
            l.admit("10.0.0.4".parse().unwrap()).unwrap_err(),
            Refused::Full
        );
        // An IPv6 host counts by its /64.
        let l = ConnectionLimits::new(5, 1, 1024);
        let _x = l.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(l.admit("2001:db8::2".parse().unwrap()).is_err());
        assert!(l.admit("2001:db8:0:1::2".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn a_connection_never_holds_more_than_its_budget() {
        let budget = ByteBudget::new(100);
        let mut a = budget.reserve(60).await.unwrap();
        a.merge(budget.reserve(30).await.unwrap());
        assert_eq!(budget.in_use(), 90);
        // More than what is left waits…
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), budget.reserve(20));
        assert!(waiting.await.is_err());
        // …until bytes come back; more than the whole budget is refused at once.
        drop(a);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.reserve(20).await.is_some());
        assert!(budget.reserve(101).await.is_none());
    }
}
