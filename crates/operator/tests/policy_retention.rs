//! The retention the operator applies after each backup (`policy::archive::apply_retention`)
//! against a real file store: it honours the leases of running restores and standbys, removes
//! them once expired, and a damaged backup neither stops it nor is deleted by it.

#[path = "../../core/tests/catalog_support/mod.rs"]
mod catalog_support;

use catalog_support::*;
use chrono::Utc;
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{BackupPolicy, PostgresHost};
use pgec2_core::catalog::{self, BackupInfo};
use pgec2_core::layout::Archive;
use pgec2_core::leases;
use pgec2_operator::policy::archive;

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

    archive::apply_retention(&policy, &host).await.expect("retention");
    assert_eq!(committed_names(&store).await, vec![infos[0].name.clone(), infos[2].name.clone()]);
    assert_eq!(wal_segments(&store).await, (2..9).collect::<Vec<_>>(), "the restore's WAL stays");

    let mut expired = lease.clone();
    expired.expires_at = Utc::now() - chrono::Duration::seconds(1);
    leases::write(&store, &expired).await.expect("expire the lease");
    archive::apply_retention(&policy, &host).await.expect("retention");
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

    archive::apply_retention(&policy, &host).await.expect("retention despite a damaged backup");
    let backups = catalog::scan_backups(&store).await.expect("scan");
    assert_eq!(backups.committed.iter().map(|b| b.name.clone()).collect::<Vec<_>>(), vec![infos[2].name.clone()]);
    assert_eq!(backups.damaged.len(), 1, "the damaged backup is kept");
    assert_eq!(wal_segments(&store).await, (2..9).collect::<Vec<_>>(), "with the WAL it would need");
}
