//! Reconnect delays: exponential backoff with jitter, and the server's spread hint.
//!
//! Attempt `n` (from 0) waits a uniformly random time in `[base, min(max, base * 2^n)]`: full
//! jitter over the window, with `base` as a floor so a server that drops every session at once
//! is never hammered at 0 ms (the JS SDK draws from the same window). Jitter spreads a crowd of
//! clients that lost the same server over the whole window, so a restarted node is not hit by
//! all of them at once. The attempt count only starts over after a connection stayed up for a
//! while (the task decides), so sessions that the server ends right away back off further each
//! time instead of looping at the floor.
//!
//! A disconnect may carry a `delay_ms` hint (a draining server's spread window): the wait is
//! then at least `base` plus a uniform share of the hint, still capped at `max`. An upgrade
//! refused with `503`/`429` and `Retry-After` (a node at its handshake bound) waits at least
//! that long, plus the window's jitter, also capped at `max`.
//!
//! The random source is a small xorshift generator seeded from the standard library's
//! per-process random hasher keys: no dependency, and statistical quality is irrelevant here.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Backoff state for one client: the attempt counter and the random generator.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    /// Attempts since the last reset by [`Backoff::reset`] (after a healthy connection).
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
            rng: hasher.finish() | 1,
        }
    }

    /// The upper bound of the window for the current attempt.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt; advances the attempt counter. `hint` is the server's
    /// spread window from the disconnect (`delay_ms`): the wait is then at least the floor plus
    /// a random share of it.
    pub(crate) fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let mut delay = self.base + self.uniform(ceiling.saturating_sub(self.base));
        if let Some(hint) = hint {
            delay = delay.max(self.base.saturating_add(self.uniform(hint)));
        }
        delay.min(self.max)
    }

    /// The delay before the next attempt after the server refused the upgrade with
    /// `Retry-After` (`floor`, capped at the maximum): the floor plus this window's jitter, so a
    /// crowd refused together does not come back in the same instant; never more than the
    /// maximum. Advances the attempt counter like [`Backoff::next_delay`].
    pub(crate) fn next_delay_at_least(&mut self, floor: Duration) -> Duration {
        let floor = floor.min(self.max);
        let jittered = self.next_delay(None);
        floor
            .saturating_add(jittered.saturating_sub(self.base))
            .min(self.max)
    }

    /// Attempts made since the last reset.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Called once a connection has been healthy for a while: the next loss starts from the
    /// base window again.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// A uniformly random duration in `[0, span]`.
    fn uniform(&mut self, span: Duration) -> Duration {
        let nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
        match nanos.checked_add(1) {
            Some(range) => Duration::from_nanos(self.next_u64() % range),
            None => span,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_doubles_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay(None);
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert_eq!(b.attempt(), 0);
    }

    #[test]
    fn delays_are_full_jitter_above_the_floor() {
        let base = Duration::from_millis(100);
        let mut b = Backoff::new(base, Duration::from_millis(400));
        assert_eq!(b.next_delay(None), base, "the first window is [base, base]");
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..200 {
            let ceiling = b.ceiling();
            let d = b.next_delay(None);
            assert!(
                d >= base && d <= ceiling,
                "{d:?} outside [{base:?}, {ceiling:?}]"
            );
            seen_low |= d < Duration::from_millis(150);
            seen_high |= d > Duration::from_millis(350);
            if b.attempt() > 5 {
                b.reset();
            }
        }
        assert!(seen_low && seen_high, "jitter must span the window");
    }

    #[test]
    fn a_delay_hint_adds_a_random_share_of_itself_to_the_floor_capped_at_max() {
        let base = Duration::from_millis(100);
        let mut b = Backoff::new(base, Duration::from_secs(30));
        let hint = Duration::from_secs(5);
        let delays: Vec<_> = (0..200)
            .map(|_| {
                b.reset();
                b.next_delay(Some(hint))
            })
            .collect();
        assert!(delays.iter().all(|d| *d >= base && *d <= base + hint));
        assert!(delays.iter().any(|d| *d < Duration::from_secs(1)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(4)));
        let mut capped = Backoff::new(base, Duration::from_secs(1));
        for _ in 0..50 {
            assert!(
                capped.next_delay(Some(Duration::from_millis(u64::from(u32::MAX))))
                    <= Duration::from_secs(1)
            );
        }
    }

    #[test]
    fn a_retry_after_floor_is_honoured_with_jitter_above_it_capped_at_max() {
        let base = Duration::from_millis(20);
        let mut b = Backoff::new(base, Duration::from_secs(5));
        let floor = Duration::from_secs(1);
        let mut spread = false;
        for _ in 0..100 {
            b.reset();
            b.next_delay(None);
            let ceiling = b.ceiling();
            let d = b.next_delay_at_least(floor);
            assert!(
                d >= floor && d <= floor + ceiling,
                "{d:?} outside [{floor:?}, {:?}]",
                floor + ceiling
            );
            spread |= d > floor;
        }
        assert!(spread, "the refused crowd must be spread above the floor");
        assert_eq!(b.attempt(), 2);
        let mut capped = Backoff::new(base, Duration::from_secs(2));
        assert_eq!(
            capped.next_delay_at_least(Duration::from_secs(3600)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.next_delay(None) <= Duration::from_secs(30));
        }
    }
}
