//! Restore drills: `BackupPolicy.spec.verification` and `status.verification`. On its own
//! schedule the operator restores each host's backups into a throwaway PostgresHost, checks the
//! restored data and records how long the restore took.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules;

/// Restore drills: on `schedule`, for every host of the policy, the operator restores a backup
/// into a new, throwaway PostgresHost named `<host>-drill-<time>` (labelled
/// `pgec2.io/drill-of`, owned by this policy, archiving nothing), waits until PostgreSQL has
/// finished recovery, runs the `checks`, records the outcome and the time each phase took in
/// `status.verification`, and deletes the drill host (unless `keep`). The source host and its
/// archive are only read. A passing drill gives the host's
/// `status.recoverability.lastVerifiedRtoSeconds` and its `RtoMet` condition; a failing one
/// turns the policy's `RestoreVerified` condition False and records a Warning event.
/// Example: `{schedule: "0 2 * * *", target: latest, checks: [{amcheck: {}}, {sql: "SELECT count(*) > 0 FROM orders", database: shop}]}`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// When drills run, as a cron expression like the policy's `schedule` (same forms, same
    /// `timeZone`), e.g. `0 2 * * *` for 02:00 every night. A tick that comes while a host's
    /// previous drill still runs is skipped for that host. `suspend` stops drills too.
    #[schemars(regex(pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|\S+( +\S+){4,5})$"))]
    #[schemars(length(max = 128))]
    pub schedule: String,

    /// What the drill restores: `latest` (default: the newest backup, with all archived WAL
    /// replayed, which is what a restore after losing the host does) or `randomInWindow` (a
    /// point in time drawn at random from the host's recovery window, restored from the newest
    /// backup before it; over many nights this exercises every backup and WAL segment kept).
    #[serde(default)]
    pub target: VerificationTarget,

    /// What is checked on the restored copy once recovery has finished (`amcheck` first, then
    /// the `sql` checks in order); the drill passes when every check passes. Default:
    /// `[{amcheck: {}}]`.
    #[serde(default = "default_checks")]
    #[schemars(length(max = 16))]
    pub checks: Vec<VerificationCheck>,

    /// Keep the drill host after the drill (for inspection) instead of deleting it. It is
    /// deleted with the policy, or by you. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,

    /// The longest a drill may take, from the drill host's creation to the end of its checks,
    /// as a duration such as `30m` or `2h`; a drill that takes longer fails. Default `2h`.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"), length(min = 2, max = 16))]
    pub timeout: String,
}

/// Which point a drill recovers to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum VerificationTarget {
    /// The newest backup and all archived WAL.
    #[default]
    Latest,
    /// A random point in time of the recovery window.
    RandomInWindow,
}

/// One check of a restored copy: exactly one of `amcheck` or `sql`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = rules::ONE_VERIFICATION_CHECK)]
#[serde(rename_all = "camelCase")]
pub struct VerificationCheck {
    /// Run `pg_amcheck` on every database (the `amcheck` extension is created where it is
    /// missing): heap tables and B-tree indexes are checked for corruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amcheck: Option<AmcheckCheck>,

    /// A query run on the restored copy as the PostgreSQL superuser; the check passes when the
    /// first column of the first row it returns is `true`, e.g.
    /// `SELECT count(*) > 1000 FROM orders` or
    /// `SELECT max(created_at) > now() - interval '1 day' FROM orders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub sql: Option<String>,

    /// The database `sql` runs in. Default `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"), length(max = 63))]
    pub database: Option<String>,
}

/// `pg_amcheck` options.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AmcheckCheck {
    /// Also check that every heap tuple has its index entries (`pg_amcheck --heapallindexed`):
    /// finds more, takes longer. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub heapallindexed: bool,
}

impl VerificationCheck {
    /// The amcheck check.
    pub fn amcheck() -> Self {
        Self { amcheck: Some(AmcheckCheck::default()), sql: None, database: None }
    }

    /// A SQL check in `database` (`None`: `postgres`).
    pub fn sql(sql: &str, database: Option<&str>) -> Self {
        Self { amcheck: None, sql: Some(sql.to_string()), database: database.map(str::to_string) }
    }
}

fn default_checks() -> Vec<VerificationCheck> {
    vec![VerificationCheck::amcheck()]
}

fn default_timeout() -> String {
    "2h".to_string()
}

/// The restore drills of a policy, written by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// The drill schedule tick that was last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// The next drill schedule tick, absent while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// Drills running now, one per source host at most. Kept in status so that a restarted
    /// operator follows them to the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["host"]))]
    pub active: Vec<ActiveDrill>,

    /// The last drills that finished, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub results: Vec<DrillResult>,
}

/// A drill that runs now.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveDrill {
    /// The source host (`namespace/name`) whose backups are restored.
    pub host: String,
    /// Name of the drill's PostgresHost (same namespace).
    pub drill_host: String,
    /// When the drill host was created: the start of every phase time.
    pub start_time: Time,
    /// The recovery target time (`randomInWindow`); absent: the end of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<Time>,
    /// The cloud's id of the command running `pgec2-agent drill-check`, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_command_id: Option<String>,
}

/// One finished drill.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrillResult {
    /// The source host (`namespace/name`).
    pub host: String,
    /// Name of the drill's PostgresHost (deleted after the drill unless `keep`).
    pub drill_host: String,
    /// `Passed` or `Failed`.
    pub outcome: DrillOutcome,
    /// What passed, or what failed and where to look.
    pub message: String,
    /// When the drill started (the drill host was created).
    pub start_time: Time,
    /// When it finished.
    pub finish_time: Time,
    /// The backup restored, when the restore got as far as choosing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// `objectStore` or `snapshot`: how the backup was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_kind: Option<String>,
    /// The recovery target time the drill asked for (`randomInWindow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<Time>,
    /// The last WAL location replayed: where the restored copy's history ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_to_lsn: Option<String>,
    /// Commit time of the last transaction replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_to_time: Option<Time>,
    /// How long each phase took.
    #[serde(default)]
    pub phases: DrillPhases,
    /// Each check's outcome (`amcheck` first, then the `sql` checks in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<DrillCheckResult>,
}

/// How a drill ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
// The field's description is the one users see; an empty one here keeps it.
#[schemars(description = "")]
pub enum DrillOutcome {
    /// Restored, recovered and every check passed.
    Passed,
    /// The restore, the recovery or a check failed, or the drill took too long.
    Failed,
}

/// Seconds each phase of a drill took, from the drill host's creation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrillPhases {
    /// Seconds the agent took to make the data directory (copy an object-store backup, or
    /// prepare a volume created from a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_directory_seconds: Option<i64>,
    /// Seconds from the start until PostgreSQL accepted connections on the restored copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepting_connections_seconds: Option<i64>,
    /// Seconds from the start until recovery had finished (the copy was promoted and
    /// writable): the measured recovery time, which `objectives.rto` is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_seconds: Option<i64>,
    /// Seconds the checks took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_seconds: Option<i64>,
}

/// The outcome of one check.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrillCheckResult {
    /// `amcheck`, or `sql[<n>]` for the n-th `sql` check of `checks` (counted from 0).
    pub name: String,
    /// True when the check passed.
    pub passed: bool,
    /// What it found.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
