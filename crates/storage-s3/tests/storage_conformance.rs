//! The storage conformance suite ([`pgec2_core::storage::conformance`]) on S3 through moto, plain
//! and behind the seeded fault injector with the agent's retries: small list pages (to cross
//! page boundaries) and the smallest multipart parts, so the large-object case goes multipart.

mod storage_support;

use std::sync::Arc;
use std::time::Duration;

use pgec2_core::storage::conformance::{Fixture, faulty};
use pgec2_core::storage_conformance;
use pgec2_storage_s3::{MultipartSettings, S3Settings, S3Storage};
use storage_support::{fresh_bucket, moto};

/// Multipart parts as small as S3 (and moto) accept, so the large-object case stays fast.
const PART: usize = 5 * 1024 * 1024;

/// A fresh bucket on the shared moto server, the store rooted under a prefix in it.
async fn s3() -> Fixture {
    let server = moto();
    let bucket = fresh_bucket("conformance");
    server.create_bucket(&bucket).await.expect("create bucket");
    let settings = S3Settings {
        endpoint: Some(server.endpoint()),
        multipart: MultipartSettings { threshold: PART as u64, part_size: PART as u64, concurrency: 2 },
        list_page_size: 2,
        ..S3Settings::new(bucket, "archives/cluster-a")
    };
    let storage = S3Storage::from_sdk_config(&server.sdk_config().await, settings).expect("s3 store");
    Fixture { storage: Arc::new(storage), keep: Box::new(server) }
}

storage_conformance!(s3_backend, s3(), 2 * PART + 100_003);
storage_conformance!(faulty_s3_backend, faulty(s3(), Duration::from_secs(2)), 2 * PART + 100_003);
