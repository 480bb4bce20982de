//! The retention the operator applies after each backup (`policy::archive::apply_retention`)
//! against a real file store: it honours the leases of running restores and standbys, removes
//! them once expired, a damaged backup neither stops it nor is deleted by it, and a snapshot
//! backup whose snapshot is locked (on the local cloud) stays until the lock ends.

#[path = "../../core/tests/catalog_support/mod.rs"]
mod catalog_support;

use catalog_support::*;
use chrono::Utc;
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{BackupPolicy, PostgresHost};
use pgec2_core::catalog::{self, BackupInfo};
use pgec2_core::layout::Archive;
use pgec2_core::leases;
use pgec2_operator::cloud::local::{LocalCloud, LocalCloudConfig};
use pgec2_operator::cloud::{Cloud, HostInstance, InstanceState, SnapshotLock, SnapshotRequest};
use pgec2_operator::policy::archive;

/// A local cloud in its own scratch directory (its agent binary a stand-in: no host is launched).
fn local_cloud(dir: &std::path::Path) -> LocalCloud {
    let agent = dir.join("pgec2-agent");
    std::fs::write(&agent, b"#!/bin/sh\n").expect("agent stand-in");
    LocalCloud::new(LocalCloudConfig::new(dir.join("state"), agent)).expect("local cloud")
}

/// A cloud for policies that lock no snapshots: never asked.
fn no_cloud() -> LocalCloud {
    local_cloud(&tempfile::tempdir().expect("temp dir").keep())
}

/// A policy keeping one backup, a host under it, and the host's archive with three backups and WAL.
async fn archive_with_three_backups() -> (tempfile::TempDir, BackupPolicy, PostgresHost, Archive, Vec<BackupInfo>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = policy("nightly").local(dir.path().to_str().expect("utf-8")).keep(1).build();
    let host = host("orders").policy("nightly").build();
    let store = pgec2_operator::archive::open(&policy, &host).await.expect("open the host's archive");
    let infos = write_committed(&store, &[2, 4, 6]).await;
    write_wal(&store, 1..9).await;
    (dir, policy, host, store, infos)
}

#[tokio::test]
async fn the_operators_retention_keeps_what_a_live_lease_needs_until_it_expires() {
    let (_dir, policy, host, store, infos) = archive_with_three_backups().await;
    let lease = take_lease(&store, &infos[0], 2, Utc::now()).await;

    archive::apply_retention(&policy, &host, &no_cloud()).await.expect("retention");
    assert_eq!(committed_names(&store).await, vec![infos[0].name.clone(), infos[2].name.clone()]);
    assert_eq!(wal_segments(&store).await, (2..9).collect::<Vec<_>>(), "the restore's WAL stays");

    let mut expired = lease.clone();
    expired.expires_at = Utc::now() - chrono::Duration::seconds(1);
    leases::write(&store, &expired).await.expect("expire the lease");
    archive::apply_retention(&policy, &host, &no_cloud()).await.expect("retention");
    assert_eq!(committed_names(&store).await, vec![infos[2].name.clone()]);
    assert_eq!(wal_segments(&store).await, (6..9).collect::<Vec<_>>());
    assert!(leases::load(&store).await.expect("leases").leases.is_empty(), "the expired lease was removed");
}

#[tokio::test]
async fn a_damaged_backup_neither_stops_the_operators_retention_nor_is_deleted_by_it() {
    let (_dir, policy, host, store, infos) = archive_with_three_backups().await;
    let marker = store.layout.backup_complete(&infos[0].name).expect("key");
    store
        .storage
        .put(&marker, bytes::Bytes::from_static(b"{broken"), pgec2_core::storage::PutMode::Overwrite)
        .await
        .expect("corrupt");

    archive::apply_retention(&policy, &host, &no_cloud()).await.expect("retention despite a damaged backup");
    let backups = catalog::scan_backups(&store).await.expect("scan");
    assert_eq!(backups.committed.iter().map(|b| b.name.clone()).collect::<Vec<_>>(), vec![infos[2].name.clone()]);
    assert_eq!(backups.damaged.len(), 1, "the damaged backup is kept");
    assert_eq!(wal_segments(&store).await, (2..9).collect::<Vec<_>>(), "with the WAL it would need");
}

#[tokio::test]
async fn a_locked_snapshot_backup_keeps_its_catalog_entry_and_wal_until_its_lock_ends_then_goes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = policy("nightly")
        .local(dir.path().join("backups").to_str().expect("utf-8"))
        .keep(1)
        .method(pgec2_api::BackupMethod::Snapshot)
        .snapshot_lock(pgec2_api::ObjectLockMode::Compliance, Some(3))
        .build();
    let host = host("orders").policy("nightly").build();
    let cloud = local_cloud(dir.path());
    let reference = pgec2_operator::cloud::HostRef {
        namespace: "default".into(),
        name: "orders".into(),
        uid: host.metadata.uid.clone().expect("uid"),
    };
    std::fs::create_dir_all(cloud.host_dir(&reference).join("volume/data")).expect("the host's volume");
    let instance = HostInstance {
        instance_id: "local-1".into(),
        volume_id: None,
        state: InstanceState::Running,
        private_ip: None,
        availability_zone: None,
        agent_online: true,
    };
    let store = pgec2_operator::archive::open(&policy, &host).await.expect("open the host's archive");
    let mut infos = Vec::new();
    for start in [2, 4, 6] {
        let mut info = backup_info(start);
        let request =
            SnapshotRequest { host: reference.clone(), policy: "default/nightly".into(), backup: info.name.clone() };
        let snapshot = cloud.snapshot_volume(&instance, &request).await.expect("snapshot");
        info.kind = catalog::BackupKind::Snapshot;
        info.snapshot_id = Some(snapshot.snapshot_id);
        write_uncommitted(&store, &info).await;
        commit(&store, &info).await;
        infos.push(info);
    }
    write_wal(&store, 1..9).await;
    let oldest = infos[0].snapshot_id.clone().expect("snapshot id");
    let lock = pgec2_operator::policy::snapshot_lock::snapshot_lock(&policy).expect("the policy locks snapshots");
    assert_eq!(lock, SnapshotLock { mode: pgec2_core::storage::lock::LockMode::Compliance, days: 3 });
    let until = cloud.lock_snapshot(&oldest, &lock).await.expect("lock the oldest snapshot");

    let held = archive::apply_retention(&policy, &host, &cloud).await.expect("retention");
    assert_eq!(
        held.iter().map(|held| (held.name.clone(), held.until)).collect::<Vec<_>>(),
        vec![(infos[0].name.clone(), until)]
    );
    assert_eq!(
        committed_names(&store).await,
        vec![infos[0].name.clone(), infos[2].name.clone()],
        "the locked backup stays listed"
    );
    assert_eq!(wal_segments(&store).await, (2..9).collect::<Vec<_>>(), "with the WAL it replays");
    let refused = cloud.delete_snapshot(&oldest).await.expect_err("the cloud refuses to delete a locked snapshot");
    assert!(refused.to_string().contains("locked until"), "{refused}");

    // The lock ends: the next pass deletes the backup and its WAL.
    let lock_file = cloud.snapshots_root().join(format!("{oldest}.lock"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lock_file).expect("lock file")).expect("json");
    record["until"] = serde_json::json!((Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    std::fs::write(&lock_file, serde_json::to_vec(&record).expect("json")).expect("expire the lock");
    let held = archive::apply_retention(&policy, &host, &cloud).await.expect("retention after the lock");
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(committed_names(&store).await, vec![infos[2].name.clone()]);
    assert_eq!(wal_segments(&store).await, (6..9).collect::<Vec<_>>());
    cloud.delete_snapshot(&oldest).await.expect("an unlocked snapshot can go");
}
