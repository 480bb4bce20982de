//! A wrapper that makes any backend misbehave on command, to prove that callers stay safe when
//! the store fails, stalls, corrupts data or loses acknowledgements.
//!
//! Durability: exactly the wrapped backend's. Faults are programmed through a [`FaultHandle`]
//! shared with the test, so a test can flip them while the code under test runs:
//!
//! ```
//! # use pgec2_core::storage::{fault::{Fault, FaultInjecting, Operation, Rule}, memory::MemoryStorage};
//! let store = FaultInjecting::new(MemoryStorage::new());
//! let faults = store.handle();
//! faults.add(Rule::new(Fault::Transient).on(Operation::Put).times(2));
//! faults.add(Rule::new(Fault::Permanent).matching(|key| key.ends_with(".history")));
//! ```
//!
//! A call takes the first rule that applies to its operation and key and still has uses left.
//! Without one, [`Chaos`] (when set) draws a fault at random from a generator seeded with a fixed
//! seed: failures, `503 SlowDown`-like throttling, short stalls, hangs longer than the stall
//! limit and answers lost after a successful write, at a given rate:
//!
//! ```
//! # use std::time::Duration;
//! # use pgec2_core::storage::{fault::{Chaos, FaultInjecting}, memory::MemoryStorage};
//! let store = FaultInjecting::new(MemoryStorage::new());
//! store.handle().set_chaos(Chaos::new(42, 0.10).with_hang(Duration::from_millis(500)));
//! ```
//!
//! A [`Hook`] runs the test's own code before chosen calls, to interleave another command with
//! the one under test (a deletion between a backup's upload and its commit), or to stop the
//! caller dead at a chosen call as if its process were killed (a hook that never finishes).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{DEFERRED_WRITES, ObjectKey, ObjectMeta, PutMode, PutOutcome, Storage, StorageError};

/// The operations of [`Storage`], to aim faults and count calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Put,
    Get,
    Head,
    List,
    Delete,
    /// [`Storage::sync_deferred`]: faulted only by a [`Rule`], never by [`Chaos`] (a real sync
    /// has no transient failures to survive, and is never retried).
    Sync,
}

impl Operation {
    const ALL: [Operation; 6] =
        [Operation::Put, Operation::Get, Operation::Head, Operation::List, Operation::Delete, Operation::Sync];

    fn name(self) -> &'static str {
        match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::List => "list",
            Operation::Delete => "delete",
            Operation::Sync => "sync",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fails with [`StorageError::Transient`] without reaching the backend.
    Transient,
    /// Fails with [`StorageError::Permanent`] without reaching the backend.
    Permanent,
    /// Sleeps this long before calling the backend (longer than a timeout = a hung store).
    Stall(Duration),
    /// `put` only: stores the object, then fails with [`StorageError::Transient`] as if the
    /// acknowledgement was lost on the way back.
    AckLost,
    /// `get` only: returns the stored bytes with one byte flipped.
    Corrupt,
    /// Fails with [`StorageError::Transient`] as S3 does when it throttles (`503 SlowDown`).
    Throttle,
}

/// Random faults drawn from a seeded generator, for calls no [`Rule`] claims.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chaos {
    /// Seed of the generator: the same seed gives the same sequence of draws.
    pub seed: u64,
    /// Share of calls that get a fault (0.0 to 1.0).
    pub rate: f64,
    /// Delay of a short stall (slowness the stall detector must tolerate).
    pub short_stall: Duration,
    /// Delay of a hang (longer than the stall limit: the stall detector must cut it).
    pub hang: Duration,
}

impl Chaos {
    /// Faults on `rate` of the calls, short stalls of 20 ms, hangs of 2 s.
    pub fn new(seed: u64, rate: f64) -> Self {
        Self { seed, rate, short_stall: Duration::from_millis(20), hang: Duration::from_secs(2) }
    }

    pub fn with_hang(mut self, hang: Duration) -> Self {
        self.hang = hang;
        self
    }

    pub fn with_short_stall(mut self, short_stall: Duration) -> Self {
        self.short_stall = short_stall;
        self
    }

    /// Picks the fault for one call of `operation`, or none.
    fn draw(&self, rng: &mut StdRng, operation: Operation) -> Option<Fault> {
        if operation == Operation::Sync {
            return None;
        }
        if !rng.random_bool(self.rate.clamp(0.0, 1.0)) {
            return None;
        }
        // Lost answers are writes' own fault (and the one creates must survive: a third of a
        // write's faults); the other kinds hit every operation.
        let kinds = if operation == Operation::Put { 6 } else { 4 };
        Some(match rng.random_range(0..kinds) {
            0 => Fault::Transient,
            1 => Fault::Throttle,
            2 => Fault::Stall(self.short_stall),
            3 => Fault::Stall(self.hang),
            _ => Fault::AckLost,
        })
    }
}

type KeyPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Code run before a call reaches the faults and the backend: given the operation and the key
/// (or list prefix), it returns a future the call awaits first, or `None` to go on at once.
pub type Hook = Arc<dyn Fn(Operation, &str) -> Option<futures::future::BoxFuture<'static, ()>> + Send + Sync>;

/// When a [`Fault`] applies: which operation, which keys, how many times.
#[derive(Clone)]
pub struct Rule {
    fault: Fault,
    operation: Option<Operation>,
    predicate: Option<KeyPredicate>,
    /// Remaining uses; `None` for every call until removed.
    remaining: Option<u64>,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("fault", &self.fault)
            .field("operation", &self.operation)
            .field("has_predicate", &self.predicate.is_some())
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl Rule {
    /// A rule that applies `fault` to every call until narrowed.
    pub fn new(fault: Fault) -> Self {
        Self { fault, operation: None, predicate: None, remaining: None }
    }

    /// Only calls of `operation`.
    pub fn on(mut self, operation: Operation) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Only calls whose key (or list prefix) satisfies `predicate`.
    pub fn matching(mut self, predicate: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Only the next `count` matching calls.
    pub fn times(mut self, count: u64) -> Self {
        self.remaining = Some(count);
        self
    }

    fn applies(&self, operation: Operation, key: &str) -> bool {
        let fault_fits = match self.fault {
            Fault::AckLost => operation == Operation::Put,
            Fault::Corrupt => operation == Operation::Get,
            _ => true,
        };
        fault_fits
            && self.remaining != Some(0)
            && self.operation.is_none_or(|wanted| wanted == operation)
            && self.predicate.as_ref().is_none_or(|predicate| predicate(key))
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    hook: Option<Hook>,
    chaos: Option<(Chaos, StdRng)>,
    calls: [u64; 6],
    injected: u64,
    acks_lost: u64,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("rules", &self.rules)
            .field("has_hook", &self.hook.is_some())
            .field("chaos", &self.chaos)
            .field("calls", &self.calls)
            .field("injected", &self.injected)
            .field("acks_lost", &self.acks_lost)
            .finish()
    }
}

/// The shared control of a [`FaultInjecting`] store. Cloning gives another handle to the same faults.
#[derive(Clone, Debug, Default)]
pub struct FaultHandle {
    state: Arc<Mutex<State>>,
}

impl FaultHandle {
    /// Adds a rule after the existing ones.
    pub fn add(&self, rule: Rule) {
        self.state().rules.push(rule);
    }

    /// Fails the next `count` calls of `operation` with `fault`.
    pub fn fail_next(&self, operation: Operation, count: u64, fault: Fault) {
        self.add(Rule::new(fault).on(operation).times(count));
    }

    /// Draws random faults for calls no rule claims (replacing earlier chaos).
    pub fn set_chaos(&self, chaos: Chaos) {
        self.state().chaos = Some((chaos, StdRng::seed_from_u64(chaos.seed)));
    }

    /// Runs `hook` before every call from now on (replacing an earlier hook).
    pub fn set_hook(&self, hook: Hook) {
        self.state().hook = Some(hook);
    }

    /// Removes every rule, the hook and the chaos: the store behaves again.
    pub fn clear(&self) {
        let mut state = self.state();
        state.rules.clear();
        state.hook = None;
        state.chaos = None;
    }

    /// What the hook (if any) wants done before this call; called without holding the lock.
    fn hooked(&self, operation: Operation, key: &str) -> Option<futures::future::BoxFuture<'static, ()>> {
        let hook = self.state().hook.clone()?;
        hook(operation, key)
    }

    /// Answers lost after a successful write so far.
    pub fn acks_lost(&self) -> u64 {
        self.state().acks_lost
    }

    /// Calls of `operation` so far, faulty or not.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.state().calls[operation.index()]
    }

    /// Calls of any operation so far.
    pub fn total_calls(&self) -> u64 {
        Operation::ALL.iter().map(|operation| self.calls(*operation)).sum()
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state().injected
    }

    /// Counts the call and picks the fault for it, using up one of the rule's uses.
    fn take(&self, operation: Operation, key: &str) -> Option<Fault> {
        let mut state = self.state();
        let state = &mut *state;
        state.calls[operation.index()] += 1;
        let fault = match state.rules.iter_mut().find(|rule| rule.applies(operation, key)) {
            Some(rule) => {
                if let Some(remaining) = rule.remaining.as_mut() {
                    *remaining -= 1;
                }
                rule.fault
            }
            None => {
                let (chaos, rng) = state.chaos.as_mut()?;
                chaos.draw(rng, operation)?
            }
        };
        state.injected += 1;
        if fault == Fault::AckLost {
            state.acks_lost += 1;
        }
        Some(fault)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Updates are single assignments: a poisoned lock holds consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A backend wrapped with programmable faults.
#[derive(Debug)]
pub struct FaultInjecting<S> {
    inner: S,
    faults: FaultHandle,
}

impl<S: Storage> FaultInjecting<S> {
    /// Wraps `inner`, initially without faults.
    pub fn new(inner: S) -> Self {
        Self { inner, faults: FaultHandle::default() }
    }

    /// The shared control of this store's faults.
    pub fn handle(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// The wrapped backend, to inspect what was really stored.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Applies the fault chosen for this call before it reaches the backend; returns the fault
    /// when it acts after the backend (ack lost, corruption).
    async fn before(&self, operation: Operation, key: &str) -> Result<Option<Fault>, StorageError> {
        if let Some(hooked) = self.faults.hooked(operation, key) {
            hooked.await;
        }
        let store = self.describe();
        match self.faults.take(operation, key) {
            None => Ok(None),
            Some(Fault::Transient) => {
                Err(StorageError::transient(&store, operation.name(), key, "injected transient failure"))
            }
            Some(Fault::Permanent) => {
                Err(StorageError::permanent(&store, operation.name(), key, "injected permanent failure"))
            }
            Some(Fault::Throttle) => Err(StorageError::transient(
                &store,
                operation.name(),
                key,
                "injected throttling: HTTP 503: SlowDown: Please reduce your request rate",
            )),
            Some(Fault::Stall(duration)) => {
                tokio::time::sleep(duration).await;
                Ok(None)
            }
            Some(fault) => Ok(Some(fault)),
        }
    }

    /// The answer to a write the backend carried out: lost when the call's fault says so.
    fn answer<T>(&self, key: &ObjectKey, after: Option<Fault>, value: T) -> Result<T, StorageError> {
        match after {
            Some(Fault::AckLost) => {
                Err(StorageError::transient(&self.describe(), "put", key.as_str(), "injected lost acknowledgement"))
            }
            _ => Ok(value),
        }
    }
}

/// Flips every bit of the middle byte (an empty body gets one garbage byte).
fn corrupt(body: Bytes) -> Bytes {
    let mut bytes = BytesMut::from(body.as_ref());
    if bytes.is_empty() {
        bytes.extend_from_slice(&[0xff]);
    } else {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
    }
    bytes.freeze()
}

#[async_trait]
impl<S: Storage> Storage for FaultInjecting<S> {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let after = self.before(Operation::Put, key.as_str()).await?;
        self.inner.put(key, body, mode).await?;
        self.answer(key, after, ())
    }

    /// Counted and faulted as a `put`.
    async fn put_deferred(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StorageError> {
        let after = self.before(Operation::Put, key.as_str()).await?;
        let outcome = self.inner.put_deferred(key, body).await?;
        self.answer(key, after, outcome)
    }

    async fn sync_deferred(&self) -> Result<(), StorageError> {
        self.before(Operation::Sync, DEFERRED_WRITES).await?;
        self.inner.sync_deferred().await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let after = self.before(Operation::Get, key.as_str()).await?;
        let body = self.inner.get(key).await?;
        match after {
            Some(Fault::Corrupt) => Ok(corrupt(body)),
            _ => Ok(body),
        }
    }

    async fn get_start(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        let after = self.before(Operation::Get, key.as_str()).await?;
        let body = self.inner.get_start(key, len).await?;
        match after {
            Some(Fault::Corrupt) => Ok(corrupt(body)),
            _ => Ok(body),
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        self.before(Operation::Head, key.as_str()).await?;
        self.inner.head(key).await
    }

    /// Counted and faulted as a `head`: S3 answers it to a HeadObject.
    async fn retained_until(&self, key: &ObjectKey) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        self.before(Operation::Head, key.as_str()).await?;
        self.inner.retained_until(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.before(Operation::List, prefix).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.before(Operation::Delete, key.as_str()).await?;
        self.inner.delete(key).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn a_hook_runs_before_the_calls_it_chooses_and_sees_the_store_as_it_was() {
        let store = Arc::new(FaultInjecting::new(MemoryStorage::new()));
        let seen = Arc::new(AtomicU64::new(0));
        let (count, inner) = (seen.clone(), store.clone());
        store.handle().set_hook(Arc::new(move |operation, key| {
            if operation != Operation::Put || !key.ends_with("complete.json") {
                return None;
            }
            let (count, inner) = (count.clone(), inner.clone());
            Some(Box::pin(async move {
                let marker = ObjectKey::new("b/complete.json").expect("key");
                let stored = inner.inner().head(&marker).await.expect("head");
                count.fetch_add(if stored.is_none() { 1 } else { 100 }, Ordering::SeqCst);
            }))
        }));
        let part = ObjectKey::new("b/part").expect("key");
        store.put(&part, Bytes::from_static(b"x"), PutMode::CreateNew).await.expect("put part");
        assert_eq!(seen.load(Ordering::SeqCst), 0, "the hook chose not to run");
        let marker = ObjectKey::new("b/complete.json").expect("key");
        store.put(&marker, Bytes::from_static(b"{}"), PutMode::CreateNew).await.expect("put marker");
        assert_eq!(seen.load(Ordering::SeqCst), 1, "the hook ran once, before the marker was stored");
        store.handle().clear();
        store
            .put(&ObjectKey::new("c/complete.json").expect("key"), Bytes::new(), PutMode::CreateNew)
            .await
            .expect("put");
        assert_eq!(seen.load(Ordering::SeqCst), 1, "a cleared store runs no hook");
    }
}
