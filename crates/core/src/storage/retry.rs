//! One retry policy for every store call, around any backend.
//!
//! [`Retrying`] runs each attempt under the stall detector ([`progress::watch`]): an attempt that
//! makes no progress (no byte sent or received, no answer) for [`Timeouts::operation`] is cut.
//! There is no fixed per-request deadline: a large part on a slow link keeps moving and is never
//! cut. Every call has a time budget that scales with what it moves: [`RetryPolicy::max_elapsed`]
//! plus [`Timeouts::transfer_time`] of its size (a put knows its size; a get assumes
//! [`RetryPolicy::get_deadline_size`]; a list gets [`RetryPolicy::list_deadline`]). A running
//! attempt is cut when the budget is spent, and no new attempt starts after it.
//!
//! Between attempts it waits an exponential back-off with full jitter: a random delay between
//! zero and `initial_backoff * 2^(retry - 1)` (at most [`RetryPolicy::max_backoff`]), so that
//! clients throttled together (S3's `503 SlowDown`) do not come back together. Only errors that
//! are not [`StorageError::is_permanent`] are retried (5xx, throttling, resets, time-outs,
//! stalls), at most [`RetryPolicy::max_attempts`] attempts; the last error is returned as is.
//!
//! Durability: the wrapped backend's. Conditional creates stay exact under retries: when a
//! [`PutMode::CreateNew`] attempt stored the object but its answer was lost (a reset, a stall),
//! the next attempt finds the key taken. [`Retrying`] then compares the stored object with the
//! body (the envelope header only, see [`Storage::put_new_or_identical`]): our own content is
//! success, other content a [`StorageError::DifferentContent`] error. A first attempt that finds
//! the key taken still answers [`StorageError::AlreadyExists`]; callers that may repeat a whole
//! command use [`Storage::put_new_or_identical`], which compares in that case too.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::progress::{self, Cut};
use super::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Storage, StorageError, Timeouts, create};
use crate::backoff::Backoff;

/// How hard [`Retrying`] tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Bound of the first retry's random delay; doubles after each attempt.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// Time budget of a call that moves no data (head, delete); calls that move data get the
    /// transfer time of their size on top.
    pub max_elapsed: Duration,
    /// Size a `get` budgets for, its size being unknown in advance ([`Timeouts::transfer_time`]).
    pub get_deadline_size: u64,
    /// Time budget of a `list` (a listing may span many pages).
    pub list_deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(120),
            get_deadline_size: 64 * 1024 * 1024,
            list_deadline: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry): full jitter, a random
    /// delay between zero and the exponential bound, so that many clients do not retry in step.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.schedule().full_jitter(retry)
    }

    /// The exponential bound of retry number `retry`'s delay.
    pub fn backoff_bound(&self, retry: u32) -> Duration {
        self.schedule().ceiling(retry)
    }

    fn schedule(&self) -> Backoff {
        Backoff::new(self.initial_backoff, self.max_backoff)
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

    /// Runs `attempt` until it succeeds, fails permanently, or the policy's bounds are reached;
    /// `budget` bounds the whole call.
    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        budget: Duration,
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
            let left = budget.saturating_sub(started.elapsed());
            let error = match progress::watch(self.timeouts.operation, Some(left), attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(Cut::Stalled(after)) => StorageError::stalled(&self.inner.describe(), operation, key, after),
                Err(Cut::Deadline(_)) => StorageError::timeout(&self.inner.describe(), operation, key, budget),
            };
            if error.is_permanent() || attempts >= self.policy.max_attempts.max(1) {
                return Err(error);
            }
            let delay = self.policy.backoff(attempts);
            if started.elapsed() + delay >= budget {
                return Err(error);
            }
            tracing::warn!(operation, %key, attempt = attempts, ?delay, %error, "storage call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Budget of a call moving `size` bytes.
    fn budget(&self, size: u64) -> Duration {
        self.policy.max_elapsed + self.timeouts.transfer_time(size)
    }
}

#[async_trait]
impl<S: Storage> Storage for Retrying<S> {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let attempts = AtomicU32::new(0);
        let result = self
            .run("put", key.as_str(), self.budget(body.len() as u64), || {
                attempts.fetch_add(1, Ordering::Relaxed);
                self.inner.put(key, body.clone(), mode)
            })
            .await;
        match result {
            // An earlier attempt failed without an answer: it may have stored the object.
            Err(StorageError::AlreadyExists { .. })
                if mode == PutMode::CreateNew && attempts.load(Ordering::Relaxed) > 1 =>
            {
                let comparison = create::compare_stored(self, key, &body).await?;
                create::settle(&self.describe(), key, comparison)
            }
            result => result,
        }
    }

    /// Each attempt is the backend's whole deferred create, which itself accepts its own object
    /// found in place after a lost answer.
    async fn put_deferred(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StorageError> {
        self.run("put", key.as_str(), self.budget(body.len() as u64), || self.inner.put_deferred(key, body.clone()))
            .await
    }

    /// Forwarded once, neither retried nor cut by the stall detector: a sync that failed may have
    /// consumed the only report of the failure, so a second one could succeed with the objects
    /// still not durable. The backend bounds it by its own deadline.
    async fn sync_deferred(&self) -> Result<(), StorageError> {
        self.inner.sync_deferred().await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let budget = self.budget(self.policy.get_deadline_size);
        self.run("get", key.as_str(), budget, || self.inner.get(key)).await
    }

    async fn get_start(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        self.run("get", key.as_str(), self.budget(len), || self.inner.get_start(key, len)).await
    }

    async fn get_into(&self, key: &ObjectKey, buffer: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let deadline = self.budget(self.policy.get_deadline_size);
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
        self.run("head", key.as_str(), self.budget(0), || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.run("list", prefix, self.policy.list_deadline, || self.inner.list(prefix)).await
    }

    async fn retained_until(&self, key: &ObjectKey) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        self.run("retention", key.as_str(), self.budget(0), || self.inner.retained_until(key)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.run("delete", key.as_str(), self.budget(0), || self.inner.delete(key)).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
