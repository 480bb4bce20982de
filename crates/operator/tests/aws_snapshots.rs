//! Backup snapshots of the aws cloud against a moto server: CreateSnapshot carries the tags
//! that name the host, the policy and the backup, and those tags make it idempotent across an
//! operator restart; a host restored from a snapshot gets its data volume from CreateVolume
//! with the snapshot, encrypted, in its subnet's zone, tagged as its own, created once. EBS
//! Snapshot Lock, which moto does not implement, is answered by `aws-smithy-mocks` rules in
//! front of moto: the LockSnapshot request carries the policy's mode and days. An answer lost
//! after moto created a snapshot or a restored volume (the operator restarted before it recorded
//! it) leaves exactly one of each after the restart.

mod aws_support;

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::create_snapshot::CreateSnapshotError;
use aws_sdk_ec2::operation::create_volume::CreateVolumeError;
use aws_sdk_ec2::operation::describe_locked_snapshots::DescribeLockedSnapshotsOutput;
use aws_sdk_ec2::operation::lock_snapshot::LockSnapshotOutput;
use aws_sdk_ec2::types::{Filter, LockMode, LockState, LockedSnapshotsInfo};
use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, mock};
use aws_smithy_types::DateTime;
use aws_support::{MotoAws, host, until_running, volume_tag};
use pgec2_operator::cloud::aws::tags::{DATA_ROLE, VOLUME_ROLE};
use pgec2_operator::cloud::{Cloud, SnapshotLock, SnapshotRequest, tags};

#[tokio::test]
async fn a_backup_snapshot_is_tagged_found_again_after_a_restart_and_deleted_once() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let orders = host("orders", "uid-orders-snap");
    cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("launch");
    let running = until_running(&cloud, &orders).await;
    let request = SnapshotRequest {
        host: orders.clone(),
        policy: "shop/hourly".into(),
        backup: "base_20260101T030000Z_000000010000000002000028".into(),
    };

    let taken = cloud.snapshot_volume(&running, &request).await.expect("snapshot");
    assert_eq!(aws.log.count("CreateSnapshotInput"), 1);
    let output = aws.ec2.describe_snapshots().snapshot_ids(&taken.snapshot_id).send().await.expect("describe");
    let snapshot = output.snapshots().first().expect("the snapshot");
    assert_eq!(snapshot.volume_id(), running.volume_id.as_deref());
    let tag = |key: &str| snapshot.tags().iter().find(|tag| tag.key() == Some(key)).and_then(|tag| tag.value());
    assert_eq!(tag(tags::HOST), Some("shop/orders"));
    assert_eq!(tag(tags::UID), Some("uid-orders-snap"));
    assert_eq!(tag(tags::MANAGED_BY), Some(tags::MANAGER));
    assert_eq!(tag(tags::POLICY), Some("shop/hourly"));
    assert_eq!(tag(tags::BACKUP), Some(request.backup.as_str()));

    // An operator restarted between CreateSnapshot and its status write asks again: the
    // snapshot is found by its tags, not created a second time.
    let restarted = aws.cloud();
    let again = restarted.snapshot_volume(&running, &request).await.expect("snapshot again");
    assert_eq!(again.snapshot_id, taken.snapshot_id);
    assert_eq!(aws.log.count("CreateSnapshotInput"), 1, "no second CreateSnapshot");
    let listed = restarted.host_snapshots(&orders).await.expect("list");
    assert_eq!(listed.iter().map(|found| found.snapshot_id.as_str()).collect::<Vec<_>>(), [taken.snapshot_id.as_str()]);
    assert_eq!(listed[0].backup.as_deref(), Some(request.backup.as_str()));
    let described = restarted.describe_snapshot(&taken.snapshot_id).await.expect("describe").expect("exists");
    assert_eq!(described.snapshot_id, taken.snapshot_id);

    restarted.delete_snapshot(&taken.snapshot_id).await.expect("delete");
    restarted.delete_snapshot(&taken.snapshot_id).await.expect("a deleted snapshot is already deleted");
    assert_eq!(restarted.describe_snapshot(&taken.snapshot_id).await.expect("describe"), None);
    assert!(restarted.host_snapshots(&orders).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_host_restored_from_a_snapshot_gets_an_encrypted_tagged_volume_in_its_zone_created_once() {
    let aws = MotoAws::start().await;
    let cloud = aws.cloud();
    let orders = host("orders", "uid-orders-source");
    cloud.launch_host(&aws.launch_request(orders.clone())).await.expect("launch the source");
    let running = until_running(&cloud, &orders).await;
    let request = SnapshotRequest { host: orders, policy: "shop/hourly".into(), backup: "base_1".into() };
    let snapshot = cloud.snapshot_volume(&running, &request).await.expect("snapshot");

    let copy = host("copy", "uid-copy");
    let mut launch = aws.launch_request(copy.clone());
    launch.volume.snapshot_id = Some(snapshot.snapshot_id.clone());
    cloud.launch_host(&launch).await.expect("launch the copy");
    let created = aws.log.create_volumes();
    assert_eq!(created.len(), 1, "one CreateVolume");
    let input = &created[0];
    assert_eq!(input.snapshot_id(), Some(snapshot.snapshot_id.as_str()));
    assert_eq!(input.encrypted(), Some(true), "a restored volume is encrypted");
    assert_eq!(input.kms_key_id(), Some("alias/pgec2-data"));
    assert_eq!(input.availability_zone(), Some(aws.zone.as_str()), "the subnet's zone");
    assert_eq!(input.size(), Some(20));
    assert!(input.client_token().is_some_and(|token| token.contains("uid-copy")), "{input:?}");
    let specification = input.tag_specifications().first().expect("tags");
    let tag = |key: &str| specification.tags().iter().find(|tag| tag.key() == Some(key)).and_then(|tag| tag.value());
    assert_eq!(tag(tags::HOST), Some("shop/copy"));
    assert_eq!(tag(tags::UID), Some("uid-copy"));
    assert_eq!(tag("pgec2.io/restored-from"), Some(snapshot.snapshot_id.as_str()));
    assert_eq!(tag("team"), Some("payments"));

    // The instance adopts that volume: it is attached once the instance runs.
    let restored = until_running(&cloud, &copy).await;
    let volume_id = restored.volume_id.clone().expect("attached");
    let volume = aws.volume(&volume_id).await.expect("the volume");
    assert_eq!(volume.snapshot_id(), Some(snapshot.snapshot_id.as_str()), "the copy's volume is the snapshot's");
    assert_eq!(volume_tag(&volume, tags::UID).as_deref(), Some("uid-copy"));

    // A launch repeated by a restarted operator returns the same host and no second volume.
    let restarted = aws.cloud();
    let again = restarted.launch_host(&launch).await.expect("launch again");
    assert_eq!(again.instance_id, restored.instance_id);
    assert_eq!(aws.log.count("CreateVolumeInput"), 1, "no second volume");
    aws.log.assert_every_request_is_safe();
}

/// LockSnapshot and DescribeLockedSnapshots as EC2 answers them (moto implements neither): a
/// lock in the requested mode for the requested days, read back until `expires`.
fn lock_mocks(expires: i64, state: LockState) -> MockResponseInterceptor {
    let lock = mock!(aws_sdk_ec2::Client::lock_snapshot).then_compute_output(move |input| {
        LockSnapshotOutput::builder()
            .snapshot_id(input.snapshot_id().unwrap_or_default())
            .lock_state(LockState::from(input.lock_mode().map(LockMode::as_str).unwrap_or_default()))
            .set_lock_duration(input.lock_duration())
            .lock_expires_on(DateTime::from_secs(expires))
            .build()
    });
    let describe = mock!(aws_sdk_ec2::Client::describe_locked_snapshots).then_compute_output(move |input| {
        let found = input.snapshot_ids().iter().map(|id| {
            LockedSnapshotsInfo::builder()
                .snapshot_id(id)
                .lock_state(state.clone())
                .lock_expires_on(DateTime::from_secs(expires))
                .build()
        });
        DescribeLockedSnapshotsOutput::builder().set_snapshots(Some(found.collect())).build()
    });
    MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny).with_rule(&lock).with_rule(&describe)
}

#[tokio::test]
async fn a_backup_snapshot_is_locked_in_the_policys_mode_for_its_days_and_the_lock_end_is_read_back() {
    let aws = MotoAws::start().await;
    let orders = host("orders", "uid-orders-lock");
    let running = aws.launched(&orders).await;
    let request = SnapshotRequest { host: orders, policy: "shop/hourly".into(), backup: "base_1".into() };
    let snapshot = aws.cloud().snapshot_volume(&running, &request).await.expect("snapshot");
    let expires = chrono::Utc::now().timestamp() + 30 * 86_400;

    let cloud = aws.cloud_with_mocks(lock_mocks(expires, LockState::Compliance));
    let lock = SnapshotLock { mode: pgec2_core::storage::lock::LockMode::Compliance, days: 30 };
    let until = cloud.lock_snapshot(&snapshot.snapshot_id, &lock).await.expect("lock");
    assert_eq!(until.timestamp(), expires, "the lock's end as EC2 answers it");
    let sent = aws.log.lock_snapshots();
    assert_eq!(sent.len(), 1, "one LockSnapshot");
    assert_eq!(sent[0].snapshot_id(), Some(snapshot.snapshot_id.as_str()));
    assert_eq!(sent[0].lock_mode(), Some(&LockMode::Compliance));
    assert_eq!(sent[0].lock_duration(), Some(30), "the policy's days");
    assert_eq!(sent[0].cool_off_period(), None, "a compliance lock holds at once");
    assert_eq!(sent[0].expiration_date(), None, "a duration, not a date");
    let read = cloud.snapshot_locked_until(&snapshot.snapshot_id).await.expect("read the lock");
    assert_eq!(read.map(|until| until.timestamp()), Some(expires));
    assert_eq!(aws.log.count("DescribeLockedSnapshotsInput"), 1);

    // An expired lock, or one whose end has passed, holds nothing.
    let expired = aws.cloud_with_mocks(lock_mocks(expires, LockState::Expired));
    assert_eq!(expired.snapshot_locked_until(&snapshot.snapshot_id).await.expect("read"), None);
    let past = aws.cloud_with_mocks(lock_mocks(chrono::Utc::now().timestamp() - 60, LockState::Governance));
    assert_eq!(past.snapshot_locked_until(&snapshot.snapshot_id).await.expect("read"), None);
}

/// A rule that lets `operation`'s request reach moto and then loses its answer, as an operator
/// that crashed (or timed out) right after the call did: moto has done the work, the caller
/// never hears of it.
fn answer_lost(rule: aws_smithy_mocks::Rule) -> MockResponseInterceptor {
    MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny).with_rule(&rule)
}

fn lost() -> ErrorMetadata {
    ErrorMetadata::builder().code("RequestTimeout").message("the answer was lost").build()
}

/// The snapshots moto holds for `backup` of the host with `uid`.
async fn snapshots_of_backup(aws: &MotoAws, uid: &str, backup: &str) -> Vec<String> {
    let filter = |key: &str, value: &str| Filter::builder().name(format!("tag:{key}")).values(value).build();
    let output = aws
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(filter(tags::UID, uid))
        .filters(filter(tags::BACKUP, backup))
        .send()
        .await
        .expect("describe snapshots");
    output.snapshots().iter().filter_map(|snapshot| snapshot.snapshot_id().map(str::to_string)).collect()
}

#[tokio::test]
async fn an_operator_restarted_after_create_snapshot_before_its_answer_was_recorded_finds_the_one_snapshot() {
    let aws = MotoAws::start().await;
    let orders = host("orders", "uid-orders-crash");
    let running = aws.launched(&orders).await;
    let request = SnapshotRequest { host: orders, policy: "shop/hourly".into(), backup: "base_crash".into() };

    let rule = mock!(aws_sdk_ec2::Client::create_snapshot).then_error(|| CreateSnapshotError::generic(lost()));
    let crashing = aws.cloud_with_mocks(answer_lost(rule));
    crashing.snapshot_volume(&running, &request).await.expect_err("the CreateSnapshot answer is lost");
    let created = snapshots_of_backup(&aws, "uid-orders-crash", "base_crash").await;
    assert_eq!(created.len(), 1, "EC2 took the snapshot all the same");

    // moto, like any EC2 client without a token, would take a second snapshot if asked again:
    // the restarted operator finds the first by its tags instead.
    let restarted = aws.cloud();
    let found = restarted.snapshot_volume(&running, &request).await.expect("snapshot after the restart");
    assert_eq!(found.snapshot_id, created[0]);
    assert_eq!(aws.log.count("CreateSnapshotInput"), 1, "no second CreateSnapshot");
    assert_eq!(snapshots_of_backup(&aws, "uid-orders-crash", "base_crash").await, created, "neither lost nor doubled");
}

#[tokio::test]
async fn an_operator_restarted_after_create_volume_from_a_snapshot_before_its_answer_was_recorded_makes_one_volume() {
    let aws = MotoAws::start().await;
    let orders = host("orders", "uid-orders-origin");
    let running = aws.launched(&orders).await;
    let request = SnapshotRequest { host: orders, policy: "shop/hourly".into(), backup: "base_1".into() };
    let snapshot = aws.cloud().snapshot_volume(&running, &request).await.expect("snapshot");
    let copy = host("copy", "uid-copy-crash");
    let mut launch = aws.launch_request(copy.clone());
    launch.volume.snapshot_id = Some(snapshot.snapshot_id.clone());

    let launches = aws.log.count("RunInstancesInput");
    let rule = mock!(aws_sdk_ec2::Client::create_volume).then_error(|| CreateVolumeError::generic(lost()));
    let crashing = aws.cloud_with_mocks(answer_lost(rule));
    crashing.launch_host(&launch).await.expect_err("the CreateVolume answer is lost");
    assert_eq!(aws.log.count("CreateVolumeInput"), 1);
    assert_eq!(aws.log.count("RunInstancesInput"), launches, "no instance without its volume");

    let restarted = aws.cloud();
    restarted.launch_host(&launch).await.expect("launch after the restart");
    let restored = until_running(&restarted, &copy).await;
    assert_eq!(aws.log.count("CreateVolumeInput"), 1, "the volume is found by its tags, not created again");
    let volumes = aws
        .ec2
        .describe_volumes()
        .filters(Filter::builder().name(format!("tag:{}", tags::UID)).values("uid-copy-crash").build())
        .filters(Filter::builder().name(format!("tag:{}", VOLUME_ROLE)).values(DATA_ROLE).build())
        .send()
        .await
        .expect("describe volumes");
    let ids: Vec<&str> = volumes.volumes().iter().filter_map(|volume| volume.volume_id()).collect();
    assert_eq!(ids, [restored.volume_id.as_deref().expect("attached")], "exactly one data volume, the host's");
    assert_eq!(volumes.volumes()[0].snapshot_id(), Some(snapshot.snapshot_id.as_str()));
    aws.log.assert_every_request_is_safe();
}

fn throttled() -> ErrorMetadata {
    ErrorMetadata::builder().code("RequestLimitExceeded").message("Request limit exceeded.").build()
}

#[tokio::test]
async fn a_lock_check_or_lock_that_ec2_keeps_throttling_is_an_error_never_an_unlocked_snapshot() {
    let aws = MotoAws::start().await;
    let orders = host("orders", "uid-orders-throttled-lock");
    let running = aws.launched(&orders).await;
    let request = SnapshotRequest { host: orders, policy: "shop/hourly".into(), backup: "base_throttled".into() };
    let snapshot = aws.cloud().snapshot_volume(&running, &request).await.expect("snapshot");

    // Retention reads a lock before deleting: a throttled read must not pass for "no lock".
    let describe = mock!(aws_sdk_ec2::Client::describe_locked_snapshots).then_error(|| {
        aws_sdk_ec2::operation::describe_locked_snapshots::DescribeLockedSnapshotsError::generic(throttled())
    });
    let cloud = aws.cloud_with_mocks(answer_lost(describe));
    let error = cloud.snapshot_locked_until(&snapshot.snapshot_id).await.expect_err("a throttled lock check fails");
    assert!(error.to_string().contains("throttled by ec2"), "the error says EC2 throttled: {error}");

    // A backup commits only after its lock: a lock EC2 keeps refusing is an error to the caller.
    let lock = mock!(aws_sdk_ec2::Client::lock_snapshot)
        .then_error(|| aws_sdk_ec2::operation::lock_snapshot::LockSnapshotError::generic(throttled()));
    let cloud = aws.cloud_with_mocks(answer_lost(lock));
    let wanted = SnapshotLock { mode: pgec2_core::storage::lock::LockMode::Governance, days: 7 };
    let error = cloud.lock_snapshot(&snapshot.snapshot_id, &wanted).await.expect_err("a throttled lock fails");
    assert!(error.to_string().contains("throttled by ec2"), "the error says EC2 throttled: {error}");
    assert!(aws.log.count("LockSnapshotInput") >= 1, "the lock was asked for");
}
