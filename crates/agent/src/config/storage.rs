//! Storage settings: which store, how to reach it, and how objects are written there.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

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
        StorageConfig {
            url: self.url.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            storage_class: self.storage_class.clone(),
            sse: self.sse.map(|sse| sse.to_string()),
            kms_key_id: self.kms_key_id.clone(),
            timeouts: self.timeouts(),
            ..StorageConfig::default()
        }
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

/// S3 server-side encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// `AES256`: S3-managed keys.
    Aes256,
    /// `aws:kms`: a KMS key (the account's default unless `kms_key_id` is set).
    Kms,
}

impl fmt::Display for ServerSideEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerSideEncryption::Aes256 => "AES256",
            ServerSideEncryption::Kms => "aws:kms",
        })
    }
}

impl FromStr for ServerSideEncryption {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "AES256" => Ok(ServerSideEncryption::Aes256),
            "aws:kms" => Ok(ServerSideEncryption::Kms),
            _ => Err("expected AES256 or aws:kms".to_string()),
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
