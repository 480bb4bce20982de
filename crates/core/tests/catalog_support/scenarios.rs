//! Retention races written once and run against every store (the file store in core, S3 in
//! `pgec2-storage-s3`).

use std::time::Duration;

use chrono::Utc;
use pgec2_core::catalog;
use pgec2_core::layout::Archive;
use pgec2_core::leases::{self, LeaseSet};
use pgec2_core::retention::{self, PlanOptions, Policy};
use pgec2_core::wal::SegmentSize;

use super::*;

pub const SEVEN_HOURS: Duration = Duration::from_secs(7 * 3600);

/// The archive's backups and WAL listing.
pub async fn read(archive: &Archive) -> (catalog::BackupSet, catalog::WalArchive) {
    let backups = catalog::scan_backups(archive).await.expect("scan");
    let wal = catalog::list_wal_archive(archive, SegmentSize::default()).await.expect("wal");
    (backups, wal)
}

/// Plans `policy` at `now` with the archive's leases and applies it.
pub async fn run(
    archive: &Archive,
    policy: Policy,
    now: chrono::DateTime<Utc>,
) -> (retention::DeletionPlan, retention::Applied) {
    let (backups, wal) = read(archive).await;
    let leases = leases::load(archive).await.expect("leases");
    let plan = retention::plan(&policy, &backups, &wal, &PlanOptions::new(now, &leases)).expect("plan");
    let applied = retention::apply(archive, &backups, &plan).await.expect("apply");
    (plan, applied)
}

pub async fn backup_objects(archive: &Archive, name: &str) -> usize {
    archive.storage.list(&archive.layout.backup_prefix(name)).await.expect("list").len()
}

/// Plans garbage while the backup looks abandoned, then lets `meanwhile` write before applying.
pub async fn garbage_races(
    archive: &Archive,
    backup: &pgec2_core::catalog::BackupInfo,
    now: chrono::DateTime<Utc>,
) -> retention::DeletionPlan {
    let (backups, wal) = read(archive).await;
    let leases = LeaseSet::default();
    let plan = retention::plan(&Policy::Garbage, &backups, &wal, &PlanOptions::new(now, &leases)).expect("plan");
    assert_eq!(plan.uncommitted, vec![backup.name.clone()], "planned as garbage");
    plan
}

pub async fn commit_between_plan_and_delete(archive: &Archive) {
    write_committed(archive, &[2]).await;
    let committing = backup_info(4);
    write_uncommitted(archive, &committing).await;
    let later = Utc::now() + chrono::Duration::from_std(SEVEN_HOURS).expect("duration");
    let backups = catalog::scan_backups(archive).await.expect("scan");
    let plan = garbage_races(archive, &committing, later).await;
    commit(archive, &committing).await;
    let applied = retention::apply(archive, &backups, &plan).await.expect("apply");
    assert_eq!(applied.kept.len(), 1, "{applied:?}");
    assert!(applied.kept[0].reason.contains("committed"), "{applied:?}");
    assert_eq!(backup_objects(archive, &committing.name).await, 3, "every object of the backup is still there");
    assert!(committed_names(archive).await.contains(&committing.name));
}

pub async fn retention_honours_a_lease_until_it_expires(archive: &Archive) {
    let infos = write_committed(archive, &[2, 4, 6]).await;
    write_wal(archive, 1..9).await;
    let now = Utc::now();
    let lease = take_lease(archive, &infos[0], 2, now).await;

    let (plan, _) = run(archive, Policy::Retain(1), now).await;
    assert_eq!(plan.held_by.len(), 1, "{plan:?}");
    assert_eq!(committed_names(archive).await, vec![infos[0].name.clone(), infos[2].name.clone()]);
    assert_eq!(wal_segments(archive).await, (2..9).collect::<Vec<_>>(), "the restore's WAL stays");

    let after_expiry = now + chrono::Duration::hours(25);
    let (plan, _) = run(archive, Policy::Retain(1), after_expiry).await;
    assert!(plan.held_by.is_empty());
    assert_eq!(committed_names(archive).await, vec![infos[2].name.clone()]);
    assert_eq!(wal_segments(archive).await, (6..9).collect::<Vec<_>>());
    let lease_key = archive.layout.lease(&lease.id).expect("key");
    assert!(archive.storage.head(&lease_key).await.expect("head").is_some(), "retain leaves leases alone");
    let (plan, _) = run(archive, Policy::Garbage, after_expiry).await;
    assert_eq!(plan.leases, vec![lease.id.clone()]);
    assert!(archive.storage.head(&lease_key).await.expect("head").is_none(), "garbage removes the expired lease");
}
