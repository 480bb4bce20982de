//! Backup snapshots of the aws cloud against a moto server: CreateSnapshot carries the tags
//! that name the host, the policy and the backup, and those tags make it idempotent across an
//! operator restart; a host restored from a snapshot gets its data volume from CreateVolume
//! with the snapshot, encrypted, in its subnet's zone, tagged as its own, created once.

mod aws_support;

use aws_support::{MotoAws, host, until_running, volume_tag};
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
