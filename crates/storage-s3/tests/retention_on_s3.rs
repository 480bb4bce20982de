//! Retention and garbage cleanup on S3 through moto: the races of core's `retention_safety.rs`
//! (a commit between the plan and the delete, a restore's lease) on the object store.

#[path = "../../core/tests/catalog_support/mod.rs"]
mod catalog_support;
mod storage_support;

use std::sync::Arc;

use catalog_support::scenarios::{commit_between_plan_and_delete, retention_honours_a_lease_until_it_expires};
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_storage_s3::{S3Settings, S3Storage};
use storage_support::{fresh_bucket, moto};

async fn s3_archive() -> (Arc<pgec2_testkit::MotoServer>, Archive) {
    let server = moto();
    let bucket = fresh_bucket("retention");
    server.create_bucket(&bucket).await.expect("create bucket");
    let settings = S3Settings { endpoint: Some(server.endpoint()), ..S3Settings::new(&bucket, "") };
    let storage = S3Storage::from_sdk_config(&server.sdk_config().await, settings).expect("s3 store");
    (server, Archive::new(Arc::new(storage), ArchiveLayout::under("db").expect("layout")))
}

#[tokio::test]
async fn garbage_keeps_a_backup_committed_between_the_plan_and_the_delete_on_s3() {
    let (_server, archive) = s3_archive().await;
    commit_between_plan_and_delete(&archive).await;
}

#[tokio::test]
async fn retention_during_a_running_restore_keeps_its_backup_and_wal_until_the_lease_expires_on_s3() {
    let (_server, archive) = s3_archive().await;
    retention_honours_a_lease_until_it_expires(&archive).await;
}
