//! `BackupPolicy` spec: where hosts archive WAL and store base backups, when backups run and how
//! many are kept.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::BackupPolicyStatus;
use crate::rules;

/// Where and when the PostgresHosts that reference this policy are backed up: continuous WAL
/// archiving plus scheduled base backups, with retention.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgec2.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    plural = "backuppolicies",
    singular = "backuppolicy",
    shortname = "bp",
    namespaced,
    status = "BackupPolicyStatus",
    derive = "PartialEq",
    doc = "Where and when PostgresHosts are backed up: WAL archiving, scheduled base backups, retention.",
    printcolumn = r#"{"name":"Schedule", "type":"string", "description":"Cron schedule of full backups", "jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Incremental", "type":"string", "description":"Cron schedule of incremental backups", "jsonPath":".spec.incrementalSchedule", "priority":1}"#,
    printcolumn = r#"{"name":"Suspend", "type":"boolean", "description":"Scheduled backups suspended", "jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Backup", "type":"date", "description":"When the newest successful backup finished", "jsonPath":".status.lastSuccessfulBackup.finishTime"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = rules::INCREMENTAL_NEEDS_OBJECT_STORE, validation = rules::SNAPSHOT_LOCK_NEEDS_SNAPSHOTS)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// Where WAL and base backups are stored: exactly one of `s3` or `local`. Each host gets
    /// its own prefix `<namespace>/<host name>` below it.
    pub storage: BackupStorage,

    /// When base backups run: a 5-field cron expression (minute hour day-of-month month
    /// day-of-week), e.g. `0 3 * * *` for 03:00 every day, or one of `@hourly`, `@daily`,
    /// `@weekly`, `@monthly`, `@yearly`. A sixth, leading field gives seconds (`*/30 * * * * *`:
    /// every 30 seconds, for demos and tests). Times are UTC unless `timeZone` is set. Ticks
    /// missed while the operator was down run once, not once per missed tick; a tick that comes
    /// while a host's previous backup still runs is skipped for that host.
    #[schemars(regex(pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|\S+( +\S+){4,5})$"))]
    #[schemars(length(max = 128))]
    pub schedule: String,

    /// When incremental backups run, besides the full backups of `schedule`: the same syntax,
    /// e.g. `schedule: "0 3 * * 0"` (a full backup every Sunday at 03:00) with
    /// `incrementalSchedule: "0 3 * * 1-6"` (an incremental backup the other days). An
    /// incremental backup copies only the 8 KiB blocks changed since the host's newest backup
    /// started (and new and small files whole) and is restored together with the backups it
    /// builds on, down to its full backup. The agent takes a full backup instead when the host
    /// has none yet, or when the chain already holds the agent's
    /// `backup.max_incremental_chain` incrementals (default 6: one week of daily incrementals).
    /// When a tick of both schedules is due at once, the full backup runs. Retention keeps a
    /// chain whole: `retention.fullBackups` counts full backups, and an incremental is kept as
    /// long as its full backup. Only with `method: objectStore`. Default: none (every backup
    /// is full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|\S+( +\S+){4,5})$"))]
    #[schemars(length(max = 128))]
    pub incremental_schedule: Option<String>,

    /// IANA time zone of `schedule` and `incrementalSchedule`, e.g. `Europe/Berlin`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"), length(max = 64))]
    pub time_zone: Option<String>,

    /// Stop starting scheduled backups (WAL archiving continues, on-demand backups still run).
    /// Default false.
    #[serde(default)]
    pub suspend: bool,

    /// How many base backups are kept per host.
    #[serde(default)]
    pub retention: Retention,

    /// Compression of stored WAL and backups: `zstd` (default), `lz4` (faster, larger) or
    /// `none`. Changing it affects new objects only; old ones stay readable.
    #[serde(default)]
    pub compression: Compression,

    /// WAL archiving settings of the hosts.
    #[serde(default)]
    pub wal_archiving: WalArchiving,

    /// How base backups copy the data: `objectStore` (default: every file compressed into the
    /// storage above), `snapshot` (a snapshot of the host's data volume, an EBS snapshot on
    /// AWS, taken between `pg_backup_start` and `pg_backup_stop`; the labels and manifest go to
    /// the storage) or `both` (ticks alternate between the two kinds). Both kinds share one
    /// catalog, one retention count and one recovery window, with the WAL from the storage.
    #[serde(default)]
    pub method: BackupMethod,

    /// Immutable snapshot backups: an EBS Snapshot Lock on the snapshot of each snapshot backup
    /// (the local cloud records the same lock beside its snapshot), set once the snapshot
    /// completes and before the backup commits, so nobody can delete a committed snapshot
    /// backup before the lock ends. Retention keeps a locked snapshot backup in the catalog and
    /// reports when it can go (`status.hosts[].lockedBackups`, an event), then deletes it on a
    /// later pass. `mode` and `days` as in `storage.s3.objectLock`; only with `method: snapshot`
    /// or `both`. The operator needs `ec2:LockSnapshot` and `ec2:DescribeLockedSnapshots`
    /// (deploy/iam/). Default: `storage.s3.objectLock` when it is set, so one setting makes
    /// both kinds of backup immutable; otherwise no lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_lock: Option<ObjectLockPolicy>,

    /// Client-side encryption of WAL segments and backup parts: each is encrypted on the host
    /// (AES-256-GCM, a data key of its own wrapped by the key below) before it is stored, so
    /// whoever owns or reads the bucket cannot read the data. Works with every storage and
    /// with `serverSideEncryption`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,

    /// Recovery objectives every host of this policy is measured against: `rpo`, the most
    /// committed work (as time) losing a host may lose, and `rto`, the longest a restore may
    /// take. Each host reports `status.recoverability` and the conditions `RpoMet` and `RtoMet`,
    /// which turn False with a Warning event when an objective is missed; the operator exports
    /// them as Prometheus metrics. Example: `{rpo: 5m, rto: 30m}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<RecoveryObjectives>,

    /// Restore drills: on their own schedule, restore each host's backups into a throwaway
    /// host, check the restored data and time the restore (see `status.verification`).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::verification::Verification>,
}

/// Recovery objectives: durations such as `30s`, `5m` or `1h30m`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryObjectives {
    /// Recovery point objective: a host misses it (`RpoMet` False) when more than this much
    /// committed work is not archived yet (see `status.recoverability.rpoSeconds`). Each host's
    /// archiving is checked at least three times within it (every 2 s at the most often).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"), length(min = 2, max = 16))]
    pub rpo: Option<String>,

    /// Recovery time objective: a host misses it (`RtoMet` False) when the last timed restore of
    /// its backups took longer (see `status.recoverability.lastVerifiedRtoSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"), length(min = 2, max = 16))]
    pub rto: Option<String>,
}

/// Client-side encryption of the hosts' WAL and base backups.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = rules::ENCRYPTION_NEEDS_KEY)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// `aes-256-gcm` (default) encrypts new objects; `none` stores them in the clear (objects
    /// encrypted before stay readable with `readKeys`).
    #[serde(default)]
    pub mode: EncryptionMode,

    /// The key-encryption key new objects are encrypted with; required with `aes-256-gcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<EncryptionKey>,

    /// Older keys, accepted for reading only: after a rotation, list the previous key here and
    /// old backups and WAL stay restorable without being rewritten. KMS keys need no entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub read_keys: Vec<EncryptionKey>,
}

/// Client-side encryption modes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
// The field's description is the one users see; an empty one here keeps it.
#[schemars(description = "")]
pub enum EncryptionMode {
    /// AES-256-GCM.
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// No encryption of new objects.
    #[serde(rename = "none")]
    None,
}

/// A key-encryption key: exactly one of `kms`, `file` or `env`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = rules::ONE_ENCRYPTION_KEY, validation = rules::KMS_ENDPOINT_NEEDS_KMS)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionKey {
    /// A KMS key id, alias or ARN, e.g. `alias/pgec2-backups`. The hosts' instance profile needs
    /// `kms:GenerateDataKey` and `kms:Decrypt` on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms: Option<String>,

    /// Absolute path, on the host, of a file holding the key (64 hex digits or 32 bytes),
    /// readable by the PostgreSQL user. Provisioning it is up to you.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/[^\n,]*$"), length(max = 4096))]
    pub file: Option<String>,

    /// Name of an environment variable, set for the agent and the PostgreSQL server on the
    /// host, holding the key as 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), length(max = 256))]
    pub env: Option<String>,

    /// Endpoint URL of a KMS-compatible service for the `kms` key, e.g. `http://kms.internal:8080`;
    /// only with `kms`. Default: AWS KMS in the storage's region. Every key of the policy that
    /// sets it must name the same endpoint (the hosts talk to one KMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"), length(max = 2048))]
    pub kms_endpoint: Option<String>,
}

/// How base backups copy the data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum BackupMethod {
    /// Every file compressed into the backup storage.
    #[default]
    ObjectStore,
    /// A snapshot of the host's data volume.
    Snapshot,
    /// Alternate: a snapshot, then an object-store copy, and so on.
    Both,
}

/// Where WAL and base backups are stored. Exactly one of `s3` or `local`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = rules::ONE_STORAGE_BACKEND)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorage {
    /// An S3 bucket, or a bucket of an S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,

    /// A directory on the machine the hosts run on; for local mode and development only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalStorage>,
}

/// An S3 bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = rules::KMS_KEY_NEEDS_AWS_KMS)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Bucket name, e.g. `acme-postgres-backups`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,

    /// Key prefix inside the bucket, without leading or trailing `/`, e.g. `prod`. Default: the
    /// bucket root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$"), length(max = 512))]
    pub prefix: Option<String>,

    /// AWS region of the bucket, e.g. `eu-central-1`. Default: the region of the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, moto), e.g. `http://minio:9000`.
    /// Default: AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"), length(max = 2048))]
    pub endpoint: Option<String>,

    /// Address the bucket in the path (`endpoint/bucket/key`) instead of the host name; most
    /// S3-compatible stores need this. Default false.
    #[serde(default)]
    pub force_path_style: bool,

    /// Storage class of stored objects: `STANDARD` (default), `STANDARD_IA`, `ONEZONE_IA`,
    /// `INTELLIGENT_TIERING` or `GLACIER_IR`. Only classes that can be read immediately are
    /// allowed, because a restore must not wait for an archive retrieval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<S3StorageClass>,

    /// Server-side encryption of stored objects: `AES256` (S3-managed keys) or `aws:kms`.
    /// Default: the bucket's default encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,

    /// KMS key (id, ARN or alias) for `serverSideEncryption: aws:kms`; only allowed with it.
    /// Default: the account's AWS-managed S3 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,

    /// `read`: this bucket and prefix are also a wal-g archive (wal-g's `WALG_S3_PREFIX`, holding
    /// `basebackups_005/` and `wal_005/`), which the hosts read beside their own archives under
    /// `<prefix>/<namespace>/<name>/`: its backups are listed and restorable, its WAL is served
    /// to recovery, and retention keeps the hosts' WAL that its backups replay. Nothing is ever
    /// written or deleted in wal-g's layout. Use one BackupPolicy per adopted wal-g cluster, so
    /// an adopted host keeps the recovery window wal-g began. Default: not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walg_compatible: Option<WalgCompatibility>,

    /// Immutable backups: S3 Object Lock on every object the hosts write (backup parts, labels,
    /// manifests, commit markers, WAL), so nobody can delete a committed backup or its WAL before
    /// the lock ends; retention keeps locked objects and reports when they can go. The bucket
    /// must have been created with Object Lock enabled; the hosts need `s3:PutObjectRetention`
    /// and the operator `s3:GetObjectRetention` (deploy/iam/). Default: no lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockPolicy>,
}

/// A lock on what backups store: S3 Object Lock on objects, EBS Snapshot Lock on snapshots.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLockPolicy {
    /// `governance` (users allowed to bypass it, with `s3:BypassGovernanceRetention` or
    /// `ec2:UnlockSnapshot`, can still remove a lock) or `compliance` (nobody can, the root
    /// account included, until the lock ends).
    pub mode: ObjectLockMode,

    /// Days each object (or snapshot) stays locked after it is written (or completes), 1 to
    /// 36500. Default: as long as retention keeps a backup, `retention.fullBackups` times the
    /// interval of `schedule` (rounded up to whole days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub days: Option<i32>,
}

/// S3 Object Lock retention modes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
// The field's description is the one users see; an empty one here keeps it.
#[schemars(description = "")]
#[serde(rename_all = "camelCase")]
pub enum ObjectLockMode {
    /// Governance mode.
    Governance,
    /// Compliance mode.
    Compliance,
}

impl BackupPolicySpec {
    /// The lock put on backup snapshots: `snapshotLock`, else `storage.s3.objectLock`; none
    /// when backups take no snapshots.
    pub fn effective_snapshot_lock(&self) -> Option<&ObjectLockPolicy> {
        if self.method == BackupMethod::ObjectStore {
            return None;
        }
        self.snapshot_lock.as_ref().or_else(|| self.storage.s3.as_ref().and_then(|s3| s3.object_lock.as_ref()))
    }
}

/// How a BackupPolicy treats a wal-g archive at its bucket and prefix.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
// The field's description is the one users see; an empty one here keeps it.
#[schemars(description = "")]
pub enum WalgCompatibility {
    /// Read wal-g's backups and WAL; never write or delete them.
    #[serde(rename = "read")]
    Read,
}

/// A directory on the machine that runs the hosts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalStorage {
    /// Absolute path of the directory, e.g. `/var/lib/pgec2/backups`. Created if missing.
    #[schemars(regex(pattern = r"^/[^\n]*$"), length(max = 4096))]
    pub path: String,
}

/// S3 storage classes that can be read without a retrieval step.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
// The field's description is the one users see; an empty one here keeps it.
#[schemars(description = "")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum S3StorageClass {
    /// S3 Standard.
    Standard,
    /// S3 Standard-Infrequent Access.
    StandardIa,
    /// S3 One Zone-Infrequent Access.
    OnezoneIa,
    /// S3 Intelligent-Tiering.
    IntelligentTiering,
    /// S3 Glacier Instant Retrieval.
    GlacierIr,
}

/// S3 server-side encryption, spelled as the HostSpec and the agent spell it.
pub use pgec2_contract::storage::ServerSideEncryption;

/// How many base backups are kept.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Number of base backups kept per host, 1 to 1000; older ones, and the WAL only they
    /// need, are deleted by the operator after each successful backup. Pinned (permanent)
    /// backups are kept in addition. Default 7.
    #[serde(default = "default_full_backups")]
    #[schemars(range(min = 1, max = 1000))]
    pub full_backups: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Self { full_backups: default_full_backups() }
    }
}

fn default_full_backups() -> i32 {
    7
}

/// Compression of stored objects.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard: good ratio, fast.
    #[default]
    Zstd,
    /// LZ4: fastest, larger output.
    Lz4,
    /// Stored as is.
    None,
}

impl Compression {
    /// The name as the agent's `PGEC2_COMPRESSION` setting spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
            Self::None => "none",
        }
    }
}

/// WAL archiving settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WalArchiving {
    /// PostgreSQL's `archive_timeout`: the longest time a committed transaction waits before its
    /// WAL segment is switched and archived, so it bounds how much an instance loss can lose on
    /// a quiet server. A duration of 1s to 24h such as `60s`, `5m` or `1h30m`. Default `60s`.
    #[serde(default = "default_archive_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"), length(min = 2, max = 16))]
    #[x_kube(validation = rules::ARCHIVE_TIMEOUT_RANGE)]
    pub archive_timeout: String,
    /// Also stream WAL into the archive as it is written (`pgec2-agent wal-receive` on each host,
    /// from a physical replication slot, beside `archive_command`), uploading the segment being
    /// filled every few seconds: the recovery point then trails the server by seconds instead of
    /// up to `archiveTimeout`. The slot keeps WAL on the primary while the receiver is behind,
    /// bounded by PostgreSQL's `max_slot_wal_keep_size` (set it in `spec.postgres.parameters`).
    /// Each host runs it beside PostgreSQL (a systemd service on EC2, a process of the local
    /// operator on a local host). `status.archiving.streaming` of each host reports it; the
    /// operator checks a streaming host every 5 s (instead of every minute) so that
    /// `status.recoverability.rpoSeconds` stays seconds fresh. Default false.
    #[serde(default)]
    pub streaming: bool,
}

impl Default for WalArchiving {
    fn default() -> Self {
        Self { archive_timeout: default_archive_timeout(), streaming: false }
    }
}

fn default_archive_timeout() -> String {
    "60s".to_string()
}
