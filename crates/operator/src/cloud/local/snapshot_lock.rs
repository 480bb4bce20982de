//! Snapshot locks of the local cloud, the equivalent of an EBS Snapshot Lock: a file beside the
//! snapshot's directory that records the mode and when the lock ends.
//!
//! ```text
//! <state>/volume-snapshots/<id>.lock   {"snapshotId", "mode", "lockedAt", "until"}
//! ```
//!
//! [`super::snapshots::delete`] refuses a snapshot whose lock has not ended, as EC2 does. A
//! compliance lock is never shortened; a governance lock is replaced by a new one.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgec2_core::storage::lock::LockMode;
use serde::{Deserialize, Serialize};

use super::LocalError;
use super::files::{self, io_error};
use super::snapshots::snapshot_dir;
use crate::cloud::SnapshotLock;

/// What a lock file records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockRecord {
    snapshot_id: String,
    /// `governance` or `compliance`.
    mode: String,
    locked_at: DateTime<Utc>,
    until: DateTime<Utc>,
}

fn lock_path(root: &Path, id: &str) -> Result<PathBuf, LocalError> {
    let dir = snapshot_dir(root, id)?;
    Ok(dir.with_file_name(format!("{id}.lock")))
}

fn load(path: &Path) -> Result<Option<LockRecord>, LocalError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LocalError::Corrupt { path: path.to_path_buf(), source }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LocalError::Io { what: format!("read {}", path.display()), source }),
    }
}

/// Locks snapshot `id` for `lock.days` from `now`; returns when the lock ends.
pub fn lock(root: &Path, id: &str, lock: &SnapshotLock, now: DateTime<Utc>) -> Result<DateTime<Utc>, LocalError> {
    if super::snapshots::describe(root, id)?.is_none() {
        return Err(LocalError::Setup(format!("there is no local snapshot {id} to lock under {}", root.display())));
    }
    let path = lock_path(root, id)?;
    let mut until = now + chrono::Duration::days(i64::from(lock.days));
    if let Some(existing) = load(&path)?
        && existing.mode == LockMode::Compliance.to_string()
        && existing.until > until
    {
        until = existing.until;
    }
    let record = LockRecord { snapshot_id: id.to_string(), mode: lock.mode.to_string(), locked_at: now, until };
    let json = serde_json::to_vec_pretty(&record).map_err(|error| LocalError::Setup(error.to_string()))?;
    files::write_atomic(&path, &json)?;
    Ok(until)
}

/// Until when snapshot `id` is locked at `now`; `None` without a lock or after it ended.
pub fn locked_until(root: &Path, id: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, LocalError> {
    Ok(load(&lock_path(root, id)?)?.map(|record| record.until).filter(|until| *until > now))
}

/// Refuses to go on while snapshot `id` is locked.
pub fn refuse_if_locked(root: &Path, id: &str, now: DateTime<Utc>) -> Result<(), LocalError> {
    match locked_until(root, id, now)? {
        Some(until) => Err(LocalError::Conflict(format!(
            "snapshot {id} is locked until {until}; it cannot be deleted before then"
        ))),
        None => Ok(()),
    }
}

/// Removes the lock file of a deleted snapshot; a missing one is already removed.
pub fn forget(root: &Path, id: &str) -> Result<(), LocalError> {
    let path = lock_path(root, id)?;
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error(format!("remove {}", path.display()))(error))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{HostRef, SnapshotRequest};

    #[tokio::test]
    async fn a_locked_snapshot_is_refused_deletion_until_its_lock_ends_and_compliance_never_shortens() {
        let scratch = tempfile::tempdir().expect("scratch");
        let volume = scratch.path().join("volume");
        std::fs::create_dir_all(volume.join("data")).expect("volume");
        let root = scratch.path().join("volume-snapshots");
        let host = HostRef { namespace: "default".into(), name: "db".into(), uid: "uid-1".into() };
        let request = SnapshotRequest { host, policy: "default/nightly".into(), backup: "base_1".into() };
        let id = super::super::snapshots::create(&root, &volume, &request).await.expect("snapshot").snapshot_id;
        let now = Utc::now();
        let compliance = SnapshotLock { mode: LockMode::Compliance, days: 7 };
        let until = lock(&root, &id, &compliance, now).expect("lock");
        assert_eq!(until, now + chrono::Duration::days(7));
        assert!(root.join(format!("{id}.lock")).is_file(), "the lock file sits beside the snapshot");
        assert_eq!(locked_until(&root, &id, now).expect("read"), Some(until));

        let error = super::super::snapshots::delete(&root, &id).await.expect_err("a locked snapshot stays");
        assert!(error.to_string().contains("locked until"), "{error}");
        assert!(super::super::snapshots::describe(&root, &id).expect("describe").is_some());

        let shorter = SnapshotLock { mode: LockMode::Compliance, days: 1 };
        assert_eq!(lock(&root, &id, &shorter, now).expect("lock again"), until, "compliance is never shortened");

        let later = until + chrono::Duration::seconds(1);
        assert_eq!(locked_until(&root, &id, later).expect("read"), None, "an ended lock holds nothing");
        assert!(lock(&root, "snap-local-0000", &compliance, now).is_err(), "no snapshot, no lock");
    }
}
