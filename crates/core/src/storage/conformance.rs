//! One behaviour contract for every storage backend: what callers (wal-push, backups,
//! retention) rely on must hold on the in-memory map, a local directory and S3 alike, and again
//! on each of them behind the seeded fault injector with the agent's retries: with failures,
//! throttling, stalls, hangs and answers lost after successful writes on one call in ten, every
//! operation still succeeds with the data intact (or fails with nothing committed).
//!
//! Each case is written once against `&dyn Storage` in [`cases`]; a backend's test binary
//! instantiates them all with [`storage_conformance!`](crate::storage_conformance) and
//! [`atomic_create_conformance!`](crate::atomic_create_conformance) (core's own
//! `tests/storage_conformance.rs` for memory and local, `pgec2-storage-s3`'s for S3). Only test
//! binaries call it; nothing of it ends up in a binary that does not.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::compression::{Algorithm, Compression};
use crate::envelope;
use crate::storage::fault::{Chaos, FaultInjecting};
use crate::storage::memory::MemoryStorage;
use crate::storage::retry::{RetryPolicy, Retrying};
use crate::storage::{ObjectKey, PutMode, PutOutcome, Storage, StorageError, Timeouts};

/// A backend under test and whatever must live as long as it (a temporary directory, a server).
pub struct Fixture {
    pub storage: Arc<dyn Storage>,
    pub keep: Box<dyn Any + Send>,
}

/// The in-memory backend.
pub async fn memory() -> Fixture {
    Fixture { storage: Arc::new(MemoryStorage::new()), keep: Box::new(()) }
}

/// The seed of every faulty fixture: a failure reproduces with the same draws.
pub const SEED: u64 = 0x5eed_0014;

/// `fixture`'s backend behind the fault injector (faults on 10% of calls, hangs longer than the
/// stall limit among them), retried as the agent retries but with short delays.
pub async fn faulty(fixture: impl std::future::Future<Output = Fixture>, stall: Duration) -> Fixture {
    let Fixture { storage, keep } = fixture.await;
    let injector = FaultInjecting::new(storage);
    injector.handle().set_chaos(Chaos::new(SEED, 0.10).with_hang(stall * 2));
    let timeouts = Timeouts { operation: stall, min_bytes_per_second: 1024 * 1024 };
    let policy = RetryPolicy {
        max_attempts: 12,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    Fixture { storage: Arc::new(Retrying::new(injector, timeouts, policy)), keep }
}

pub fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

pub fn body(text: &str) -> Bytes {
    Bytes::from(text.to_string())
}

pub async fn keys_under(storage: &dyn Storage, prefix: &str) -> Vec<String> {
    let listed = storage.list(prefix).await.expect("list");
    listed.into_iter().map(|meta| meta.key.as_str().to_string()).collect()
}

/// A deterministic, non-repeating body of `size` bytes (so misplaced parts are detected).
pub fn patterned(size: usize) -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    Bytes::from(bytes)
}

/// The behaviours, each written once against `&dyn Storage`.
pub mod cases {
    use super::*;

    pub async fn put_then_get_returns_the_same_bytes(storage: &dyn Storage) {
        let object = key("wal/000000010000000000000001");
        storage.put(&object, body("segment one"), PutMode::CreateNew).await.expect("put");
        assert_eq!(storage.get(&object).await.expect("get"), body("segment one"));
    }

    pub async fn an_empty_object_round_trips(storage: &dyn Storage) {
        let object = key("backups/b1/permanent");
        storage.put(&object, Bytes::new(), PutMode::Overwrite).await.expect("put");
        assert_eq!(storage.get(&object).await.expect("get"), Bytes::new());
        assert_eq!(storage.head(&object).await.expect("head").map(|meta| meta.size), Some(0));
    }

    pub async fn create_new_on_an_existing_key_is_refused_and_keeps_the_object(storage: &dyn Storage) {
        let object = key("wal/000000010000000000000002");
        storage.put(&object, body("original"), PutMode::CreateNew).await.expect("first put");
        let error = storage.put(&object, body("impostor"), PutMode::CreateNew).await.expect_err("second put");
        assert!(error.is_already_exists(), "expected AlreadyExists, got {error:?}");
        assert!(error.is_permanent(), "AlreadyExists must not be retried");
        assert_eq!(storage.get(&object).await.expect("get"), body("original"));
    }

    pub async fn overwrite_replaces_an_existing_object(storage: &dyn Storage) {
        let object = key("backups/b1/permanent");
        storage.put(&object, body("first"), PutMode::Overwrite).await.expect("first put");
        storage.put(&object, body("second, longer"), PutMode::Overwrite).await.expect("second put");
        assert_eq!(storage.get(&object).await.expect("get"), body("second, longer"));
        assert_eq!(storage.head(&object).await.expect("head").map(|meta| meta.size), Some(14));
    }

    pub async fn concurrent_creates_with_different_content_have_exactly_one_winner(storage: Arc<dyn Storage>) {
        let object = key("wal/00000002.history");
        let attempts = (0..8).map(|writer| {
            let (storage, object) = (storage.clone(), object.clone());
            tokio::spawn(async move {
                let content = body(&format!("writer {writer}"));
                (content.clone(), storage.put(&object, content, PutMode::CreateNew).await)
            })
        });
        let results = futures::future::join_all(attempts).await;
        let mut winners = Vec::new();
        for result in results {
            let (content, outcome) = result.expect("task");
            match outcome {
                Ok(()) => winners.push(content),
                Err(error) => assert!(error.is_already_exists(), "a loser must see AlreadyExists, got {error:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one create must win");
        assert_eq!(storage.get(&object).await.expect("get"), winners[0]);
    }

    pub async fn put_new_or_identical_accepts_the_same_bytes_and_refuses_others(storage: &dyn Storage) {
        let object = key("wal/000000010000000000000003");
        let first = storage.put_new_or_identical(&object, body("content")).await.expect("create");
        assert_eq!(first, PutOutcome::Created);
        let again = storage.put_new_or_identical(&object, body("content")).await.expect("same again");
        assert_eq!(again, PutOutcome::AlreadyIdentical);
        let error = storage.put_new_or_identical(&object, body("other")).await.expect_err("different content");
        assert!(error.is_already_exists(), "got {error:?}");
        assert_eq!(storage.get(&object).await.expect("get"), body("content"));
    }

    pub async fn put_new_or_identical_compares_envelopes_by_content_not_encoding(storage: &dyn Storage) {
        let object = key("backups/b1/parts/000007");
        let content = patterned(200_000);
        let zstd = Compression { algorithm: Algorithm::Zstd, level: 3 };
        let plain = Compression { algorithm: Algorithm::None, level: 0 };
        let (compressed, _) = envelope::seal(&content, zstd).expect("seal");
        let (uncompressed, _) = envelope::seal(&content, plain).expect("seal");
        let created = storage.put_new_or_identical(&object, compressed.clone().into()).await.expect("create");
        assert_eq!(created, PutOutcome::Created);
        let again = storage.put_new_or_identical(&object, uncompressed.into()).await.expect("same content");
        assert_eq!(again, PutOutcome::AlreadyIdentical);
        let (other, _) = envelope::seal(&content[1..], plain).expect("seal");
        let error = storage.put_new_or_identical(&object, other.into()).await.expect_err("other content");
        assert!(matches!(error, StorageError::DifferentContent { .. }), "got {error:?}");
        assert_eq!(storage.get(&object).await.expect("get"), Bytes::from(compressed), "the object is untouched");
    }

    pub async fn get_start_reads_the_first_bytes_of_an_object(storage: &dyn Storage) {
        let object = key("backups/b1/backup_label");
        storage.put(&object, body("START WAL LOCATION"), PutMode::CreateNew).await.expect("put");
        assert_eq!(storage.get_start(&object, 5).await.expect("start"), body("START"));
        assert_eq!(storage.get_start(&object, 1000).await.expect("all"), body("START WAL LOCATION"));
        let empty = key("backups/b1/empty");
        storage.put(&empty, Bytes::new(), PutMode::CreateNew).await.expect("put empty");
        assert_eq!(storage.get_start(&empty, 52).await.expect("empty"), Bytes::new());
        let missing = storage.get_start(&key("backups/b1/missing"), 52).await.expect_err("missing");
        assert!(missing.is_not_found(), "got {missing:?}");
    }

    pub async fn a_missing_object_is_not_found(storage: &dyn Storage) {
        let object = key("wal/000000010000000000000099");
        let error = storage.get(&object).await.expect_err("get of a missing object");
        match &error {
            StorageError::NotFound { key, .. } => assert_eq!(key, object.as_str()),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(error.is_permanent());
        assert_eq!(storage.head(&object).await.expect("head"), None);
    }

    pub async fn a_prefix_of_stored_keys_is_not_an_object(storage: &dyn Storage) {
        storage.put(&key("backups/b1/manifest.json"), body("{}"), PutMode::CreateNew).await.expect("put");
        assert!(storage.get(&key("backups/b1")).await.expect_err("get of a prefix").is_not_found());
        assert_eq!(storage.head(&key("backups/b1")).await.expect("head of a prefix"), None);
        assert_eq!(storage.head(&key("backups")).await.expect("head of a prefix"), None);
    }

    pub async fn head_reports_the_key_and_size_of_a_stored_object(storage: &dyn Storage) {
        let object = key("backups/b1/parts/000001");
        storage.put(&object, body("0123456789"), PutMode::CreateNew).await.expect("put");
        let meta = storage.head(&object).await.expect("head").expect("object present");
        assert_eq!(meta.key, object);
        assert_eq!(meta.size, 10);
        assert!(meta.last_modified.is_some(), "every backend records a modification time");
    }

    pub async fn list_returns_objects_under_a_key_prefix_in_key_order(storage: &dyn Storage) {
        let stored = [
            "wal/000000010000000000000002",
            "wal/000000010000000000000001",
            "wal/000000020000000000000001",
            "wal/00000002.history",
            "backups/b1/manifest.json",
            "backups/b1/parts/000001",
            "backups/b10/manifest.json",
            "cluster.json",
        ];
        for text in stored {
            storage.put(&key(text), body(text), PutMode::CreateNew).await.expect("put");
        }
        let timeline_one = keys_under(storage, "wal/00000001").await;
        assert_eq!(timeline_one, ["wal/000000010000000000000001", "wal/000000010000000000000002"]);
        let timeline_two = keys_under(storage, "wal/00000002").await;
        assert_eq!(timeline_two, ["wal/00000002.history", "wal/000000020000000000000001"]);
        let backup_one = keys_under(storage, "backups/b1/").await;
        assert_eq!(backup_one, ["backups/b1/manifest.json", "backups/b1/parts/000001"]);
        let both_backups = keys_under(storage, "backups/b1").await;
        assert_eq!(both_backups, ["backups/b1/manifest.json", "backups/b1/parts/000001", "backups/b10/manifest.json"]);
        let mut everything: Vec<String> = stored.iter().map(|text| text.to_string()).collect();
        everything.sort();
        assert_eq!(keys_under(storage, "").await, everything);
        assert!(keys_under(storage, "nothing/").await.is_empty());
        assert!(keys_under(storage, "wal/00000003").await.is_empty());
    }

    pub async fn list_orders_by_bytes_not_by_directory(storage: &dyn Storage) {
        for text in ["a0", "a/b", "a-b", "a/a/z"] {
            storage.put(&key(text), body(text), PutMode::CreateNew).await.expect("put");
        }
        assert_eq!(keys_under(storage, "a").await, ["a-b", "a/a/z", "a/b", "a0"]);
    }

    pub async fn list_reports_sizes(storage: &dyn Storage) {
        storage.put(&key("sizes/one"), body("1"), PutMode::CreateNew).await.expect("put");
        storage.put(&key("sizes/three"), body("333"), PutMode::CreateNew).await.expect("put");
        let sizes: Vec<u64> = storage.list("sizes/").await.expect("list").iter().map(|meta| meta.size).collect();
        assert_eq!(sizes, [1, 3]);
    }

    pub async fn delete_removes_an_object_and_is_idempotent(storage: &dyn Storage) {
        let object = key("backups/b1/parts/000001");
        let sibling = key("backups/b1/parts/000002");
        storage.put(&object, body("part"), PutMode::CreateNew).await.expect("put");
        storage.put(&sibling, body("part"), PutMode::CreateNew).await.expect("put");
        storage.delete(&object).await.expect("delete");
        assert!(storage.get(&object).await.expect_err("get after delete").is_not_found());
        storage.delete(&object).await.expect("second delete");
        storage.delete(&key("never/stored")).await.expect("delete of a missing object");
        assert_eq!(keys_under(storage, "backups/").await, ["backups/b1/parts/000002"]);
    }

    pub async fn a_deleted_key_can_be_created_again(storage: &dyn Storage) {
        let object = key("deep/nested/prefix/object");
        storage.put(&object, body("first"), PutMode::CreateNew).await.expect("put");
        storage.delete(&object).await.expect("delete");
        assert!(keys_under(storage, "deep/").await.is_empty());
        storage.put(&object, body("second"), PutMode::CreateNew).await.expect("put again");
        assert_eq!(storage.get(&object).await.expect("get"), body("second"));
    }

    pub async fn keys_with_nested_prefixes_round_trip(storage: &dyn Storage) {
        let objects = ["a/b/c/d/e/f", "a/b/c/d/e/g", "a/b/x", "a/y"];
        for text in objects {
            storage.put(&key(text), body(text), PutMode::CreateNew).await.expect("put");
        }
        for text in objects {
            assert_eq!(storage.get(&key(text)).await.expect("get"), body(text));
        }
        assert_eq!(keys_under(storage, "a/b/c/").await, ["a/b/c/d/e/f", "a/b/c/d/e/g"]);
        assert_eq!(keys_under(storage, "a/").await.len(), 4);
    }

    pub async fn deferred_creates_read_back_at_once_refuse_other_content_and_sync(storage: &dyn Storage) {
        let (first, second) = (key("backups/b1/parts/000000"), key("backups/b1/parts/000001"));
        let outcome = storage.put_deferred(&first, body("part zero")).await.expect("deferred create");
        assert_eq!(outcome, PutOutcome::Created);
        assert_eq!(storage.get(&first).await.expect("get before the sync"), body("part zero"));
        let again = storage.put_deferred(&first, body("part zero")).await.expect("the same bytes again");
        assert_eq!(again, PutOutcome::AlreadyIdentical);
        let error = storage.put_deferred(&first, body("other part")).await.expect_err("other content");
        assert!(matches!(error, StorageError::DifferentContent { .. }), "got {error:?}");
        storage.put_deferred(&second, patterned(LARGE)).await.expect("a larger deferred create");
        storage.sync_deferred().await.expect("sync");
        assert_eq!(keys_under(storage, "backups/b1/").await, vec![first.to_string(), second.to_string()]);
        assert_eq!(storage.get(&first).await.expect("get after the sync"), body("part zero"));
        assert!(storage.get(&second).await.expect("get") == patterned(LARGE), "the larger object differs");
        let third = key("backups/b2/parts/000000");
        storage.put_deferred(&third, body("next backup")).await.expect("a create after a sync");
        storage.sync_deferred().await.expect("a second sync");
        assert_eq!(storage.get(&third).await.expect("get"), body("next backup"));
    }

    pub async fn a_large_object_round_trips(storage: &dyn Storage, size: usize) {
        let object = key("backups/big/parts/000001");
        let content = patterned(size);
        storage.put(&object, content.clone(), PutMode::CreateNew).await.expect("put large");
        let fetched = storage.get(&object).await.expect("get large");
        assert_eq!(fetched.len(), size);
        assert!(fetched == content, "large object content differs");
        let error = storage.put(&object, patterned(size / 2), PutMode::CreateNew).await.expect_err("create again");
        assert!(error.is_already_exists(), "got {error:?}");
        assert_eq!(storage.head(&object).await.expect("head").map(|meta| meta.size), Some(size as u64));
    }
}

/// Small-object size used for "large" on backends without a multipart path.
pub const LARGE: usize = 3 * 1024 * 1024 + 17;

/// Instantiates every case for one backend: `storage_conformance!(module_name, fixture_future,
/// large_object_size)`, where the future gives a [`Fixture`].
#[macro_export]
macro_rules! storage_conformance {
    ($backend:ident, $fixture:expr, $large:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn put_then_get_returns_the_same_bytes() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::put_then_get_returns_the_same_bytes(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn an_empty_object_round_trips() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::an_empty_object_round_trips(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn create_new_on_an_existing_key_is_refused_and_keeps_the_object() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::create_new_on_an_existing_key_is_refused_and_keeps_the_object(
                    &*fixture.storage,
                )
                .await;
            }

            #[tokio::test]
            async fn overwrite_replaces_an_existing_object() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::overwrite_replaces_an_existing_object(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn put_new_or_identical_accepts_the_same_bytes_and_refuses_others() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::put_new_or_identical_accepts_the_same_bytes_and_refuses_others(
                    &*fixture.storage,
                )
                .await;
            }

            #[tokio::test]
            async fn put_new_or_identical_compares_envelopes_by_content_not_encoding() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::put_new_or_identical_compares_envelopes_by_content_not_encoding(
                    &*fixture.storage,
                )
                .await;
            }

            #[tokio::test]
            async fn get_start_reads_the_first_bytes_of_an_object() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::get_start_reads_the_first_bytes_of_an_object(&*fixture.storage)
                    .await;
            }

            #[tokio::test]
            async fn a_missing_object_is_not_found() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::a_missing_object_is_not_found(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn a_prefix_of_stored_keys_is_not_an_object() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::a_prefix_of_stored_keys_is_not_an_object(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn head_reports_the_key_and_size_of_a_stored_object() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::head_reports_the_key_and_size_of_a_stored_object(
                    &*fixture.storage,
                )
                .await;
            }

            #[tokio::test]
            async fn list_returns_objects_under_a_key_prefix_in_key_order() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::list_returns_objects_under_a_key_prefix_in_key_order(
                    &*fixture.storage,
                )
                .await;
            }

            #[tokio::test]
            async fn list_orders_by_bytes_not_by_directory() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::list_orders_by_bytes_not_by_directory(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn list_reports_sizes() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::list_reports_sizes(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn delete_removes_an_object_and_is_idempotent() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::delete_removes_an_object_and_is_idempotent(&*fixture.storage)
                    .await;
            }

            #[tokio::test]
            async fn a_deleted_key_can_be_created_again() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::a_deleted_key_can_be_created_again(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn keys_with_nested_prefixes_round_trip() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::keys_with_nested_prefixes_round_trip(&*fixture.storage).await;
            }

            #[tokio::test]
            async fn deferred_creates_read_back_at_once_refuse_other_content_and_sync() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::deferred_creates_read_back_at_once_refuse_other_content_and_sync(
                    &*fixture.storage,
                )
                .await;
            }

            #[tokio::test]
            async fn a_large_object_round_trips() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::a_large_object_round_trips(&*fixture.storage, $large).await;
            }
        }
    };
}

/// Instantiates the race between conditional creates for one backend. Not for the moto server:
/// its conditional PUT checks for the key and then writes it without a lock, so two concurrent
/// creates can both win there, whereas AWS S3 (and our file and memory stores) guarantee exactly
/// one winner. The single-writer behaviour over S3 is covered by the other cases.
#[macro_export]
macro_rules! atomic_create_conformance {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_creates_with_different_content_have_exactly_one_winner() {
                let fixture = $fixture.await;
                $crate::storage::conformance::cases::concurrent_creates_with_different_content_have_exactly_one_winner(
                    fixture.storage.clone(),
                )
                .await;
            }
        }
    };
}
