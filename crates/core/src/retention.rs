//! Retention and garbage collection: which backups and WAL files a policy removes, computed as
//! a [`DeletionPlan`] (pure, printable as a dry run), then applied through the storage trait.
//! `pgec2-agent delete` and the operator's retention both use this module.
//!
//! Rules:
//! - pinned backups are always kept (except by [`Policy::Everything`]);
//! - WAL is removed only below the *WAL boundary*: the start segment of the oldest kept backup
//!   (committed, or uncommitted but younger than the grace period, whose start position is in
//!   its name). Every kept backup can therefore recover to its end and to any later point.
//!   The boundary compares segment numbers on every timeline, so WAL a kept backup could need on
//!   any timeline stays; `.history` files are never removed. With no kept backup, no WAL is
//!   removed.
//! - a plan that would delete every committed backup is refused, except for `everything`;
//! - uncommitted backups are removed only by `garbage`, and only once none of their objects was
//!   written for the grace period, so a running backup is not broken;
//! - a backup is deleted commit marker first, so an interrupted deletion leaves an uncommitted
//!   backup that `garbage` finishes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{self, BackupInfo, BackupName, BackupSet, CatalogError, WalArchive};
use crate::layout::Archive;
use crate::storage::ObjectKey;

/// Default time an uncommitted backup must have been idle before `garbage` removes it: longer
/// than any pause inside a running backup (the agent waits at most one hour for WAL archiving).
pub const DEFAULT_GARBAGE_GRACE: Duration = Duration::from_secs(6 * 3600);

/// What to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Keep the newest `n` unpinned committed backups.
    Retain(usize),
    /// Delete unpinned committed backups older than a backup or a time.
    Before(Boundary),
    /// Delete uncommitted backups idle for the grace period, and WAL below the boundary.
    Garbage,
    /// Delete every backup (pinned too), all WAL and the archive's owner record.
    Everything,
}

/// The boundary of [`Policy::Before`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// Backups that started before this committed backup.
    Backup(String),
    /// Backups that finished before this time.
    Time(DateTime<Utc>),
}

impl Boundary {
    /// A backup name, or an RFC 3339 time.
    pub fn parse(text: &str) -> Self {
        match DateTime::parse_from_rfc3339(text) {
            Ok(time) => Boundary::Time(time.with_timezone(&Utc)),
            Err(_) => Boundary::Backup(text.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("retain 0 would delete every backup: use `delete everything` to empty the archive")]
    RetainNone,
    #[error("this would delete every committed backup ({count}): keep at least one, or use `delete everything`")]
    WouldDeleteEverything { count: usize },
    #[error("backup {0} is not a committed backup: run backup-list to see the backups")]
    NoSuchBackup(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What a policy removes. Printed as the dry run; [`apply`] executes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeletionPlan {
    /// Committed backups to delete, oldest first.
    pub backups: Vec<String>,
    /// Uncommitted backups to delete.
    pub uncommitted: Vec<String>,
    /// WAL file names to delete, oldest first.
    pub wal: Vec<String>,
    /// Committed backups kept.
    pub kept: Vec<String>,
    /// WAL below this segment file name (on any timeline) goes; `None` keeps all WAL.
    pub wal_boundary: Option<String>,
    /// True for `everything`: the archive's owner record goes too.
    pub cluster_identity: bool,
}

impl DeletionPlan {
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty() && self.uncommitted.is_empty() && self.wal.is_empty() && !self.cluster_identity
    }
}

/// Computes what `policy` removes from `backups` and `wal` at time `now`.
pub fn plan(
    policy: &Policy,
    backups: &BackupSet,
    wal: &WalArchive,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<DeletionPlan, RetentionError> {
    if *policy == Policy::Everything {
        return Ok(DeletionPlan {
            backups: backups.committed.iter().map(|backup| backup.name.clone()).collect(),
            uncommitted: backups.uncommitted.iter().map(|backup| backup.name.clone()).collect(),
            wal: wal.all_file_names(),
            cluster_identity: true,
            ..DeletionPlan::default()
        });
    }
    let doomed = doomed_backups(policy, &backups.committed)?;
    if !doomed.is_empty() && doomed.len() == backups.committed.len() {
        return Err(RetentionError::WouldDeleteEverything { count: doomed.len() });
    }
    let (kept, deleted): (Vec<&BackupInfo>, Vec<&BackupInfo>) =
        backups.committed.iter().partition(|backup| !doomed.contains(&backup.name));
    let idle_since = now - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let (garbage, running): (Vec<_>, Vec<_>) =
        backups.uncommitted.iter().partition(|backup| backup.last_modified.is_some_and(|at| at < idle_since));
    let uncommitted: Vec<String> = if *policy == Policy::Garbage {
        garbage.iter().map(|backup| backup.name.clone()).collect()
    } else {
        Vec::new()
    };
    let size = wal.segment_size;
    let running_starts =
        running.iter().filter_map(|backup| BackupName::parse(&backup.name)).map(|name| size.segment_of(name.start_lsn));
    let boundary =
        kept.iter().map(|backup| backup.start_segment()).chain(running_starts).min().filter(|_| !kept.is_empty());
    Ok(DeletionPlan {
        backups: deleted.iter().map(|backup| backup.name.clone()).collect(),
        uncommitted,
        wal: boundary.map(|segment| wal.files_before(segment)).unwrap_or_default(),
        kept: kept.iter().map(|backup| backup.name.clone()).collect(),
        wal_boundary: boundary.map(|segment| size.segment_name(timeline_of_boundary(&kept, segment), segment)),
        cluster_identity: false,
    })
}

fn timeline_of_boundary(kept: &[&BackupInfo], segment: u64) -> u32 {
    kept.iter().find(|backup| backup.start_segment() == segment).map_or(1, |backup| backup.timeline)
}

/// Names of the committed backups `policy` deletes (pinned ones never).
fn doomed_backups(policy: &Policy, committed: &[BackupInfo]) -> Result<Vec<String>, RetentionError> {
    let unpinned = committed.iter().filter(|backup| !backup.permanent);
    let names = match policy {
        Policy::Retain(0) => return Err(RetentionError::RetainNone),
        Policy::Retain(count) => {
            let unpinned: Vec<&BackupInfo> = unpinned.collect();
            let excess = unpinned.len().saturating_sub(*count);
            unpinned[..excess].iter().map(|backup| backup.name.clone()).collect()
        }
        Policy::Before(Boundary::Backup(name)) => {
            let boundary = committed
                .iter()
                .find(|backup| &backup.name == name)
                .ok_or_else(|| RetentionError::NoSuchBackup(name.clone()))?;
            unpinned
                .filter(|backup| backup.start_time < boundary.start_time)
                .map(|backup| backup.name.clone())
                .collect()
        }
        Policy::Before(Boundary::Time(time)) => {
            unpinned.filter(|backup| backup.finish_time < *time).map(|backup| backup.name.clone()).collect()
        }
        Policy::Garbage | Policy::Everything => Vec::new(),
    };
    Ok(names)
}

/// Executes a plan: each backup's commit marker first, then its other objects; uncommitted
/// backups; WAL oldest first; the owner record last.
pub async fn apply(archive: &Archive, backups: &BackupSet, plan: &DeletionPlan) -> Result<(), RetentionError> {
    let layout = &archive.layout;
    for name in &plan.backups {
        let marker = layout.backup_complete(name).map_err(|source| key_error(name, source))?;
        catalog::delete_objects(archive, vec![marker.clone()]).await?;
        let rest = backup_objects(backups, name).into_iter().filter(|key| *key != marker).collect();
        catalog::delete_objects(archive, rest).await?;
    }
    for name in &plan.uncommitted {
        catalog::delete_objects(archive, backup_objects(backups, name)).await?;
    }
    let wal = plan.wal.iter().map(|name| layout.wal_file(name).map_err(|source| key_error(name, source)));
    catalog::delete_objects(archive, wal.collect::<Result<_, _>>()?).await?;
    if plan.cluster_identity {
        let identity = layout.cluster_identity().map_err(|source| key_error("cluster.json", source))?;
        catalog::delete_objects(archive, vec![identity]).await?;
    }
    Ok(())
}

fn backup_objects(backups: &BackupSet, name: &str) -> Vec<ObjectKey> {
    backups.objects.get(name).map(|metas| metas.iter().map(|meta| meta.key.clone()).collect()).unwrap_or_default()
}

fn key_error(name: &str, source: crate::storage::StorageError) -> RetentionError {
    RetentionError::Catalog(CatalogError::Storage { action: "name", key: name.to_string(), source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::catalog::{UncommittedBackup, load_wal_archive, put_json, scan_backups};
    use crate::layout::ArchiveLayout;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::{ObjectMeta, PutMode};
    use crate::wal::{Lsn, SegmentSize};

    const SEGMENT: u64 = 16 * 1024 * 1024;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_769_860_800 + seconds, 0).single().expect("time")
    }

    fn backup(start_segment: u64, permanent: bool) -> BackupInfo {
        let start_lsn = Lsn(start_segment * SEGMENT + 0x28);
        BackupInfo {
            name: BackupName::new(at(start_segment as i64 * 100), 1, start_lsn).to_string(),
            start_time: at(start_segment as i64 * 100),
            finish_time: at(start_segment as i64 * 100 + 50),
            start_lsn,
            finish_lsn: Lsn(start_segment * SEGMENT + 0x1000),
            timeline: 1,
            pg_version: 150000,
            system_identifier: 42,
            data_bytes: 1,
            stored_bytes: 1,
            permanent,
            wal_segment_size: SEGMENT,
            next_xid: None,
            annotations: Default::default(),
            format: 1,
        }
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
        BackupSet { committed, uncommitted, objects: Default::default() }
    }

    const GRACE: Duration = DEFAULT_GARBAGE_GRACE;

    #[test]
    fn retain_keeps_the_newest_and_the_pinned_and_the_wal_they_need() {
        let backups = set(vec![backup(2, true), backup(4, false), backup(6, false), backup(8, false)], vec![]);
        let plan = plan(&Policy::Retain(2), &backups, &wal(1..10), at(10_000), GRACE).expect("plan");
        assert_eq!(plan.backups, vec![backups.committed[1].name.clone()]);
        assert_eq!(plan.kept.len(), 3);
        assert_eq!(plan.wal, vec!["000000010000000000000001"], "the pinned backup's WAL stays");
        assert_eq!(plan.wal_boundary.as_deref(), Some("000000010000000000000002"));
    }

    #[test]
    fn wal_below_the_oldest_kept_backup_goes_but_history_files_stay() {
        let backups = set(vec![backup(2, false), backup(4, false), backup(6, false)], vec![]);
        let plan = plan(&Policy::Retain(2), &backups, &wal(1..10), at(10_000), GRACE).expect("plan");
        assert_eq!(plan.wal, vec!["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"]);
        assert!(plan.wal.iter().all(|name| !name.ends_with(".history")));
    }

    #[test]
    fn a_running_backup_keeps_the_wal_it_needs_and_survives_garbage() {
        let running_name = BackupName::new(at(0), 1, Lsn(3 * SEGMENT)).to_string();
        let running = UncommittedBackup { name: running_name, last_modified: Some(at(9_000)), objects: 3, bytes: 10 };
        let abandoned = UncommittedBackup { name: "base_x".into(), last_modified: Some(at(0)), objects: 3, bytes: 10 };
        let backups = set(vec![backup(6, false)], vec![running, abandoned]);
        let plan = plan(&Policy::Garbage, &backups, &wal(1..10), at(9_000 + 21_540), GRACE).expect("plan");
        assert_eq!(plan.uncommitted, vec!["base_x"]);
        assert_eq!(plan.wal, vec!["000000010000000000000001", "000000010000000000000002"]);
    }

    #[test]
    fn deleting_every_backup_is_refused_unless_it_is_everything() {
        let backups = set(vec![backup(2, false), backup(4, false)], vec![]);
        let before_all = Policy::Before(Boundary::parse("2100-01-01T00:00:00Z"));
        assert!(matches!(
            plan(&before_all, &backups, &wal(1..5), at(0), GRACE),
            Err(RetentionError::WouldDeleteEverything { .. })
        ));
        assert!(matches!(
            plan(&Policy::Retain(0), &backups, &wal(1..5), at(0), GRACE),
            Err(RetentionError::RetainNone)
        ));
        let everything = plan(&Policy::Everything, &backups, &wal(1..5), at(0), GRACE).expect("plan");
        assert_eq!((everything.backups.len(), everything.wal.len()), (2, 5));
        assert!(everything.cluster_identity);
    }

    #[test]
    fn before_a_backup_name_deletes_only_older_unpinned_backups() {
        let backups = set(vec![backup(2, false), backup(4, true), backup(6, false), backup(8, false)], vec![]);
        let name = backups.committed[2].name.clone();
        let plan = plan(&Policy::Before(Boundary::parse(&name)), &backups, &wal(1..10), at(0), GRACE).expect("plan");
        assert_eq!(plan.backups, vec![backups.committed[0].name.clone()]);
        assert_eq!(plan.wal_boundary.as_deref(), Some("000000010000000000000004"));
        assert!(matches!(
            super::plan(&Policy::Before(Boundary::parse("base_nope")), &backups, &wal(1..10), at(0), GRACE),
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
            let complete = layout.backup_complete(&info.name).expect("key");
            put_json(&archive, &complete, &info, PutMode::CreateNew).await.expect("complete");
        }
        for segment in 1..6 {
            let key = layout.wal_file(&SegmentSize::default().segment_name(1, segment)).expect("key");
            archive.storage.put(&key, bytes::Bytes::from_static(b"w"), PutMode::CreateNew).await.expect("wal");
        }
        let backups = scan_backups(&archive).await.expect("scan");
        let wal = load_wal_archive(&archive, backups.segment_size()).await.expect("wal");
        let plan = plan(&Policy::Retain(1), &backups, &wal, Utc::now(), GRACE).expect("plan");
        apply(&archive, &backups, &plan).await.expect("apply");
        let after = scan_backups(&archive).await.expect("scan");
        assert_eq!(after.committed.iter().map(|b| b.name.clone()).collect::<Vec<_>>(), plan.kept);
        assert!(after.uncommitted.is_empty(), "no leftovers: {:?}", after.uncommitted);
        let wal_after = load_wal_archive(&archive, backups.segment_size()).await.expect("wal");
        assert_eq!(wal_after.segments[&1].keys().copied().collect::<Vec<_>>(), vec![4, 5]);
    }
}
