//! Retention and garbage cleanup against a real store (the file store here; S3 through moto in
//! `pgec2-storage-s3`'s `retention_on_s3.rs`, with the same scenarios) never race a writer or a reader, and one damaged object damages one entry:
//! - an uncommitted backup written to within the grace period, or committed or written to
//!   between the plan and the delete, is kept;
//! - a live lease keeps the backup a restore copies and the WAL it needs; an expired one does not;
//! - a corrupt commit marker or history file is listed as damaged with its key, and the other
//!   backups stay listable, restorable and subject to retention as usual.

mod catalog_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use catalog_support::scenarios::*;
use catalog_support::*;
use chrono::Utc;
use pgec2_core::catalog::{self, RecoveryTarget, TimelineHistory, plan_restore};
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::leases::{self, LeaseSet};
use pgec2_core::recovery_window::{TimelineRequest, verify_continuity};
use pgec2_core::retention::{self, DEFAULT_GARBAGE_GRACE, PlanOptions, Policy};
use pgec2_core::storage::local::LocalStorage;
use pgec2_core::storage::{PutMode, Storage, Timeouts};
use pgec2_core::wal::SegmentSize;

fn file_archive() -> (tempfile::TempDir, Archive) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(dir.path(), Timeouts::default()).expect("file store");
    (dir, Archive::new(Arc::new(storage), ArchiveLayout::under("db").expect("layout")))
}

/// A file archive with one committed backup and one uncommitted backup last written 7 hours ago.
async fn with_abandoned_backup() -> (tempfile::TempDir, Archive, pgec2_core::catalog::BackupInfo) {
    let (dir, archive) = file_archive();
    write_committed(&archive, &[2]).await;
    let abandoned = backup_info(4);
    write_uncommitted(&archive, &abandoned).await;
    age_files(&dir.path().join("db/backups").join(&abandoned.name), SEVEN_HOURS);
    (dir, archive, abandoned)
}

#[tokio::test]
async fn garbage_keeps_an_uncommitted_backup_written_within_the_grace_period() {
    let (_dir, archive) = file_archive();
    write_committed(&archive, &[2]).await;
    let running = backup_info(4);
    write_uncommitted(&archive, &running).await;
    let (plan, _) = run(&archive, Policy::Garbage, Utc::now()).await;
    assert!(plan.uncommitted.is_empty(), "{plan:?}");
    assert_eq!(backup_objects(&archive, &running.name).await, 2);
}

#[tokio::test]
async fn garbage_removes_a_backup_abandoned_for_longer_than_the_grace_period() {
    let (_dir, archive, abandoned) = with_abandoned_backup().await;
    let (plan, applied) = run(&archive, Policy::Garbage, Utc::now()).await;
    assert_eq!(plan.uncommitted, vec![abandoned.name.clone()]);
    assert!(applied.kept.is_empty(), "{applied:?}");
    assert_eq!(backup_objects(&archive, &abandoned.name).await, 0);
}

#[tokio::test]
async fn garbage_keeps_a_backup_committed_between_the_plan_and_the_delete_on_the_file_store() {
    let (_dir, archive) = file_archive();
    commit_between_plan_and_delete(&archive).await;
}

#[tokio::test]
async fn garbage_keeps_a_backup_written_to_between_the_plan_and_the_delete() {
    let (_dir, archive, slow) = with_abandoned_backup().await;
    let backups = catalog::scan_backups(&archive).await.expect("scan");
    let plan = garbage_races(&archive, &slow, Utc::now()).await;
    let part = archive.layout.backup_part(&slow.name, 1).expect("key");
    archive.storage.put(&part, Bytes::from_static(b"late part"), PutMode::CreateNew).await.expect("part");
    let applied = retention::apply(&archive, &backups, &plan).await.expect("apply");
    assert!(applied.kept[0].reason.contains("written after"), "{applied:?}");
    assert_eq!(backup_objects(&archive, &slow.name).await, 3);
}

#[tokio::test]
async fn a_grace_period_below_the_floor_is_refused() {
    let (_dir, archive) = file_archive();
    write_committed(&archive, &[2]).await;
    let (backups, wal) = read(&archive).await;
    let leases = LeaseSet::default();
    let options = PlanOptions { grace: Duration::ZERO, ..PlanOptions::new(Utc::now(), &leases) };
    let refused = retention::plan(&Policy::Garbage, &backups, &wal, &options).expect_err("grace 0 accepted");
    assert!(refused.to_string().starts_with("grace period 0ns is below the minimum"), "{refused}");
    assert!(DEFAULT_GARBAGE_GRACE > retention::MIN_GARBAGE_GRACE);
}

#[tokio::test]
async fn retention_during_a_running_restore_keeps_its_backup_and_wal_until_the_lease_expires() {
    let (_dir, archive) = file_archive();
    retention_honours_a_lease_until_it_expires(&archive).await;
}

#[tokio::test]
async fn a_lease_taken_between_the_plan_and_the_delete_keeps_what_it_needs() {
    let (_dir, archive) = file_archive();
    let infos = write_committed(&archive, &[2, 4, 6]).await;
    write_wal(&archive, 1..9).await;
    let (backups, wal) = read(&archive).await;
    let none = LeaseSet::default();
    let plan = retention::plan(&Policy::Retain(1), &backups, &wal, &PlanOptions::new(Utc::now(), &none)).expect("plan");
    assert_eq!(plan.backups.len(), 2);
    take_lease(&archive, &infos[1], 4, Utc::now()).await;
    let applied = retention::apply(&archive, &backups, &plan).await.expect("apply");
    assert!(applied.kept.iter().any(|kept| kept.name == infos[1].name), "{applied:?}");
    assert_eq!(committed_names(&archive).await, vec![infos[1].name.clone(), infos[2].name.clone()]);
    assert_eq!(wal_segments(&archive).await, (4..9).collect::<Vec<_>>());
}

#[tokio::test]
async fn everything_is_refused_while_a_restore_holds_a_lease() {
    let (_dir, archive) = file_archive();
    let infos = write_committed(&archive, &[2]).await;
    take_lease(&archive, &infos[0], 2, Utc::now()).await;
    let (backups, wal) = read(&archive).await;
    let leases = leases::load(&archive).await.expect("leases");
    let refused = retention::plan(&Policy::Everything, &backups, &wal, &PlanOptions::new(Utc::now(), &leases))
        .expect_err("everything under a lease");
    assert!(refused.to_string().contains("--ignore-leases"), "{refused}");
    let forced = PlanOptions { ignore_leases: true, ..PlanOptions::new(Utc::now(), &leases) };
    let plan = retention::plan(&Policy::Everything, &backups, &wal, &forced).expect("plan");
    retention::apply(&archive, &backups, &plan).await.expect("apply");
    assert!(archive.storage.list("db/").await.expect("list").is_empty(), "everything went, leases too");
}

#[tokio::test]
async fn one_corrupt_commit_marker_damages_only_its_backup() {
    let (dir, archive) = file_archive();
    let infos = write_committed(&archive, &[2, 4, 6]).await;
    write_wal(&archive, 1..9).await;
    let marker = dir.path().join("db/backups").join(&infos[1].name).join("complete.json");
    let mut stored = std::fs::read(&marker).expect("read marker");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x20;
    std::fs::write(&marker, stored).expect("corrupt marker");

    let backups = catalog::scan_backups(&archive).await.expect("one damaged marker does not fail the scan");
    assert_eq!(
        backups.committed.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        vec![infos[0].name.clone(), infos[2].name.clone()]
    );
    assert_eq!(backups.damaged.len(), 1);
    assert_eq!(backups.damaged[0].key, format!("db/backups/{}/complete.json", infos[1].name));
    assert!(backups.uncommitted.is_empty(), "a damaged backup is not garbage");
    let wal = catalog::load_wal_archive(&archive, backups.segment_size()).await.expect("wal");
    let restore =
        plan_restore(&backups.committed, &wal, "LATEST", &RecoveryTarget::EndOfArchive, TimelineRequest::Latest);
    assert_eq!(restore.expect("the other backups restore").backup.name, infos[2].name);

    let (plan, _) = run(&archive, Policy::Retain(1), Utc::now()).await;
    assert_eq!(plan.backups, vec![infos[0].name.clone()]);
    assert_eq!(plan.kept_damaged.len(), 1);
    assert_eq!(wal_segments(&archive).await, (4..9).collect::<Vec<_>>(), "the damaged backup's WAL stays");
    let (plan, _) = run(&archive, Policy::Garbage, Utc::now()).await;
    assert!(plan.damaged.is_empty());
    assert_eq!(backup_objects(&archive, &infos[1].name).await, 3, "garbage leaves a damaged backup alone");

    let (backups, wal) = read(&archive).await;
    let leases = LeaseSet::default();
    let named = [infos[1].name.clone()];
    let options = PlanOptions { damaged: &named, ..PlanOptions::new(Utc::now(), &leases) };
    let plan = retention::plan(&Policy::Garbage, &backups, &wal, &options).expect("plan");
    retention::apply(&archive, &backups, &plan).await.expect("apply");
    assert_eq!(backup_objects(&archive, &infos[1].name).await, 0, "named, it goes");
}

#[tokio::test]
async fn one_corrupt_history_file_is_listed_as_damaged_and_other_restores_still_plan() {
    let (dir, archive) = file_archive();
    let size = SegmentSize::default();
    let mut on_third = backup_info(7);
    on_third.timeline = 3;
    write_uncommitted(&archive, &on_third).await;
    commit(&archive, &on_third).await;
    write_wal(&archive, 1..9).await;
    for (timeline, segments, history) in
        [(2, 4..9, "1\t0/4000000\tx\n"), (3, 6..9, "1\t0/4000000\tx\n2\t0/6000000\ty\n")]
    {
        for segment in segments {
            let key = archive.layout.wal_file(&size.segment_name(timeline, segment)).expect("key");
            archive.storage.put(&key, Bytes::from_static(b"wal"), PutMode::CreateNew).await.expect("wal");
        }
        let key = archive.layout.wal_file(&format!("{timeline:08X}.history")).expect("key");
        let (sealed, _) = pgec2_core::envelope::seal(history.as_bytes(), Default::default()).expect("seal");
        archive.storage.put(&key, Bytes::from(sealed), PutMode::CreateNew).await.expect("history");
    }
    std::fs::write(dir.path().join("db/wal/00000002.history"), b"not an envelope").expect("corrupt history");

    let backups = catalog::scan_backups(&archive).await.expect("scan");
    let wal = catalog::load_wal_archive(&archive, size).await.expect("one damaged history does not fail the load");
    assert_eq!(wal.damaged_histories[&2].key, "db/wal/00000002.history");
    let history = TimelineHistory::parse(3, "1\t0/4000000\tx\n2\t0/6000000\ty\n").expect("history");
    assert_eq!(wal.history(3), history, "the other history files are read");
    let report = verify_continuity(&backups.committed, &wal);
    assert!(!report.ok);
    assert_eq!(report.damaged_history_files[0].key, "db/wal/00000002.history");
    let plan = plan_restore(&backups.committed, &wal, "LATEST", &RecoveryTarget::EndOfArchive, TimelineRequest::Latest)
        .expect("a restore along timeline 3 does not read 00000002.history");
    assert_eq!(plan.timeline.timeline, 3);
}
