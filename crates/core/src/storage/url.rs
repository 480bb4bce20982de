//! What names a store: its URL and options ([`StorageConfig`]), parsed into a [`StorageUrl`].
//!
//! Core only describes a store; opening one is `pgec2_storage_s3::open_storage` (the crate that
//! can build every backend, S3 included), or [`open_file_storage`] for a `file://` URL.

use std::path::PathBuf;
use std::sync::Arc;

use super::local::LocalStorage;
use super::retry::{RetryPolicy, Retrying};
use super::{Storage, StorageError, Timeouts};
use crate::host_spec::StorageSpec;

pub use pgec2_contract::storage::ServerSideEncryption;

/// How written objects are encrypted at rest (S3): [`StorageConfig::encryption`] resolves it
/// from the `sse` and `kms_key_id` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEncryption {
    pub sse: ServerSideEncryption,
    /// The KMS key of `aws:kms`; the account's default S3 key when absent.
    pub kms_key_id: Option<String>,
}

/// Everything needed to open a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageConfig {
    /// `s3://bucket[/prefix]` or `file:///absolute/dir`.
    pub url: String,
    /// S3-compatible endpoint (path-style addressing); S3 only.
    pub endpoint: Option<String>,
    /// S3 region; `None` lets the AWS default chain decide.
    pub region: Option<String>,
    /// S3 storage class of written objects.
    pub storage_class: Option<String>,
    /// S3 only.
    pub sse: Option<ServerSideEncryption>,
    /// KMS key for `aws:kms`; the account's default S3 key when absent.
    pub kms_key_id: Option<String>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// S3 Object Lock on every object written; S3 only.
    pub object_lock: Option<super::lock::ObjectLock>,
}

impl StorageConfig {
    /// A configuration for `url` with every option at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }
}

impl From<&StorageSpec> for StorageConfig {
    fn from(spec: &StorageSpec) -> Self {
        Self {
            url: spec.url.clone(),
            endpoint: spec.endpoint.clone(),
            region: spec.region.clone(),
            storage_class: spec.storage_class.clone(),
            sse: spec.server_side_encryption,
            kms_key_id: spec.kms_key_id.clone(),
            object_lock: spec.extensions.as_ref().and_then(|extensions| {
                let mode = extensions.object_lock_mode.as_deref()?.parse().ok()?;
                Some(super::lock::ObjectLock { mode, days: extensions.object_lock_days? })
            }),
            ..Self::default()
        }
    }
}

/// A parsed storage URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageUrl {
    /// `s3://bucket/prefix`; `prefix` has no leading or trailing `/` and may be empty.
    S3 { bucket: String, prefix: String },
    /// `file:///absolute/dir`.
    File { root: PathBuf },
}

impl StorageUrl {
    /// Parses `s3://bucket[/prefix]` or `file:///absolute/dir`, with a message saying what
    /// is expected when the text is neither.
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket: expected s3://bucket/prefix"));
            }
            return Ok(StorageUrl::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("a file url needs an absolute path, e.g. file:///var/lib/pgec2/archive"));
            }
            if path.split('/').any(|segment| segment == "..") {
                return Err(invalid("a file url must not contain '..'"));
            }
            return Ok(StorageUrl::File { root: PathBuf::from(path) });
        }
        Err(invalid("expected s3://bucket/prefix or file:///absolute/dir"))
    }
}

impl StorageConfig {
    /// The server-side encryption the `sse` and `kms_key_id` options ask for.
    pub fn encryption(&self) -> Result<Option<ObjectEncryption>, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUrl { url: self.url.clone(), reason: reason.to_string() };
        let kms_key_id = self.kms_key_id.clone();
        match (self.sse, &self.kms_key_id) {
            (None, None) => Ok(None),
            (Some(ServerSideEncryption::Aes256), None) => {
                Ok(Some(ObjectEncryption { sse: ServerSideEncryption::Aes256, kms_key_id }))
            }
            (Some(ServerSideEncryption::Aes256), Some(_)) => {
                Err(invalid("a KMS key id needs server-side encryption aws:kms, not AES256"))
            }
            (Some(ServerSideEncryption::AwsKms), _) | (None, Some(_)) => {
                Ok(Some(ObjectEncryption { sse: ServerSideEncryption::AwsKms, kms_key_id }))
            }
        }
    }
}

/// Opens the directory a `file://` URL names, wrapped in [`Retrying`] with `config.retry`.
pub fn open_file_storage(config: &StorageConfig, root: PathBuf) -> Result<Arc<dyn Storage>, StorageError> {
    let backend = LocalStorage::new(root, config.timeouts)?;
    Ok(Arc::new(Retrying::new(backend, config.timeouts, config.retry)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_give_bucket_and_prefix() {
        let parsed = StorageUrl::parse("s3://backups/prod/orders-db/").expect("valid");
        assert_eq!(parsed, StorageUrl::S3 { bucket: "backups".into(), prefix: "prod/orders-db".into() });
        let bare = StorageUrl::parse("s3://backups").expect("valid");
        assert_eq!(bare, StorageUrl::S3 { bucket: "backups".into(), prefix: String::new() });
    }

    #[test]
    fn file_urls_need_an_absolute_path() {
        let parsed = StorageUrl::parse("file:///var/lib/pgec2").expect("valid");
        assert_eq!(parsed, StorageUrl::File { root: PathBuf::from("/var/lib/pgec2") });
        for bad in ["file://relative/dir", "file://", "file:///a/../b", "/var/lib/pgec2", "gs://bucket", "s3://"] {
            let error = StorageUrl::parse(bad).expect_err(bad);
            assert!(matches!(error, StorageError::InvalidUrl { .. }), "{bad}: {error:?}");
        }
    }

    #[test]
    fn encryption_options_are_checked() {
        let with = |sse: Option<ServerSideEncryption>, key: Option<&str>| StorageConfig {
            sse,
            kms_key_id: key.map(str::to_string),
            ..StorageConfig::new("s3://bucket")
        };
        let resolved = |sse, key: Option<&str>| Some(ObjectEncryption { sse, kms_key_id: key.map(str::to_string) });
        assert_eq!(with(None, None).encryption().expect("none"), None);
        let aes = with(Some(ServerSideEncryption::Aes256), None).encryption().expect("aes");
        assert_eq!(aes, resolved(ServerSideEncryption::Aes256, None));
        let kms = with(Some(ServerSideEncryption::AwsKms), Some("alias/pg")).encryption().expect("kms");
        assert_eq!(kms, resolved(ServerSideEncryption::AwsKms, Some("alias/pg")));
        let key_alone = with(None, Some("alias/pg")).encryption().expect("a key alone means aws:kms");
        assert_eq!(key_alone, resolved(ServerSideEncryption::AwsKms, Some("alias/pg")));
        assert!(with(Some(ServerSideEncryption::Aes256), Some("alias/pg")).encryption().is_err());
    }
}
