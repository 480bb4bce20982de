//! The operator's half of snapshot backups (the handshake is in
//! [`pgec2_core::catalog::snapshot`]): while a host's `backup-push --method snapshot` holds its
//! backup open, snapshot the host's data volume and answer `taken.json`, then `completed.json`
//! once the cloud says the snapshot is complete. After the command ends, and after retention,
//! delete the snapshots no committed backup names (retention's and abandoned ones) and the
//! handshakes.
//!
//! With a snapshot lock ([`super::snapshot_lock`]) the completed snapshot is locked before
//! `completed.json` is written, and a locked snapshot is never deleted before its lock ends.
//!
//! Crash safety: a snapshot is found by its tags (host uid and backup name) before one is
//! started, and an answer already in the archive is never written again, so an operator
//! restarted at any point neither loses nor doubles a snapshot.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use kube::ResourceExt;
use kube::runtime::events::EventType;

use pgec2_api::{BackupPolicy, PostgresHost};
use pgec2_core::catalog::snapshot::{self, COMPLETED, Handshake, SnapshotAnswer, TAKEN};
use pgec2_core::catalog::{self, BackupKind};

use crate::archive::open;
use crate::cloud::{HostInstance, HostRef, SnapshotRequest, SnapshotState, VolumeSnapshot};
use crate::context::Context;

/// Answers the snapshot requests of the backup running on `host`.
pub async fn serve(
    ctx: &Context,
    policy: &BackupPolicy,
    host: &PostgresHost,
    reference: &HostRef,
    instance: &HostInstance,
) {
    let name = host.qualified_name();
    let archive = match open(policy, host).await {
        Ok(archive) => archive,
        Err(error) => return tracing::warn!(host = %name, %error, "cannot read snapshot requests"),
    };
    let handshakes = match snapshot::list(&archive).await {
        Ok(handshakes) => handshakes,
        Err(error) => return tracing::warn!(host = %name, %error, "cannot read snapshot requests"),
    };
    for handshake in handshakes.into_iter().filter(|handshake| handshake.completed.is_none()) {
        let backup = handshake.request.backup.clone();
        let key = format!("{}/{backup}", reference.uid);
        match answer(ctx, policy, &archive, reference, instance, handshake).await {
            Ok(()) => reported_failures().forget(&key),
            Err(message) => {
                tracing::warn!(host = %name, %backup, %message, "snapshot of a backup not answered yet");
                // Polled every few seconds while the backup runs: the event says it once.
                if reported_failures().is_new(&key, &message) {
                    let note = format!("{name}: snapshot of backup {backup}: {message}");
                    super::backups::publish(ctx, policy, EventType::Warning, "SnapshotFailed", note).await;
                }
            }
        }
    }
}

/// The snapshot failures already published as events, by `<host uid>/<backup>`, with the
/// message published: a failure is reported once, and again only when its message changes.
#[derive(Debug, Default)]
struct ReportedFailures(Mutex<HashMap<String, String>>);

impl ReportedFailures {
    /// True (and remembered) when `message` was not the last one reported for `key`.
    fn is_new(&self, key: &str, message: &str) -> bool {
        let mut reported = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        reported.insert(key.to_string(), message.to_string()).as_deref() != Some(message)
    }

    fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }
}

fn reported_failures() -> &'static ReportedFailures {
    static REPORTED: OnceLock<ReportedFailures> = OnceLock::new();
    REPORTED.get_or_init(ReportedFailures::default)
}

/// Takes (or finds) the snapshot of one request and writes the answers now due.
async fn answer(
    ctx: &Context,
    policy: &BackupPolicy,
    archive: &pgec2_core::layout::Archive,
    reference: &HostRef,
    instance: &HostInstance,
    handshake: Handshake,
) -> Result<(), String> {
    let backup = handshake.request.backup;
    let snapshot = match handshake.taken {
        Some(taken) => ctx
            .cloud
            .describe_snapshot(&taken.snapshot_id)
            .await
            .map_err(|error| error.to_string())?
            .ok_or_else(|| format!("snapshot {} has disappeared; the backup will not commit", taken.snapshot_id))?,
        None => {
            let snapshot = find_or_take(ctx, policy, reference, instance, &backup).await?;
            let taken = SnapshotAnswer { snapshot_id: snapshot.snapshot_id.clone() };
            snapshot::put(archive, &backup, TAKEN, &taken).await.map_err(|error| error.to_string())?;
            let note =
                format!("volume snapshot {} of {} taken for backup {backup}", snapshot.snapshot_id, reference.key());
            super::backups::publish(ctx, policy, EventType::Normal, "SnapshotTaken", note).await;
            snapshot
        }
    };
    match snapshot.state {
        SnapshotState::Pending => Ok(()),
        SnapshotState::Completed => {
            if let Some(lock) = super::snapshot_lock::snapshot_lock(policy) {
                super::snapshot_lock::lock_completed(ctx, policy, &lock, &snapshot.snapshot_id, &backup).await?;
            }
            let completed = SnapshotAnswer { snapshot_id: snapshot.snapshot_id };
            snapshot::put(archive, &backup, COMPLETED, &completed).await.map_err(|error| error.to_string())
        }
        SnapshotState::Failed { message } => Err(format!("snapshot {} failed: {message}", snapshot.snapshot_id)),
    }
}

/// The snapshot of `backup` found by its tags, or a new one.
async fn find_or_take(
    ctx: &Context,
    policy: &BackupPolicy,
    reference: &HostRef,
    instance: &HostInstance,
    backup: &str,
) -> Result<VolumeSnapshot, String> {
    let existing = ctx.cloud.host_snapshots(reference).await.map_err(|error| error.to_string())?;
    if let Some(found) = existing.into_iter().find(|snapshot| snapshot.backup.as_deref() == Some(backup)) {
        tracing::info!(host = %reference.key(), %backup, snapshot = %found.snapshot_id, "found the backup's snapshot by its tags");
        return Ok(found);
    }
    let request = SnapshotRequest {
        host: reference.clone(),
        policy: format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any()),
        backup: backup.to_string(),
    };
    ctx.cloud.snapshot_volume(instance, &request).await.map_err(|error| error.to_string())
}

/// After a backup command ended: deletes the host's backup snapshots that no committed (or
/// damaged) backup names, then the handshakes. Nothing is deleted when the catalog cannot be
/// read.
pub async fn collect(
    ctx: &Context,
    policy: &BackupPolicy,
    host: &PostgresHost,
    reference: &HostRef,
) -> Result<(), String> {
    let archive = open(policy, host).await.map_err(|error| error.to_string())?;
    let backups = catalog::scan_backups(&archive).await.map_err(|error| error.to_string())?;
    let named: BTreeSet<&str> = backups
        .committed
        .iter()
        .filter(|backup| backup.kind == BackupKind::Snapshot)
        .filter_map(|backup| backup.snapshot_id.as_deref())
        .collect();
    let damaged: BTreeSet<&str> = backups.damaged.iter().map(|damaged| damaged.name.as_str()).collect();
    let snapshots = ctx.cloud.host_snapshots(reference).await.map_err(|error| error.to_string())?;
    for found in snapshots {
        let kept = named.contains(found.snapshot_id.as_str())
            || found.backup.as_deref().is_some_and(|backup| damaged.contains(backup));
        if kept {
            continue;
        }
        if let Some(until) = locked_until(ctx, policy, &found.snapshot_id).await? {
            tracing::info!(host = %reference.key(), snapshot = %found.snapshot_id, backup = ?found.backup, %until, "a snapshot no committed backup names is kept until its lock ends");
            continue;
        }
        tracing::info!(host = %reference.key(), snapshot = %found.snapshot_id, backup = ?found.backup, "deleting a snapshot no committed backup names");
        ctx.cloud.delete_snapshot(&found.snapshot_id).await.map_err(|error| error.to_string())?;
    }
    for handshake in snapshot::list(&archive).await.map_err(|error| error.to_string())? {
        reported_failures().forget(&format!("{}/{}", reference.uid, handshake.request.backup));
        snapshot::remove(&archive, &handshake.request.backup).await.map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// When the lock of `snapshot_id` ends, for a policy that locks its snapshots.
async fn locked_until(
    ctx: &Context,
    policy: &BackupPolicy,
    snapshot_id: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    if super::snapshot_lock::snapshot_lock(policy).is_none() {
        return Ok(None);
    }
    ctx.cloud.snapshot_locked_until(snapshot_id).await.map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_failure_is_reported_once_until_its_message_changes() {
        let reported = ReportedFailures::default();
        assert!(reported.is_new("uid/base_1", "snapshot snap-1 failed: error"));
        assert!(!reported.is_new("uid/base_1", "snapshot snap-1 failed: error"), "the same failure again");
        assert!(reported.is_new("uid/base_2", "snapshot snap-1 failed: error"), "another backup");
        assert!(reported.is_new("uid/base_1", "snapshot snap-1 has disappeared"), "a new message");
        reported.forget("uid/base_1");
        assert!(reported.is_new("uid/base_1", "snapshot snap-1 has disappeared"));
    }
}
