//! Sliding replay window over the sequence numbers of one epoch.
//!
//! The window remembers the highest sequence number accepted and which of
//! the [`REPLAY_WINDOW`] numbers below it were accepted. Checking is cheap
//! and happens before decryption; marking happens only after the message
//! authenticated, so a forged message can never move the window.

use crate::limits::REPLAY_WINDOW;

const WORD_BITS: u64 = 64;
const WORDS: usize = (REPLAY_WINDOW / WORD_BITS) as usize;

/// Why a sequence number was refused by the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRejection {
    /// The number was already accepted.
    Seen,
    /// The number is older than the window can remember.
    TooOld,
}

/// The replay window of one (sender, session, epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest accepted sequence number, or `None` before the first one.
    highest: Option<u64>,
    /// Bit `n % REPLAY_WINDOW` is set when `n` was accepted, for every `n`
    /// within `REPLAY_WINDOW` of `highest`.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// Creates an empty window.
    pub fn new() -> Self {
        Self {
            highest: None,
            bits: [0; WORDS],
        }
    }

    /// Returns the highest accepted sequence number.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    fn bit(sequence: u64) -> (usize, u64) {
        let index = sequence % REPLAY_WINDOW;
        ((index / WORD_BITS) as usize, 1u64 << (index % WORD_BITS))
    }

    /// Checks whether `sequence` may still be accepted, without changing the
    /// window.
    ///
    /// # Errors
    /// Returns [`WindowRejection::Seen`] or [`WindowRejection::TooOld`].
    pub fn check(&self, sequence: u64) -> Result<(), WindowRejection> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if sequence > highest {
            return Ok(());
        }
        if highest - sequence >= REPLAY_WINDOW {
            return Err(WindowRejection::TooOld);
        }
        let (word, mask) = Self::bit(sequence);
        if self.bits[word] & mask != 0 {
            return Err(WindowRejection::Seen);
        }
        Ok(())
    }

    /// Marks `sequence` as accepted, after [`check`](Self::check) passed and
    /// the message authenticated.
    ///
    /// # Errors
    /// Returns the same rejections as `check`, so a caller that skipped the
    /// check still cannot accept a number twice.
    pub fn commit(&mut self, sequence: u64) -> Result<(), WindowRejection> {
        self.check(sequence)?;
        match self.highest {
            Some(highest) if sequence <= highest => {}
            Some(highest) => {
                // Clear the bits of the numbers the window slides past.
                let advance = sequence - highest;
                if advance >= REPLAY_WINDOW {
                    self.bits = [0; WORDS];
                } else {
                    for skipped in highest + 1..=sequence {
                        let (word, mask) = Self::bit(skipped);
                        self.bits[word] &= !mask;
                    }
                }
                self.highest = Some(sequence);
            }
            None => {
                self.highest = Some(sequence);
            }
        }
        let (word, mask) = Self::bit(sequence);
        self.bits[word] |= mask;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// Reference model: a set of accepted numbers and the highest one.
    #[derive(Default)]
    struct Model {
        accepted: BTreeSet<u64>,
    }

    impl Model {
        fn check(&self, sequence: u64) -> Result<(), WindowRejection> {
            let Some(&highest) = self.accepted.iter().next_back() else {
                return Ok(());
            };
            if sequence <= highest && highest - sequence >= REPLAY_WINDOW {
                return Err(WindowRejection::TooOld);
            }
            if self.accepted.contains(&sequence) {
                return Err(WindowRejection::Seen);
            }
            Ok(())
        }
    }

    #[test]
    fn window_accepts_in_order_once() {
        let mut window = ReplayWindow::new();
        for sequence in 0..3 * REPLAY_WINDOW {
            assert_eq!(window.commit(sequence), Ok(()));
            assert_eq!(window.check(sequence), Err(WindowRejection::Seen));
        }
    }

    #[test]
    fn window_accepts_reordered_within_size() {
        let mut window = ReplayWindow::new();
        window.commit(REPLAY_WINDOW + 10).unwrap();
        assert_eq!(window.check(11), Ok(()));
        assert_eq!(window.check(10), Err(WindowRejection::TooOld));
        window.commit(11).unwrap();
        assert_eq!(window.check(11), Err(WindowRejection::Seen));
    }

    #[test]
    fn window_check_does_not_mark() {
        let window = ReplayWindow::new();
        assert_eq!(window.check(5), Ok(()));
        assert_eq!(window.check(5), Ok(()));
        assert_eq!(window.highest(), None);
    }

    #[test]
    fn window_handles_top_of_range() {
        let mut window = ReplayWindow::new();
        window.commit(u64::MAX - 1).unwrap();
        assert_eq!(window.check(u64::MAX - 1), Err(WindowRejection::Seen));
        assert_eq!(window.check(0), Err(WindowRejection::TooOld));
    }

    proptest! {
        #[test]
        fn window_matches_set_model(
            start in 0u64..u64::MAX / 2,
            steps in proptest::collection::vec((0u64..3 * REPLAY_WINDOW, any::<bool>()), 1..400),
        ) {
            let mut window = ReplayWindow::new();
            let mut model = Model::default();
            for (offset, commit) in steps {
                let sequence = start + offset;
                let expected = model.check(sequence);
                prop_assert_eq!(window.check(sequence), expected, "check of {}", sequence);
                if commit {
                    prop_assert_eq!(window.commit(sequence), expected);
                    if expected.is_ok() {
                        model.accepted.insert(sequence);
                    }
                }
            }
        }
    }
}
