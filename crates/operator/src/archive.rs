//! A host's archive as the operator reaches it, for both controllers: where it is (the
//! policy's storage with the host's prefix `<namespace>/<name>`, the same [`StorageSpec`] the
//! host's agent gets) and opening it through pgec2-core, with no host needed.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pgec2_api::{BackupPolicy, BackupStorage, Encryption, EncryptionKey, PostgresHost};
use pgec2_core::catalog::CatalogError;
use pgec2_core::host_spec::{EncryptionSpec, StorageSpec};
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::retention::RetentionError;
use pgec2_core::storage::StorageError;
use pgec2_core::storage::url::StorageConfig;
use pgec2_storage_s3::open_storage;

/// Failures reading or pruning a host's archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("failed to open the archive of {host}: {source}")]
    Open { host: String, source: StorageError },
    #[error("failed to read the backup catalog of {host}: {source}")]
    Catalog { host: String, source: CatalogError },
    #[error("failed to apply retention to the archive of {host}: {source}")]
    Retention { host: String, source: RetentionError },
}

/// Opens the archive of `host` under `policy`'s storage.
pub async fn open(policy: &BackupPolicy, host: &PostgresHost) -> Result<Archive, ArchiveError> {
    open_named(policy, &host.qualified_name()).await
}

/// Opens the archive of the host called `name` (`namespace/name`, which may no longer exist)
/// under `policy`'s storage.
pub async fn open_named(policy: &BackupPolicy, name: &str) -> Result<Archive, ArchiveError> {
    let name = name.to_string();
    let spec = storage_spec(&policy.spec.storage, &name);
    let open_error = |source| ArchiveError::Open { host: name.clone(), source };
    let layout = ArchiveLayout::under(spec.prefix.as_deref().unwrap_or_default()).map_err(open_error)?;
    let storage = open_storage(&StorageConfig::from(&spec)).await.map_err(open_error)?;
    Ok(Archive::new(storage, layout))
}

/// The storage location of one host's archive: the policy's storage with the host's `prefix`.
pub fn storage_spec(storage: &BackupStorage, prefix: &str) -> StorageSpec {
    let mut spec = StorageSpec {
        url: String::new(),
        prefix: Some(prefix.to_string()),
        region: None,
        endpoint: None,
        storage_class: None,
        server_side_encryption: None,
        kms_key_id: None,
        encryption: None,
    };
    if let Some(s3) = &storage.s3 {
        spec.url = match s3.prefix.as_deref() {
            Some(bucket_prefix) => format!("s3://{}/{bucket_prefix}", s3.bucket),
            None => format!("s3://{}", s3.bucket),
        };
        spec.region = s3.region.clone();
        spec.endpoint = s3.endpoint.clone();
        spec.storage_class = s3.storage_class.and_then(|class| enum_text(&class));
        spec.server_side_encryption = s3.server_side_encryption;
        spec.kms_key_id = s3.kms_key_id.clone();
    } else if let Some(local) = &storage.local {
        spec.url = format!("file://{}", local.path.trim_end_matches('/'));
    }
    spec
}

/// The storage location of one host's archive with the policy's client-side encryption: what
/// a host writes and restores with (retention, in the operator, needs no key).
pub fn policy_storage_spec(policy: &BackupPolicy, prefix: &str) -> StorageSpec {
    let mut spec = storage_spec(&policy.spec.storage, prefix);
    spec.encryption = policy.spec.encryption.as_ref().map(|encryption| Box::new(encryption_spec(encryption)));
    spec
}

fn encryption_spec(encryption: &Encryption) -> EncryptionSpec {
    let key_text = |key: &EncryptionKey| match (&key.kms, &key.file, &key.env) {
        (Some(kms), _, _) => format!("kms:{kms}"),
        (_, Some(file), _) => format!("file:{file}"),
        (_, _, Some(env)) => format!("env:{env}"),
        (None, None, None) => String::new(),
    };
    EncryptionSpec {
        mode: enum_text(&encryption.mode).unwrap_or_else(|| "none".to_string()),
        key: encryption.key.as_ref().map(key_text),
        read_keys: encryption.read_keys.iter().map(key_text).collect(),
    }
}

/// The serde name of a unit enum variant (`STANDARD_IA`, `aws:kms`).
fn enum_text<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value).ok()?.as_str().map(str::to_string)
}

/// A chrono time as a Kubernetes `Time`.
pub fn time(at: DateTime<Utc>) -> Option<Time> {
    Timestamp::from_microsecond(at.timestamp_micros()).ok().map(Time)
}
