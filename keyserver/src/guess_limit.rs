//! Online guess limiting.
//!
//! OPAQUE makes offline guessing impossible without the server's OPRF key, so the only way
//! to test passwords is to ask the server. A client learns whether a password is right from
//! the server's first login reply alone, so a guess is counted when a login *starts*, and
//! the count is reset only by a login that finishes. After `max_failed` consecutive guesses
//! the account is locked for `base`, doubling with each further guess, at most `max`. The
//! decision and the increment happen in one storage transaction, so concurrent logins (on
//! one instance or on many) cannot slip past the limit.

use std::time::Duration;

use crate::{config::Config, storage::Guesses};

/// The lockout rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures before the first lockout.
    pub max_failed: u64,
    /// First lockout.
    pub base: Duration,
    /// Longest lockout.
    pub max: Duration,
}

/// Whether a login may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    /// The guess was counted; go on.
    Allowed,
    /// Refused; try again after this many seconds.
    Locked {
        /// Seconds until the lockout ends.
        retry_after_secs: u64,
    },
}

impl LockoutPolicy {
    /// The policy configured in `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_failed: config.max_failed_logins,
            base: Duration::from_secs(config.lockout_base_secs),
            max: Duration::from_secs(config.lockout_max_secs),
        }
    }

    /// How long the account stays locked after `failures` consecutive failures.
    pub fn lockout(&self, failures: u64) -> Option<Duration> {
        let over = failures.checked_sub(self.max_failed)?;
        let factor = 1u32
            .checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
            .unwrap_or(u32::MAX);
        Some(self.base.saturating_mul(factor).min(self.max))
    }

    /// Decides a login start at `now` (Unix seconds) against the counter `g` and, if the
    /// login may go on, counts its guess in `g`. A refused login leaves `g` as it was: a
    /// locked account's lockout does not grow while it is refused.
    pub fn start(&self, g: &mut Guesses, now: i64) -> LoginGate {
        let gate = self.decide(g.failed, g.last_attempt, now);
        if gate == LoginGate::Allowed {
            g.failed = g.failed.saturating_add(1);
            g.last_attempt = Some(now);
            g.lockout_logged = false;
        }
        gate
    }

    /// For a refused login: whether it is the first refusal of this lockout, the one that
    /// goes in the log (and marks `g` so that the next ones do not). Refusals cost the
    /// refused nothing, so without this anyone could grow an account's log without bound.
    pub fn first_refusal(g: &mut Guesses) -> bool {
        !std::mem::replace(&mut g.lockout_logged, true)
    }

    /// Wrong guesses left before the lockout starts (0: locked, or the next wrong guess
    /// locks it again).
    pub fn guesses_left(&self, g: &Guesses) -> u64 {
        self.max_failed.saturating_sub(g.failed)
    }

    /// Records a login that finished with the right password: the count starts again.
    pub fn succeeded(g: &mut Guesses) {
        g.failed = 0;
    }

    /// Decides a login start for an account with `failures` consecutive failures, the last
    /// attempt at `last_attempt` (Unix seconds), at time `now`.
    pub fn decide(&self, failures: u64, last_attempt: Option<i64>, now: i64) -> LoginGate {
        let Some(lock) = self.lockout(failures) else {
            return LoginGate::Allowed;
        };
        let until = last_attempt
            .unwrap_or(i64::MIN)
            .saturating_add(i64::try_from(lock.as_secs()).unwrap_or(i64::MAX));
        if now < until {
            LoginGate::Locked {
                retry_after_secs: u64::try_from(until - now).unwrap_or(u64::MAX),
            }
        } else {
            LoginGate::Allowed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failed: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(100),
        }
    }

    #[test]
    fn below_the_limit_logins_are_allowed() {
        assert_eq!(policy().decide(2, Some(1000), 1000), LoginGate::Allowed);
    }

    #[test]
    fn at_the_limit_the_account_is_locked_until_the_delay_has_passed() {
        assert_eq!(
            policy().decide(3, Some(1000), 1001),
            LoginGate::Locked {
                retry_after_secs: 9
            }
        );
        assert_eq!(policy().decide(3, Some(1000), 1010), LoginGate::Allowed);
    }

    #[test]
    fn a_start_counts_its_guess_unless_refused_and_a_success_resets_the_count() {
        let p = policy();
        let mut g = Guesses::default();
        for i in 1..=3 {
            assert_eq!(p.start(&mut g, 1000), LoginGate::Allowed);
            assert_eq!(g.failed, i);
        }
        assert_eq!(
            p.start(&mut g, 1001),
            LoginGate::Locked {
                retry_after_secs: 9
            }
        );
        assert_eq!(
            g,
            Guesses {
                failed: 3,
                last_attempt: Some(1000),
                lockout_logged: false,
            }
        );
        // The first refusal of a lockout is logged, the next ones are not.
        assert!(LockoutPolicy::first_refusal(&mut g));
        assert!(!LockoutPolicy::first_refusal(&mut g));
        assert_eq!(p.start(&mut g, 1010), LoginGate::Allowed);
        assert_eq!(g.failed, 4);
        // A counted guess starts a new lockout, whose first refusal is logged again.
        assert!(!g.lockout_logged);
        LockoutPolicy::succeeded(&mut g);
        assert_eq!(g.failed, 0);
    }

    #[test]
    fn each_further_failure_doubles_the_delay_up_to_the_cap() {
        assert_eq!(policy().lockout(4), Some(Duration::from_secs(20)));
        assert_eq!(policy().lockout(6), Some(Duration::from_secs(80)));
        assert_eq!(policy().lockout(7), Some(Duration::from_secs(100)));
        assert_eq!(policy().lockout(u64::MAX), Some(Duration::from_secs(100)));
    }
}
