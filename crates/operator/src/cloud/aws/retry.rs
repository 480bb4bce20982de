//! Bounded retry of throttled calls with exponential backoff and jitter.
//!
//! Only throttling is retried here: the request was refused before anything happened, so any
//! call may be repeated. Every other failure goes back to the reconciler, which requeues and
//! reads the cloud's state again before it decides anything (find first, then act).

use std::future::Future;
use std::time::Duration;

use crate::cloud::CloudError;

/// How often and how patiently a throttled call is repeated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Calls in total, the first one included; the last throttling error is returned.
    pub max_calls: u32,
    /// Delay before the first retry; it doubles for each further retry.
    pub first_delay: Duration,
    /// The delay never exceeds this.
    pub max_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { max_calls: 5, first_delay: Duration::from_millis(250), max_delay: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The longest wait before retry number `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.schedule().ceiling(retry)
    }

    /// The wait before retry number `retry`: between half the ceiling and the ceiling, so that
    /// many reconcilers throttled together do not come back together.
    pub fn delay(&self, retry: u32) -> Duration {
        self.schedule().equal_jitter(retry)
    }

    fn schedule(&self) -> pgec2_core::backoff::Backoff {
        pgec2_core::backoff::Backoff::new(self.first_delay, self.max_delay)
    }

    /// Runs `call` until it is not throttled, at most [`Backoff::max_calls`] times.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        self.run_with(|error| matches!(error, CloudError::Throttled { .. }), call).await
    }

    /// Runs `call` until `is_throttled` says no to its error, at most [`Backoff::max_calls`] times.
    pub async fn run_with<T, E, P, F, Fut>(&self, is_throttled: P, mut call: F) -> Result<T, E>
    where
        E: std::fmt::Display,
        P: Fn(&E) -> bool,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut calls = 0;
        loop {
            calls += 1;
            match call().await {
                Err(error) if calls < self.max_calls && is_throttled(&error) => {
                    let delay = self.delay(calls);
                    tracing::debug!(%error, ?delay, calls, "throttled, retrying");
                    tokio::time::sleep(delay).await;
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn fast() -> Backoff {
        Backoff { max_calls: 4, first_delay: Duration::from_millis(2), max_delay: Duration::from_millis(5) }
    }

    fn throttled() -> CloudError {
        CloudError::Throttled { service: "ec2", message: "RequestLimitExceeded".into() }
    }

    #[test]
    fn the_delay_doubles_up_to_the_maximum_and_keeps_at_least_half() {
        let backoff = Backoff::default();
        assert_eq!(backoff.ceiling(1), Duration::from_millis(250));
        assert_eq!(backoff.ceiling(2), Duration::from_millis(500));
        assert_eq!(backoff.ceiling(6), Duration::from_secs(5));
        assert_eq!(backoff.ceiling(40), Duration::from_secs(5));
        for retry in 1..8 {
            let delay = backoff.delay(retry);
            assert!(delay >= backoff.ceiling(retry) / 2 && delay <= backoff.ceiling(retry), "{delay:?}");
        }
    }

    #[tokio::test]
    async fn a_throttled_call_is_repeated_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let result = fast()
            .run(|| async { if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(throttled()) } else { Ok("done") } })
            .await;
        assert_eq!(result.expect("third call succeeds"), "done");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn throttling_that_never_ends_stops_after_max_calls() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = fast()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(throttled())
            })
            .await;
        assert!(matches!(result, Err(CloudError::Throttled { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn other_failures_are_returned_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = fast()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(CloudError::Capacity("InsufficientInstanceCapacity".into()))
            })
            .await;
        assert!(matches!(result, Err(CloudError::Capacity(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
