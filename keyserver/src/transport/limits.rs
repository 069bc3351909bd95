//! What one peer can hold of the server before any request is authenticated: connections
//! (overall and per source address, across both transports), and bytes of requests held in
//! memory (per connection, per address, overall).
//!
//! Memory is bounded by [`ByteBudget`]: a request's bytes are reserved as they are read (a
//! QUIC stream chunk by chunk, a TCP frame from its header before its body is allocated)
//! from its connection's budget, its address's and the server's, and given back once its
//! answer is sent; a connection that cannot reserve stops being read, which is back
//! pressure through flow control. QUIC's own receive window ([`QUIC_RECEIVE_WINDOW`]) is on
//! top: at most that much more per connection.
//!
//! A QUIC connection's source address is not proven until its handshake: a forger could
//! take slots with spoofed Initial packets. Once half the slots (of the server, or of an
//! address) are taken, new connections must first answer a Retry, which proves the address.

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

/// How many bytes of requests may be held in memory at once: by one connection, by all the
/// connections of one address, by the whole server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteLimits {
    /// Per connection.
    pub connection: usize,
    /// Per source address (an IPv6 address by its /64).
    pub address: usize,
    /// Overall.
    pub total: usize,
}

/// The connections of one address.
#[derive(Debug)]
struct Address {
    connections: usize,
    bytes: Arc<Semaphore>,
}

/// The connection limits of one server, shared by its transports.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    max: usize,
    per_address: Mutex<HashMap<IpAddr, Address>>,
    max_per_address: usize,
    bytes: ByteLimits,
    total_bytes: Arc<Semaphore>,
    validations: std::sync::atomic::AtomicU64,
}

/// A semaphore's permits are counted in `u32` when taken many at once.
fn permits(n: usize) -> usize {
    n.min(u32::MAX as usize).min(Semaphore::MAX_PERMITS)
}

impl ConnectionLimits {
    /// At most `max` connections, `max_per_address` from one address (an IPv6 address by
    /// its /64), holding at most `bytes` of requests.
    pub fn new(max: usize, max_per_address: usize, bytes: ByteLimits) -> Arc<Self> {
        let bytes = ByteLimits {
            connection: permits(bytes.connection),
            address: permits(bytes.address),
            total: permits(bytes.total),
        };
        Arc::new(Self {
            total: Arc::new(Semaphore::new(permits(max))),
            max: permits(max),
            per_address: Mutex::new(HashMap::new()),
            max_per_address,
            bytes,
            total_bytes: Arc::new(Semaphore::new(bytes.total)),
            validations: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn addresses(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Address>> {
        // Each critical section is one map operation: a panic cannot leave it half-done.
        self.per_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `peer`; it counts until the slot is dropped.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, Refused> {
        let key = peer_key(peer);
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        let mut map = self.addresses();
        let a = map.entry(key).or_insert_with(|| Address {
            connections: 0,
            bytes: Arc::new(Semaphore::new(self.bytes.address)),
        });
        if a.connections >= self.max_per_address {
            return Err(Refused::AddressFull);
        }
        a.connections += 1;
        let budget = ByteBudget {
            connection: Arc::new(Semaphore::new(self.bytes.connection)),
            address: a.bytes.clone(),
            total: self.total_bytes.clone(),
            max: self
                .bytes
                .connection
                .min(self.bytes.address)
                .min(self.bytes.total),
        };
        Ok(ConnectionSlot {
            _total: total,
            limits: self.clone(),
            key,
            budget,
        })
    }

    /// Connections open from `peer`'s address.
    pub fn from_address(&self, peer: IpAddr) -> usize {
        self.addresses()
            .get(&peer_key(peer))
            .map_or(0, |a| a.connections)
    }

    /// Whether a new connection from `peer` should first prove that it can receive at its
    /// address (a QUIC Retry): when the server or this address holds half its connections
    /// or more. Below that, a forged source address costs one slot for a handshake timeout;
    /// above it, only addresses that answered the Retry get slots.
    pub fn under_pressure(&self, peer: IpAddr) -> bool {
        self.open() * 2 >= self.max || self.from_address(peer) * 2 >= self.max_per_address
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.total.available_permits()
    }

    /// Counts a connection asked to prove its address.
    pub fn validation_asked(&self) {
        self.validations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections asked to prove their address so far.
    pub fn address_validations(&self) -> u64 {
        self.validations.load(std::sync::atomic::Ordering::Relaxed)
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
        let mut map = self.limits.addresses();
        if let Some(a) = map.get_mut(&self.key) {
            a.connections = a.connections.saturating_sub(1);
            if a.connections == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Bytes of requests a connection may hold at once: its own, within its address's and the
/// server's.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    connection: Arc<Semaphore>,
    address: Arc<Semaphore>,
    total: Arc<Semaphore>,
    max: usize,
}

impl ByteBudget {
    /// Reserves `n` bytes, waiting while the connection (or its address, or the server)
    /// holds too many; `None` if `n` is more than any of the three budgets whole (the
    /// request cannot be taken at all).
    pub async fn reserve(&self, n: usize) -> Option<Reserved> {
        if n > self.max {
            return None;
        }
        let n = u32::try_from(n).ok()?;
        // Always in this order, so that two reservations never wait on each other.
        let c = self.connection.clone().acquire_many_owned(n).await.ok()?;
        let a = self.address.clone().acquire_many_owned(n).await.ok()?;
        let t = self.total.clone().acquire_many_owned(n).await.ok()?;
        Some(Reserved(vec![c, a, t]))
    }

    /// Bytes this connection holds now.
    pub fn in_use(&self, max: usize) -> usize {
        max - self.connection.available_permits()
    }
}

/// Bytes reserved from a [`ByteBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct Reserved(Vec<OwnedSemaphorePermit>);

impl Reserved {
    /// Adds `more` to these.
    pub fn merge(&mut self, more: Self) {
        self.0.extend(more.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_slot_and_slots_come_back() {
        let l = ConnectionLimits::new(5, 2, bytes(1024, 4096, 8192));
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
        let l = ConnectionLimits::new(5, 1, bytes(1024, 4096, 8192));
        let _x = l.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(l.admit("2001:db8::2".parse().unwrap()).is_err());
        assert!(l.admit("2001:db8:0:1::2".parse().unwrap()).is_ok());
    }

    fn bytes(connection: usize, address: usize, total: usize) -> ByteLimits {
        ByteLimits {
            connection,
            address,
            total,
        }
    }

    #[tokio::test]
    async fn a_connection_never_holds_more_than_its_budget() {
        let l = ConnectionLimits::new(5, 5, bytes(100, 1000, 1000));
        let slot = l.admit("10.0.0.1".parse().unwrap()).unwrap();
        let budget = slot.budget();
        let mut a = budget.reserve(60).await.unwrap();
        a.merge(budget.reserve(30).await.unwrap());
        assert_eq!(budget.in_use(100), 90);
        // More than what is left waits…
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), budget.reserve(20));
        assert!(waiting.await.is_err());
        // …until bytes come back; more than the whole budget is refused at once.
        drop(a);
        assert_eq!(budget.in_use(100), 0);
        assert!(budget.reserve(20).await.is_some());
        assert!(budget.reserve(101).await.is_none());
    }

    /// The connections of one address share its budget, and every connection the
    /// server's: many connections cannot add up to more.
    #[tokio::test]
    async fn an_address_and_the_server_never_hold_more_than_theirs() {
        let l = ConnectionLimits::new(10, 10, bytes(100, 150, 250));
        let a1 = l.admit("10.0.0.1".parse().unwrap()).unwrap();
        let a2 = l.admit("10.0.0.1".parse().unwrap()).unwrap();
        let b = l.admit("10.0.0.2".parse().unwrap()).unwrap();
        let _r1 = a1.budget().reserve(100).await.unwrap();
        let short = std::time::Duration::from_millis(50);
        // The address has 50 left, whatever its second connection's own budget says.
        assert!(
            tokio::time::timeout(short, a2.budget().reserve(60))
                .await
                .is_err()
        );
        let _r2 = a2.budget().reserve(50).await.unwrap();
        // The server has 100 left: another address gets them, and no more.
        let _r3 = b.budget().reserve(100).await.unwrap();
        let c = l.admit("10.0.0.3".parse().unwrap()).unwrap();
        assert!(
            tokio::time::timeout(short, c.budget().reserve(1))
                .await
                .is_err()
        );
    }

    #[test]
    fn new_connections_prove_their_address_once_half_the_slots_are_taken() {
        let l = ConnectionLimits::new(8, 4, bytes(100, 100, 100));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!l.under_pressure(a));
        let _s1 = l.admit(a).unwrap();
        assert!(!l.under_pressure(a));
        let _s2 = l.admit(a).unwrap();
        // Half of this address's slots.
        assert!(l.under_pressure(a));
        assert!(!l.under_pressure("10.0.0.2".parse().unwrap()));
        let _s3 = l.admit("10.0.0.2".parse().unwrap()).unwrap();
        let _s4 = l.admit("10.0.0.3".parse().unwrap()).unwrap();
        // Half of the server's.
        assert!(l.under_pressure("10.0.0.4".parse().unwrap()));
    }
}
