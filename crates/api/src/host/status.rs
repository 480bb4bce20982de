//! `PostgresHost` status, written only by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::{BackupInfo, RecoveryWindow};

/// What the operator observed of the host. Written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresHostStatus {
    /// Where the host is in its life: Pending, Provisioning, Configuring, Restoring, Ready,
    /// Degraded, Deleting or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<HostPhase>,

    /// The `metadata.generation` this status describes. When it is lower than the current
    /// generation, the operator has not yet acted on the latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, InstanceRunning, AgentReady, PostgresReady, ContinuousArchiving and
    /// LastBackupSucceeded, each True, False or Unknown with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The host's EC2 instance id (`i-...`), or the local cloud's host id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,

    /// The data volume's EBS volume id (`vol-...`), or the local cloud's volume directory id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,

    /// The instance's private IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,

    /// Availability zone of the instance and its data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,

    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,

    /// The running PostgreSQL server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresStatus>,

    /// WAL archiving as PostgreSQL reports it (pg_stat_archiver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiving: Option<ArchivingStatus>,

    /// The newest complete base backup of this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupInfo>,

    /// The range of points in time this host can be restored to from its archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window: Option<RecoveryWindow>,

    /// How well the host can be recovered now, against its policy's `objectives`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverability: Option<Recoverability>,

    /// The restore that created this host's data directory (hosts with `bootstrap.recovery`):
    /// which backup of which kind, and how long each phase took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,

    /// The newest command the operator sent to the host. While it runs, a restarted operator
    /// waits for it instead of sending it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<CommandStatus>,

    /// Digest of the host configuration (HostSpec and agent) the newest setup command applied
    /// or applies. When the wanted configuration's digest differs, the operator runs setup again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_digest: Option<String>,

    /// The value of the `pgec2.io/backup-request` annotation whose backup the operator last
    /// ran. A different annotation value asks for a new backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_backup_request: Option<String>,

    /// How many times an instance was launched for this host; part of the idempotency token of
    /// a launch, so a retried launch never creates a second instance. Starts at 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub launch_attempt: Option<i32>,

    /// A human-readable summary of the current state or of what is wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How well a host can be recovered now.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recoverability {
    /// Seconds of committed work that losing the host now would lose: the time since the newest
    /// archived WAL while WAL waits to be archived, else at most `walArchiving.archiveTimeout`
    /// (the current segment is switched and archived within it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<i64>,
    /// Seconds the last timed restore from this host's backups took until PostgreSQL ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_rto_seconds: Option<i64>,
    /// The points in time the host can be restored to (as `status.recoveryWindow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window: Option<RecoveryWindow>,
}

/// The restore of a host's data directory from its source's backups.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The backup restored, chosen before the instance was launched (the newest of either kind
    /// that ends before the target, or the one `bootstrap.recovery.backup` names).
    pub backup: String,
    /// `objectStore` (files copied from the archive) or `snapshot` (the data volume was
    /// created from the backup's volume snapshot).
    pub kind: String,
    /// The volume snapshot the data volume was created from (`snapshot` backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// When the operator chose the backup: the restore's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When PostgreSQL first ran on the restored data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// Seconds from the start until the instance ran with its data volume (for a snapshot
    /// backup: the volume created from the snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_seconds: Option<i64>,
    /// Seconds the agent took to make the data directory: copying the files of an object-store
    /// backup, or writing the backup label and recovery settings onto the snapshot's copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_directory_seconds: Option<i64>,
    /// Seconds from PostgreSQL's start until it accepted connections: WAL replay from the
    /// archive up to a consistent state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_seconds: Option<i64>,
    /// Seconds from the start until PostgreSQL ran on the restored data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_seconds: Option<i64>,
}

/// Kind of a restore from an object-store backup.
pub const RESTORE_OBJECT_STORE: &str = "objectStore";
/// Kind of a restore from a snapshot backup.
pub const RESTORE_SNAPSHOT: &str = "snapshot";

impl RestoreStatus {
    /// True when the data volume is created from the backup's volume snapshot.
    pub fn from_snapshot(&self) -> bool {
        self.kind == RESTORE_SNAPSHOT
    }
}

/// Where a host is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
// The field's description is the one users see; an empty one here keeps it.
#[schemars(description = "")]
pub enum HostPhase {
    /// Accepted, nothing created yet.
    Pending,
    /// The instance and its data volume are being created or started.
    Provisioning,
    /// The agent sets up the host: volume, PostgreSQL packages, configuration, initdb.
    Configuring,
    /// The data directory is being restored from backups, or WAL is being replayed.
    Restoring,
    /// PostgreSQL accepts connections and, with a policy, archives WAL.
    Ready,
    /// PostgreSQL runs but something is wrong (see conditions), e.g. archiving fails.
    Degraded,
    /// The host is being deleted.
    Deleting,
    /// The operator cannot make progress without a change to the spec or the environment.
    Failed,
}

impl HostPhase {
    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Configuring => "Configuring",
            Self::Restoring => "Restoring",
            Self::Ready => "Ready",
            Self::Degraded => "Degraded",
            Self::Deleting => "Deleting",
            Self::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for HostPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network endpoint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// The running PostgreSQL server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresStatus {
    /// Full server version, e.g. `15.8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The cluster's system identifier (a 64-bit number, as a string), which ties a data
    /// directory to its archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// Current timeline; it grows by one at every promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeline: Option<i64>,
}

/// WAL archiving as PostgreSQL reports it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchivingStatus {
    /// Name of the newest WAL file archived successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_time: Option<Time>,
    /// Name of the WAL file whose archiving failed most recently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    /// When that failure happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_time: Option<Time>,
    /// WAL files waiting in `pg_wal` to be archived (kept there until they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_files: Option<i64>,
    /// How long the oldest of them has waited, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_waiting_seconds: Option<i64>,
    /// WAL segments the agent's archive queue cap (`transfer.archive_queue_max_mb`) dropped
    /// without archiving them, to keep the primary's disk from filling while archiving failed.
    /// Point-in-time recovery cannot cross them; the record is cleared once a base backup taken
    /// after the last of them is committed. See the `ArchiveComplete` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holes: Option<ArchiveHolesStatus>,
    /// WAL streaming into the archive (`walArchiving.streaming` of the BackupPolicy), as the
    /// host's `wal-receive` service reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<StreamingStatus>,
}

/// The holes the archive queue cap made in the archive.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHolesStatus {
    /// How many WAL segments were dropped.
    pub dropped_segments: i64,
    /// The first dropped segment and when it was dropped.
    pub first_dropped_wal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_dropped_time: Option<Time>,
    /// The last dropped segment and when it was dropped.
    pub last_dropped_wal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_dropped_time: Option<Time>,
}

/// Where WAL streaming stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamingStatus {
    /// `starting`, `streaming`, `reconnecting` (a fault; resuming from the slot) or `stopped`
    /// (an error retrying cannot get past; see `lastError`).
    pub state: String,
    /// The physical replication slot streamed from.
    pub slot: String,
    /// The end of WAL durable in the archive (complete segments and the stored `.partial`), and
    /// when it last advanced or was confirmed current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_time: Option<Time>,
    /// Bytes of WAL the server has written and the archive does not hold yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Seconds since `archivedTime`: how far the streamed archive trails the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// The slot's `wal_status` in `pg_replication_slots` (reserved, extended, unreserved, lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_wal_status: Option<String>,
    /// Conditions to act on, e.g. `SlotUncapped`, `SlotAtRisk`, `SlotLost`, with their messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The receiver's most recent error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A command the operator sent to a host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommandStatus {
    /// The command id (an SSM command id on AWS).
    pub id: String,
    /// What the command does: Setup (host apply), Backup, Inspect (read PostgreSQL's state) or
    /// Stop.
    pub purpose: CommandPurpose,
    /// Pending, InProgress, Succeeded, Failed, TimedOut or Cancelled.
    pub status: CommandState,
    /// When the command was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// Exit code of the command, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last lines of its error output when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why the operator sent a command.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandPurpose {
    /// Converge the host to its spec (`pgec2-agent host apply`).
    Setup,
    /// Take a base backup (`pgec2-agent backup-push`).
    Backup,
    /// Read PostgreSQL's state for status.
    Inspect,
    /// Stop PostgreSQL before the host is deleted.
    Stop,
}

/// State of a host command.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// Sent, not started.
    Pending,
    /// Running.
    InProgress,
    /// Finished with exit code 0.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Did not finish in time.
    TimedOut,
    /// Cancelled before it finished.
    Cancelled,
}

impl CommandState {
    /// True when the command will not change state any more.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Pending | Self::InProgress)
    }
}
