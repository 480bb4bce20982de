//! Immutable backups with S3 Object Lock, against moto (a bucket created with Object Lock
//! enabled) and a real PostgreSQL 15: every object of a committed backup and every archived WAL
//! file carries a retention date, and `delete` never deletes a locked backup or WAL early: it
//! keeps them and says until when they are locked.

mod backup_support;
mod wal_common;

use std::sync::Arc;

use backup_support::{Primary, assert_success};
use chrono::{Duration, Utc};
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::storage::lock::{LockMode, ObjectLock};
use pgec2_storage_s3::{S3Settings, S3Storage};
use pgec2_testkit::MotoServer;
use wal_common::{runtime, s3_agent};

const BUCKET: &str = "pgec2-locked";

/// The archive as the test reads it straight from moto, asking for retention dates.
async fn locked_archive(moto: &MotoServer) -> Archive {
    let lock = ObjectLock { mode: LockMode::Governance, days: 2 };
    let settings =
        S3Settings { endpoint: Some(moto.endpoint()), object_lock: Some(lock), ..S3Settings::new(BUCKET, "pgec2") };
    let storage = S3Storage::from_sdk_config(&moto.sdk_config().await, settings).expect("s3 store");
    Archive::new(Arc::new(storage), ArchiveLayout::under("db").expect("layout"))
}

#[test]
fn every_object_of_a_committed_backup_and_its_wal_is_locked_and_retention_keeps_them_saying_until_when() {
    let moto = MotoServer::start().expect("moto server");
    runtime().block_on(moto.create_locked_bucket(BUCKET)).expect("create a locked bucket");
    let lock = "object_lock_mode = \"governance\"\nobject_lock_days = 2\n";
    let primary = Primary::start_with(s3_agent(&moto, BUCKET, "db", &moto.endpoint(), lock));
    let first = primary.backup();
    primary.cluster.psql("CREATE TABLE after_first AS SELECT 1 AS x").expect("write");
    primary.backup();
    primary.archive_current_wal();

    let rt = runtime();
    let archive = rt.block_on(locked_archive(&moto));
    let list = |prefix: String| rt.block_on(archive.storage.list(&prefix)).expect("list the archive");
    let backup_objects = list(archive.layout.backup_prefix(&first.name));
    let wal_objects = list(archive.layout.wal_prefix());
    assert!(backup_objects.len() >= 3 && !wal_objects.is_empty(), "{backup_objects:?} {wal_objects:?}");
    let (soon, late) = (Utc::now() + Duration::hours(47), Utc::now() + Duration::hours(49));
    for object in backup_objects.iter().chain(&wal_objects) {
        let until = rt.block_on(archive.storage.retained_until(&object.key)).expect("the retention date");
        assert!(until.is_some_and(|until| until > soon && until < late), "{} locked until {until:?}", object.key);
    }

    let deleted = primary.agent(&["delete", "retain", "1", "--confirm", "--json"]);
    assert_success("delete retain 1", &deleted);
    let report: serde_json::Value = serde_json::from_slice(&deleted.stdout).expect("delete --json");
    assert_eq!(report["backups"].as_array().map(Vec::len), Some(0), "nothing locked is deleted: {report}");
    assert_eq!(report["wal"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(report["locked"][0]["name"], first.name.as_str(), "{report}");
    let until = report["locked"][0]["until"].as_str().expect("until");
    assert!(chrono::DateTime::parse_from_rfc3339(until).is_ok_and(|until| until > soon), "{until}");
    let text = primary.agent(&["delete", "retain", "1"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("keep {}: locked until", first.name)), "{text}");
    let listed = primary.agent(&["backup-list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("backup-list --json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "both backups are still listed: {listed}");
}
