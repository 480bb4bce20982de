//! `BackupPolicy` status, written only by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::{BackupInfo, RecoveryWindow};

/// What the operator observed of the policy and its hosts' archives. Written only by the
/// operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (the spec is valid and backups are scheduled) and `LastBackupSucceeded`, each
    /// True, False or Unknown with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The schedule tick that was last run (not when it was noticed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// The `incrementalSchedule` tick that was last run (not when it was noticed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_incremental_schedule_time: Option<Time>,

    /// The next schedule tick, absent while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// The newest backup run that succeeded, on any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<BackupRun>,

    /// The newest backup run that failed, on any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_backup: Option<BackupRun>,

    /// Base backups running right now, one per host at most. Kept in status so that a
    /// restarted operator follows them to the end instead of starting them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["host"]))]
    pub active_backups: Vec<ActiveBackup>,

    /// One entry per PostgresHost that references this policy, read from the storage catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["host"]))]
    pub hosts: Vec<HostBackupSummary>,

    /// Restore drills (`spec.verification`): the running ones and the last results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::verification::VerificationStatus>,

    /// What retention would delete but a lock still holds (`snapshotLock` on a snapshot
    /// backup, `storage.s3.objectLock` on a backup's objects or WAL), with when each can go:
    /// the first retention pass after that time deletes it. Refreshed each time retention runs
    /// for a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locked_backups: Vec<LockedBackup>,
}

/// A backup (or WAL) that retention keeps only because it is locked.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LockedBackup {
    /// Name of the PostgresHost (`namespace/name`).
    pub host: String,
    /// The backup kept (or `N WAL files from <segment>`).
    pub name: String,
    /// When its lock ends and retention can delete it.
    pub until: Time,
}

/// One backup run of one host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRun {
    /// Name of the PostgresHost.
    pub host: String,
    /// Name of the backup, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// What went wrong, for a failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A base backup running on a host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveBackup {
    /// Name of the PostgresHost (`namespace/name`).
    pub host: String,
    /// The cloud's id of the command running `pgec2-agent backup-push` (an SSM command id on
    /// AWS).
    pub command_id: String,
    /// When the command was sent.
    pub start_time: Time,
    /// The schedule tick the backup was taken for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_tick: Option<Time>,
    /// The on-demand request (`pgec2.io/backup-request` value) it was taken for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// `snapshot` when the backup is a volume snapshot the operator takes while the command
    /// holds the backup open, `incremental` for an incremental backup (`incrementalSchedule`);
    /// absent for a full object-store backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// The archive of one host, as the storage catalog shows it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostBackupSummary {
    /// Name of the PostgresHost.
    pub host: String,
    /// Number of complete base backups kept.
    #[serde(default)]
    pub backups_kept: i32,
    /// The newest complete base backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupInfo>,
    /// The points in time the host can be restored to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window: Option<RecoveryWindow>,
}
