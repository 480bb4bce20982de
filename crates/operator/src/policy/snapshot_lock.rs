//! Immutable snapshot backups: the policy's snapshot lock (`snapshotLock`, else
//! `storage.s3.objectLock`) is put on each backup's snapshot once it completes and before the
//! backup commits, and retention keeps a locked snapshot backup, with the WAL it needs, until
//! the lock ends.
//!
//! The lock lasts the same days as an Object Lock's retain-until date: `days`, or as long as
//! retention keeps a backup ([`crate::archive::retention_days`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use kube::runtime::events::EventType;
use pgec2_api::{BackupPolicy, ObjectLockMode};
use pgec2_core::catalog::{BackupKind, BackupSet, WalArchive};
use pgec2_core::retention::DeletionPlan;
use pgec2_core::storage::lock::{LockMode, Locked};
use pgec2_core::wal::Lsn;

use crate::cloud::{Cloud, CloudError, SnapshotLock};
use crate::context::Context;

/// The lock the policy puts on its backup snapshots, if any.
pub fn snapshot_lock(policy: &BackupPolicy) -> Option<SnapshotLock> {
    let lock = policy.spec.effective_snapshot_lock()?;
    let mode = match lock.mode {
        ObjectLockMode::Governance => LockMode::Governance,
        ObjectLockMode::Compliance => LockMode::Compliance,
    };
    let days =
        lock.days.and_then(|days| u32::try_from(days).ok()).unwrap_or_else(|| crate::archive::retention_days(policy));
    Some(SnapshotLock { mode, days: days.max(1) })
}

/// Locks the completed snapshot of `backup` unless it is locked already (by this operator
/// before a restart). The backup commits only after this succeeded.
pub async fn lock_completed(
    ctx: &Context,
    policy: &BackupPolicy,
    lock: &SnapshotLock,
    snapshot_id: &str,
    backup: &str,
) -> Result<(), String> {
    let cloud = &ctx.cloud;
    if let Some(until) = cloud.snapshot_locked_until(snapshot_id).await.map_err(|error| error.to_string())? {
        tracing::debug!(snapshot = snapshot_id, %backup, %until, "backup snapshot already locked");
        return Ok(());
    }
    let until = cloud.lock_snapshot(snapshot_id, lock).await.map_err(|error| {
        format!("failed to lock snapshot {snapshot_id} ({} mode, {} days): {error}", lock.mode, lock.days)
    })?;
    let note = format!("snapshot {snapshot_id} of backup {backup} locked ({} mode) until {until}", lock.mode);
    super::backups::publish(ctx, policy, EventType::Normal, "SnapshotLocked", note).await;
    Ok(())
}

/// Takes out of `plan` the snapshot backups whose snapshot is still locked at `now`, keeping
/// the WAL from the oldest one's start; returns what was kept and until when. Nothing is
/// taken out when the policy locks no snapshots.
pub async fn hold_locked(
    cloud: &dyn Cloud,
    policy: &BackupPolicy,
    backups: &BackupSet,
    wal: &WalArchive,
    plan: &mut DeletionPlan,
    now: DateTime<Utc>,
) -> Result<Vec<Locked>, CloudError> {
    if snapshot_lock(policy).is_none() {
        return Ok(Vec::new());
    }
    let doomed: BTreeSet<&str> = plan.backups.iter().map(String::as_str).collect();
    let mut held = Vec::new();
    let mut floor: Option<Lsn> = None;
    for backup in backups.committed.iter().filter(|backup| doomed.contains(backup.name.as_str())) {
        let Some(snapshot_id) = backup.snapshot_id.as_deref().filter(|_| backup.kind == BackupKind::Snapshot) else {
            continue;
        };
        if let Some(until) = cloud.snapshot_locked_until(snapshot_id).await?.filter(|until| *until > now) {
            held.push(Locked { name: backup.name.clone(), until });
            floor = Some(floor.map_or(backup.start_lsn, |floor| floor.min(backup.start_lsn)));
        }
    }
    let kept: BTreeSet<&str> = held.iter().map(|entry| entry.name.as_str()).collect();
    plan.backups.retain(|name| !kept.contains(name.as_str()));
    if let Some(floor) = floor {
        pgec2_core::walg::retention::keep_wal_from(plan, wal, floor);
    }
    Ok(held)
}

/// Records in status what retention of `host` kept because it is locked, and says so in an
/// event when anything is.
pub(super) async fn report_held(
    ctx: &Context,
    policy: &BackupPolicy,
    draft: &mut super::status::Draft,
    host: &str,
    held: &[Locked],
) {
    draft.retention_held(host, held);
    if held.is_empty() {
        return;
    }
    let kept = held.iter().map(|entry| format!("{} until {}", entry.name, entry.until)).collect::<Vec<_>>();
    let note = format!("{host}: retention keeps what is still locked and deletes it after: {}", kept.join("; "));
    super::backups::publish(ctx, policy, EventType::Normal, "RetentionHeld", note).await;
}
