//! The agent's configuration files that `host apply` writes, in the agent's own TOML format
//! ([`AgentConfig::to_toml`]):
//!
//! - `agent.toml` (the spec's `agentConfigPath`): this host's own archive. archive_command uses
//!   it, so WAL always goes to the host's own prefix; so do backup-push and wal-verify.
//! - `agent-source.toml` (beside it), only when the spec restores from another archive: the
//!   source, read-only for this host. backup-fetch and, while the data directory is still
//!   recovering from the source (a standby, or archive recovery under recovery.signal),
//!   restore_command use it. Once recovery ends, or from the run that promotes a standby,
//!   restore_command switches to `agent.toml` (see `promote::reads_source_archive`).
//!
//! Both files carry no secrets (AWS credentials come from the instance profile); they are
//! readable by the PostgreSQL user and writable only by the user running `host apply`.

use pgec2_core::compression::Compression;
use pgec2_core::host_spec::{ArchiveSpec, EncryptionSpec, HostSpec, StorageSpec};

use crate::config::{AgentConfig, EncryptionMode, EncryptionSettings, KeySource, StorageSettings};

/// Why a configuration cannot be rendered (the spec validation normally catches it first).
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// `agent.toml` for the host's own archive.
pub fn render_own(spec: &HostSpec, archive: &ArchiveSpec) -> Result<String, AgentConfigError> {
    let compression = Compression::new(archive.compression, archive.compression_level)
        .map_err(|error| AgentConfigError::Invalid { field: "archive.compressionLevel", reason: error.to_string() })?;
    let config = config_for(spec, &archive.storage, compression, "archive.storage")?;
    Ok(with_header(spec, "this host's own archive: archive_command, backup-push and wal-verify use it", &config))
}

/// `agent-source.toml` for the archive a recovery reads from.
pub fn render_source(spec: &HostSpec, source: &StorageSpec) -> Result<String, AgentConfigError> {
    let config = config_for(spec, source, Compression::default(), "bootstrap.recovery.source")?;
    Ok(with_header(
        spec,
        "the recovery source's archive, read-only for this host: backup-fetch and restore_command use it",
        &config,
    ))
}

fn config_for(
    spec: &HostSpec,
    storage: &StorageSpec,
    compression: Compression,
    field: &'static str,
) -> Result<AgentConfig, AgentConfigError> {
    let mut config = AgentConfig { storage: StorageSettings::from(storage), ..AgentConfig::default() };
    if let Some(encryption) = &storage.encryption {
        config.encryption = encryption_settings(encryption, field)?;
    }
    config.storage.walg_prefix = storage.walg_prefix().map(str::to_string);
    config.storage.object_lock = pgec2_core::storage::url::StorageConfig::from(storage).object_lock;
    config.compression = compression;
    config.postgres.pgdata = Some(spec.data_directory.clone());
    config.postgres.host = spec.socket_directory().display().to_string();
    config.postgres.port = spec.port;
    config.postgres.user = spec.os_user.clone();
    config.postgres.wal_receive_spool = Some(spec.wal_receive_spool());
    Ok(config)
}

/// The `[encryption]` settings of a spec's encryption (key sources as `kms:`, `file:`, `env:`).
fn encryption_settings(spec: &EncryptionSpec, field: &'static str) -> Result<EncryptionSettings, AgentConfigError> {
    let invalid = |reason: String| AgentConfigError::Invalid { field, reason };
    let mode: EncryptionMode = spec.mode.parse().map_err(invalid)?;
    let key = spec.key.as_deref().map(str::parse::<KeySource>).transpose().map_err(invalid)?;
    let read_keys =
        spec.read_keys.iter().map(|key| key.parse()).collect::<Result<Vec<KeySource>, String>>().map_err(invalid)?;
    let key = key.filter(|_| mode == EncryptionMode::Aes256Gcm);
    Ok(EncryptionSettings { mode, key, read_keys, kms_endpoint: spec.kms_endpoint.clone() })
}

fn with_header(spec: &HostSpec, purpose: &str, config: &AgentConfig) -> String {
    format!(
        "# Written by pgec2-agent host apply for {}: edits are overwritten.\n# {purpose}.\n\n{}",
        spec.host,
        config.to_toml()
    )
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use pgec2_core::compression::Algorithm;
    use pgec2_core::storage::url::ServerSideEncryption;

    use super::*;
    use crate::host::test_support::spec;

    fn load(text: &str) -> AgentConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write");
        AgentConfig::load_with(Some(&path), Path::new("/nonexistent"), &|_| None)
            .expect("the agent reads what host apply writes")
    }

    #[test]
    fn the_own_archive_config_is_read_back_by_the_agent() {
        let mut spec = spec();
        let archive = spec.archive.as_mut().expect("archive");
        archive.storage.url = "s3://pgec2-backups/base".into();
        archive.storage.prefix = Some("default/db1".into());
        archive.storage.region = Some("eu-west-1".into());
        archive.storage.server_side_encryption = Some(ServerSideEncryption::AwsKms);
        archive.compression = Algorithm::Lz4;
        let archive = archive.clone();
        let config = load(&render_own(&spec, &archive).expect("render"));
        assert_eq!(config.storage.url, "s3://pgec2-backups/base");
        assert_eq!(config.storage.prefix, "default/db1");
        assert_eq!(config.storage.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.storage.sse, Some(ServerSideEncryption::AwsKms));
        assert_eq!(config.compression.algorithm, Algorithm::Lz4);
        assert_eq!(config.postgres.pgdata, Some(PathBuf::from("/var/lib/postgresql/15/main")));
        assert_eq!(config.postgres.host, "/var/lib/postgresql/run");
        assert_eq!(config.postgres.port, 5432);
        assert_eq!(config.postgres.user, "postgres");
    }

    #[test]
    fn the_policy_encryption_kms_endpoint_wal_g_prefix_and_object_lock_reach_the_agent_configuration() {
        let mut spec = spec();
        let archive = spec.archive.as_mut().expect("archive");
        archive.storage.encryption = Some(Box::new(EncryptionSpec {
            mode: "aes-256-gcm".into(),
            key: Some("kms:alias/pgec2".into()),
            read_keys: vec!["file:/etc/pgec2/old.key".into()],
            kms_endpoint: Some("http://127.0.0.1:5000".into()),
        }));
        archive.storage.extensions = Some(Box::new(pgec2_core::host_spec::StorageExtensions {
            walg_prefix: Some("s3://old-backups/orders".into()),
            object_lock_mode: Some("compliance".into()),
            object_lock_days: Some(30),
        }));
        let archive = archive.clone();
        let config = load(&render_own(&spec, &archive).expect("render"));
        assert_eq!(config.encryption.kms_endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(config.storage.walg_prefix.as_deref(), Some("s3://old-backups/orders"));
        let lock =
            pgec2_core::storage::lock::ObjectLock { mode: pgec2_core::storage::lock::LockMode::Compliance, days: 30 };
        assert_eq!(config.storage.object_lock, Some(lock));
        assert_eq!(config.encryption.mode, EncryptionMode::Aes256Gcm);
        assert_eq!(config.encryption.key, Some(KeySource::Kms("alias/pgec2".into())));
        assert_eq!(config.encryption.read_keys, vec![KeySource::File("/etc/pgec2/old.key".into())]);
    }

    #[test]
    fn the_source_config_points_at_the_source_archive() {
        let spec = spec();
        let mut source = StorageSpec::new("file:///srv/archive").with_prefix("default/prod");
        source.endpoint = Some("http://127.0.0.1:5000".into());
        let text = render_source(&spec, &source).expect("render");
        assert!(text.starts_with("# Written by pgec2-agent host apply for default/db1"));
        let config = load(&text);
        assert_eq!(config.storage.url, "file:///srv/archive");
        assert_eq!(config.storage.prefix, "default/prod");
        assert_eq!(config.storage.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    }
}
