//! Backup snapshots of the aws cloud against a moto server: CreateSnapshot carries the tags
//! that name the host, the policy and the backup, and those tags make it idempotent across an
//! operator restart.

mod aws_support;

use aws_support::{MotoAws, host, until_running};
use pgec2_operator::cloud::{Cloud, SnapshotRequest, tags};

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
