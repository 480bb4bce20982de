//! Retries under injected faults: transient failures and stalls are retried within bounds,
//! permanent failures are not, and a lost acknowledgement never turns into a silent overwrite.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgec2_core::storage::fault::{Fault, FaultHandle, FaultInjecting, Operation, Rule};
use pgec2_core::storage::memory::MemoryStorage;
use pgec2_core::storage::retry::{RetryPolicy, Retrying};
use pgec2_core::storage::{ObjectKey, PutMode, PutOutcome, Storage, StorageError, Timeouts};

const ATTEMPTS: u32 = 4;

/// A retrying store over a faulty in-memory store, with short deadlines and delays.
struct Harness {
    store: Retrying<Arc<FaultInjecting<MemoryStorage>>>,
    faulty: Arc<FaultInjecting<MemoryStorage>>,
    faults: FaultHandle,
}

fn harness() -> Harness {
    let faulty = Arc::new(FaultInjecting::new(MemoryStorage::new()));
    let faults = faulty.handle();
    let timeouts = Timeouts { operation: Duration::from_millis(200), min_bytes_per_second: u64::MAX };
    let policy = RetryPolicy {
        max_attempts: ATTEMPTS,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(10),
        get_deadline_size: 0,
        list_deadline: Duration::from_millis(200),
    };
    Harness { store: Retrying::new(faulty.clone(), timeouts, policy), faulty, faults }
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

fn segment() -> ObjectKey {
    key("wal/000000010000000000000001")
}

fn body(text: &str) -> Bytes {
    Bytes::from(text.to_string())
}

#[tokio::test]
async fn transient_failures_are_retried_until_the_store_answers() {
    let harness = harness();
    harness.faults.fail_next(Operation::Put, ATTEMPTS as u64 - 1, Fault::Transient);
    harness.store.put(&segment(), body("wal"), PutMode::CreateNew).await.expect("put succeeds on the last attempt");
    assert_eq!(harness.faults.calls(Operation::Put), ATTEMPTS as u64);
    assert_eq!(harness.faulty.inner().get(&segment()).await.expect("stored"), body("wal"));
}

#[tokio::test]
async fn a_store_that_keeps_failing_is_given_up_after_the_attempt_limit() {
    let harness = harness();
    harness.faults.add(Rule::new(Fault::Transient).on(Operation::Get));
    let error = harness.store.get(&segment()).await.expect_err("get keeps failing");
    assert!(matches!(error, StorageError::Transient { .. }), "got {error:?}");
    assert_eq!(harness.faults.calls(Operation::Get), ATTEMPTS as u64);
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let harness = harness();
    harness.faults.add(Rule::new(Fault::Permanent).on(Operation::Put));
    let error = harness.store.put(&segment(), body("wal"), PutMode::CreateNew).await.expect_err("permanent");
    assert!(matches!(error, StorageError::Permanent { .. }), "got {error:?}");
    assert_eq!(harness.faults.calls(Operation::Put), 1);
    assert!(harness.faulty.inner().is_empty());
}

#[tokio::test]
async fn a_missing_object_is_reported_without_retrying() {
    let harness = harness();
    let error = harness.store.get(&segment()).await.expect_err("missing");
    assert!(error.is_not_found(), "got {error:?}");
    assert_eq!(harness.faults.calls(Operation::Get), 1);
}

#[tokio::test]
async fn an_existing_object_is_reported_without_retrying() {
    let harness = harness();
    harness.faulty.inner().put(&segment(), body("first"), PutMode::CreateNew).await.expect("seed");
    let error = harness.store.put(&segment(), body("second"), PutMode::CreateNew).await.expect_err("exists");
    assert!(error.is_already_exists(), "got {error:?}");
    assert_eq!(harness.faults.calls(Operation::Put), 1);
}

#[tokio::test]
async fn a_stalled_call_times_out_and_is_retried() {
    let harness = harness();
    harness.faulty.inner().put(&segment(), body("wal"), PutMode::CreateNew).await.expect("seed");
    harness.faults.fail_next(Operation::Get, 2, Fault::Stall(Duration::from_secs(30)));
    let started = Instant::now();
    assert_eq!(harness.store.get(&segment()).await.expect("third attempt answers"), body("wal"));
    assert_eq!(harness.faults.calls(Operation::Get), 3);
    assert!(started.elapsed() < Duration::from_secs(5), "stalls must be cut by the deadline: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_store_that_always_stalls_fails_with_a_timeout_in_bounded_time() {
    let harness = harness();
    harness.faults.add(Rule::new(Fault::Stall(Duration::from_secs(30))));
    let started = Instant::now();
    let error = harness.store.head(&segment()).await.expect_err("always stalls");
    assert!(matches!(error, StorageError::Stalled { .. }), "got {error:?}");
    assert!(error.to_string().contains("no progress"), "{error}");
    assert!(!error.is_permanent());
    assert_eq!(harness.faults.calls(Operation::Head), ATTEMPTS as u64);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn retries_stop_when_the_time_budget_is_spent() {
    let faulty = FaultInjecting::new(MemoryStorage::new());
    let faults = faulty.handle();
    faults.add(Rule::new(Fault::Transient));
    let policy = RetryPolicy {
        max_attempts: 1000,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(20),
        max_elapsed: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let store = Retrying::new(faulty, Timeouts::default(), policy);
    let started = Instant::now();
    store.delete(&segment()).await.expect_err("keeps failing");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // Full jitter below 20 ms averages 10 ms a wait, so about 20 attempts fit in 200 ms; the
    // budget, not the attempt limit of 1000, is what ends the loop.
    let calls = faults.calls(Operation::Delete);
    assert!((2..=60).contains(&calls), "expected the 200 ms budget to end the retries, got {calls} attempts");
}

#[tokio::test]
async fn a_lost_acknowledgement_on_create_is_success_when_the_retry_finds_our_object() {
    let harness = harness();
    harness.faults.fail_next(Operation::Put, 1, Fault::AckLost);
    harness.store.put(&segment(), body("wal"), PutMode::CreateNew).await.expect("the retry finds our object");
    assert_eq!(harness.faults.calls(Operation::Put), 2);
    assert_eq!(harness.faulty.inner().get(&segment()).await.expect("stored"), body("wal"));
}

#[tokio::test]
async fn a_retried_create_that_finds_other_content_fails_and_keeps_the_object() {
    let harness = harness();
    harness.faulty.inner().put(&segment(), body("theirs"), PutMode::CreateNew).await.expect("seed");
    harness.faults.fail_next(Operation::Put, 1, Fault::Transient);
    let error = harness.store.put(&segment(), body("ours"), PutMode::CreateNew).await.expect_err("other content");
    assert!(matches!(error, StorageError::DifferentContent { .. }), "got {error:?}");
    assert!(error.is_already_exists() && error.is_permanent(), "got {error:?}");
    assert!(error.to_string().contains("different content"), "{error}");
    assert_eq!(harness.faulty.inner().get(&segment()).await.expect("kept"), body("theirs"));
}

#[tokio::test]
async fn a_lost_acknowledgement_on_create_is_success_when_the_stored_bytes_are_ours() {
    let harness = harness();
    harness.faults.fail_next(Operation::Put, 1, Fault::AckLost);
    let outcome = harness.store.put_new_or_identical(&segment(), body("wal")).await.expect("same bytes");
    assert_eq!(outcome, PutOutcome::Created, "this call created it, though its first answer was lost");
    let again = harness.store.put_new_or_identical(&segment(), body("wal")).await.expect("a later run");
    assert_eq!(again, PutOutcome::AlreadyIdentical);
}

#[tokio::test]
async fn a_lost_acknowledgement_on_overwrite_is_retried_to_success() {
    let harness = harness();
    harness.faults.fail_next(Operation::Put, 1, Fault::AckLost);
    harness.store.put(&key("backups/b1/permanent"), body(""), PutMode::Overwrite).await.expect("overwrite retried");
    assert_eq!(harness.faults.calls(Operation::Put), 2);
}

#[tokio::test]
async fn corrupted_reads_return_different_bytes_and_leave_the_object_intact() {
    let harness = harness();
    harness.faulty.inner().put(&segment(), body("payload"), PutMode::CreateNew).await.expect("seed");
    harness.faults.fail_next(Operation::Get, 1, Fault::Corrupt);
    let corrupted = harness.store.get(&segment()).await.expect("get");
    assert_eq!(corrupted.len(), 7);
    assert_ne!(corrupted, body("payload"));
    assert_eq!(harness.store.get(&segment()).await.expect("get"), body("payload"));
}

#[tokio::test]
async fn faults_aimed_at_matching_keys_spare_the_others() {
    let harness = harness();
    harness.faults.add(Rule::new(Fault::Permanent).matching(|key| key.ends_with(".history")));
    let history = key("wal/00000002.history");
    let error = harness.store.put(&history, body("1\t0/3000000\tno recovery target"), PutMode::CreateNew).await;
    assert!(matches!(error, Err(StorageError::Permanent { .. })), "got {error:?}");
    harness.store.put(&segment(), body("wal"), PutMode::CreateNew).await.expect("segment unaffected");
    assert_eq!(harness.store.list("wal/").await.expect("list").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_faults_while_a_call_is_retrying_lets_it_finish() {
    let faulty = Arc::new(FaultInjecting::new(MemoryStorage::new()));
    let faults = faulty.handle();
    faults.add(Rule::new(Fault::Transient).on(Operation::Put));
    let policy = RetryPolicy {
        max_attempts: 1000,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        max_elapsed: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let store = Retrying::new(faulty.clone(), Timeouts::default(), policy);
    let pushing = tokio::spawn(async move { store.put(&segment(), body("wal"), PutMode::CreateNew).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while faults.calls(Operation::Put) < 3 {
        assert!(Instant::now() < deadline, "the put was not retried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!pushing.is_finished(), "the put must still be retrying");
    faults.clear();
    pushing.await.expect("task").expect("put succeeds once the store answers");
    assert_eq!(faulty.inner().get(&segment()).await.expect("stored"), body("wal"));
}
