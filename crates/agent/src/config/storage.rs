//! Storage settings: which store, how to reach it, and how objects are written there.

use std::sync::Arc;
use std::time::Duration;

use pgec2_core::host_spec::StorageSpec;
use pgec2_core::storage::lock::ObjectLock;
pub use pgec2_core::storage::url::ServerSideEncryption;
use pgec2_core::storage::url::{StorageConfig, StorageUrl};
use pgec2_core::storage::{Storage, StorageError, Timeouts};
use pgec2_storage_s3::open_storage;

use super::ConfigError;

/// Where the archive lives and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    /// `s3://bucket/prefix` or `file:///absolute/dir`.
    pub url: String,
    /// This cluster's archive inside the url (`<namespace>/<name>` for operator-managed hosts).
    pub prefix: String,
    /// S3-compatible endpoint, addressed path-style; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// S3 region; `None` lets the AWS default chain decide (instance metadata on EC2).
    pub region: Option<String>,
    pub sse: Option<ServerSideEncryption>,
    pub kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    /// Stall limit: an attempt that makes no progress this long is cut and retried.
    pub timeout: Duration,
    /// The slowest link supported: a call's time budget grows by its size divided by this.
    pub min_throughput: u64,
    /// A wal-g archive (`s3://bucket/path` or `file:///dir`, wal-g's `WALG_*_PREFIX`) read
    /// beside this one: its backups are listed and restorable and its WAL is served. Never written.
    pub walg_prefix: Option<String>,
    /// S3 Object Lock on every object written (`object_lock_mode`, `object_lock_days`).
    pub object_lock: Option<ObjectLock>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        let timeouts = Timeouts::default();
        Self {
            url: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            sse: None,
            kms_key_id: None,
            storage_class: None,
            timeout: timeouts.operation,
            min_throughput: timeouts.min_bytes_per_second,
            walg_prefix: None,
            object_lock: None,
        }
    }
}

impl StorageSettings {
    /// The timeouts every storage operation applies.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts { operation: self.timeout, min_bytes_per_second: self.min_throughput }
    }

    /// What [`open_storage`] needs to open this store.
    pub fn storage_config(&self) -> StorageConfig {
        StorageConfig::from(self)
    }

    /// Opens the store (retries and timeouts included).
    pub async fn open(&self) -> Result<Arc<dyn Storage>, ConfigError> {
        open_storage(&self.storage_config())
            .await
            .map_err(|error| ConfigError::OpenStorage { url: self.url.clone(), error })
    }

    /// Opens the wal-g archive at `walg_prefix` with this store's endpoint, region and timeouts;
    /// `None` when no wal-g archive is configured.
    pub async fn open_walg(&self) -> Result<Option<Arc<dyn Storage>>, ConfigError> {
        let Some(url) = &self.walg_prefix else { return Ok(None) };
        let config = StorageConfig { url: url.clone(), ..self.storage_config() };
        open_storage(&config).await.map(Some).map_err(|error| ConfigError::OpenStorage { url: url.clone(), error })
    }
}

/// The settings of a HostSpec's storage location; timeouts at their defaults, no wal-g archive.
impl From<&StorageSpec> for StorageSettings {
    fn from(spec: &StorageSpec) -> Self {
        Self {
            url: spec.url.clone(),
            prefix: spec.prefix.clone().unwrap_or_default(),
            endpoint: spec.endpoint.clone(),
            region: spec.region.clone(),
            sse: spec.server_side_encryption,
            kms_key_id: spec.kms_key_id.clone(),
            storage_class: spec.storage_class.clone(),
            ..Self::default()
        }
    }
}

/// The storage location these settings name (client-side encryption is the `[encryption]`
/// section's, not the location's).
impl From<&StorageSettings> for StorageSpec {
    fn from(settings: &StorageSettings) -> Self {
        StorageSpec {
            url: settings.url.clone(),
            prefix: Some(settings.prefix.clone()).filter(|prefix| !prefix.is_empty()),
            region: settings.region.clone(),
            endpoint: settings.endpoint.clone(),
            storage_class: settings.storage_class.clone(),
            server_side_encryption: settings.sse,
            kms_key_id: settings.kms_key_id.clone(),
            encryption: None,
            extensions: None,
        }
    }
}

/// What opening the store needs: the location's options and these timeouts.
impl From<&StorageSettings> for StorageConfig {
    fn from(settings: &StorageSettings) -> Self {
        StorageConfig {
            timeouts: settings.timeouts(),
            object_lock: settings.object_lock,
            ..StorageConfig::from(&StorageSpec::from(settings))
        }
    }
}

/// Checks a storage url: `s3://bucket[/prefix]` (with a valid bucket name) or `file:///absolute/dir`.
pub(super) fn validate_url(text: &str) -> Result<String, String> {
    match StorageUrl::parse(text) {
        Ok(StorageUrl::S3 { bucket, .. }) => {
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if valid_bucket {
                Ok(text.to_string())
            } else {
                Err(format!("{bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '-' or '.')"))
            }
        }
        Ok(StorageUrl::File { .. }) => Ok(text.to_string()),
        Err(StorageError::InvalidUrl { reason, .. }) => Err(reason),
        Err(error) => Err(error.to_string()),
    }
}

/// Checks that an endpoint is an http(s) URL.
pub(super) fn validate_endpoint(text: &str) -> Result<String, String> {
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(text.trim_end_matches('/').to_string()),
        _ => Err("expected an http:// or https:// URL".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn s3_location() -> StorageSpec {
        StorageSpec {
            url: "s3://backups/prod".into(),
            prefix: Some("default/db".into()),
            region: Some("eu-central-1".into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            storage_class: Some("STANDARD_IA".into()),
            server_side_encryption: Some(ServerSideEncryption::AwsKms),
            kms_key_id: Some("alias/pg".into()),
            encryption: None,
            extensions: None,
        }
    }

    #[test]
    fn a_host_spec_location_round_trips_through_the_agent_settings() {
        for location in [s3_location(), StorageSpec::new("file:///srv/archive")] {
            let settings = StorageSettings::from(&location);
            assert_eq!(StorageSpec::from(&settings), location);
        }
        let settings = StorageSettings::from(&s3_location());
        assert_eq!((settings.prefix.as_str(), settings.sse), ("default/db", Some(ServerSideEncryption::AwsKms)));
    }

    #[test]
    fn the_settings_open_the_store_their_location_names_with_their_timeouts() {
        let settings = StorageSettings { timeout: Duration::from_secs(7), ..StorageSettings::from(&s3_location()) };
        let config = StorageConfig::from(&settings);
        assert_eq!(StorageConfig { timeouts: settings.timeouts(), ..StorageConfig::from(&s3_location()) }, config);
        assert_eq!(config.timeouts.operation, Duration::from_secs(7));
        let encryption = config.encryption().expect("valid").expect("encrypted");
        assert_eq!(
            (encryption.sse, encryption.kms_key_id.as_deref()),
            (ServerSideEncryption::AwsKms, Some("alias/pg"))
        );
    }
}
