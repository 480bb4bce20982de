//! Names shared by the operator, the CRDs and users: API group and version, finalizers, the
//! field manager, annotations and condition types. Everything that is spelled the same in two
//! places is spelled here once.

/// The API group of every pgec2 resource.
pub const API_GROUP: &str = "pgec2.io";

/// The API version of this crate's types.
pub const API_VERSION: &str = "v1alpha1";

/// `apiVersion` of this crate's resources as written in manifests (`pgec2.io/v1alpha1`).
pub const API_GROUP_VERSION: &str = "pgec2.io/v1alpha1";

/// Finalizer the operator puts on every `PostgresHost`: it is removed only after PostgreSQL is
/// stopped, the instance terminated and the data volume handled per `deletionPolicy`.
pub const HOST_FINALIZER: &str = "pgec2.io/host-cleanup";

/// Finalizer the operator puts on every `BackupPolicy`: it is removed once no scheduled work for
/// the policy is in flight.
pub const POLICY_FINALIZER: &str = "pgec2.io/policy-cleanup";

/// Field manager of every write the operator makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "pgec2-operator";

/// Annotation on a `PostgresHost` that asks for one on-demand backup. Set it to any value that
/// differs from `status.handledBackupRequest` (a timestamp works well); the operator runs one
/// backup and then records the value in `status.handledBackupRequest`.
pub const BACKUP_REQUEST_ANNOTATION: &str = "pgec2.io/backup-request";

/// Label on a restore drill's PostgresHost naming the BackupPolicy that runs the drill.
pub const DRILL_POLICY_LABEL: &str = "pgec2.io/drill-policy";

/// Label on a restore drill's PostgresHost naming the host whose backups it restores.
pub const DRILL_SOURCE_LABEL: &str = "pgec2.io/drill-of";

/// Condition types in `status.conditions` (Kubernetes `metav1.Condition` shape).
pub mod condition {
    /// The host serves PostgreSQL and, when a policy is referenced, archives WAL: the summary
    /// of the other conditions. On a `BackupPolicy`: the spec is valid and backups are scheduled.
    pub const READY: &str = "Ready";
    /// The host's instance (EC2 instance or local host directory) exists and runs.
    pub const INSTANCE_RUNNING: &str = "InstanceRunning";
    /// The agent on the host answers commands.
    pub const AGENT_READY: &str = "AgentReady";
    /// PostgreSQL runs and accepts connections.
    pub const POSTGRES_READY: &str = "PostgresReady";
    /// WAL archiving works and the newest archived segment is recent enough.
    pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";
    /// The archive has no hole: the agent's archive queue cap dropped no WAL segment since the
    /// newest base backup (False, reason `ArchiveHole`, names the dropped range).
    pub const ARCHIVE_COMPLETE: &str = "ArchiveComplete";
    /// The most recent base backup succeeded.
    pub const LAST_BACKUP_SUCCEEDED: &str = "LastBackupSucceeded";

    /// On a `BackupPolicy` with `verification`: the newest restore drill passed.
    pub const RESTORE_VERIFIED: &str = "RestoreVerified";

    /// The host meets its policy's recovery point objective (`objectives.rpo`).
    pub const RPO_MET: &str = "RpoMet";
    /// The host's last timed restore meets its policy's recovery time objective
    /// (`objectives.rto`).
    pub const RTO_MET: &str = "RtoMet";

    /// Every condition type a `PostgresHost` reports.
    pub const HOST_CONDITIONS: [&str; 9] = [
        READY,
        INSTANCE_RUNNING,
        AGENT_READY,
        POSTGRES_READY,
        CONTINUOUS_ARCHIVING,
        ARCHIVE_COMPLETE,
        LAST_BACKUP_SUCCEEDED,
        RPO_MET,
        RTO_MET,
    ];
}
