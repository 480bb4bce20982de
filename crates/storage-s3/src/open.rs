//! Opening a store from its URL: the one entry point the agent and the operator use.
//!
//! ```no_run
//! # async fn example() -> Result<(), pgec2_core::storage::StorageError> {
//! use pgec2_core::storage::url::StorageConfig;
//! let storage = pgec2_storage_s3::open_storage(&StorageConfig::new("s3://my-backups/orders-db")).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use pgec2_core::storage::retry::Retrying;
use pgec2_core::storage::url::{StorageConfig, StorageUrl, open_file_storage};
use pgec2_core::storage::{Storage, StorageError};

use crate::{S3Settings, S3Storage};

/// Opens the store `config` names (`s3://` or `file://`), wrapped in [`Retrying`] with
/// `config.retry`.
pub async fn open_storage(config: &StorageConfig) -> Result<Arc<dyn Storage>, StorageError> {
    match StorageUrl::parse(&config.url)? {
        StorageUrl::File { root } => open_file_storage(config, root),
        StorageUrl::S3 { bucket, prefix } => {
            let settings = S3Settings {
                region: config.region.clone(),
                endpoint: config.endpoint.clone(),
                storage_class: config.storage_class.clone(),
                encryption: config.encryption()?,
                timeouts: config.timeouts,
                object_lock: config.object_lock,
                ..S3Settings::new(bucket, prefix)
            };
            let backend = S3Storage::connect(settings).await?;
            Ok(Arc::new(Retrying::new(backend, config.timeouts, config.retry)))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use pgec2_core::storage::{ObjectKey, PutMode};

    use super::*;

    #[tokio::test]
    async fn a_file_url_opens_a_working_store() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let url = format!("file://{}/archive", directory.path().display());
        let storage = open_storage(&StorageConfig::new(url.clone())).await.expect("open");
        let key = ObjectKey::new("wal/000000010000000000000001").expect("key");
        storage.put(&key, Bytes::from_static(b"wal"), PutMode::CreateNew).await.expect("put");
        assert_eq!(storage.get(&key).await.expect("get"), Bytes::from_static(b"wal"));
        assert_eq!(storage.describe(), url);
        assert!(directory.path().join("archive/wal/000000010000000000000001").is_file());
    }
}
