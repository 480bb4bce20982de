//! Plans of every policy, and applying one, against an in-memory store.

use std::sync::Arc;

use chrono::TimeZone;

use super::*;
use crate::catalog::Damaged;
use crate::catalog::{UncommittedBackup, load_wal_archive, put_json, scan_backups};
use crate::layout::Archive;
use crate::layout::ArchiveLayout;
use crate::leases::{Lease, LeaseKind, LeaseSet};
use crate::storage::memory::MemoryStorage;
use crate::storage::{ObjectKey, ObjectMeta, PutMode};
use crate::wal::{Lsn, SegmentSize};

const SEGMENT: u64 = 16 * 1024 * 1024;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_769_860_800 + seconds, 0).single().expect("time")
}

fn backup(start_segment: u64, permanent: bool) -> BackupInfo {
    let builder = BackupInfo::builder().times(at(start_segment as i64 * 100), at(start_segment as i64 * 100 + 50));
    let builder = builder.lsns(Lsn(start_segment * SEGMENT + 0x28), Lsn(start_segment * SEGMENT + 0x1000));
    let builder = builder.system_identifier(42).bytes(1, 1);
    if permanent { builder.permanent() } else { builder }.build()
}

fn wal(segments: std::ops::Range<u64>) -> WalArchive {
    let size = SegmentSize::default();
    let mut names: Vec<String> = segments.map(|segment| size.segment_name(1, segment)).collect();
    names.push("00000002.history".into());
    let listing = names
        .iter()
        .map(|name| ObjectMeta {
            key: ObjectKey::new(format!("wal/{name}")).expect("key"),
            size: 1,
            last_modified: None,
        })
        .collect();
    WalArchive::from_listing(listing, "wal/", size)
}

fn set(committed: Vec<BackupInfo>, uncommitted: Vec<UncommittedBackup>) -> BackupSet {
    BackupSet { committed, uncommitted, damaged: Vec::new(), objects: Default::default() }
}

static NO_LEASES: LeaseSet = LeaseSet { leases: Vec::new(), damaged: Vec::new() };

#[test]
fn retain_keeps_the_newest_and_the_pinned_and_the_wal_they_need() {
    let backups = set(vec![backup(2, true), backup(4, false), backup(6, false), backup(8, false)], vec![]);
    let plan =
        plan(&Policy::Retain(2), &backups, &wal(1..10), &PlanOptions::new(at(10_000), &NO_LEASES)).expect("plan");
    assert_eq!(plan.backups, vec![backups.committed[1].name.clone()]);
    assert_eq!(plan.kept.len(), 3);
    assert_eq!(plan.wal, vec!["000000010000000000000001"], "the pinned backup's WAL stays");
    assert_eq!(plan.wal_boundary.as_deref(), Some("000000010000000000000002"));
}

#[test]
fn wal_below_the_oldest_kept_backup_goes_but_history_files_stay() {
    let backups = set(vec![backup(2, false), backup(4, false), backup(6, false)], vec![]);
    let plan =
        plan(&Policy::Retain(2), &backups, &wal(1..10), &PlanOptions::new(at(10_000), &NO_LEASES)).expect("plan");
    assert_eq!(plan.wal, vec!["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"]);
    assert!(plan.wal.iter().all(|name| !name.ends_with(".history")));
}

#[test]
fn a_running_backup_keeps_the_wal_it_needs_and_survives_garbage() {
    let running_name = BackupName::new(at(0), 1, Lsn(3 * SEGMENT)).to_string();
    let running = UncommittedBackup { name: running_name, last_modified: Some(at(9_000)), objects: 3, bytes: 10 };
    let abandoned = UncommittedBackup { name: "base_x".into(), last_modified: Some(at(0)), objects: 3, bytes: 10 };
    let backups = set(vec![backup(6, false)], vec![running, abandoned]);
    let plan =
        plan(&Policy::Garbage, &backups, &wal(1..10), &PlanOptions::new(at(9_000 + 21_540), &NO_LEASES)).expect("plan");
    assert_eq!(plan.uncommitted, vec!["base_x"]);
    assert_eq!(plan.wal, vec!["000000010000000000000001", "000000010000000000000002"]);
}

#[test]
fn deleting_every_backup_is_refused_unless_it_is_everything() {
    let backups = set(vec![backup(2, false), backup(4, false)], vec![]);
    let before_all = Policy::Before(Boundary::parse("2100-01-01T00:00:00Z"));
    assert!(matches!(
        plan(&before_all, &backups, &wal(1..5), &PlanOptions::new(at(0), &NO_LEASES)),
        Err(RetentionError::WouldDeleteEverything { .. })
    ));
    assert!(matches!(
        plan(&Policy::Retain(0), &backups, &wal(1..5), &PlanOptions::new(at(0), &NO_LEASES)),
        Err(RetentionError::RetainNone)
    ));
    let everything =
        plan(&Policy::Everything, &backups, &wal(1..5), &PlanOptions::new(at(0), &NO_LEASES)).expect("plan");
    assert_eq!((everything.backups.len(), everything.wal.len()), (2, 5));
    assert!(everything.cluster_identity);
}

#[test]
fn before_a_backup_name_deletes_only_older_unpinned_backups() {
    let backups = set(vec![backup(2, false), backup(4, true), backup(6, false), backup(8, false)], vec![]);
    let name = backups.committed[2].name.clone();
    let plan =
        plan(&Policy::Before(Boundary::parse(&name)), &backups, &wal(1..10), &PlanOptions::new(at(0), &NO_LEASES))
            .expect("plan");
    assert_eq!(plan.backups, vec![backups.committed[0].name.clone()]);
    assert_eq!(plan.wal_boundary.as_deref(), Some("000000010000000000000004"));
    assert!(matches!(
        super::plan(
            &Policy::Before(Boundary::parse("base_nope")),
            &backups,
            &wal(1..10),
            &PlanOptions::new(at(0), &NO_LEASES)
        ),
        Err(RetentionError::NoSuchBackup(_))
    ));
}

#[tokio::test]
async fn applying_a_plan_removes_exactly_the_planned_objects() {
    let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::under("db").expect("layout"));
    let layout = &archive.layout;
    for info in [backup(2, false), backup(4, false)] {
        let part = layout.backup_part(&info.name, 0).expect("key");
        archive.storage.put(&part, bytes::Bytes::from_static(b"x"), PutMode::CreateNew).await.expect("part");
        let manifest = layout.backup_manifest(&info.name).expect("key");
        archive.storage.put(&manifest, bytes::Bytes::from_static(b"m"), PutMode::CreateNew).await.expect("manifest");
        let complete = layout.backup_complete(&info.name).expect("key");
        put_json(&archive, &complete, &info, PutMode::CreateNew).await.expect("complete");
    }
    for segment in 1..6 {
        let key = layout.wal_file(&SegmentSize::default().segment_name(1, segment)).expect("key");
        archive.storage.put(&key, bytes::Bytes::from_static(b"w"), PutMode::CreateNew).await.expect("wal");
    }
    let backups = scan_backups(&archive).await.expect("scan");
    let wal = load_wal_archive(&archive, backups.segment_size()).await.expect("wal");
    let plan = plan(&Policy::Retain(1), &backups, &wal, &PlanOptions::new(Utc::now(), &NO_LEASES)).expect("plan");
    apply(&archive, &backups, &plan).await.expect("apply");
    let after = scan_backups(&archive).await.expect("scan");
    assert_eq!(after.committed.iter().map(|b| b.name.clone()).collect::<Vec<_>>(), plan.kept);
    assert!(after.uncommitted.is_empty(), "no leftovers: {:?}", after.uncommitted);
    let wal_after = load_wal_archive(&archive, backups.segment_size()).await.expect("wal");
    assert_eq!(wal_after.segments[&1].keys().copied().collect::<Vec<_>>(), vec![4, 5]);
}

fn options(now: DateTime<Utc>, leases: &LeaseSet) -> PlanOptions<'_> {
    PlanOptions::new(now, leases)
}

fn restore_lease(backup: &BackupInfo, wal_from: u64, now: DateTime<Utc>) -> Lease {
    let size = SegmentSize::default();
    Lease::new(LeaseKind::Restore, "db2", "/data", &backup.name, size.segment_name(1, wal_from), SEGMENT, now)
}

#[test]
fn a_grace_period_below_the_floor_is_refused() {
    let backups = set(vec![backup(2, false)], vec![]);
    let mut short = options(at(0), &NO_LEASES);
    short.grace = MIN_GARBAGE_GRACE - Duration::from_secs(1);
    let refused = plan(&Policy::Garbage, &backups, &wal(1..5), &short);
    assert!(matches!(refused, Err(RetentionError::GraceTooShort { .. })), "{refused:?}");
    assert!(refused.expect_err("refused").to_string().contains("at least 5m"));
    short.grace = MIN_GARBAGE_GRACE;
    assert!(plan(&Policy::Garbage, &backups, &wal(1..5), &short).is_ok());
}

#[test]
fn a_live_lease_keeps_its_backup_and_wal_and_an_expired_one_does_not() {
    let backups = set(vec![backup(2, false), backup(4, false), backup(6, false)], vec![]);
    let now = at(10_000);
    let leases = LeaseSet { leases: vec![restore_lease(&backups.committed[0], 3, now)], damaged: Vec::new() };
    let held = plan(&Policy::Retain(1), &backups, &wal(1..10), &options(now, &leases)).expect("plan");
    assert_eq!(held.backups, vec![backups.committed[1].name.clone()], "the leased backup stays");
    assert_eq!(held.wal, vec!["000000010000000000000001"], "WAL from the backup's start stays");
    assert_eq!(held.held_by.len(), 1);
    assert!(held.leases.is_empty());

    let mut copying_done = leases.clone();
    copying_done.leases[0].backup_needed = false;
    let wal_only = plan(&Policy::Retain(1), &backups, &wal(1..10), &options(now, &copying_done)).expect("plan");
    assert_eq!(wal_only.backups.len(), 2, "once copied, the backup may go");
    assert_eq!(wal_only.wal, vec!["000000010000000000000001", "000000010000000000000002"], "WAL from 3 on stays");

    let later = now + chrono::Duration::hours(25);
    let expired = plan(&Policy::Retain(1), &backups, &wal(1..10), &options(later, &leases)).expect("plan");
    assert_eq!(expired.backups.len(), 2);
    assert_eq!(expired.wal.len(), 5, "an expired lease protects nothing");
    let garbage = plan(&Policy::Garbage, &backups, &wal(1..10), &options(later, &leases)).expect("plan");
    assert_eq!(garbage.leases, vec![leases.leases[0].id.clone()], "garbage removes the expired lease");
}

#[test]
fn everything_is_refused_while_a_lease_is_live_unless_leases_are_ignored() {
    let backups = set(vec![backup(2, false)], vec![]);
    let now = at(0);
    let leases = LeaseSet { leases: vec![restore_lease(&backups.committed[0], 2, now)], damaged: Vec::new() };
    let refused = plan(&Policy::Everything, &backups, &wal(1..5), &options(now, &leases));
    assert!(matches!(refused, Err(RetentionError::LeaseHeld { count: 1, .. })), "{refused:?}");
    let mut forced = options(now, &leases);
    forced.ignore_leases = true;
    let everything = plan(&Policy::Everything, &backups, &wal(1..5), &forced).expect("plan");
    assert_eq!(everything.leases, vec![leases.leases[0].id.clone()]);
}

#[test]
fn a_damaged_backup_is_kept_with_its_wal_until_it_is_named() {
    let mut backups = set(vec![backup(4, false), backup(6, false)], vec![]);
    let damaged_name = BackupName::new(at(0), 1, Lsn(2 * SEGMENT)).to_string();
    let key = format!("backups/{damaged_name}/complete.json");
    backups.damaged.push(Damaged { name: damaged_name.clone(), key, reason: "checksum mismatch".into() });
    let now = at(10_000);
    let kept = plan(&Policy::Garbage, &backups, &wal(1..10), &options(now, &NO_LEASES)).expect("plan");
    assert!(kept.damaged.is_empty());
    assert_eq!(kept.kept_damaged.len(), 1);
    assert_eq!(kept.wal, vec!["000000010000000000000001"], "the damaged backup's WAL stays");
    let retained = plan(&Policy::Retain(1), &backups, &wal(1..10), &options(now, &NO_LEASES)).expect("plan");
    assert!(retained.damaged.is_empty(), "retention never deletes a damaged backup");

    let named = [damaged_name.clone()];
    let mut naming = options(now, &NO_LEASES);
    naming.damaged = &named;
    let deleted = plan(&Policy::Garbage, &backups, &wal(1..10), &naming).expect("plan");
    assert_eq!(deleted.damaged, vec![damaged_name]);
    assert_eq!(deleted.wal.len(), 3);
    let wrong = [backups.committed[0].name.clone()];
    naming.damaged = &wrong;
    let refused = plan(&Policy::Garbage, &backups, &wal(1..10), &naming);
    assert!(matches!(refused, Err(RetentionError::NotDamaged(_))), "{refused:?}");
}

#[test]
fn an_unreadable_lease_holds_everything_until_it_is_a_lifetime_old() {
    let backups = set(vec![backup(2, false), backup(4, false), backup(6, false)], vec![]);
    let now = at(100_000);
    let damage = Damaged { name: "restore-x".into(), key: "leases/restore-x.json".into(), reason: "bad json".into() };
    let damaged = crate::leases::DamagedLease { id: "restore-x".into(), damage, last_modified: Some(now) };
    let leases = LeaseSet { leases: Vec::new(), damaged: vec![damaged] };
    let held = plan(&Policy::Retain(1), &backups, &wal(1..10), &options(now, &leases)).expect("plan");
    assert!(held.backups.is_empty() && held.wal.is_empty(), "{held:?}");
    assert!(held.held_by[0].contains("leases/restore-x.json"));
    let day_later = now + chrono::Duration::hours(25);
    let released = plan(&Policy::Garbage, &backups, &wal(1..10), &options(day_later, &leases)).expect("plan");
    assert_eq!(released.leases, vec!["restore-x"], "garbage removes it once stale");
    assert_eq!(released.wal.len(), 1);
}
