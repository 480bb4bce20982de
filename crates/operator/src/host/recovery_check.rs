//! Before a restore host is launched: read the source's backup catalog (the operator reads the
//! storage itself, no host needed) and check the recovery target with the same code
//! `backup-fetch` runs on the host ([`pgec2_core::catalog::plan_restore`]). A target outside the
//! source's recovery window becomes a condition on the host, and no instance is launched.

use pgec2_api::host::RecoveryPoint;
use pgec2_api::{BackupPolicy, PostgresHost};
use pgec2_core::catalog::{self, RecoveryTarget, TargetError};
use pgec2_core::recovery_window::TimelineRequest;

use crate::archive::{self, ArchiveError};
use crate::cloud::{Cloud, CloudError, SnapshotState};

/// Why a restore cannot start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// Condition reason: `NoBackupToRestore` or `RecoveryTargetUnreachable`.
    pub reason: &'static str,
    pub message: String,
    /// True when more backups or WAL in the source's archive may make it reachable (the host
    /// waits); false when only a change of the spec can (the host is failed).
    pub may_resolve: bool,
}

/// What a restore will start from, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reachable {
    /// The backup the restore starts from.
    pub backup: String,
    /// The volume snapshot holding its data, for a snapshot backup.
    pub snapshot_id: Option<String>,
}

/// Failures reading the source's archive (retried with backoff; nothing is launched).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("failed to read the backup catalog of {source_host}: {error}")]
    Catalog { source_host: String, error: catalog::CatalogError },
    #[error("failed to look up snapshot {snapshot_id} of backup {backup}: {source}")]
    Snapshot { snapshot_id: String, backup: String, source: CloudError },
}

/// Checks the restore `host` asks for against the archive of its source under `policy`, and
/// picks the backup: the newest of either kind that fits the target (or the named one). A
/// snapshot backup whose snapshot the cloud no longer has (or never completed) is left out.
pub async fn check(
    host: &PostgresHost,
    policy: &BackupPolicy,
    cloud: &dyn Cloud,
) -> Result<Result<Reachable, Unreachable>, CheckError> {
    let Some(recovery) = host.recovery() else {
        return Ok(Ok(Reachable { backup: String::new(), snapshot_id: None }));
    };
    let source = format!("{}/{}", host.metadata.namespace.as_deref().unwrap_or("default"), recovery.source.host);
    let target = match spec_target(recovery.target.as_ref().and_then(|target| target.point())) {
        Ok(target) => target,
        Err(message) => return Ok(Err(Unreachable { reason: "InvalidSpec", message, may_resolve: false })),
    };
    let archive = archive::open_named(policy, &source).await?;
    let catalog_error = |error| CheckError::Catalog { source_host: source.clone(), error };
    let backups = catalog::scan_backups(&archive).await.map_err(catalog_error)?;
    let wal = catalog::load_wal_archive(&archive, backups.segment_size()).await.map_err(catalog_error)?;
    let mut candidates = backups.committed.clone();
    loop {
        let plan = catalog::plan_restore(&candidates, &wal, &recovery.backup, &target, TimelineRequest::Latest);
        let backup = match plan {
            Ok(plan) => plan.backup,
            Err(error) => return Ok(Err(unreachable(&source, &policy_name(policy), &error))),
        };
        let Some(snapshot_id) = backup.snapshot_id.clone().filter(|_| backup.kind == catalog::BackupKind::Snapshot)
        else {
            return Ok(Ok(Reachable { backup: backup.name, snapshot_id: None }));
        };
        let found = cloud.describe_snapshot(&snapshot_id).await.map_err(|source| CheckError::Snapshot {
            snapshot_id: snapshot_id.clone(),
            backup: backup.name.clone(),
            source,
        })?;
        if found.is_some_and(|snapshot| snapshot.state == SnapshotState::Completed) {
            return Ok(Ok(Reachable { backup: backup.name, snapshot_id: Some(snapshot_id) }));
        }
        tracing::warn!(backup = %backup.name, snapshot_id, "the snapshot of a backup is gone; choosing another backup");
        candidates.retain(|candidate| candidate.name != backup.name);
    }
}

fn policy_name(policy: &BackupPolicy) -> String {
    policy.metadata.name.clone().unwrap_or_default()
}

/// The condition for a refused restore, naming the source and what to do.
fn unreachable(source: &str, policy: &str, error: &TargetError) -> Unreachable {
    let (reason, may_resolve) = match error {
        TargetError::NoBackups => ("NoBackupToRestore", true),
        TargetError::AfterArchiveEnd { .. } | TargetError::GapInArchive { .. } => ("RecoveryTargetUnreachable", true),
        TargetError::BackupWalMissing { .. } | TargetError::HistoryDamaged { .. } => {
            ("RecoveryTargetUnreachable", true)
        }
        TargetError::NoSuchBackup(_)
        | TargetError::NoBackupBeforeTarget { .. }
        | TargetError::BeforeBackupEnd { .. }
        | TargetError::TimelineUnreachable { .. } => ("RecoveryTargetUnreachable", false),
    };
    let message = format!(
        "cannot restore from the archive of {source} (BackupPolicy {policy}): {error}; no instance was launched"
    );
    Unreachable { reason, message, may_resolve }
}

/// The spec's recovery target as the restore planner takes it; a refusal names the field.
fn spec_target(point: Option<RecoveryPoint>) -> Result<RecoveryTarget, String> {
    RecoveryTarget::try_from(point.as_ref())
        .map_err(|error| format!("spec.bootstrap.recovery.target.{}: {error}", error.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_target_that_cannot_be_read_is_refused_naming_its_field() {
        assert_eq!(spec_target(None), Ok(RecoveryTarget::EndOfArchive));
        assert_eq!(spec_target(Some(RecoveryPoint::Xid("7415".into()))), Ok(RecoveryTarget::Xid(7415)));
        let no_zone = spec_target(Some(RecoveryPoint::Time("2026-01-31 12:00:00".into()))).expect_err("no zone");
        assert!(no_zone.starts_with("spec.bootstrap.recovery.target.time: ") && no_zone.contains("no time zone"));
        let lsn = spec_target(Some(RecoveryPoint::Lsn("0/zz".into()))).expect_err("not hex");
        assert_eq!(lsn, "spec.bootstrap.recovery.target.lsn: \"0/zz\" is not an LSN such as 0/3000060");
    }

    #[test]
    fn only_targets_that_more_archive_can_reach_wait() {
        let after = TargetError::AfterArchiveEnd {
            target: "t".into(),
            archive: "a".into(),
            end: "e".into(),
            gap: String::new(),
        };
        let waiting = unreachable("default/db", "nightly", &after);
        assert!(waiting.may_resolve);
        assert!(waiting.message.starts_with("cannot restore from the archive of default/db (BackupPolicy nightly)"));
        assert!(unreachable("default/db", "nightly", &TargetError::NoBackups).may_resolve);
        let before = TargetError::BeforeBackupEnd { target: "t".into(), backup: "b".into(), end: "e".into() };
        let refused = unreachable("default/db", "nightly", &before);
        assert_eq!((refused.reason, refused.may_resolve), ("RecoveryTargetUnreachable", false));
        assert!(refused.message.ends_with("no instance was launched"), "{}", refused.message);
    }
}
