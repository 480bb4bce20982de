//! Retention and garbage collection: which backups and WAL files a policy removes, computed as
//! a [`DeletionPlan`] (pure, printable as a dry run), then applied through the storage trait.
//! `pgec2-agent delete` and the operator's retention both use this module.
//!
//! Rules:
//! - pinned backups are always kept (except by [`Policy::Everything`]);
//! - WAL is removed only below the *WAL boundary*: the start segment of the oldest kept backup
//!   (committed, uncommitted but younger than the grace period, or damaged, whose start position
//!   is in its name), or the oldest segment a live lease needs, whichever is older. Every kept
//!   backup can therefore recover to its end and to any later point. The boundary compares
//!   segment numbers on every timeline, so WAL a kept backup could need on any timeline stays;
//!   `.history` files are never removed. With no kept backup, no WAL is removed.
//! - a plan that would delete every committed backup is refused, except for `everything`;
//! - live leases ([`crate::leases`]) keep the backup a restore is copying and the WAL from the
//!   segment it still needs; `everything` is refused while one is live unless told to ignore
//!   them; expired leases are removed by `garbage`;
//! - uncommitted backups are removed only by `garbage`, and only once none of their objects was
//!   written for the grace period (at least [`MIN_GARBAGE_GRACE`]); just before deleting one,
//!   its objects are listed again and its commit marker is read again, and it is kept if it was
//!   committed or written to meanwhile, so a running backup is never broken;
//! - damaged backups (a commit marker that cannot be read) are listed and kept; `garbage`
//!   deletes one only when it is named;
//! - a backup is deleted commit marker first, so an interrupted deletion leaves an uncommitted
//!   backup that `garbage` finishes;
//! - chains stay whole: `retain N` counts full backups (an incremental lives as long as the
//!   full backup its chain starts with), and every ancestor of a kept incremental backup is
//!   kept, whatever the policy (see [`keep_ancestors`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{BackupInfo, BackupName, BackupSet, CatalogError, Damaged, WalArchive};
use crate::leases::{Lease, LeaseSet};

mod apply;
pub mod locks;

pub use apply::{Applied, KeptAtDeletion, apply};

/// Default time an uncommitted backup must have been idle before `garbage` removes it: longer
/// than any pause inside a running backup (the agent waits at most one hour for WAL archiving).
pub const DEFAULT_GARBAGE_GRACE: Duration = Duration::from_secs(6 * 3600);

/// The shortest grace period accepted: below it, a backup between two writes (a slow part, a
/// wait for WAL archiving) could be taken for abandoned.
pub const MIN_GARBAGE_GRACE: Duration = Duration::from_secs(5 * 60);

/// What to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Keep the newest `n` unpinned committed backups.
    Retain(usize),
    /// Delete unpinned committed backups older than a backup or a time.
    Before(Boundary),
    /// Delete uncommitted backups idle for the grace period, expired leases, and WAL below the boundary.
    Garbage,
    /// Delete every backup (pinned too), all WAL, every lease and the archive's owner record.
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

/// Everything besides the policy that a plan depends on.
#[derive(Clone, Debug)]
pub struct PlanOptions<'a> {
    pub now: DateTime<Utc>,
    /// How long an uncommitted backup must have been idle to be garbage.
    pub grace: Duration,
    /// The archive's leases, as read just before planning.
    pub leases: &'a LeaseSet,
    /// Damaged backups `garbage` deletes too, each named exactly.
    pub damaged: &'a [String],
    /// `everything` even while leases are live.
    pub ignore_leases: bool,
}

impl<'a> PlanOptions<'a> {
    /// The defaults at `now`: the default grace period, no damaged backup named, leases honoured.
    pub fn new(now: DateTime<Utc>, leases: &'a LeaseSet) -> Self {
        Self { now, grace: DEFAULT_GARBAGE_GRACE, leases, damaged: &[], ignore_leases: false }
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
    #[error(
        "grace period {given:?} is below the minimum of {minimum:?}: a backup still being written could be deleted; \
         use at least 5m (the default is 6h)"
    )]
    GraceTooShort { given: Duration, minimum: Duration },
    #[error("{0} is not a damaged backup: backup-list names the damaged ones, and only those can be named to delete")]
    NotDamaged(String),
    #[error(
        "refusing to delete everything: {lease} still needs the archive ({count} live lease(s)); wait until it expires, \
         or pass --ignore-leases to break the restore or standby that holds it"
    )]
    LeaseHeld { lease: String, count: usize },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What a policy removes. Printed as the dry run; [`apply`] executes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeletionPlan {
    /// Committed backups to delete, oldest first.
    pub backups: Vec<String>,
    /// Uncommitted backups to delete (checked again just before deleting).
    pub uncommitted: Vec<String>,
    /// Damaged backups to delete (only when named, or by `everything`).
    pub damaged: Vec<String>,
    /// WAL file names to delete, oldest first.
    pub wal: Vec<String>,
    /// Committed backups kept.
    pub kept: Vec<String>,
    /// Damaged backups kept (never deleted unless named).
    pub kept_damaged: Vec<Damaged>,
    /// Live leases that kept backups or WAL, described.
    pub held_by: Vec<String>,
    /// Leases to remove: expired ones (or all of them for `everything`).
    pub leases: Vec<String>,
    /// WAL below this segment file name (on any timeline) goes; `None` keeps all WAL.
    pub wal_boundary: Option<String>,
    /// Uncommitted backups whose objects are all older than this are garbage.
    pub garbage_cutoff: Option<DateTime<Utc>>,
    /// True for `everything`: the archive's owner record goes too.
    pub cluster_identity: bool,
    /// The time the plan was made for; [`apply`] judges leases at this time too.
    pub planned_at: DateTime<Utc>,
    /// `everything` planned with leases ignored.
    #[serde(skip)]
    pub ignore_leases: bool,
}

impl DeletionPlan {
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty()
            && self.uncommitted.is_empty()
            && self.damaged.is_empty()
            && self.wal.is_empty()
            && self.leases.is_empty()
            && !self.cluster_identity
    }
}

/// Descriptions of what `leases` keep at `now`: live leases, and unreadable ones that may be.
fn lease_holds(leases: &LeaseSet, now: DateTime<Utc>) -> Vec<String> {
    let live = leases.live(now).map(Lease::describe);
    let unreadable = leases.holding_everything(now).map(|lease| {
        format!("unreadable lease {} ({}), taken to need everything", lease.damage.key, lease.damage.reason)
    });
    live.chain(unreadable).collect()
}

/// Computes what `policy` removes from `backups` and `wal`.
pub fn plan(
    policy: &Policy,
    backups: &BackupSet,
    wal: &WalArchive,
    options: &PlanOptions<'_>,
) -> Result<DeletionPlan, RetentionError> {
    if options.grace < MIN_GARBAGE_GRACE {
        return Err(RetentionError::GraceTooShort { given: options.grace, minimum: MIN_GARBAGE_GRACE });
    }
    let now = options.now;
    let held_by = lease_holds(options.leases, now);
    if *policy == Policy::Everything {
        return plan_everything(backups, wal, options, held_by);
    }
    if let Some(name) = options.damaged.iter().find(|name| !backups.damaged.iter().any(|entry| &entry.name == *name)) {
        return Err(RetentionError::NotDamaged(name.clone()));
    }
    let mut doomed = doomed_backups(policy, &backups.committed)?;
    if !doomed.is_empty() && doomed.len() == backups.committed.len() {
        return Err(RetentionError::WouldDeleteEverything { count: doomed.len() });
    }
    let hold_everything = options.leases.holding_everything(now).next().is_some();
    let live: Vec<&Lease> = options.leases.live(now).collect();
    doomed.retain(|name| !hold_everything && !live.iter().any(|lease| lease.backup_needed && lease.backup == *name));
    keep_ancestors(&mut doomed, &backups.committed);
    let (kept, deleted): (Vec<&BackupInfo>, Vec<&BackupInfo>) =
        backups.committed.iter().partition(|backup| !doomed.contains(&backup.name));
    let cutoff = now - chrono::Duration::from_std(options.grace).unwrap_or(chrono::Duration::MAX);
    let (garbage, running): (Vec<_>, Vec<_>) =
        backups.uncommitted.iter().partition(|backup| backup.last_modified.is_some_and(|at| at < cutoff));
    let garbage_policy = *policy == Policy::Garbage;
    let named = |entry: &&Damaged| garbage_policy && options.damaged.contains(&entry.name);
    let (deleted_damaged, kept_damaged): (Vec<&Damaged>, Vec<&Damaged>) = backups.damaged.iter().partition(named);
    let size = wal.segment_size;
    let start_of_name = |name: &str| BackupName::parse(name).map(|name| size.segment_of(name.start_lsn));
    let lease_starts = live.iter().map(|lease| lease.wal_from_segment().unwrap_or(0));
    let boundary = kept
        .iter()
        .map(|backup| backup.start_segment())
        .chain(running.iter().filter_map(|backup| start_of_name(&backup.name)))
        .chain(kept_damaged.iter().filter_map(|entry| start_of_name(&entry.name)))
        .chain(lease_starts)
        .chain(hold_everything.then_some(0))
        .min()
        .filter(|_| !kept.is_empty());
    Ok(DeletionPlan {
        backups: deleted.iter().map(|backup| backup.name.clone()).collect(),
        uncommitted: if garbage_policy {
            garbage.iter().map(|backup| backup.name.clone()).collect()
        } else {
            Vec::new()
        },
        damaged: deleted_damaged.iter().map(|entry| entry.name.clone()).collect(),
        wal: boundary.map(|segment| wal.files_before(segment)).unwrap_or_default(),
        kept: kept.iter().map(|backup| backup.name.clone()).collect(),
        kept_damaged: kept_damaged.into_iter().cloned().collect(),
        held_by,
        leases: if garbage_policy { options.leases.expired(now) } else { Vec::new() },
        wal_boundary: boundary.map(|segment| size.segment_name(timeline_of_boundary(&kept, segment), segment)),
        garbage_cutoff: garbage_policy.then_some(cutoff),
        cluster_identity: false,
        planned_at: now,
        ignore_leases: false,
    })
}

/// `everything`: refused while a lease holds the archive, unless leases are ignored.
fn plan_everything(
    backups: &BackupSet,
    wal: &WalArchive,
    options: &PlanOptions<'_>,
    held_by: Vec<String>,
) -> Result<DeletionPlan, RetentionError> {
    if !options.ignore_leases
        && let Some(first) = held_by.first()
    {
        return Err(RetentionError::LeaseHeld { lease: first.clone(), count: held_by.len() });
    }
    Ok(DeletionPlan {
        backups: backups.committed.iter().map(|backup| backup.name.clone()).collect(),
        uncommitted: backups.uncommitted.iter().map(|backup| backup.name.clone()).collect(),
        damaged: backups.damaged.iter().map(|entry| entry.name.clone()).collect(),
        wal: wal.all_file_names(),
        held_by,
        leases: options.leases.ids(),
        cluster_identity: true,
        planned_at: options.now,
        ignore_leases: options.ignore_leases,
        ..DeletionPlan::default()
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
            let fulls: Vec<&BackupInfo> = unpinned.clone().filter(|backup| backup.parent.is_none()).collect();
            let excess = fulls.len().saturating_sub(*count);
            let doomed_fulls: BTreeSet<&str> = fulls[..excess].iter().map(|backup| backup.name.as_str()).collect();
            let parents = parents_of(committed);
            unpinned
                .filter(|backup| doomed_fulls.contains(root_of(&parents, &backup.name)))
                .map(|backup| backup.name.clone())
                .collect()
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

/// Each incremental backup's parent, by name.
fn parents_of(committed: &[BackupInfo]) -> BTreeMap<&str, &str> {
    committed.iter().filter_map(|backup| Some((backup.name.as_str(), backup.parent.as_deref()?))).collect()
}

/// The first backup of `name`'s chain (itself for a full backup).
fn root_of<'a>(parents: &BTreeMap<&'a str, &'a str>, name: &'a str) -> &'a str {
    let mut current = name;
    for _ in 0..=parents.len() {
        match parents.get(current) {
            Some(parent) => current = parent,
            None => break,
        }
    }
    current
}

/// Takes out of `doomed` every ancestor of a backup that stays: an incremental backup is
/// restorable only with its whole chain.
fn keep_ancestors(doomed: &mut Vec<String>, committed: &[BackupInfo]) {
    let parents = parents_of(committed);
    let mut needed = BTreeSet::new();
    for backup in committed.iter().filter(|backup| !doomed.contains(&backup.name)) {
        let mut next = parents.get(backup.name.as_str());
        while let Some(&parent) = next {
            if !needed.insert(parent) {
                break;
            }
            next = parents.get(parent);
        }
    }
    doomed.retain(|name| !needed.contains(name.as_str()));
}

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod tests;
