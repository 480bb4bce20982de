//! What the BackupPolicy controller tells each PostgresHost about its backups: `lastBackup` and
//! `recoveryWindow` from the catalog, and the `LastBackupSucceeded` condition when a backup of
//! the host finished. Applied as the policy controller's part of the host's status
//! ([`HostStatusPart::Backups`]), so fields the host controller owns are never overwritten.

use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};
use pgec2_api::{HostBackupSummary, PostgresHost, PostgresHostStatus, condition};

use super::status::Outcome;
use crate::kube_layer::conditions::{self, ConditionUpdate, Truth};
use crate::kube_layer::status::{HostStatusPart, apply_host_status};

/// The host status with `summary` and `outcome` applied (pure).
pub fn with_backups(
    host: &PostgresHost,
    summary: &HostBackupSummary,
    outcome: Option<&Outcome>,
    now: Timestamp,
) -> PostgresHostStatus {
    let mut status = host.status.clone().unwrap_or_default();
    status.last_backup = summary.last_backup.clone();
    status.recovery_window = summary.recovery_window.clone();
    let update = match outcome {
        Some(Outcome::Succeeded { backup }) => Some(ConditionUpdate::new(
            condition::LAST_BACKUP_SUCCEEDED,
            Truth::True,
            "BackupSucceeded",
            format!("base backup {} committed", backup.as_deref().unwrap_or("(name not reported)")),
        )),
        Some(Outcome::Failed { message }) => {
            Some(ConditionUpdate::new(condition::LAST_BACKUP_SUCCEEDED, Truth::False, "BackupFailed", message.clone()))
        }
        None => None,
    };
    if let Some(update) = update {
        conditions::set(&mut status.conditions, &update, host.metadata.generation, now);
    }
    status
}

/// Writes the backup fields of `host`'s status, computed from a fresh read of it (a request
/// marked handled earlier in this reconcile stays marked); failures are logged (the next
/// reconcile of the policy writes them again).
pub async fn publish(
    client: &kube::Client,
    host: &PostgresHost,
    summary: &HostBackupSummary,
    outcome: Option<&Outcome>,
    now: Timestamp,
) {
    let api: Api<PostgresHost> = Api::namespaced(client.clone(), &host.namespace().unwrap_or_default());
    let written = match api.get_status(&host.name_any()).await {
        Ok(stored) => {
            let wanted = with_backups(&stored, summary, outcome, now);
            apply_host_status(&api, &stored, HostStatusPart::Backups, &wanted).await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        tracing::warn!(host = %host.qualified_name(), %error, "failed to write the host's backup status");
    }
}

/// Records in `host`'s status that the on-demand backup request `value` was handled.
pub async fn mark_request_handled(client: &kube::Client, host: &PostgresHost, value: &str) {
    let api: Api<PostgresHost> = Api::namespaced(client.clone(), &host.namespace().unwrap_or_default());
    let mut wanted = host.status.clone().unwrap_or_default();
    wanted.handled_backup_request = Some(value.to_string());
    if let Err(error) = apply_host_status(&api, host, HostStatusPart::Backups, &wanted).await {
        tracing::warn!(host = %host.qualified_name(), %error, "failed to record the handled backup request");
    }
}

#[cfg(test)]
mod tests {
    use pgec2_api::BackupInfo;
    use pgec2_api::fixtures::host;

    use super::*;

    fn summary(name: &str) -> HostBackupSummary {
        HostBackupSummary {
            host: "default/db".into(),
            backups_kept: 1,
            last_backup: Some(BackupInfo {
                name: name.into(),
                start_time: None,
                finish_time: None,
                start_lsn: None,
                finish_lsn: None,
                timeline: None,
                data_bytes: None,
                stored_bytes: None,
                permanent: false,
                kind: None,
                snapshot_id: None,
            }),
            recovery_window: None,
        }
    }

    #[test]
    fn the_newest_backup_and_the_outcome_are_copied_into_the_host_status() {
        let db = host("db").build();
        let succeeded = Outcome::Succeeded { backup: Some("base_b".into()) };
        let status = with_backups(&db, &summary("base_b"), Some(&succeeded), Timestamp::UNIX_EPOCH);
        assert_eq!(status.last_backup.map(|backup| backup.name).as_deref(), Some("base_b"));
        let last = status.conditions.iter().find(|c| c.type_ == condition::LAST_BACKUP_SUCCEEDED).expect("condition");
        assert_eq!((last.status.as_str(), last.reason.as_str()), ("True", "BackupSucceeded"));
        assert!(last.message.contains("base_b"), "{}", last.message);
    }

    #[test]
    fn a_failure_turns_the_condition_false_and_keeps_the_last_good_backup() {
        let db = host("db").build();
        let failed = Outcome::Failed { message: "backup-push exited with 1: disk full".into() };
        let status = with_backups(&db, &summary("base_a"), Some(&failed), Timestamp::UNIX_EPOCH);
        assert_eq!(status.last_backup.map(|backup| backup.name).as_deref(), Some("base_a"));
        let last = status.conditions.iter().find(|c| c.type_ == condition::LAST_BACKUP_SUCCEEDED).expect("condition");
        assert_eq!((last.status.as_str(), last.reason.as_str()), ("False", "BackupFailed"));
        assert!(last.message.contains("disk full"));
    }

    #[test]
    fn without_a_finished_backup_no_condition_is_invented() {
        let db = host("db").build();
        let status = with_backups(&db, &summary("base_a"), None, Timestamp::UNIX_EPOCH);
        assert!(status.conditions.iter().all(|c| c.type_ != condition::LAST_BACKUP_SUCCEEDED));
    }
}
