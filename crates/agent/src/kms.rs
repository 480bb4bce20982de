//! A KMS key as the key-encryption key of client-side encryption.
//!
//! Calling KMS for every object would cost a request per WAL segment and per 2 MiB backup part.
//! Instead each agent process asks KMS once (`GenerateDataKey`) for a *session key*, keeps its
//! plaintext in memory, and wraps every object's own data key with it; the object's header holds
//! the session key's KMS blob beside the wrapped data key. Reading unwraps a blob with KMS
//! `Decrypt` once per distinct blob (so once per backup or per pushing process), cached. KMS
//! finds the key from the blob itself, so objects of a previous KMS key read as long as the
//! credentials may still use that key: rotation needs no `read_keys` entry.
//!
//! The [`KeyProvider`] trait is synchronous (sealing runs on blocking threads); the calls to
//! KMS run on a small runtime of this provider's own, on a thread of their own, so they work
//! from any context.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use pgec2_core::encryption::{DataKey, KeyError, KeyProvider, unwrap_with, wrap_with};

/// Deadline of one KMS call.
const KMS_TIMEOUT: Duration = Duration::from_secs(30);
/// Region assumed for a KMS-compatible endpoint when none is configured.
const ENDPOINT_DEFAULT_REGION: &str = "us-east-1";

/// A KMS key (id, alias or ARN) wrapping data keys through a per-process session key.
pub struct KmsKey {
    key: String,
    id: String,
    client: aws_sdk_kms::Client,
    runtime: Option<tokio::runtime::Runtime>,
    session: Mutex<Option<(DataKey, Vec<u8>)>>,
    unwrapped: Mutex<HashMap<Vec<u8>, DataKey>>,
}

impl std::fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKey").field("key", &self.key).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("failed to start the KMS client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("no AWS region for KMS: set storage.region or AWS_REGION")]
    NoRegion,
}

impl KmsKey {
    /// A client for `key` with the AWS default credential chain; no KMS call is made yet.
    pub async fn connect(key: &str, region: Option<&str>, endpoint: Option<&str>) -> Result<Self, KmsError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(KmsError::Runtime)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        let region = region.map(str::to_string).or_else(|| endpoint.map(|_| ENDPOINT_DEFAULT_REGION.to_string()));
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(KmsError::NoRegion);
        }
        let mut config = aws_sdk_kms::config::Builder::from(&sdk_config);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            key: key.to_string(),
            id: format!("kms:{key}"),
            client: aws_sdk_kms::Client::from_conf(config.build()),
            runtime: Some(runtime),
            session: Mutex::new(None),
            unwrapped: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one KMS call to its end on this provider's runtime, on a thread of its own.
    fn call<T: Send>(&self, what: &str, call: impl Future<Output = Result<T, String>> + Send) -> Result<T, KeyError> {
        let failed = |reason: String| KeyError::Provider {
            key: self.describe(),
            reason: format!("KMS {what} failed: {reason}"),
        };
        let runtime = self.runtime.as_ref().ok_or_else(|| failed("the client is shut down".to_string()))?;
        let outcome = std::thread::scope(|scope| {
            scope.spawn(|| runtime.block_on(async { tokio::time::timeout(KMS_TIMEOUT, call).await })).join()
        });
        match outcome {
            Ok(Ok(result)) => result.map_err(failed),
            Ok(Err(_)) => Err(failed(format!("no answer within {KMS_TIMEOUT:?}"))),
            Err(_) => Err(failed("the call's thread panicked".to_string())),
        }
    }

    /// The session key, asked of KMS on first use.
    fn session(&self) -> Result<(DataKey, Vec<u8>), KeyError> {
        let mut session = self.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = session.as_ref() {
            return Ok(existing.clone());
        }
        let request = self.client.generate_data_key().key_id(&self.key).key_spec(DataKeySpec::Aes256);
        let output = self.call("GenerateDataKey", async move {
            request.send().await.map_err(|error| pgec2_storage_s3::describe_error(&error))
        })?;
        let invalid =
            || KeyError::Provider { key: self.describe(), reason: "KMS returned no usable data key".to_string() };
        let plaintext = output.plaintext().and_then(|blob| DataKey::from_slice(blob.as_ref())).ok_or_else(invalid)?;
        let blob = output.ciphertext_blob().map(|blob| blob.as_ref().to_vec()).ok_or_else(invalid)?;
        *session = Some((plaintext.clone(), blob.clone()));
        Ok((plaintext, blob))
    }

    /// The plaintext of a session key's blob, asked of KMS once per blob.
    fn unwrap_blob(&self, blob: &[u8]) -> Result<DataKey, KeyError> {
        if let Some(key) = self.unwrapped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(blob) {
            return Ok(key.clone());
        }
        let request = self.client.decrypt().ciphertext_blob(Blob::new(blob.to_vec()));
        let output = self.call("Decrypt", async move {
            request.send().await.map_err(|error| pgec2_storage_s3::describe_error(&error))
        })?;
        let key = output.plaintext().and_then(|blob| DataKey::from_slice(blob.as_ref())).ok_or_else(|| {
            KeyError::Provider { key: self.describe(), reason: "KMS Decrypt returned no 32-byte key".to_string() }
        })?;
        self.unwrapped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(blob.to_vec(), key.clone());
        Ok(key)
    }
}

impl KeyProvider for KmsKey {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        format!("KMS key {}", self.key)
    }

    fn accepts(&self, key_id: &str) -> bool {
        key_id.starts_with("kms:")
    }

    /// The session key's blob (length-prefixed), then the data key wrapped by the session key.
    fn wrap(&self, data_key: &DataKey) -> Result<Vec<u8>, KeyError> {
        let (session, blob) = self.session()?;
        let blob_len = u16::try_from(blob.len()).map_err(|_| KeyError::Provider {
            key: self.describe(),
            reason: format!("KMS returned a {}-byte blob", blob.len()),
        })?;
        let mut wrapped = blob_len.to_le_bytes().to_vec();
        wrapped.extend_from_slice(&blob);
        wrapped.extend_from_slice(&wrap_with(&session, &self.id, data_key));
        Ok(wrapped)
    }

    fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        let wrong = || KeyError::WrongKey { key: format!("the KMS key behind {key_id}") };
        let (length, rest) = wrapped.split_at_checked(2).ok_or_else(wrong)?;
        let blob_len = u16::from_le_bytes([length[0], length[1]]) as usize;
        let (blob, data_key) = rest.split_at_checked(blob_len).ok_or_else(wrong)?;
        let session = self.unwrap_blob(blob)?;
        unwrap_with(&session, key_id, data_key).ok_or_else(wrong)
    }
}

impl Drop for KmsKey {
    fn drop(&mut self) {
        // A runtime may not be dropped where blocking is not allowed (inside the agent's own).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
