//! A host's archive as the operator reaches it, for both controllers: where it is (the
//! policy's storage with the host's prefix `<namespace>/<name>`, the same [`StorageSpec`] the
//! host's agent gets) and opening it through pgec2-core, with no host needed.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pgec2_api::{BackupPolicy, BackupStorage, Encryption, EncryptionKey, PostgresHost};
use pgec2_core::catalog::CatalogError;
use pgec2_core::host_spec::{EncryptionSpec, StorageExtensions, StorageSpec};
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::retention::RetentionError;
use pgec2_core::storage::StorageError;
use pgec2_core::storage::url::StorageConfig;
use pgec2_core::walg::{WalgArchive, WalgError};
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
    #[error("failed to read the wal-g archive beside the archive of {host}: {source}")]
    Walg { host: String, source: WalgError },
    #[error(
        "failed to read the snapshot locks of the backups of {host}, nothing deleted; retried after the next backup: {source}"
    )]
    SnapshotLock { host: String, source: crate::cloud::CloudError },
}

/// Opens the archive of `host` under `policy`'s storage.
pub async fn open(policy: &BackupPolicy, host: &PostgresHost) -> Result<Archive, ArchiveError> {
    open_named(policy, &host.qualified_name()).await
}

/// Opens the archive of the host called `name` (`namespace/name`, which may no longer exist)
/// under `policy`'s storage.
pub async fn open_named(policy: &BackupPolicy, name: &str) -> Result<Archive, ArchiveError> {
    let name = name.to_string();
    let spec = StorageSpec::from(HostStorage::new(&policy.spec.storage, &name));
    let open_error = |source| ArchiveError::Open { host: name.clone(), source };
    let layout = ArchiveLayout::under(spec.prefix.as_deref().unwrap_or_default()).map_err(open_error)?;
    let storage = open_storage(&StorageConfig::from(&spec)).await.map_err(open_error)?;
    Ok(Archive::new(storage, layout))
}

/// The wal-g archive a policy with `walgCompatible: read` points at (its bucket and prefix);
/// `None` for other policies. Retention only reads it: sentinels are not encrypted.
pub async fn open_walg(policy: &BackupPolicy, host: &str) -> Result<Option<WalgArchive>, ArchiveError> {
    let spec = StorageSpec::from(HostStorage::new(&policy.spec.storage, host));
    let Some(url) = spec.walg_prefix().map(str::to_string) else { return Ok(None) };
    let config = StorageConfig { url, ..StorageConfig::from(&spec) };
    let storage =
        open_storage(&config).await.map_err(|source| ArchiveError::Open { host: host.to_string(), source })?;
    Ok(Some(WalgArchive::new(storage)))
}

/// One host's archive in a policy's storage: the policy's `storage` with the host's `prefix`
/// (`<namespace>/<name>`). It becomes the [`StorageSpec`] the host's agent and the operator open
/// (`StorageSpec::from`); the CRD's shape and the HostSpec's meet only here, in the crate that
/// links both.
#[derive(Clone, Copy, Debug)]
pub struct HostStorage<'a> {
    storage: &'a BackupStorage,
    prefix: &'a str,
    lock_days: u32,
    encryption: Option<&'a Encryption>,
}

impl<'a> HostStorage<'a> {
    /// The host's archive under `storage`, as the operator opens it for retention and catalogs:
    /// without a key, and an objectLock without days keeps objects for `DEFAULT_LOCK_DAYS`.
    pub fn new(storage: &'a BackupStorage, prefix: &'a str) -> Self {
        Self { storage, prefix, lock_days: DEFAULT_LOCK_DAYS, encryption: None }
    }

    /// The host's archive under `policy`, as a host writes and restores with it: the policy's
    /// client-side encryption, and an objectLock without days lasts as long as retention keeps
    /// a backup ([`retention_days`]).
    pub fn of_policy(policy: &'a BackupPolicy, prefix: &'a str) -> Self {
        Self {
            lock_days: retention_days(policy),
            encryption: policy.spec.encryption.as_ref(),
            ..Self::new(&policy.spec.storage, prefix)
        }
    }
}

/// When a policy's objectLock gives no days and its schedule gives no interval.
const DEFAULT_LOCK_DAYS: u32 = 7;

/// How long a policy keeps a backup, in whole days: `fullBackups` times the interval of its
/// schedule (the default of `objectLock.days`).
pub fn retention_days(policy: &BackupPolicy) -> u32 {
    let schedule = crate::schedule::Schedule::parse(&policy.spec.schedule, policy.spec.time_zone.as_deref());
    let interval = schedule.ok().and_then(|schedule| {
        let first = schedule.next_after(Timestamp::now())?;
        let second = schedule.next_after(first)?;
        Some(second.as_second() - first.as_second())
    });
    let keep = i64::from(policy.spec.retention.full_backups.max(1));
    interval
        .map(|seconds| (seconds * keep + 86_399) / 86_400)
        .and_then(|days| u32::try_from(days).ok())
        .unwrap_or(DEFAULT_LOCK_DAYS)
        .max(1)
}

impl From<HostStorage<'_>> for StorageSpec {
    fn from(host: HostStorage<'_>) -> Self {
        StorageSpec {
            prefix: Some(host.prefix.to_string()),
            encryption: host.encryption.map(|encryption| Box::new(encryption_spec(encryption))),
            ..location(host.storage, host.lock_days)
        }
    }
}

/// Where `storage` is: its URL and, on S3, the bucket's options.
fn location(storage: &BackupStorage, lock_days: u32) -> StorageSpec {
    let Some(s3) = &storage.s3 else {
        let url = storage.local.as_ref().map(|local| format!("file://{}", local.path.trim_end_matches('/')));
        return StorageSpec::new(url.unwrap_or_default());
    };
    let url = match s3.prefix.as_deref() {
        Some(bucket_prefix) => format!("s3://{}/{bucket_prefix}", s3.bucket),
        None => format!("s3://{}", s3.bucket),
    };
    let extensions = StorageExtensions {
        walg_prefix: s3.walg_compatible.map(|_| url.clone()),
        object_lock_mode: s3.object_lock.as_ref().and_then(|lock| enum_text(&lock.mode)),
        object_lock_days: s3
            .object_lock
            .as_ref()
            .map(|lock| lock.days.and_then(|days| u32::try_from(days).ok()).unwrap_or(lock_days)),
    };
    StorageSpec {
        region: s3.region.clone(),
        endpoint: s3.endpoint.clone(),
        storage_class: s3.storage_class.and_then(|class| enum_text(&class)),
        server_side_encryption: s3.server_side_encryption,
        kms_key_id: s3.kms_key_id.clone(),
        extensions: (extensions != StorageExtensions::default()).then(|| Box::new(extensions)),
        ..StorageSpec::new(url)
    }
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
        kms_endpoint: encryption.key.iter().chain(&encryption.read_keys).find_map(|key| key.kms_endpoint.clone()),
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
