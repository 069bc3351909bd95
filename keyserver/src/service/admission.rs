//! Admission: rate limits on handshake starts (the requests that cost the server an OPAQUE evaluation
//! and a database write): per source address and overall, token buckets. The excess is
//! answered at once with `SLOW_DOWN` and a retry delay, never queued, so that one address
//! flooding cannot slow the service for the others.

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

/// Most addresses remembered; beyond it, addresses whose bucket is full are forgotten.
const MAX_ADDRESSES: usize = 100_000;

/// Handshake rate limiter.
#[derive(Debug)]
pub struct HandshakeLimiter {
    rates: Rates,
    per_address: Mutex<HashMap<IpAddr, Bucket>>,
    overall: Mutex<Option<Bucket>>,
}

impl HandshakeLimiter {
    /// A limiter with these rates.
    pub fn new(rates: Rates) -> Self {
        Self {
            rates,
            per_address: Mutex::new(HashMap::new()),
            overall: Mutex::new(None),
        }
    }

    /// Takes one handshake start from `addr`; `Err(seconds to wait)` if over a limit.
    pub fn check(&self, addr: IpAddr, now: Now) -> Result<(), u64> {
        let r = self.rates;
        let secs = |d: Duration| d.as_secs().max(1);
        {
            let mut map = self
                .per_address
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() >= MAX_ADDRESSES {
                map.retain(|_, b| {
                    let refilled = b.tokens + now.since(b.at).as_secs_f64() * r.per_address;
                    refilled < r.per_address_burst
                });
            }
            let b = map
                .entry(addr)
                .or_insert_with(|| Bucket::full(r.per_address_burst, now));
            b.take(r.per_address, r.per_address_burst, now)
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

    fn limiter() -> HandshakeLimiter {
        HandshakeLimiter::new(Rates {
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
    fn the_overall_limit_holds_across_addresses() {
        let l = limiter();
        let now = Now::from_unix_secs(1_000);
        for i in 0..5u8 {
            assert!(l.check(IpAddr::from([10, 0, 0, i]), now).is_ok());
        }
        assert!(l.check(IpAddr::from([10, 0, 1, 1]), now).is_err());
    }
}
