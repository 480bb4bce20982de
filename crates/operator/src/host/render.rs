//! Render (pure): the HostSpec a PostgresHost asks of its host, and the bootstrap that applies
//! it. The digest of the bootstrap tells whether the host already runs what is wanted.

use std::time::Duration;

use pgec2_api::{BackupPolicy, Bootstrap, PostgresHost, RecoveryBootstrap};
use pgec2_core::bootstrap::{self, BootstrapParams};
use pgec2_core::compression::Algorithm;
use pgec2_core::host_spec::{
    ArchiveSpec, BootstrapSpec, DataVolume, HostSpec, InitdbSpec, Profile, RecoverySpec, StorageSpec,
};
use sha2::Digest;

use crate::archive::HostStorage;
use crate::cloud::{AgentDownload, HostCommand, HostInstance, HostLayout};

/// The purpose of setup commands, as the cloud records it.
pub const SETUP_PURPOSE: &str = "setup";

/// How long a setup command may run (package installation on a fresh EC2 host included).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Failures to render a host's setup.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("spec.backup.policyRef: BackupPolicy {0} has an invalid walArchiving.archiveTimeout")]
    ArchiveTimeout(String),
    #[error("no agent download is configured for this cloud: set --agent-url and --agent-sha256")]
    NoAgentDownload,
    #[error("failed to render the bootstrap: {0}")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("failed to serialise the host spec: {0}")]
    Json(#[from] serde_json::Error),
}

/// The BackupPolicies a host's spec refers to, read by the dereference step.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// `spec.backup.policyRef`: where the host archives.
    pub archive: Option<BackupPolicy>,
    /// `spec.bootstrap.recovery.source.policy`: where the source host's archive is.
    pub recovery_source: Option<BackupPolicy>,
}

/// The setup command of a host and the digest that identifies what it applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    pub spec: HostSpec,
    pub command: HostCommand,
    /// Hex sha256 of the bootstrap script (spec and agent included).
    pub digest: String,
}

/// Renders the HostSpec and the bootstrap script for `host` on `instance`.
pub fn setup(
    host: &PostgresHost,
    policies: &Policies,
    instance: &HostInstance,
    layout: &HostLayout,
    default_agent: Option<&AgentDownload>,
) -> Result<Setup, RenderError> {
    let spec = host_spec(host, policies, instance, layout)?;
    let agent = layout.agent_download.as_ref().or(default_agent).ok_or(RenderError::NoAgentDownload)?;
    let script = bootstrap::render(&BootstrapParams {
        agent_url: agent.url.clone(),
        agent_sha256: agent.sha256.clone(),
        spec_json: serde_json::to_string(&spec)?,
        install_dir: layout.install_dir.clone(),
    })?;
    let digest = hex(&sha2::Sha256::digest(script.as_bytes()));
    let command = HostCommand { purpose: SETUP_PURPOSE.to_string(), script, timeout: SETUP_TIMEOUT };
    Ok(Setup { spec, command, digest })
}

/// The HostSpec of `host`: the cloud's layout, the spec's PostgreSQL settings, the policy's
/// archive (the host's own prefix `<namespace>/<name>`) and the bootstrap mode.
pub fn host_spec(
    host: &PostgresHost,
    policies: &Policies,
    instance: &HostInstance,
    layout: &HostLayout,
) -> Result<HostSpec, RenderError> {
    let archive = policies.archive.as_ref().map(|policy| archive_spec(policy, &host.qualified_name())).transpose()?;
    Ok(HostSpec {
        host: host.qualified_name(),
        profile: layout.profile,
        postgres_version: u32::try_from(host.spec.postgres_version).unwrap_or_default(),
        volume: DataVolume {
            volume_id: if layout.profile == Profile::Ec2 { instance.volume_id.clone() } else { None },
            mount_path: layout.mount_path.clone(),
            filesystem: "ext4".to_string(),
        },
        data_directory: layout.data_directory.clone(),
        os_user: layout.os_user.clone(),
        port: layout.port,
        listen_addresses: layout.listen_addresses.clone(),
        socket_directory: None,
        bin_directory: None,
        ssl: None,
        resources: None,
        parameters: host.spec.postgres.parameters.clone(),
        pg_hba: host.spec.postgres.pg_hba.iter().map(|entry| entry.to_line()).collect(),
        archive,
        bootstrap: bootstrap_spec(&host.spec.bootstrap, policies.recovery_source.as_ref(), host),
        standby: host.spec.standby,
        agent_config_path: layout.agent_config_path.clone(),
        agent_binary: bootstrap::agent_path(&layout.install_dir),
    })
}

fn archive_spec(policy: &BackupPolicy, prefix: &str) -> Result<ArchiveSpec, RenderError> {
    let timeout = &policy.spec.wal_archiving.archive_timeout;
    let seconds = pgec2_api::validation::parse_duration_seconds(timeout)
        .and_then(|seconds| u32::try_from(seconds).ok())
        .ok_or_else(|| RenderError::ArchiveTimeout(policy.metadata.name.clone().unwrap_or_default()))?;
    Ok(ArchiveSpec {
        storage: StorageSpec::from(HostStorage::of_policy(policy, prefix)),
        compression: match policy.spec.compression {
            pgec2_api::Compression::Zstd => Algorithm::Zstd,
            pgec2_api::Compression::Lz4 => Algorithm::Lz4,
            pgec2_api::Compression::None => Algorithm::None,
        },
        compression_level: 3,
        archive_timeout_seconds: seconds,
        wal_receive: policy.spec.wal_archiving.streaming,
    })
}

fn bootstrap_spec(bootstrap: &Bootstrap, source_policy: Option<&BackupPolicy>, host: &PostgresHost) -> BootstrapSpec {
    match (&bootstrap.recovery, source_policy) {
        (Some(recovery), Some(policy)) => BootstrapSpec::Recovery(recovery_spec(recovery, policy, host)),
        _ => {
            let initdb = bootstrap.initdb.clone().unwrap_or_default();
            BootstrapSpec::Initdb(InitdbSpec {
                data_checksums: initdb.data_checksums,
                encoding: Some(initdb.encoding),
                locale: Some(initdb.locale),
            })
        }
    }
}

fn recovery_spec(recovery: &RecoveryBootstrap, policy: &BackupPolicy, host: &PostgresHost) -> RecoverySpec {
    let namespace = host.metadata.namespace.clone().unwrap_or_default();
    let source_prefix = format!("{namespace}/{}", recovery.source.host);
    let target = recovery.target.as_ref().and_then(|target| target.point());
    // The backup chosen before the launch (`status.restore`); hosts restored before that record
    // existed name the spec's.
    let chosen = host.status.as_ref().and_then(|status| status.restore.as_ref());
    RecoverySpec {
        source: StorageSpec::from(HostStorage::of_policy(policy, &source_prefix)),
        backup: chosen.map_or_else(|| recovery.backup.clone(), |restore| restore.backup.clone()),
        target,
        target_action: recovery.target_action,
        from_snapshot: chosen.is_some_and(|restore| restore.from_snapshot()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
