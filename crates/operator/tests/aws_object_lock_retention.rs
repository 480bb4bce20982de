//! The operator's retention over an S3 Object Lock bucket (moto) whose HeadObject answers go
//! wrong: the check of a backup's retain-until date that keeps getting `503 SlowDown` stops
//! retention with an error naming the object and deletes nothing; an answer that never comes is
//! cut at the stall limit and asked again, and what is locked is kept and reported with its date.

#[path = "../../core/tests/catalog_support/mod.rs"]
mod catalog_support;

use std::sync::Arc;
use std::time::Duration;

use catalog_support::*;
use chrono::Utc;
use pgec2_api::fixtures::policy;
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::storage::Timeouts;
use pgec2_core::storage::fault::{Fault, FaultHandle, FaultInjecting, Operation, Rule};
use pgec2_core::storage::lock::{LockMode, ObjectLock};
use pgec2_core::storage::retry::{RetryPolicy, Retrying};
use pgec2_operator::cloud::local::{LocalCloud, LocalCloudConfig};
use pgec2_operator::policy::archive::apply_retention_to;
use pgec2_storage_s3::{S3Settings, S3Storage};
use pgec2_testkit::MotoServer;

const BUCKET: &str = "pgec2-locked";
const HOST: &str = "shop/orders";
/// An attempt that gets no answer for this long is cut and retried.
const STALL_LIMIT: Duration = Duration::from_millis(500);

/// The archive of `shop/orders` in a locked bucket, through the fault wrapper (seeded rules
/// only) and the retry policy every store call has, with short back-offs.
async fn locked_archive(moto: &MotoServer) -> (Archive, FaultHandle) {
    let lock = ObjectLock { mode: LockMode::Governance, days: 2 };
    let settings =
        S3Settings { endpoint: Some(moto.endpoint()), object_lock: Some(lock), ..S3Settings::new(BUCKET, "pgec2") };
    let s3 = S3Storage::from_sdk_config(&moto.sdk_config().await, settings).expect("s3 store");
    let faulty = FaultInjecting::new(s3);
    let faults = faulty.handle();
    let policy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    };
    let timeouts = Timeouts { operation: STALL_LIMIT, ..Timeouts::default() };
    let storage = Retrying::new(faulty, timeouts, policy);
    (Archive::new(Arc::new(storage), ArchiveLayout::under(HOST).expect("layout")), faults)
}

fn is_commit_marker(key: &str) -> bool {
    key.ends_with("complete.json")
}

#[tokio::test]
async fn retention_deletes_nothing_when_the_retain_until_check_fails_and_keeps_what_a_lost_answer_hid() {
    let moto = MotoServer::start().expect("moto server");
    moto.create_locked_bucket(BUCKET).await.expect("a bucket with Object Lock");
    let (archive, faults) = locked_archive(&moto).await;
    let infos = write_committed(&archive, &[2, 4, 6]).await;
    write_wal(&archive, 1..9).await;
    let keep_one = policy("nightly").s3(BUCKET, Some(&moto.endpoint())).keep(1).build();
    let scratch = tempfile::tempdir().expect("scratch");
    let agent = scratch.path().join("pgec2-agent");
    std::fs::write(&agent, b"#!/bin/sh\n").expect("agent stand-in");
    let cloud = LocalCloud::new(LocalCloudConfig::new(scratch.path().join("state"), agent)).expect("local cloud");
    let all_backups: Vec<String> = infos.iter().map(|info| info.name.clone()).collect();

    // Every HeadObject of a commit marker answers 503 SlowDown: retention cannot tell whether
    // the backups it would delete are locked, so it stops and says which object it could not read.
    faults.add(Rule::new(Fault::Throttle).on(Operation::Head).matching(is_commit_marker));
    let error = apply_retention_to(&archive, HOST, &keep_one, &[], &cloud).await.expect_err("retention stops");
    let message = error.to_string();
    assert!(message.starts_with(&format!("failed to apply retention to the archive of {HOST}")), "{message}");
    assert!(message.contains("read the retention of") && message.contains(&infos[0].name), "{message}");
    assert!(message.contains("SlowDown"), "{message}");
    assert_eq!(committed_names(&archive).await, all_backups, "nothing deleted");
    assert_eq!(wal_segments(&archive).await, (1..9).collect::<Vec<_>>(), "no WAL deleted");
    assert!(faults.calls(Operation::Head) >= 4, "the check was retried before giving up");

    // The answer of the first check never comes: the attempt is cut at the stall limit and
    // asked again, and both locked backups (with their WAL) are kept and reported with their
    // retain-until dates.
    faults.clear();
    let injected = faults.injected();
    let lost = Rule::new(Fault::Stall(STALL_LIMIT * 6)).on(Operation::Head).matching(is_commit_marker).times(1);
    faults.add(lost);
    let held = apply_retention_to(&archive, HOST, &keep_one, &[], &cloud).await.expect("retention");
    assert_eq!(faults.injected(), injected + 1, "one answer was lost");
    let (soon, late) = (Utc::now() + chrono::Duration::hours(47), Utc::now() + chrono::Duration::hours(49));
    let reported: Vec<&str> = held.iter().map(|entry| entry.name.as_str()).collect();
    assert_eq!(&reported[..2], [infos[0].name.as_str(), infos[1].name.as_str()], "{held:?}");
    assert!(held.iter().all(|entry| entry.until > soon && entry.until < late), "{held:?}");
    assert_eq!(committed_names(&archive).await, all_backups, "locked backups stay listed");
    assert_eq!(wal_segments(&archive).await, (1..9).collect::<Vec<_>>(), "with the WAL they replay");
}
