//! The server's one clock. It is read once per request (and once per upkeep tick), and the
//! moment is passed down to everything that needs it, so that a test can move time.
//!
//! One clock, in wall-clock milliseconds: sessions are stored with Unix times for every
//! instance of a fleet to read, so expiry is measured on the same clock everywhere, and the
//! rate limiter needs sub-second steps.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

/// A moment: milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now(i64);

impl Now {
    /// The moment `ms` milliseconds after the Unix epoch.
    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    /// The moment `secs` seconds after the Unix epoch.
    pub const fn from_unix_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (what the databases store).
    pub const fn unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This moment plus `d`.
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// Where the time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current moment.
    fn now(&self) -> Now;
}

/// The system's clock, never going backwards: a wall clock stepped back (NTP) would
/// otherwise revive expired sessions or refill rate limits early.
#[derive(Debug, Default)]
pub struct SystemClock {
    last: AtomicI64,
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        #[allow(
            clippy::disallowed_methods,
            reason = "the one place the server reads the clock"
        )]
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let prev = self.last.fetch_max(wall, Ordering::Relaxed);
        Now(wall.max(prev))
    }
}

/// A clock that moves only when told: for tests.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Now) -> Self {
        Self {
            ms: AtomicI64::new(start.0),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.ms.fetch_add(
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        Now(self.ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_down_and_durations_never_go_negative() {
        let t = Now::from_unix_ms(1_999);
        assert_eq!(t.unix_secs(), 1);
        assert_eq!(Now::from_unix_ms(-1).unix_secs(), -1);
        assert_eq!(t.plus(Duration::from_millis(1)).unix_secs(), 2);
        assert_eq!(t.since(t.plus(Duration::from_secs(5))), Duration::ZERO);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Now::from_unix_secs(100));
        assert_eq!(c.now(), Now::from_unix_secs(100));
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now().unix_secs(), 105);
    }

    #[test]
    fn the_system_clock_never_goes_backwards() {
        let c = SystemClock::default();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(a.unix_secs() > 1_700_000_000);
    }
}

/// A stopwatch for metrics: how long something took, on the monotonic clock. Never a
/// decision's input (those take [`Now`]), so a test moving time does not need it.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Started now.
    #[allow(
        clippy::disallowed_methods,
        reason = "measures durations for metrics only; no rule reads it"
    )]
    pub fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// The time since it started.
    pub fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}
