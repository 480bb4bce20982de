//! The retry policy's time rules: a transfer that keeps moving is never cut, however slow; one
//! that stops moving is cut by the stall detector and retried; a call's budget grows with its
//! size; content-aware creates compare envelope headers, not stored bytes; chaos is seeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pgec2_core::compression::{Algorithm, Compression};
use pgec2_core::envelope;
use pgec2_core::storage::fault::{Chaos, FaultInjecting, Operation};
use pgec2_core::storage::memory::MemoryStorage;
use pgec2_core::storage::retry::{RetryPolicy, Retrying};
use pgec2_core::storage::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Storage, StorageError, Timeouts, progress};

const STALL: Duration = Duration::from_millis(200);

/// A store whose puts move `steps` pieces `step` apart, noting progress after each, then store.
#[derive(Debug)]
struct SlowLink {
    inner: MemoryStorage,
    steps: u32,
    step: Duration,
    /// Attempts that hang forever after the body is sent (an answer that never comes).
    hangs: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Storage for SlowLink {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        for _ in 0..self.steps {
            tokio::time::sleep(self.step).await;
            progress::note();
        }
        let hang = self.hangs.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |left| left.checked_sub(1),
        );
        if hang.is_ok() {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.inner.put(key, body, mode).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "slow://link".to_string()
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(10),
        ..RetryPolicy::default()
    }
}

fn slow_link(steps: u32, hangs: u32) -> Retrying<SlowLink> {
    let link = SlowLink { inner: MemoryStorage::new(), steps, step: STALL / 2, hangs: hangs.into() };
    Retrying::new(link, Timeouts { operation: STALL, min_bytes_per_second: 1024 * 1024 }, policy())
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

#[tokio::test]
async fn a_transfer_that_keeps_moving_is_never_cut_however_long_it_takes() {
    let store = slow_link(20, 0);
    let started = Instant::now();
    store
        .put(&key("backups/b1/parts/000001"), Bytes::from_static(b"part"), PutMode::CreateNew)
        .await
        .expect("slow but moving");
    assert!(started.elapsed() >= STALL * 5, "took {:?}, longer than ten stall limits", started.elapsed());
}

#[tokio::test]
async fn an_answer_that_never_comes_is_cut_by_the_stall_detector_and_the_create_retried() {
    let store = slow_link(2, 1);
    let started = Instant::now();
    let object = key("backups/b1/parts/000002");
    store.put(&object, Bytes::from_static(b"part"), PutMode::CreateNew).await.expect("second attempt");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(store.inner().inner.get(&object).await.expect("stored"), Bytes::from_static(b"part"));
}

#[tokio::test]
async fn a_put_budget_grows_with_the_size_of_the_object() {
    let timeouts = Timeouts { operation: STALL, min_bytes_per_second: 1024 * 1024 };
    assert_eq!(timeouts.transfer_time(0), Duration::ZERO);
    assert_eq!(timeouts.transfer_time(64 * 1024 * 1024), Duration::from_secs(64));
    assert!(timeouts.for_transfer(16 << 20) > timeouts.for_transfer(2 << 20));
}

#[test]
fn back_off_is_full_jitter_under_an_exponential_bound() {
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    assert_eq!(policy.backoff_bound(1), Duration::from_millis(100));
    assert_eq!(policy.backoff_bound(3), Duration::from_millis(400));
    assert_eq!(policy.backoff_bound(10), Duration::from_secs(2));
    let delays: Vec<Duration> = (0..200).map(|_| policy.backoff(3)).collect();
    assert!(delays.iter().all(|delay| *delay <= Duration::from_millis(400)));
    assert!(delays.iter().any(|delay| *delay < Duration::from_millis(100)), "full jitter reaches near zero");
}

#[tokio::test]
async fn creates_compare_envelope_contents_not_compressed_bytes() {
    let store = MemoryStorage::new();
    let object = key("backups/b1/manifest.json");
    let content = b"{\"files\": []}".repeat(100);
    let zstd = Compression { algorithm: Algorithm::Zstd, level: 3 };
    let none = Compression { algorithm: Algorithm::None, level: 0 };
    let (compressed, _) = envelope::seal(&content, zstd).expect("seal");
    let (plain, _) = envelope::seal(&content, none).expect("seal");
    assert_ne!(compressed, plain);
    assert_eq!(store.put_new_or_identical(&object, compressed.into()).await.expect("create"), PutOutcome::Created);
    let again = store.put_new_or_identical(&object, plain.into()).await.expect("same content");
    assert_eq!(again, PutOutcome::AlreadyIdentical);
    let (other, _) = envelope::seal(b"other", none).expect("seal");
    let error = store.put_new_or_identical(&object, other.into()).await.expect_err("other content");
    assert!(matches!(error, StorageError::DifferentContent { .. }), "{error:?}");
    assert!(error.to_string().contains(object.as_str()) && error.to_string().contains("BLAKE3"), "{error}");
}

#[tokio::test]
async fn the_same_seed_draws_the_same_faults() {
    let mut counts = Vec::new();
    for _ in 0..2 {
        let injector = FaultInjecting::new(MemoryStorage::new());
        injector.handle().set_chaos(Chaos::new(7, 0.2).with_hang(Duration::ZERO).with_short_stall(Duration::ZERO));
        let store = Arc::new(injector);
        for _ in 0..200 {
            let _ = store.head(&key("wal/000000010000000000000001")).await;
        }
        let handle = store.handle();
        assert_eq!(handle.calls(Operation::Head), 200);
        counts.push(handle.injected());
    }
    assert_eq!(counts[0], counts[1]);
    assert!((20..=60).contains(&counts[0]), "about one call in five: {}", counts[0]);
}
