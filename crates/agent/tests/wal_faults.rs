//! `wal-push` and `wal-fetch` against a store that fails, stalls, loses acknowledgements or
//! corrupts data (the fault-injecting wrapper around the in-memory backend): a push never
//! reports success for a file that is not stored, and a fetch never returns damaged content.

mod wal_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pgec2_agent::wal::{PushOutcome, WalError, fetch, push};
use pgec2_core::compression::Compression;
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::storage::fault::{Fault, FaultHandle, FaultInjecting, Operation, Rule};
use pgec2_core::storage::memory::MemoryStorage;
use pgec2_core::storage::retry::{RetryPolicy, Retrying};
use pgec2_core::storage::{Storage, Timeouts};
use pgec2_core::wal::WalFileName;
use wal_common::{segment_name, synthetic_segment};

const SYSTEM_IDENTIFIER: u64 = 7_300_000_000_000_000_042;

/// An archive on faulty memory storage, retried like the real one but with short delays.
struct FaultyArchive {
    archive: Archive,
    faults: FaultHandle,
    memory: Arc<MemoryStorage>,
    data_dir: tempfile::TempDir,
}

impl FaultyArchive {
    fn new() -> Self {
        let memory = Arc::new(MemoryStorage::new());
        let faulty = FaultInjecting::new(memory.clone());
        let faults = faulty.handle();
        let timeouts = Timeouts { operation: Duration::from_millis(300), min_bytes_per_second: 1024 * 1024 };
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let storage: Arc<dyn Storage> = Arc::new(Retrying::new(faulty, timeouts, policy));
        let archive = Archive::new(storage, ArchiveLayout::under("default/db").expect("layout"));
        let data_dir = tempfile::tempdir().expect("data dir");
        std::fs::create_dir(data_dir.path().join("pg_wal")).expect("pg_wal");
        Self { archive, faults, memory, data_dir }
    }

    /// Writes segment `number` into the data directory's pg_wal and returns its path.
    fn segment(&self, number: u64) -> PathBuf {
        let path = self.data_dir.path().join("pg_wal").join(segment_name(number));
        std::fs::write(&path, synthetic_segment(SYSTEM_IDENTIFIER, number)).expect("write segment");
        path
    }

    async fn push(&self, path: &Path) -> Result<PushOutcome, WalError> {
        push(&self.archive, Compression::default(), path, Some(self.data_dir.path())).await
    }

    /// The archived content of `file`, read past the fault injector.
    async fn stored(&self, file: &str) -> Option<Vec<u8>> {
        let clean = Archive::new(self.memory.clone(), self.archive.layout.clone());
        wal_common::archived_content(&clean, file).await
    }
}

fn is_wal_object(key: &str) -> bool {
    key.contains("/wal/")
}

#[tokio::test]
async fn a_push_the_store_refuses_fails_and_stores_nothing() {
    let store = FaultyArchive::new();
    store.faults.add(Rule::new(Fault::Permanent).on(Operation::Put).matching(is_wal_object));
    let path = store.segment(2);

    let error = store.push(&path).await.expect_err("refused by the store");

    assert!(error.to_string().starts_with(&format!("failed to archive {}", segment_name(2))), "{error}");
    assert_eq!(store.stored(&segment_name(2)).await, None);
}

#[tokio::test]
async fn transient_store_errors_are_retried_until_the_segment_is_stored() {
    let store = FaultyArchive::new();
    store.faults.add(Rule::new(Fault::Transient).on(Operation::Put).matching(is_wal_object).times(2));
    let path = store.segment(2);

    let outcome = store.push(&path).await.expect("stored on the third attempt");

    assert!(matches!(outcome, PushOutcome::Stored { .. }));
    assert_eq!(store.stored(&segment_name(2)).await, Some(synthetic_segment(SYSTEM_IDENTIFIER, 2)));
}

#[tokio::test]
async fn a_lost_acknowledgement_is_recognised_as_our_own_object() {
    let store = FaultyArchive::new();
    store.faults.add(Rule::new(Fault::AckLost).on(Operation::Put).matching(is_wal_object).times(1));
    let path = store.segment(3);

    let outcome = store.push(&path).await.expect("the retry finds identical content");

    assert!(
        matches!(outcome, PushOutcome::Stored { .. }),
        "the push stored it, its first answer was lost: {outcome:?}"
    );
    assert_eq!(store.stored(&segment_name(3)).await, Some(synthetic_segment(SYSTEM_IDENTIFIER, 3)));
}

#[tokio::test]
async fn a_store_that_keeps_failing_fails_the_push_until_it_recovers() {
    let store = FaultyArchive::new();
    store.faults.add(Rule::new(Fault::Transient).on(Operation::Put).matching(is_wal_object));
    let path = store.segment(4);

    for _ in 0..2 {
        assert!(store.push(&path).await.is_err(), "PostgreSQL keeps the segment and retries");
        assert_eq!(store.stored(&segment_name(4)).await, None);
    }
    store.faults.clear();

    assert!(matches!(store.push(&path).await, Ok(PushOutcome::Stored { .. })));
    assert_eq!(store.stored(&segment_name(4)).await, Some(synthetic_segment(SYSTEM_IDENTIFIER, 4)));
}

#[tokio::test]
async fn a_stalled_store_times_out_instead_of_hanging_the_archiver() {
    let store = FaultyArchive::new();
    store.faults.add(Rule::new(Fault::Stall(Duration::from_secs(30))).on(Operation::Put).matching(is_wal_object));
    let path = store.segment(5);

    let started = std::time::Instant::now();
    let error = store.push(&path).await.expect_err("timed out");

    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(error.to_string().contains("timed out"), "{error}");
    assert_eq!(store.stored(&segment_name(5)).await, None);
}

#[tokio::test]
async fn an_unreadable_owner_record_stops_archiving() {
    let store = FaultyArchive::new();
    store.faults.add(Rule::new(Fault::Permanent).on(Operation::Get).matching(|key| key.ends_with("cluster.json")));
    let path = store.segment(2);

    let error = store.push(&path).await.expect_err("owner unknown");

    assert!(error.to_string().contains("cluster.json"), "{error}");
    assert_eq!(store.stored(&segment_name(2)).await, None);
}

#[tokio::test]
async fn a_fetch_of_an_object_corrupted_in_transit_is_refused() {
    let store = FaultyArchive::new();
    let path = store.segment(6);
    store.push(&path).await.expect("push");
    store.faults.add(Rule::new(Fault::Corrupt).on(Operation::Get).matching(is_wal_object));
    let name: WalFileName = segment_name(6).parse().expect("name");

    let error = fetch::download(&store.archive, &name).await.expect_err("corrupt");

    assert!(matches!(error, WalError::Corrupt { .. }), "{error}");
    store.faults.clear();
    let content = fetch::download(&store.archive, &name).await.expect("fetch").expect("present");
    assert_eq!(content, synthetic_segment(SYSTEM_IDENTIFIER, 6));
}
