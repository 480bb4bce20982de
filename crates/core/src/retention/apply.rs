//! Executing a [`DeletionPlan`], checking again what may have changed since it was computed:
//! leases taken meanwhile keep what they need, and an uncommitted backup that was committed or
//! written to meanwhile is kept.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DeletionPlan, RetentionError};
use crate::catalog::{self, BackupSet, CatalogError};
use crate::layout::Archive;
use crate::leases::{self, LeaseSet};
use crate::storage::{ObjectKey, ObjectMeta, StorageError};
use crate::wal::SegmentSize;

/// Something the plan listed that was kept when the time came to delete it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeptAtDeletion {
    pub name: String,
    pub reason: String,
}

/// What [`apply`] did not delete after all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub kept: Vec<KeptAtDeletion>,
}

impl Applied {
    fn keep(&mut self, name: &str, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::info!(name, %reason, "kept at deletion");
        self.kept.push(KeptAtDeletion { name: name.to_string(), reason });
    }
}

/// Executes a plan: leases are read again first; each committed (or named damaged) backup goes
/// commit marker first, then its other objects; uncommitted backups after a last check; WAL
/// oldest first; expired leases; the owner record last.
pub async fn apply(archive: &Archive, backups: &BackupSet, plan: &DeletionPlan) -> Result<Applied, RetentionError> {
    let now = plan.planned_at;
    let leases = leases::load(archive).await?;
    let mut applied = Applied::default();
    if plan.cluster_identity && !plan.ignore_leases {
        let holds = super::lease_holds(&leases, now);
        if let Some(first) = holds.first() {
            return Err(RetentionError::LeaseHeld { lease: first.clone(), count: holds.len() });
        }
    }
    let parents = super::parents_of(&backups.committed);
    let guard = LeaseGuard { leases: &leases, parents, now, ignore: plan.ignore_leases };
    for name in plan.backups.iter().chain(&plan.damaged) {
        if let Some(lease) = guard.needs_backup(name) {
            applied.keep(name, format!("{lease} started reading it"));
            continue;
        }
        delete_backup(archive, backups, name).await?;
    }
    if let Some(cutoff) = plan.garbage_cutoff.or(plan.cluster_identity.then_some(DateTime::<Utc>::MAX_UTC)) {
        for name in &plan.uncommitted {
            match recheck_uncommitted(archive, name, cutoff).await? {
                Ok(objects) => catalog::delete_objects(archive, objects).await?,
                Err(reason) => applied.keep(name, reason),
            }
        }
    }
    let size = backups.segment_size();
    let mut wal = Vec::with_capacity(plan.wal.len());
    for name in &plan.wal {
        if let Some(lease) = guard.needs_wal(name, size) {
            applied.keep(name, format!("{lease} needs it"));
            continue;
        }
        wal.push(archive.layout.wal_file(name).map_err(|source| key_error(name, source))?);
    }
    catalog::delete_objects(archive, wal).await?;
    delete_leases(archive, &leases, plan, now).await?;
    if plan.cluster_identity {
        let identity = archive.layout.cluster_identity().map_err(|source| key_error("cluster.json", source))?;
        catalog::delete_objects(archive, vec![identity]).await?;
    }
    Ok(applied)
}

/// The leases read just before deleting: a restore or an incremental push that began after
/// planning keeps what it reads (the backup it names and that backup's ancestors).
struct LeaseGuard<'a> {
    leases: &'a LeaseSet,
    /// Each incremental backup's parent.
    parents: BTreeMap<&'a str, &'a str>,
    now: DateTime<Utc>,
    ignore: bool,
}

impl LeaseGuard<'_> {
    fn needs_backup(&self, name: &str) -> Option<String> {
        if self.ignore {
            return None;
        }
        let mut live = self.leases.live(self.now);
        live.find(|lease| lease.backup_needed && self.chain_of(&lease.backup).any(|backup| backup == name))
            .map(|lease| lease.describe())
    }

    /// `backup`, then its parent, its parent's parent, … up to the full backup.
    fn chain_of<'b>(&'b self, backup: &'b str) -> impl Iterator<Item = &'b str> + 'b {
        let steps = self.parents.len() + 1;
        std::iter::successors(Some(backup), |current| self.parents.get(current).copied()).take(steps)
    }

    fn needs_wal(&self, file_name: &str, size: SegmentSize) -> Option<String> {
        if self.ignore {
            return None;
        }
        if let Some(lease) = self.leases.holding_everything(self.now).next() {
            return Some(format!("unreadable lease {}", lease.damage.key));
        }
        let segment = size.parse_segment(file_name.get(..24).unwrap_or(file_name)).ok().map(|(_, segment)| segment);
        let mut live = self.leases.live(self.now);
        live.find(|lease| match (segment, lease.wal_from_segment()) {
            (Some(segment), Some(from)) => segment >= from,
            _ => true,
        })
        .map(|lease| lease.describe())
    }
}

async fn delete_backup(archive: &Archive, backups: &BackupSet, name: &str) -> Result<(), RetentionError> {
    let marker = archive.layout.backup_complete(name).map_err(|source| key_error(name, source))?;
    catalog::delete_objects(archive, vec![marker.clone()]).await?;
    let rest = backup_objects(backups, name).into_iter().filter(|key| *key != marker).collect();
    catalog::delete_objects(archive, rest).await?;
    Ok(())
}

/// Lists an uncommitted backup again just before deleting it: its objects when it is still
/// abandoned, or why it is kept (committed, or written to after `cutoff`).
async fn recheck_uncommitted(
    archive: &Archive,
    name: &str,
    cutoff: DateTime<Utc>,
) -> Result<Result<Vec<ObjectKey>, String>, RetentionError> {
    let prefix = archive.layout.backup_prefix(name);
    let listing: Vec<ObjectMeta> =
        archive.storage.list(&prefix).await.map_err(|source| storage("list", &prefix, source))?;
    if let Some(fresh) = listing.iter().find(|meta| meta.last_modified.is_none_or(|at| at >= cutoff)) {
        return Ok(Err(format!("{} was written after the plan's cutoff {}", fresh.key, cutoff.to_rfc3339())));
    }
    let marker = archive.layout.backup_complete(name).map_err(|source| key_error(name, source))?;
    let committed = archive.storage.head(&marker).await.map_err(|source| storage("read", marker.as_str(), source))?;
    if committed.is_some() || listing.iter().any(|meta| meta.key == marker) {
        return Ok(Err("it was committed meanwhile".to_string()));
    }
    Ok(Ok(listing.into_iter().map(|meta| meta.key).collect()))
}

/// Removes the plan's leases that are still expired (or all of them for `everything`).
async fn delete_leases(
    archive: &Archive,
    fresh: &LeaseSet,
    plan: &DeletionPlan,
    now: DateTime<Utc>,
) -> Result<(), RetentionError> {
    let removable = if plan.cluster_identity { fresh.ids() } else { fresh.expired(now) };
    let keys = plan
        .leases
        .iter()
        .filter(|id| removable.contains(id))
        .map(|id| archive.layout.lease(id).map_err(|source| key_error(id, source)))
        .collect::<Result<Vec<_>, _>>()?;
    catalog::delete_objects(archive, keys).await?;
    Ok(())
}

fn backup_objects(backups: &BackupSet, name: &str) -> Vec<ObjectKey> {
    backups.objects.get(name).map(|metas| metas.iter().map(|meta| meta.key.clone()).collect()).unwrap_or_default()
}

fn storage(action: &'static str, key: &str, source: StorageError) -> RetentionError {
    RetentionError::Catalog(CatalogError::Storage { action, key: key.to_string(), source: Box::new(source) })
}

fn key_error(name: &str, source: StorageError) -> RetentionError {
    storage("name", name, source)
}
