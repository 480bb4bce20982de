//! `HostSpec`: what the operator asks of a host. The operator renders it from a PostgresHost and
//! its BackupPolicy, the bootstrap writes it to the host as JSON, and `pgec2-agent host apply`
//! converges the host to it and answers with a [`HostReport`]. Both are a contract between
//! operator and agent versions: fields are only ever added, with defaults.
//!
//! [`HostSpec::validate`] is the one place that decides whether a spec can work; the operator
//! calls it before sending a spec (a bad spec parks the resource with a condition) and the agent
//! calls it again before touching anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compression::Algorithm;
use crate::storage::url::ServerSideEncryption;

mod report;
mod validate;
mod wal_receive;

pub use report::{HostReport, PostgresFacts, StepOutcome, StepReport};
pub use validate::{MANAGED_PARAMETERS, SpecError};
pub use wal_receive::{EC2_WAL_RECEIVE_SPOOL, WAL_RECEIVE_PARTIAL_INTERVAL_SECONDS, WAL_RECEIVE_SLOT};

/// The whole desired state of one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// `<namespace>/<name>` of the PostgresHost.
    pub host: String,
    /// Which steps apply: a real EC2 host, or a directory on this machine.
    pub profile: Profile,
    /// PostgreSQL major version (13 to 17).
    pub postgres_version: u32,
    /// The data volume and where it is mounted.
    pub volume: DataVolume,
    /// The data directory (PGDATA): a directory strictly inside the data volume's mount.
    pub data_directory: PathBuf,
    /// OS user that owns and runs PostgreSQL; it is also the database superuser that connects
    /// over the socket with peer authentication.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// TCP port PostgreSQL listens on.
    pub port: u16,
    /// `listen_addresses`.
    #[serde(default = "default_listen_addresses")]
    pub listen_addresses: String,
    /// `unix_socket_directories` (one directory). Default: `/var/run/postgresql` in the ec2
    /// profile, `<mountPath>/run` in the local profile. See [`HostSpec::socket_directory`].
    #[serde(default)]
    pub socket_directory: Option<PathBuf>,
    /// Directory of PostgreSQL's programs. Default `/usr/lib/postgresql/<N>/bin` (Debian and
    /// Ubuntu, the PostgreSQL apt repository). See [`HostSpec::bin_directory`].
    #[serde(default)]
    pub bin_directory: Option<PathBuf>,
    /// TLS for client connections with a self-signed certificate generated on the host (kept
    /// beside the agent configuration). Default: on in the ec2 profile, off in the local one.
    #[serde(default)]
    pub ssl: Option<bool>,
    /// Memory and CPUs to tune for; detected on the host when absent.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Parameters that override the automatic tuning. The archive, connection and TLS settings
    /// ([`MANAGED_PARAMETERS`]) are pgec2's and are refused here.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Extra pg_hba.conf lines, placed before the defaults.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// Continuous archiving to the host's own archive; none disables archiving.
    #[serde(default)]
    pub archive: Option<ArchiveSpec>,
    /// How an empty data directory is first filled.
    pub bootstrap: BootstrapSpec,
    /// Stay in archive recovery following `bootstrap.recovery`'s source (a standby).
    #[serde(default)]
    pub standby: bool,
    /// Where the agent's configuration file for this host's own archive is written
    /// (`agent.toml`); the read-only configuration for a recovery source goes beside it as
    /// `agent-source.toml`, and the TLS certificate in `tls/`.
    pub agent_config_path: PathBuf,
    /// Path of the agent binary that archive_command/restore_command call.
    pub agent_binary: PathBuf,
}

fn default_os_user() -> String {
    "postgres".to_string()
}

fn default_listen_addresses() -> String {
    "*".to_string()
}

impl HostSpec {
    /// PostgreSQL's program directory (`bin_directory` or the Debian layout).
    pub fn bin_directory(&self) -> PathBuf {
        match &self.bin_directory {
            Some(directory) => directory.clone(),
            None => PathBuf::from(format!("/usr/lib/postgresql/{}/bin", self.postgres_version)),
        }
    }

    /// The Unix socket directory PostgreSQL listens in.
    pub fn socket_directory(&self) -> PathBuf {
        match (&self.socket_directory, self.profile) {
            (Some(directory), _) => directory.clone(),
            (None, Profile::Ec2) => PathBuf::from("/var/run/postgresql"),
            (None, Profile::Local) => self.volume.mount_path.join("run"),
        }
    }

    /// Whether client connections use TLS.
    pub fn ssl_enabled(&self) -> bool {
        self.ssl.unwrap_or(self.profile == Profile::Ec2)
    }

    /// The directory holding the agent's configuration files and the TLS certificate.
    pub fn config_directory(&self) -> PathBuf {
        self.agent_config_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
    }

    /// The agent configuration for the recovery source's archive (read-only for this host).
    pub fn source_config_path(&self) -> PathBuf {
        self.config_directory().join("agent-source.toml")
    }

    /// The server's log file in the local profile (the ec2 profile logs to the journal).
    pub fn log_file(&self) -> PathBuf {
        self.volume.mount_path.join("postgresql.log")
    }

    /// The recovery settings when the data directory is restored from an archive.
    pub fn recovery(&self) -> Option<&RecoverySpec> {
        match &self.bootstrap {
            BootstrapSpec::Recovery(recovery) => Some(recovery),
            BootstrapSpec::Initdb(_) => None,
        }
    }
}

/// Which host steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A real EC2 instance: device discovery, mkfs, mount, apt, systemd.
    Ec2,
    /// A directory on this machine: PostgreSQL runs from `data_directory` via pg_ctl.
    Local,
}

/// The data volume of the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    /// EBS volume id (`vol-...`), found on the host by its NVMe serial. Required in the ec2
    /// profile, ignored in the local one.
    #[serde(default)]
    pub volume_id: Option<String>,
    /// Mount point, `/var/lib/postgresql` by default.
    pub mount_path: PathBuf,
    /// Filesystem created on a blank volume: `ext4` or `xfs`. A volume that already has a
    /// filesystem keeps it.
    #[serde(default = "default_filesystem")]
    pub filesystem: String,
}

fn default_filesystem() -> String {
    "ext4".to_string()
}

/// Machine size used for tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub memory_bytes: u64,
    pub cpus: u32,
}

/// Where and how the host archives WAL and stores backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSpec {
    pub storage: StorageSpec,
    #[serde(default)]
    pub compression: Algorithm,
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// `archive_timeout` in seconds.
    #[serde(default = "default_archive_timeout")]
    pub archive_timeout_seconds: u32,
    /// Also stream WAL into the archive with `pgec2-agent wal-receive` (beside archive_command),
    /// so the recovery point trails the server by seconds. In the ec2 profile `host apply` runs
    /// it as the systemd service `pgec2-wal-receive.service`; in the local profile the operator's
    /// local cloud runs it beside PostgreSQL (see [`HostSpec::wal_receive_argv`]).
    #[serde(default)]
    pub wal_receive: bool,
}

fn default_compression_level() -> i32 {
    3
}

fn default_archive_timeout() -> u32 {
    60
}

/// A storage location: a URL (`s3://bucket/prefix` or `file:///dir`) plus S3 connection options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    pub url: String,
    /// The cluster's archive inside the url (`<namespace>/<name>` for operator-managed hosts);
    /// none means the url itself.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Custom S3-compatible endpoint (path-style addressing).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub server_side_encryption: Option<ServerSideEncryption>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Client-side encryption of the archive's WAL segments and backup parts; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Box<EncryptionSpec>>,
    /// A wal-g archive read beside this one and S3 Object Lock; none when neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Box<StorageExtensions>>,
}

/// What a policy adds to an archive: a wal-g archive to read, immutable objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageExtensions {
    /// A wal-g archive (`s3://bucket/prefix`) read beside this one (the agent's
    /// `storage.walg_prefix`); never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walg_prefix: Option<String>,
    /// S3 Object Lock on every object written: `governance` or `compliance`, with `objectLockDays`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_days: Option<u32>,
}

/// Client-side encryption as the agent's `[encryption]` settings take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// `aes-256-gcm` or `none`.
    pub mode: String,
    /// The writing key: `kms:<key>`, `file:<absolute path>` or `env:<variable>`.
    #[serde(default)]
    pub key: Option<String>,
    /// Older keys, for reading, in the same form.
    #[serde(default)]
    pub read_keys: Vec<String>,
    /// Endpoint of a KMS-compatible service for the `kms:` keys; AWS KMS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_endpoint: Option<String>,
}

impl StorageSpec {
    /// A location with only its URL; the S3 options take their defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: None,
            region: None,
            endpoint: None,
            storage_class: None,
            server_side_encryption: None,
            kms_key_id: None,
            encryption: None,
            extensions: None,
        }
    }

    /// The wal-g archive read beside this one, if any.
    pub fn walg_prefix(&self) -> Option<&str> {
        self.extensions.as_ref().and_then(|extensions| extensions.walg_prefix.as_deref())
    }

    /// The same location with `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
}

/// How the data directory is first created. An existing cluster is never touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BootstrapSpec {
    Initdb(InitdbSpec),
    Recovery(RecoverySpec),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitdbSpec {
    #[serde(default = "default_true")]
    pub data_checksums: bool,
    /// Default `UTF8`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Default `C.UTF-8`.
    #[serde(default)]
    pub locale: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Restore from another cluster's archive, then (unless standby) archive to our own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// The source cluster's archive (read-only for this host).
    pub source: StorageSpec,
    /// `LATEST` or a backup name.
    #[serde(default = "default_latest")]
    pub backup: String,
    /// Where recovery stops; none replays the whole archive.
    #[serde(default)]
    pub target: Option<RecoveryTarget>,
    /// What PostgreSQL does when the target is reached (ignored without a target).
    #[serde(default)]
    pub target_action: TargetAction,
    /// The data volume was created from the volume snapshot of `backup` (a snapshot backup):
    /// the data directory is already there and is prepared for recovery in place
    /// (`pgec2-agent snapshot-restore`) instead of being fetched from the archive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_snapshot: bool,
}

fn default_latest() -> String {
    "LATEST".to_string()
}

/// `recovery_target_*` and `recovery_target_action`, spelled as the PostgresHost CRD spells them.
pub use pgec2_contract::recovery::{RecoveryTarget, TargetAction};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid local-profile spec as the local cloud renders it.
    pub(crate) fn local_spec() -> HostSpec {
        serde_json::from_value(serde_json::json!({
            "host": "default/db1",
            "profile": "local",
            "postgresVersion": 15,
            "volume": { "mountPath": "/srv/hosts/db1" },
            "dataDirectory": "/srv/hosts/db1/data",
            "port": 54321,
            "listenAddresses": "127.0.0.1",
            "bootstrap": { "initdb": {} },
            "archive": { "storage": { "url": "file:///srv/archive/db1" } },
            "agentConfigPath": "/srv/hosts/db1/etc/agent.toml",
            "agentBinary": "/srv/hosts/db1/bin/pgec2-agent"
        }))
        .expect("valid spec")
    }

    #[test]
    fn server_side_encryption_keeps_its_json_spelling_and_an_unknown_one_is_refused() {
        let mut json = serde_json::to_value(local_spec()).expect("json");
        json["archive"]["storage"]["serverSideEncryption"] = serde_json::json!("aws:kms");
        let spec: HostSpec = serde_json::from_value(json.clone()).expect("aws:kms");
        let storage = &spec.archive.as_ref().expect("archive").storage;
        assert_eq!(storage.server_side_encryption, Some(ServerSideEncryption::AwsKms));
        assert_eq!(serde_json::to_value(&spec).expect("json"), json);
        json["archive"]["storage"]["serverSideEncryption"] = serde_json::json!("aes256");
        assert!(serde_json::from_value::<HostSpec>(json).is_err());
    }

    #[test]
    fn a_minimal_spec_takes_the_documented_defaults() {
        let spec = local_spec();
        assert_eq!(spec.os_user, "postgres");
        assert_eq!(spec.volume.filesystem, "ext4");
        assert_eq!(spec.bin_directory(), PathBuf::from("/usr/lib/postgresql/15/bin"));
        assert_eq!(spec.socket_directory(), PathBuf::from("/srv/hosts/db1/run"));
        assert!(!spec.ssl_enabled(), "the local profile defaults to no TLS");
        assert_eq!(spec.source_config_path(), PathBuf::from("/srv/hosts/db1/etc/agent-source.toml"));
        let archive = spec.archive.expect("archive");
        assert_eq!(archive.compression, Algorithm::Zstd);
        assert_eq!(archive.archive_timeout_seconds, 60);
        assert_eq!(
            spec.bootstrap,
            BootstrapSpec::Initdb(InitdbSpec { data_checksums: true, encoding: None, locale: None })
        );
    }

    #[test]
    fn the_ec2_profile_defaults_to_tls_and_the_debian_socket_directory() {
        let mut spec = local_spec();
        spec.profile = Profile::Ec2;
        assert!(spec.ssl_enabled());
        assert_eq!(spec.socket_directory(), PathBuf::from("/var/run/postgresql"));
    }

    #[test]
    fn a_recovery_spec_reads_its_json_shape() {
        let bootstrap: BootstrapSpec = serde_json::from_value(serde_json::json!({
            "recovery": {
                "source": { "url": "s3://bucket/prod", "region": "eu-west-1" },
                "target": { "time": "2026-01-31T12:00:00Z" },
                "targetAction": "pause"
            }
        }))
        .expect("valid recovery");
        let BootstrapSpec::Recovery(recovery) = bootstrap else { panic!("not a recovery") };
        assert_eq!(recovery.backup, "LATEST");
        assert_eq!(recovery.target, Some(RecoveryTarget::Time("2026-01-31T12:00:00Z".into())));
        assert_eq!(recovery.target_action, TargetAction::Pause);
        let immediate: RecoveryTarget = serde_json::from_value(serde_json::json!("immediate")).expect("immediate");
        assert_eq!(immediate, RecoveryTarget::Immediate);
    }

    #[test]
    fn a_spec_survives_a_json_round_trip() {
        let spec = local_spec();
        let text = serde_json::to_string(&spec).expect("serialize");
        let back: HostSpec = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, spec);
    }
}
