//! The replay window: accepts each sequence number at most once, and tolerates reordering
//! of up to [`REPLAY_WINDOW`] numbers (concurrent requests on a QUIC connection, or on two
//! connections, arrive in any order).
//!
//! The same sliding-bitmap design as IPsec (RFC 4303, section 3.4.3) and WireGuard.

use crate::limits::REPLAY_WINDOW;

/// The largest sequence number: numbers are stored as signed 64-bit integers, so the
/// protocol stops there rather than let a larger one fail later as "corrupt stored data".
pub const MAX_SEQ: u64 = i64::MAX as u64;

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Sequence number 0 is never valid.
    #[error("sequence number zero")]
    Zero,
    /// Beyond [`MAX_SEQ`].
    #[error("sequence number out of range")]
    OutOfRange,
    /// The number was already accepted.
    #[error("sequence number already used")]
    Duplicate,
    /// The number is older than the window, so whether it was used is no longer known.
    #[error("sequence number older than the replay window")]
    TooOld,
}

/// Remembers the highest accepted sequence number and which of the [`REPLAY_WINDOW`] below
/// it were accepted.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`) is set when `highest - i` was accepted.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// An empty window: every positive sequence number is acceptable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `seq` would be accepted, without recording it.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > MAX_SEQ {
            return Err(ReplayError::OutOfRange);
        }
        if seq > self.highest {
            return Ok(());
        }
        let age = self.highest - seq;
        if age >= REPLAY_WINDOW {
            return Err(ReplayError::TooOld);
        }
        if self.bit(age) {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Accepts `seq` if it is new and recent, and records it.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if seq > self.highest {
            self.shift(seq - self.highest);
            self.highest = seq;
            self.set(0);
        } else {
            self.set(self.highest - seq);
        }
        Ok(())
    }

    /// The highest sequence number accepted so far.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    fn bit(&self, age: u64) -> bool {
        let (w, b) = (age / 64, age % 64);
        usize::try_from(w)
            .ok()
            .and_then(|w| self.bits.get(w))
            .is_some_and(|word| word >> b & 1 == 1)
    }

    fn set(&mut self, age: u64) {
        let (w, b) = (age / 64, age % 64);
        if let Some(word) = usize::try_from(w).ok().and_then(|w| self.bits.get_mut(w)) {
            *word |= 1 << b;
        }
    }

    /// Ages every recorded number by `by`: bit i moves to bit i + by.
    fn shift(&mut self, by: u64) {
        if by >= REPLAY_WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        // by < REPLAY_WINDOW here, so the word count is small.
        let (words, bits) = (usize::try_from(by / 64).unwrap_or(WORDS), by % 64);
        for i in (0..WORDS).rev() {
            let lo = i
                .checked_sub(words)
                .and_then(|j| self.bits.get(j))
                .copied()
                .unwrap_or(0);
            let carry = if bits == 0 {
                0
            } else {
                i.checked_sub(words + 1)
                    .and_then(|j| self.bits.get(j))
                    .map_or(0, |w| w >> (64 - bits))
            };
            if let Some(word) = self.bits.get_mut(i) {
                *word = if bits == 0 { lo } else { (lo << bits) | carry };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn accepts_each_number_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Err(ReplayError::Zero));
        assert_eq!(w.accept(1), Ok(()));
        assert_eq!(w.accept(1), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(3), Ok(()));
        assert_eq!(w.accept(2), Ok(()));
        assert_eq!(w.accept(2), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(3), Err(ReplayError::Duplicate));
    }

    #[test]
    fn refuses_numbers_older_than_the_window() {
        let mut w = ReplayWindow::new();
        w.accept(REPLAY_WINDOW + 10).unwrap();
        assert_eq!(w.accept(10), Err(ReplayError::TooOld));
        assert_eq!(w.accept(11), Ok(()));
        assert_eq!(w.accept(11), Err(ReplayError::Duplicate));
    }

    #[test]
    fn a_jump_larger_than_the_window_forgets_everything_before_it() {
        let mut w = ReplayWindow::new();
        w.accept(5).unwrap();
        w.accept(5 + 10 * REPLAY_WINDOW).unwrap();
        assert_eq!(w.accept(5), Err(ReplayError::TooOld));
        assert_eq!(w.accept(5 + 10 * REPLAY_WINDOW - 1), Ok(()));
    }

    proptest! {
        /// Against a model that remembers every accepted number: the window never accepts a
        /// number twice, and refuses a fresh number only when it is out of the window.
        #[test]
        fn agrees_with_a_model_that_remembers_everything(seqs in proptest::collection::vec(1u64..3000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut highest = 0u64;
            for s in seqs {
                let got = w.accept(s);
                if seen.contains(&s) {
                    prop_assert!(got.is_err());
                } else if s + REPLAY_WINDOW <= highest {
                    prop_assert_eq!(got, Err(ReplayError::TooOld));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    seen.insert(s);
                    highest = highest.max(s);
                }
            }
        }
    }
}
