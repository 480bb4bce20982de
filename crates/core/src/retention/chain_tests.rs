//! Retention never breaks a chain of incremental backups.

use super::*;
use crate::catalog::fixtures::at;
use crate::leases::LeaseSet;
use crate::wal::SegmentSize;

/// A backup starting in `segment`, an incremental when it has a parent.
fn backup(segment: u64, parent: Option<&BackupInfo>) -> BackupInfo {
    let builder = BackupInfo::builder().times(at(segment as i64 * 100), at(segment as i64 * 100 + 50));
    let builder = builder.segments(segment, segment);
    match parent {
        Some(parent) => builder.incremental_of(parent).build(),
        None => builder.build(),
    }
}

/// full1 ← inc1a ← inc1b, full2 ← inc2a.
fn two_chains() -> Vec<BackupInfo> {
    let full1 = backup(2, None);
    let inc1a = backup(3, Some(&full1));
    let inc1b = backup(4, Some(&inc1a));
    let full2 = backup(6, None);
    let inc2a = backup(7, Some(&full2));
    vec![full1, inc1a, inc1b, full2, inc2a]
}

fn plan_for(policy: Policy, committed: Vec<BackupInfo>) -> DeletionPlan {
    let backups = BackupSet { committed, ..BackupSet::default() };
    let listing = Vec::new();
    let wal = WalArchive::from_listing(listing, "wal/", SegmentSize::default());
    let leases = LeaseSet { leases: Vec::new(), damaged: Vec::new() };
    plan(&policy, &backups, &wal, &PlanOptions::new(at(100_000), &leases)).expect("plan")
}

fn names(backups: &[BackupInfo], indexes: &[usize]) -> Vec<String> {
    indexes.iter().map(|&index| backups[index].name.clone()).collect()
}

#[test]
fn retain_counts_full_backups_and_an_incremental_goes_with_its_full() {
    let backups = two_chains();
    assert!(plan_for(Policy::Retain(2), backups.clone()).backups.is_empty(), "two fulls: everything stays");
    let plan = plan_for(Policy::Retain(1), backups.clone());
    assert_eq!(plan.backups, names(&backups, &[0, 1, 2]));
    assert_eq!(plan.kept, names(&backups, &[3, 4]));
}

#[test]
fn a_kept_incremental_keeps_every_ancestor() {
    let backups = two_chains();
    let plan = plan_for(Policy::Before(Boundary::Backup(backups[4].name.clone())), backups.clone());
    assert_eq!(plan.backups, names(&backups, &[0, 1, 2]), "full2 is older than inc2a but inc2a needs it");

    let mut pinned = two_chains();
    pinned[2].permanent = true;
    let plan = plan_for(Policy::Retain(1), pinned.clone());
    assert!(plan.backups.is_empty(), "a pinned incremental keeps its chain: {:?}", plan.backups);
    assert_eq!(plan.wal_boundary.as_deref(), Some("000000010000000000000002"));
}

#[tokio::test]
async fn a_lease_on_an_incremental_taken_after_planning_keeps_its_whole_chain_at_deletion() {
    use std::sync::Arc;

    use crate::catalog::{put_json, scan_backups};
    use crate::layout::{Archive, ArchiveLayout};
    use crate::leases::{self, Lease, LeaseKind};
    use crate::storage::PutMode;
    use crate::storage::memory::MemoryStorage;

    let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::root());
    let chains = two_chains();
    for info in &chains {
        let manifest = archive.layout.backup_manifest(&info.name).expect("key");
        archive.storage.put(&manifest, bytes::Bytes::from_static(b"m"), PutMode::CreateNew).await.expect("manifest");
        let complete = archive.layout.backup_complete(&info.name).expect("key");
        put_json(&archive, &complete, info, PutMode::CreateNew).await.expect("commit");
    }
    let backups = scan_backups(&archive).await.expect("scan");
    let plan = plan_for(Policy::Retain(1), chains.clone());
    assert_eq!(plan.backups, names(&chains, &[0, 1, 2]), "planned without a lease");

    // An incremental push on inc1a takes its lease after the plan was made.
    let size = SegmentSize::default();
    let lease = Lease::new(
        LeaseKind::Backup,
        "db1",
        "/pgdata",
        &chains[1].name,
        size.segment_name(1, 3),
        size.bytes(),
        chrono::Utc::now(),
    );
    leases::write(&archive, &lease).await.expect("lease");
    let applied =
        apply(&archive, &backups, &DeletionPlan { planned_at: chrono::Utc::now(), ..plan }).await.expect("apply");

    let kept: Vec<String> = scan_backups(&archive).await.expect("scan").committed.into_iter().map(|b| b.name).collect();
    assert_eq!(kept, names(&chains, &[0, 1, 3, 4]), "inc1a and the full it builds on stay; inc1b goes");
    let held: Vec<&str> = applied.kept.iter().map(|kept| kept.name.as_str()).collect();
    assert_eq!(held, [chains[0].name.as_str(), chains[1].name.as_str()]);
    assert!(applied.kept[0].reason.contains("backup on db1:/pgdata"), "{:?}", applied.kept);
}
