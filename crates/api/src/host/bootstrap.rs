//! How a host's data directory is created the first time: `initdb` or `recovery`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules;

/// How the data directory is created the first time. Exactly one of `initdb` or `recovery`.
/// Example: `{initdb: {}}` or `{recovery: {source: {host: orders-db, policy: nightly}}}`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = rules::ONE_BOOTSTRAP_MODE)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    /// Create a new, empty cluster with initdb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitdbBootstrap>,

    /// Restore another host's base backup from its BackupPolicy's storage and replay its
    /// archived WAL, to the end of the archive or to a point in time. After recovery the host
    /// archives to its own place, never into the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryBootstrap>,
}

impl Default for Bootstrap {
    /// `initdb` with its defaults.
    fn default() -> Self {
        Self { initdb: Some(InitdbBootstrap::default()), recovery: None }
    }
}

impl Bootstrap {
    /// True when the data directory is restored from backups.
    pub fn is_recovery(&self) -> bool {
        self.recovery.is_some()
    }

    /// True when the data directory is created with initdb.
    pub fn is_initdb(&self) -> bool {
        self.initdb.is_some()
    }
}

/// A new, empty cluster created by initdb.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InitdbBootstrap {
    /// Page checksums, which let PostgreSQL and backup verification detect corrupted pages.
    /// Default true.
    #[serde(default = "default_true")]
    pub data_checksums: bool,

    /// Encoding of the template databases. Default `UTF8`.
    #[serde(default = "default_encoding")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]+$"), length(max = 63))]
    pub encoding: String,

    /// Locale of the template databases (LC_COLLATE, LC_CTYPE and the others). It must exist on
    /// the host; Debian 12 always has `C.UTF-8`. Default `C.UTF-8`.
    #[serde(default = "default_locale")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.@-]+$"), length(max = 63))]
    pub locale: String,
}

impl Default for InitdbBootstrap {
    fn default() -> Self {
        Self { data_checksums: true, encoding: default_encoding(), locale: default_locale() }
    }
}

fn default_true() -> bool {
    true
}

fn default_encoding() -> String {
    "UTF8".to_string()
}

fn default_locale() -> String {
    "C.UTF-8".to_string()
}

/// Restore from another host's backups.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryBootstrap {
    /// Whose backups to restore: the source host's name and the BackupPolicy its archive lives
    /// in. The source host may already be deleted; its archive is read, never written.
    pub source: RecoverySource,

    /// Which base backup to start from: `LATEST` (default) or a backup name as listed in the
    /// policy's status or by `pgec2-agent backup-list`. With a `time` or `lsn` target and
    /// `LATEST`, the newest backup that ends before the target is used. Backups of either kind
    /// qualify: a `snapshot` backup restores by creating the data volume from its volume
    /// snapshot, an `objectStore` backup by copying its files from the archive; both then
    /// replay WAL from the archive. `status.restore` says which was used.
    #[serde(default = "default_backup")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"), length(max = 128))]
    pub backup: String,

    /// Where replay stops. Without a target, all archived WAL is replayed (the latest state).
    /// The target is checked against the source's recovery window before anything is launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecoveryTarget>,

    /// What PostgreSQL does when it reaches `target`: `promote` (default: open for writes on a
    /// new timeline), `pause` (stay read-only so you can inspect, then promote by hand) or
    /// `shutdown`. Ignored without a target.
    #[serde(default)]
    pub target_action: TargetAction,

    /// When the chosen backup is a snapshot backup on AWS: enable EBS Fast Snapshot Restore
    /// for its snapshot in the host's availability zone and wait until it is enabled before
    /// the data volume is created, so the volume reads at full speed from the first block
    /// instead of loading blocks lazily from S3. AWS bills it per snapshot and zone by the
    /// hour until it is disabled again, which the operator does once the volume exists.
    /// Ignored by the local cloud and for object-store backups. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fast_snapshot_restore: bool,
}

/// The name of the newest backup, as understood by `backup` and by `pgec2-agent backup-fetch`.
pub const LATEST_BACKUP: &str = "LATEST";

fn default_backup() -> String {
    LATEST_BACKUP.to_string()
}

/// The archive a recovery reads from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySource {
    /// Name of the source PostgresHost in this namespace (its archive is `<namespace>/<host>` in
    /// the policy's storage).
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub host: String,

    /// Name of the BackupPolicy in this namespace whose storage holds the source's archive.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub policy: String,
}

/// Where WAL replay stops. Exactly one field. Example: `{time: "2025-03-01T12:00:00Z"}`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = rules::ONE_RECOVERY_TARGET)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTarget {
    /// Stop after the last transaction that committed at or before this time, written as
    /// PostgreSQL's `recovery_target_time` takes it: RFC 3339 (`2026-12-04T15:25:03Z`) or what
    /// psql prints (`2026-12-04 15:25:03.429792+00`); `T` or a space, optional fractional
    /// seconds, and a zone: `Z`, `UTC`, `GMT` or an offset such as `+00`, `+05:30`, `-0800`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        regex(
            pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)? ?([Zz]|[Uu][Tt][Cc]|[Gg][Mm][Tt]|[+-][0-9]{2}(:?[0-9]{2})?)$"
        )
    )]
    pub time: Option<String>,

    /// Stop at this WAL location, written as PostgreSQL prints it, e.g. `0/3000060`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub lsn: Option<String>,

    /// Stop after this transaction id commits, e.g. `"7415"` (a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,20}$"))]
    pub xid: Option<String>,

    /// Stop at this named restore point, created with `pg_create_restore_point()`. Up to 63
    /// characters, without quotes, backslashes or line breaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r#"^[^'"\\\r\n]+$"#))]
    pub name: Option<String>,

    /// Stop as soon as the restored backup is consistent (the earliest point it can reach).
    /// Must be `true` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::IMMEDIATE_IS_TRUE)]
    pub immediate: Option<bool>,
}

/// What PostgreSQL does on reaching the recovery target, spelled as the HostSpec spells it.
pub use pgec2_contract::recovery::TargetAction;
