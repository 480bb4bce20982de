//! `PostgresHost` spec: one PostgreSQL server on its own EC2 instance (or, with the local cloud,
//! a directory on the operator's machine) with its own data volume.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bootstrap::Bootstrap;
use super::status::PostgresHostStatus;
use crate::rules;
use crate::schema::bounded_map;

/// A PostgreSQL server on its own EC2 instance with its own EBS data volume, set up and
/// watched by the pgec2 operator, optionally backed up by a BackupPolicy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgec2.io",
    version = "v1alpha1",
    kind = "PostgresHost",
    plural = "postgreshosts",
    singular = "postgreshost",
    shortname = "pgh",
    namespaced,
    status = "PostgresHostStatus",
    derive = "PartialEq",
    doc = "A PostgreSQL server on its own EC2 instance and EBS data volume, managed by pgec2.",
    printcolumn = r#"{"name":"Phase", "type":"string", "description":"Lifecycle phase", "jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Instance", "type":"string", "description":"EC2 instance id (or local host id)", "jsonPath":".status.instanceId"}"#,
    printcolumn = r#"{"name":"Version", "type":"integer", "description":"PostgreSQL major version", "jsonPath":".spec.postgresVersion"}"#,
    printcolumn = r#"{"name":"Last Backup", "type":"date", "description":"When the newest base backup finished", "jsonPath":".status.lastBackup.finishTime"}"#,
    printcolumn = r#"{"name":"RPO", "type":"integer", "description":"Seconds of committed work losing the host now would lose", "jsonPath":".status.recoverability.rpoSeconds"}"#,
    printcolumn = r#"{"name":"RPO Met", "type":"string", "description":"Whether the policy's recovery point objective holds", "jsonPath":".status.conditions[?(@.type==\"RpoMet\")].status"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = rules::STANDBY_NEEDS_RECOVERY)]
#[serde(rename_all = "camelCase")]
pub struct PostgresHostSpec {
    /// PostgreSQL major version to install and run: 13, 14, 15, 16 or 17. Default 15.
    /// Cannot change after creation (major version upgrades are not supported in v1alpha1).
    #[serde(default = "default_postgres_version")]
    #[schemars(range(min = 13, max = 17))]
    #[x_kube(validation = rules::POSTGRES_VERSION_IMMUTABLE)]
    pub postgres_version: i32,

    /// The EC2 instance that runs PostgreSQL. Every field has a default; fields only AWS needs
    /// (subnetId, securityGroupIds, iamInstanceProfile) are ignored by the local cloud, and a
    /// host on AWS that lacks them waits with a False `InstanceRunning` condition saying which.
    #[serde(default)]
    pub instance: InstanceSpec,

    /// The EBS data volume that holds the data directory. It is created with the instance, is
    /// never deleted on instance termination, and outlives the host per `deletionPolicy`.
    pub storage: VolumeSpec,

    /// PostgreSQL configuration on top of pgec2's automatic tuning.
    #[serde(default)]
    pub postgres: PostgresSpec,

    /// Continuous WAL archiving and scheduled base backups. Without it the host is not backed
    /// up at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// How the data directory is created the first time: exactly one of `initdb` (a new, empty
    /// cluster) or `recovery` (restored from another host's backups). Default `initdb` with its
    /// defaults. Cannot change after creation.
    #[serde(default)]
    #[x_kube(validation = rules::BOOTSTRAP_IMMUTABLE)]
    pub bootstrap: Bootstrap,

    /// Keep the host in archive recovery, replaying the WAL that `bootstrap.recovery.source`
    /// archives, as a warm standby ready to take over. Requires `bootstrap.recovery` without a
    /// `target`. Setting it to false promotes the host to a writable primary on a new timeline
    /// that archives to its own place; a promoted host cannot become a standby again.
    /// Default false.
    #[serde(default)]
    #[x_kube(validation = rules::STANDBY_NEVER_RETURNS)]
    pub standby: bool,

    /// Stop all changes: while true the operator does not touch the instance, the volume or
    /// PostgreSQL and runs no scheduled backup for this host; it still reports status.
    /// Default false.
    #[serde(default)]
    pub paused: bool,
}

/// The default PostgreSQL major version.
pub const DEFAULT_POSTGRES_VERSION: i32 = 15;

fn default_postgres_version() -> i32 {
    DEFAULT_POSTGRES_VERSION
}

/// The EC2 instance that runs PostgreSQL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = rules::SUBNET_STAYS)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// EC2 instance type, e.g. `m7i.large` or `r7g.xlarge` (Graviton types get the arm64
    /// image). Memory and CPUs of the type drive PostgreSQL's automatic tuning.
    /// Default `t3.medium`.
    #[serde(default = "default_instance_type")]
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$"))]
    pub instance_type: String,

    /// AMI to launch. Default: the latest Debian 12 image, read from AWS's public SSM parameter
    /// for the instance type's architecture. Only used when an instance is launched; changing it
    /// does not replace a running instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^ami-[0-9a-f]{8,17}$"))]
    pub image_id: Option<String>,

    /// Subnet to launch in (`subnet-...`). Its availability zone is where the data volume is
    /// created, so once set it cannot change. Required on AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^subnet-[0-9a-f]{8,17}$"))]
    pub subnet_id: Option<String>,

    /// Security groups of the instance (`sg-...`). They must allow PostgreSQL's port (5432) from
    /// your clients. Required on AWS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), inner(regex(pattern = r"^sg-[0-9a-f]{8,17}$")))]
    pub security_group_ids: Vec<String>,

    /// Name of the IAM instance profile. Its role needs the SSM managed-instance permissions and
    /// get/put/list (never delete) on the backup policy's bucket prefix. Required on AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub iam_instance_profile: Option<String>,

    /// The instance's root (operating system) volume. Default 20 GiB gp3.
    #[serde(default)]
    pub root_volume: RootVolumeSpec,

    /// Extra tags on the instance and its volumes. Keys starting with `pgec2.io/` or `aws:` are
    /// reserved; at most 40 tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<40, 256>)]
    #[x_kube(validation = rules::TAGS_NOT_RESERVED, validation = rules::TAGS_FIT_EC2)]
    pub tags: BTreeMap<String, String>,
}

impl Default for InstanceSpec {
    fn default() -> Self {
        Self {
            instance_type: default_instance_type(),
            image_id: None,
            subnet_id: None,
            security_group_ids: Vec::new(),
            iam_instance_profile: None,
            root_volume: RootVolumeSpec::default(),
            tags: BTreeMap::new(),
        }
    }
}

fn default_instance_type() -> String {
    "t3.medium".to_string()
}

/// The instance's root volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RootVolumeSpec {
    /// Size in GiB, 8 to 1024. Default 20.
    #[serde(default = "default_root_size", rename = "sizeGiB")]
    #[schemars(range(min = 8, max = 1024))]
    pub size_gib: i32,
    /// EBS volume type: `gp3` (default), `gp2`, `io1` or `io2`.
    #[serde(default, rename = "type")]
    pub volume_type: VolumeType,
}

impl Default for RootVolumeSpec {
    fn default() -> Self {
        Self { size_gib: default_root_size(), volume_type: VolumeType::default() }
    }
}

fn default_root_size() -> i32 {
    20
}

/// The data volume of a host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = rules::SIZE_FITS_TYPE,
    validation = rules::THROUGHPUT_ONLY_GP3,
    validation = rules::IOPS_NOT_GP2,
    validation = rules::IOPS_REQUIRED_FOR_IO,
    validation = rules::VOLUME_KMS_KEY_IMMUTABLE
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Size in GiB, 1 to 65536 (gp2, gp3 and io1 stop at 16384). It may grow, never shrink:
    /// growing it resizes the EBS volume and the filesystem online.
    #[serde(rename = "sizeGiB")]
    #[schemars(range(min = 1, max = 65536))]
    #[x_kube(validation = rules::SIZE_NEVER_SHRINKS)]
    pub size_gib: i32,

    /// EBS volume type: `gp3` (default), `gp2`, `io1` or `io2`.
    #[serde(default, rename = "type")]
    pub volume_type: VolumeType,

    /// Provisioned IOPS, 100 to 256000, within the limits EBS sets for the type and size.
    /// Optional for gp3 (EBS default 3000), required for io1 and io2, not allowed for gp2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 256000))]
    pub iops: Option<i32>,

    /// Provisioned throughput in MiB/s, 125 to 2000; gp3 only (EBS default 125).
    #[serde(default, rename = "throughputMiBps", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 125, max = 2000))]
    pub throughput_mibps: Option<i32>,

    /// KMS key (id, ARN or alias) that encrypts the volume. Volumes are always encrypted; without
    /// this the account's default EBS key is used. Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,

    /// What happens to the data volume when the PostgresHost is deleted: `Retain` (default:
    /// detach it, keep it and tag it as released, so a new PostgresHost of the same name and
    /// namespace can take it over), `Snapshot` (take an EBS snapshot, then delete the volume) or
    /// `Delete`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// EBS volume type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    /// General purpose SSD with independent IOPS and throughput.
    #[default]
    Gp3,
    /// Previous-generation general purpose SSD.
    Gp2,
    /// Provisioned IOPS SSD.
    Io1,
    /// Provisioned IOPS SSD, block express.
    Io2,
}

/// Fate of the data volume when its PostgresHost is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Detach and keep the volume, tagged as released.
    #[default]
    Retain,
    /// Snapshot the volume, wait for the snapshot, then delete the volume.
    Snapshot,
    /// Delete the volume.
    Delete,
}

/// PostgreSQL configuration on top of pgec2's automatic tuning.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// postgresql.conf parameters that override the automatic tuning (which follows the
    /// instance's memory and CPUs), at most 200, e.g. `max_connections: "200"`, `work_mem: "16MB"`. Values are
    /// strings of up to 1024 characters without line breaks. Parameters pgec2 manages itself (archiving, recovery, paths,
    /// port and listen_addresses) cannot be set here, and `wal_level` may only be `replica` or
    /// `logical`. A value PostgreSQL rejects turns `PostgresReady` False with its message.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<200, 1024>)]
    #[x_kube(
        validation = rules::PARAMETER_NAMES,
        validation = rules::PARAMETERS_NOT_MANAGED,
        validation = rules::PARAMETER_VALUES_SINGLE_LINE,
        validation = rules::WAL_LEVEL_ARCHIVABLE
    )]
    pub parameters: BTreeMap<String, String>,

    /// pg_hba.conf entries, in order, written before pgec2's built-in entries (which give the
    /// agent and the postgres OS user local access). PostgreSQL uses the first entry that
    /// matches a connection, so put specific entries first. Without entries, only local
    /// connections on the host are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub pg_hba: Vec<PgHbaEntry>,
}

/// One pg_hba.conf entry. Example: `{type: hostssl, database: app, user: app, address:
/// 10.0.0.0/16, method: scram-sha-256}` becomes `hostssl app app 10.0.0.0/16 scram-sha-256`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = rules::HBA_ADDRESS_MATCHES_TYPE)]
#[serde(rename_all = "camelCase")]
pub struct PgHbaEntry {
    /// Connection type: `local` (Unix socket), `host`, `hostssl`, `hostnossl`, `hostgssenc` or
    /// `hostnogssenc`.
    #[serde(rename = "type")]
    pub connection_type: HbaConnectionType,

    /// Database name(s), comma-separated, or `all`, `sameuser`, `samerole`, `replication`;
    /// no spaces, quotes or `#`. Default `all`.
    #[serde(default = "default_all")]
    #[schemars(regex(pattern = r##"^[^\s"#]+$"##), length(max = 1024))]
    pub database: String,

    /// User name(s), comma-separated, `+group`, or `all`; no spaces, quotes or `#`.
    /// Default `all`.
    #[serde(default = "default_all")]
    #[schemars(regex(pattern = r##"^[^\s"#]+$"##), length(max = 1024))]
    pub user: String,

    /// Client address for every type except `local` (where it is not allowed): a CIDR range
    /// such as `10.0.0.0/16` or `::1/128`, a host name, or `all`, `samehost`, `samenet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r##"^[^\s"#]+$"##), length(max = 255))]
    pub address: Option<String>,

    /// Authentication method: `scram-sha-256` (recommended), `md5`, `password`, `trust`,
    /// `reject`, `peer`, `ident`, `cert`, `gss`, `ldap`, `radius` or `pam`.
    pub method: HbaMethod,

    /// Authentication options written as `name=value` after the method, e.g.
    /// `clientcert: verify-full`. At most 16; values are single words without quotes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_map::<16, 255>)]
    #[x_kube(validation = rules::HBA_OPTIONS_SINGLE_WORDS)]
    pub options: BTreeMap<String, String>,
}

fn default_all() -> String {
    "all".to_string()
}

/// pg_hba.conf connection type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HbaConnectionType {
    /// Unix-domain socket connections.
    Local,
    /// TCP/IP connections, with or without TLS.
    Host,
    /// TCP/IP connections with TLS only.
    Hostssl,
    /// TCP/IP connections without TLS only.
    Hostnossl,
    /// TCP/IP connections with GSSAPI encryption only.
    Hostgssenc,
    /// TCP/IP connections without GSSAPI encryption only.
    Hostnogssenc,
}

/// pg_hba.conf authentication method.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HbaMethod {
    /// SCRAM-SHA-256 password authentication.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 or SCRAM password authentication.
    Md5,
    /// Clear-text password.
    Password,
    /// Allow without a password.
    Trust,
    /// Reject.
    Reject,
    /// Operating-system user name of a local connection.
    Peer,
    /// Ident server.
    Ident,
    /// TLS client certificate.
    Cert,
    /// GSSAPI (Kerberos).
    Gss,
    /// LDAP server.
    Ldap,
    /// RADIUS server.
    Radius,
    /// PAM.
    Pam,
}

/// Backups of the host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The BackupPolicy (in the same namespace) that says where WAL is archived and when base
    /// backups run. The host archives into its own prefix (`<namespace>/<name>`) of the
    /// policy's storage.
    pub policy_ref: PolicyReference,
}

/// A reference to a BackupPolicy in the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReference {
    /// Name of the BackupPolicy.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}
