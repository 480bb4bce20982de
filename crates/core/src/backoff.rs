//! Exponential back-off, the one formula behind every retry loop in pgec2: storage calls
//! ([`crate::storage::retry`]), throttled cloud calls and the controllers' requeues.
//!
//! Retry number `n` (1 for the first retry) waits at most `first × 2^(n-1)`, never more than
//! `max`. Loops that many clients run at once spread their waits with jitter, so that clients
//! throttled together do not come back together. A loop that keeps its own count of attempts
//! (a reconnecting stream, a poll) takes a [`Retries`] from [`Backoff::retries`].

use std::time::Duration;

use rand::Rng;

/// The largest doubling counted: beyond it every delay is `max` anyway.
const MAX_DOUBLINGS: u32 = 20;

/// An exponential back-off schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The bound of the first retry's delay.
    pub first: Duration,
    /// No delay exceeds this.
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The bound of retry number `retry`'s delay (1 for the first retry; 0 counts as 1).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(MAX_DOUBLINGS);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// Full jitter: a random delay between zero and the ceiling.
    pub fn full_jitter(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// Equal jitter: a random delay between half the ceiling and the ceiling.
    pub fn equal_jitter(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        ceiling / 2 + (ceiling / 2).mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// A count of retries on this schedule, starting at none.
    pub const fn retries(self) -> Retries {
        Retries { schedule: self, done: 0 }
    }
}

/// The retries of one loop on a [`Backoff`] schedule: each [`Retries::next_delay`] counts one
/// and returns its delay; [`Retries::reset`] starts over once an attempt made progress.
#[derive(Clone, Copy, Debug)]
pub struct Retries {
    schedule: Backoff,
    done: u32,
}

impl Retries {
    /// Counts one more retry and returns how long to wait before it: the schedule's ceiling,
    /// without jitter (the loops that count their own retries run once per host).
    pub fn next_delay(&mut self) -> Duration {
        self.done = self.done.saturating_add(1);
        self.schedule.ceiling(self.done)
    }

    /// Starts over: the next retry waits the first delay again.
    pub fn reset(&mut self) {
        self.done = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_from_first_up_to_max() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
        let ceilings: Vec<u64> = [0, 1, 2, 3, 8, 9, 40, u32::MAX].map(|n| backoff.ceiling(n).as_secs()).to_vec();
        assert_eq!(ceilings, [2, 2, 4, 8, 256, 300, 300, 300]);
    }

    #[test]
    fn retries_double_up_to_max_and_start_over_after_a_reset() {
        let mut retries = Backoff::new(Duration::from_millis(10), Duration::from_millis(50)).retries();
        let delays: Vec<u128> = (0..5).map(|_| retries.next_delay().as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
        retries.reset();
        assert_eq!(retries.next_delay(), Duration::from_millis(10));
    }

    #[test]
    fn jittered_delays_stay_within_their_bounds() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..200 {
            assert!(backoff.full_jitter(3) <= Duration::from_millis(400));
            let equal = backoff.equal_jitter(3);
            assert!(equal >= Duration::from_millis(200) && equal <= Duration::from_millis(400), "{equal:?}");
        }
    }
}
