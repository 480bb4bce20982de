//! Retention and S3 Object Lock: before a plan is applied, every backup it would delete is
//! checked (its commit marker, the last object written, carries the latest lock) and so is its
//! WAL, oldest first; what is still locked leaves the plan, reported with the date it can go.
//! A locked backup keeps the WAL from its start on, so it stays restorable while it is listed.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{DeletionPlan, RetentionError};
use crate::catalog::{BackupSet, CatalogError, WalArchive};
use crate::layout::Archive;
use crate::storage::lock::Locked;
use crate::storage::{ObjectKey, StorageError};

/// Takes out of `plan` what an object lock still holds at `now`; returns what was kept.
pub async fn hold_locked(
    archive: &Archive,
    backups: &BackupSet,
    wal: &WalArchive,
    plan: &mut DeletionPlan,
    now: DateTime<Utc>,
) -> Result<Vec<Locked>, RetentionError> {
    let mut locked = Vec::new();
    for name in &plan.backups {
        let marker = archive.layout.backup_complete(name).map_err(|source| key_error(name, source))?;
        if let Some(until) = locked_until(archive, &marker, now).await? {
            locked.push(Locked { name: name.clone(), until });
        }
    }
    let held: BTreeSet<&str> = locked.iter().map(|entry| entry.name.as_str()).collect();
    plan.backups.retain(|name| !held.contains(name.as_str()));
    let floor =
        backups.committed.iter().filter(|backup| held.contains(backup.name.as_str())).map(|b| b.start_lsn).min();
    if let Some(floor) = floor {
        crate::walg::retention::keep_wal_from(plan, wal, floor);
    }
    // WAL is locked in the order it was written: the first locked file holds all after it.
    for (index, name) in plan.wal.iter().enumerate() {
        let key = archive.layout.wal_file(name).map_err(|source| key_error(name, source))?;
        if let Some(until) = locked_until(archive, &key, now).await? {
            locked.push(Locked { name: format!("{} WAL files from {name}", plan.wal.len() - index), until });
            plan.wal.truncate(index);
            break;
        }
    }
    Ok(locked)
}

async fn locked_until(
    archive: &Archive,
    key: &ObjectKey,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, RetentionError> {
    let until = archive.storage.retained_until(key).await.map_err(|source| {
        let key = key.as_str().to_string();
        RetentionError::Catalog(CatalogError::Storage {
            action: "read the retention of",
            key,
            source: Box::new(source),
        })
    })?;
    Ok(until.filter(|until| *until > now))
}

fn key_error(name: &str, source: StorageError) -> RetentionError {
    RetentionError::Catalog(CatalogError::Storage { action: "name", key: name.to_string(), source: Box::new(source) })
}
