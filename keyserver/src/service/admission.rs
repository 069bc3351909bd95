//! Admission: rate limits on what a request can make the server do before it is
//! authenticated: handshake starts (an OPAQUE evaluation and a durable write each) and
//! lookups of sessions this instance does not hold (a database read each). Token buckets
//! per source address and overall; the excess is answered at once with `SLOW_DOWN` and a
//! retry delay, never queued, so that one address flooding cannot slow the service for the
//! others.
//!
//! An IPv6 address counts by its /64 (one host typically holds a whole /64 and could
//! otherwise take a fresh address per request). The table of addresses is bounded without
//! ever scanning it: two generations, the newer filled first; when it is full, the older
//! one is dropped whole and the newer takes its place. An address in the older generation
//! moves to the newer when it comes back, so an active flooder keeps its bucket.

use std::{collections::HashMap, net::IpAddr, sync::Mutex, time::Duration};

use crate::clock::Now;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Now,
}

impl Bucket {
    fn full(burst: f64, now: Now) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Refills, then takes a token; `Err(wait)` if there is none.
    fn take(&mut self, rate: f64, burst: f64, now: Now) -> Result<(), Duration> {
        let elapsed = now.since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Sustained handshake starts per second from one address.
    pub per_address: f64,
    /// Burst from one address.
    pub per_address_burst: f64,
    /// Sustained handshake starts per second overall.
    pub overall: f64,
    /// Burst overall.
    pub overall_burst: f64,
}

/// Most addresses in one generation of the table (so at most twice this in memory, a few
/// MiB).
const GENERATION: usize = 100_000;

/// Who a rate limit counts by: an IPv4 address, or an IPv6 address's /64.
pub fn peer_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Buckets by address, in two generations (see the module's documentation).
#[derive(Debug, Default)]
struct Generations {
    newer: HashMap<IpAddr, Bucket>,
    older: HashMap<IpAddr, Bucket>,
    capacity: usize,
}

impl Generations {
    fn bucket(&mut self, key: IpAddr, full: impl FnOnce() -> Bucket) -> &mut Bucket {
        let b = match self.newer.remove(&key) {
            Some(b) => b,
            None => {
                let b = self.older.remove(&key).unwrap_or_else(full);
                if self.newer.len() >= self.capacity {
                    self.older = std::mem::take(&mut self.newer);
                }
                b
            }
        };
        self.newer.entry(key).or_insert(b)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

/// A rate limiter per source address and overall.
#[derive(Debug)]
pub struct RateLimiter {
    rates: Rates,
    per_address: Mutex<Generations>,
    overall: Mutex<Option<Bucket>>,
}

impl RateLimiter {
    /// A limiter with these rates.
    pub fn new(rates: Rates) -> Self {
        Self::with_generation(rates, GENERATION)
    }

    fn with_generation(rates: Rates, capacity: usize) -> Self {
        Self {
            rates,
            per_address: Mutex::new(Generations {
                capacity,
                ..Generations::default()
            }),
            overall: Mutex::new(None),
        }
    }

    /// Takes one token for `addr`; `Err(seconds to wait)` if over a limit.
    pub fn check(&self, addr: IpAddr, now: Now) -> Result<(), u64> {
        let r = self.rates;
        let secs = |d: Duration| d.as_secs().max(1);
        {
            let mut table = self
                .per_address
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            table
                .bucket(peer_key(addr), || Bucket::full(r.per_address_burst, now))
                .take(r.per_address, r.per_address_burst, now)
                .map_err(secs)?;
        }
        let mut overall = self
            .overall
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        overall
            .get_or_insert_with(|| Bucket::full(r.overall_burst, now))
            .take(r.overall, r.overall_burst, now)
            .map_err(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(Rates {
            per_address: 2.0,
            per_address_burst: 3.0,
            overall: 100.0,
            overall_burst: 5.0,
        })
    }

    #[test]
    fn one_address_gets_its_burst_then_waits_while_others_go_on() {
        let l = limiter();
        let now = Now::from_unix_secs(1_000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(a, now).is_ok());
        }
        assert_eq!(l.check(a, now), Err(1));
        assert!(l.check(b, now).is_ok());
        assert!(l.check(a, now.plus(Duration::from_millis(600))).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_prefix() {
        let l = limiter();
        let now = Now::from_unix_secs(1_000);
        for i in 0..3u16 {
            let a: IpAddr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i).into();
            assert!(l.check(a, now).is_ok());
        }
        let same_host: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(l.check(same_host, now), Err(1));
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.check(other, now).is_ok());
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert_eq!(peer_key(mapped), IpAddr::from([10, 0, 0, 9]));
    }

    /// The table never holds more than two generations, and a flooder that keeps coming
    /// keeps its (empty) bucket while a crowd of new addresses passes through.
    #[test]
    fn the_table_is_bounded_and_an_active_flooder_keeps_its_bucket() {
        let l = RateLimiter::with_generation(
            Rates {
                per_address: 1.0,
                per_address_burst: 1.0,
                overall: 1e9,
                overall_burst: 1e9,
            },
            100,
        );
        let now = Now::from_unix_secs(1_000);
        let flooder: IpAddr = "10.9.9.9".parse().unwrap();
        assert!(l.check(flooder, now).is_ok());
        for i in 0..10_000u32 {
            let a = IpAddr::from((0x0b00_0000 + i).to_be_bytes());
            assert!(l.check(a, now).is_ok());
            if i % 50 == 0 {
                assert!(l.check(flooder, now).is_err(), "at {i}");
            }
            assert!(l.per_address.lock().unwrap().len() <= 200);
        }
    }

    #[test]
    fn the_overall_limit_holds_across_addresses() {
        let l = limiter();
        let now = Now::from_unix_secs(1_000);
        for i in 0..5u8 {
            assert!(l.check(IpAddr::from([10, 0, 0, i]), now).is_ok());
        }
        assert!(l.check(IpAddr::from([10, 0, 1, 1]), now).is_err());
    }
}
