//! What the policy controller does with a host's archive ([`crate::archive`] opens it): read
//! through the pgec2-core catalog into the policy's summary, and pruned by retention and
//! garbage cleanup — the same code as `pgec2-agent delete`, honouring the leases of running
//! restores and standbys and the locks of immutable backups, and leaving damaged entries alone.

use chrono::Utc;
use pgec2_api::{BackupPolicy, HostBackupSummary, PostgresHost};
use pgec2_core::catalog;
use pgec2_core::layout::Archive;
use pgec2_core::leases;
use pgec2_core::recovery_window;
use pgec2_core::retention::{self, PlanOptions, Policy};
use pgec2_core::wal::Lsn;
use pgec2_core::walg::WalgBackup;
use pgec2_core::walg::retention as walg_retention;

use pgec2_core::storage::lock::Locked;

use super::snapshot_lock;
use crate::archive::{ArchiveError, open, time};
use crate::cloud::Cloud;

/// Keeps the policy's `retention.fullBackups` newest unpinned backups (and the WAL they need),
/// then removes garbage: abandoned uncommitted backups, expired leases and WAL older than the
/// oldest kept backup. Live leases keep what their restores and standbys read; damaged
/// backups are kept and logged.
/// With `walgCompatible: read`, wal-g's backups count toward `fullBackups` and the host's WAL
/// that they replay is kept; wal-g's objects are never deleted.
/// Locked backups (S3 Object Lock, or a snapshot lock asked of `cloud`) are kept until their
/// lock ends; returns what was kept and until when.
pub async fn apply_retention(
    policy: &BackupPolicy,
    host: &PostgresHost,
    cloud: &dyn Cloud,
) -> Result<Vec<Locked>, ArchiveError> {
    let name = host.qualified_name();
    let walg = crate::archive::open_walg(policy, &name).await?;
    let walg_backups = match walg {
        Some(walg) => walg.backups().await.map_err(|source| ArchiveError::Walg { host: name.clone(), source })?,
        None => Vec::new(),
    };
    let archive = open(policy, host).await?;
    apply_retention_to(&archive, &name, policy, &walg_backups, cloud).await
}

/// [`apply_retention`] on an open archive, keeping `policy`'s `fullBackups` backups of both kinds.
pub async fn apply_retention_to(
    archive: &Archive,
    name: &str,
    policy: &BackupPolicy,
    walg: &[WalgBackup],
    cloud: &dyn Cloud,
) -> Result<Vec<Locked>, ArchiveError> {
    let keep = usize::try_from(policy.spec.retention.full_backups).unwrap_or(1).max(1);
    let mut held = Vec::new();
    let catalog_error = |source| ArchiveError::Catalog { host: name.to_string(), source };
    let retention_error = |source| ArchiveError::Retention { host: name.to_string(), source };
    let walg_floor = walg.iter().map(|backup| Lsn(backup.sentinel.start_lsn)).min();
    for rule in [Policy::Retain(keep), Policy::Garbage] {
        let backups = catalog::scan_backups(archive).await.map_err(catalog_error)?;
        for damaged in &backups.damaged {
            tracing::warn!(host = %name, backup = %damaged.name, key = %damaged.key, reason = %damaged.reason, "damaged backup kept by retention");
        }
        if backups.committed.is_empty() {
            return Ok(held);
        }
        let wal = catalog::list_wal_archive(archive, backups.segment_size()).await.map_err(catalog_error)?;
        let leases = leases::load(archive).await.map_err(catalog_error)?;
        let rule = walg_retention::window(&rule, &backups.committed, walg).own_policy;
        let mut plan =
            retention::plan(&rule, &backups, &wal, &PlanOptions::new(Utc::now(), &leases)).map_err(retention_error)?;
        if let Some(floor) = walg_floor {
            walg_retention::keep_wal_from(&mut plan, &wal, floor);
        }
        let mut locked = retention::locks::hold_locked(archive, &backups, &wal, &mut plan, Utc::now())
            .await
            .map_err(retention_error)?;
        let snapshots = snapshot_lock::hold_locked(cloud, policy, &backups, &wal, &mut plan, Utc::now())
            .await
            .map_err(|source| ArchiveError::SnapshotLock { host: name.to_string(), source })?;
        locked.extend(snapshots);
        for locked in &locked {
            tracing::info!(host = %name, object = %locked.name, until = %locked.until, "kept by retention: locked");
        }
        for locked in locked {
            if !held.contains(&locked) {
                held.push(locked);
            }
        }
        if !plan.is_empty() {
            tracing::info!(host = %name, ?rule, backups = ?plan.backups, wal_files = plan.wal.len(), held_by = ?plan.held_by, "applying retention");
            let applied = retention::apply(archive, &backups, &plan).await.map_err(retention_error)?;
            for kept in applied.kept {
                tracing::info!(host = %name, object = %kept.name, reason = %kept.reason, "kept by retention after a last check");
            }
        }
    }
    Ok(held)
}

/// What the catalog says about `host`, or why it could not be read.
pub async fn read(policy: &BackupPolicy, host: &PostgresHost) -> Result<HostBackupSummary, ArchiveError> {
    let mut summary = empty_summary(host);
    read_summary(policy, host, &mut summary).await?;
    Ok(summary)
}

pub fn empty_summary(host: &PostgresHost) -> HostBackupSummary {
    HostBackupSummary { host: host.qualified_name(), backups_kept: 0, last_backup: None, recovery_window: None }
}

async fn read_summary(
    policy: &BackupPolicy,
    host: &PostgresHost,
    summary: &mut HostBackupSummary,
) -> Result<(), ArchiveError> {
    let name = host.qualified_name();
    let archive = open(policy, host).await?;
    let catalog_error = |source| ArchiveError::Catalog { host: name.clone(), source };
    let backups = catalog::scan_backups(&archive).await.map_err(catalog_error)?;
    summary.backups_kept = i32::try_from(backups.committed.len()).unwrap_or(i32::MAX);
    summary.last_backup = backups.committed.last().map(backup_info);
    if backups.committed.is_empty() {
        return Ok(());
    }
    let wal = catalog::load_wal_archive(&archive, backups.segment_size()).await.map_err(catalog_error)?;
    summary.recovery_window =
        recovery_window::recovery_window(&backups.committed, &wal, None).map(|window| pgec2_api::RecoveryWindow {
            first_recoverable_time: time(window.earliest_time),
            first_recoverable_lsn: Some(window.earliest_lsn.to_string()),
            last_recoverable_time: window.latest_time.and_then(time),
            last_recoverable_lsn: Some(window.latest_lsn.to_string()),
        });
    Ok(())
}

/// The API's view of a catalog entry.
pub fn backup_info(backup: &catalog::BackupInfo) -> pgec2_api::BackupInfo {
    pgec2_api::BackupInfo {
        name: backup.name.clone(),
        start_time: time(backup.start_time),
        finish_time: time(backup.finish_time),
        start_lsn: Some(backup.start_lsn.to_string()),
        finish_lsn: Some(backup.finish_lsn.to_string()),
        timeline: Some(i64::from(backup.timeline)),
        data_bytes: i64::try_from(backup.data_bytes).ok(),
        stored_bytes: i64::try_from(backup.stored_bytes).ok(),
        permanent: backup.permanent,
        kind: Some(
            match backup.kind {
                catalog::BackupKind::ObjectStore => "objectStore",
                catalog::BackupKind::Snapshot => "snapshot",
            }
            .to_string(),
        ),
        snapshot_id: backup.snapshot_id.clone(),
    }
}
