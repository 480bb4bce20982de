//! Bounded retries with per-attempt deadlines, around any backend.
//!
//! [`Retrying`] gives every attempt a deadline from [`Timeouts`] (a put of `n` bytes gets
//! [`Timeouts::for_transfer`]`(n)`), waits an exponentially growing, jittered delay between
//! attempts, and stops after [`RetryPolicy::max_attempts`] attempts or when the next attempt
//! would start after [`RetryPolicy::max_elapsed`]. Only errors that are not
//! [`StorageError::is_permanent`] are retried; the last error is returned as is.
//!
//! Durability: the wrapped backend's. Retrying adds one subtlety, on conditional creates: when a
//! [`PutMode::CreateNew`] attempt stored the object but its answer was lost (a timeout, a reset
//! connection), the next attempt finds the object and the caller gets
//! [`StorageError::AlreadyExists`] although nobody else wrote it. A caller must then read the
//! object and compare it with what it meant to store: same content is success.
//! [`Storage::put_new_or_identical`] does exactly that for byte-identical bodies; wal-push
//! compares decoded content.
//!
//! Deadlines of `get` and `list`: their size is not known in advance, so their attempt
//! deadline is a backstop ([`RetryPolicy::get_deadline_size`], [`RetryPolicy::list_deadline`]);
//! backends detect stalled transfers themselves (the S3 SDK's stalled-stream protection, the
//! local backend's size-aware read deadline).

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;

use super::{ObjectKey, ObjectMeta, PutMode, Storage, StorageError, Timeouts};

/// How hard [`Retrying`] tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles after each attempt.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// No new attempt starts after this much time since the call began.
    pub max_elapsed: Duration,
    /// A `get` attempt may take as long as transferring this many bytes
    /// ([`Timeouts::for_transfer`]).
    pub get_deadline_size: u64,
    /// Deadline of one `list` attempt (a listing may span many pages).
    pub list_deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(120),
            get_deadline_size: 1024 * 1024 * 1024,
            list_deadline: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry): half of the exponential
    /// bound plus a random part of the other half, so that many clients do not retry in step.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let bound = self.initial_backoff.saturating_mul(1 << exponent).min(self.max_backoff);
        let half = bound / 2;
        half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// A backend whose calls are retried; see the module documentation.
#[derive(Debug)]
pub struct Retrying<S> {
    inner: S,
    timeouts: Timeouts,
    policy: RetryPolicy,
}

impl<S: Storage> Retrying<S> {
    pub fn new(inner: S, timeouts: Timeouts, policy: RetryPolicy) -> Self {
        Self { inner, timeouts, policy }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the policy's bounds are reached.
    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        deadline: Duration,
        attempt: F,
    ) -> Result<T, StorageError>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, StorageError>> + Send,
    {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match tokio::time::timeout(deadline, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(_elapsed) => StorageError::timeout(&self.inner.describe(), operation, key, deadline),
            };
            if error.is_permanent() || attempts >= self.policy.max_attempts.max(1) {
                return Err(error);
            }
            let delay = self.policy.backoff(attempts);
            if started.elapsed() + delay > self.policy.max_elapsed {
                return Err(error);
            }
            tracing::warn!(operation, %key, attempt = attempts, ?delay, %error, "storage call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait]
impl<S: Storage> Storage for Retrying<S> {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let deadline = self.timeouts.for_transfer(body.len() as u64);
        self.run("put", key.as_str(), deadline, || self.inner.put(key, body.clone(), mode)).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let deadline = self.timeouts.for_transfer(self.policy.get_deadline_size);
        self.run("get", key.as_str(), deadline, || self.inner.get(key)).await
    }

    async fn get_into(&self, key: &ObjectKey, buffer: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let deadline = self.timeouts.for_transfer(self.policy.get_deadline_size);
        // The first attempt reads into the caller's buffer; a retry after a failed attempt
        // (whose buffer is gone) starts with a new one.
        let spare = std::sync::Mutex::new(Some(buffer));
        self.run("get", key.as_str(), deadline, || {
            let buffer = spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take().unwrap_or_default();
            self.inner.get_into(key, buffer)
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        self.run("head", key.as_str(), self.timeouts.operation, || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.run("list", prefix, self.policy.list_deadline, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.run("delete", key.as_str(), self.timeouts.operation, || self.inner.delete(key)).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
