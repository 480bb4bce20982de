//! Status types shared by `PostgresHost` and `BackupPolicy`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A complete base backup in a host's archive, as the storage catalog records it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    /// The backup's name, usable as `bootstrap.recovery.backup`.
    pub name: String,
    /// When the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the backup finished (it is usable from this point on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// WAL location where the backup starts, e.g. `0/2000028`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    /// WAL location where the backup ends; recovery can stop no earlier than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_lsn: Option<String>,
    /// Timeline the backup was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Size of the backed-up data files in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_bytes: Option<i64>,
    /// Bytes stored for the backup after compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// Pinned: kept regardless of retention.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    /// How the data was copied: `objectStore` or `snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The volume snapshot holding the data of a `snapshot` backup (an EBS snapshot id on AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// The points in time a host can be restored to: from the end of its oldest kept backup to the
/// newest archived WAL.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryWindow {
    /// The earliest time a restore can reach (end of the oldest kept backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverable_time: Option<Time>,
    /// The earliest WAL location a restore can reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverable_lsn: Option<String>,
    /// The latest time a restore can reach (the newest archived WAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recoverable_time: Option<Time>,
    /// The latest WAL location a restore can reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recoverable_lsn: Option<String>,
}
