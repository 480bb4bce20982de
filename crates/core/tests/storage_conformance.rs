//! The storage conformance suite ([`pgec2_core::storage::conformance`]) on the in-memory map
//! and a local directory, plain and behind the seeded fault injector with the agent's retries.
//! `pgec2-storage-s3` runs the same suite on S3.

use std::sync::Arc;
use std::time::Duration;

use pgec2_core::fs_sync::SyncMethod;
use pgec2_core::storage::Timeouts;
use pgec2_core::storage::conformance::{Fixture, LARGE, faulty, memory};
use pgec2_core::storage::local::LocalStorage;
use pgec2_core::{atomic_create_conformance, storage_conformance};

async fn local() -> Fixture {
    local_store(None)
}

/// A local directory whose deferred creates are fsynced one by one, as on a file system whose
/// `syncfs` is not trusted (NFS, FUSE, an older kernel).
async fn local_each_file() -> Fixture {
    local_store(Some(SyncMethod::EachFile))
}

fn local_store(method: Option<SyncMethod>) -> Fixture {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let storage = LocalStorage::new(directory.path().join("store"), Timeouts::default()).expect("open local store");
    let storage = match method {
        Some(method) => storage.with_sync_method(method),
        None => storage,
    };
    Fixture { storage: Arc::new(storage), keep: Box::new(directory) }
}

atomic_create_conformance!(memory_backend_races, memory());
atomic_create_conformance!(local_backend_races, local());
atomic_create_conformance!(faulty_memory_backend_races, faulty(memory(), Duration::from_millis(100)));
atomic_create_conformance!(faulty_local_backend_races, faulty(local(), Duration::from_millis(500)));

storage_conformance!(memory_backend, memory(), LARGE);
storage_conformance!(local_backend, local(), LARGE);
storage_conformance!(faulty_memory_backend, faulty(memory(), Duration::from_millis(100)), LARGE);
storage_conformance!(faulty_local_backend, faulty(local(), Duration::from_millis(500)), LARGE);
storage_conformance!(local_backend_each_file, local_each_file(), LARGE);
storage_conformance!(faulty_local_backend_each_file, faulty(local_each_file(), Duration::from_millis(500)), LARGE);
