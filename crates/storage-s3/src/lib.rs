//! AWS S3 or an S3-compatible store as an object store: `s3://bucket/prefix`.
//!
//! Durability: S3 acknowledges a PUT (or a CompleteMultipartUpload) only once the object is
//! stored redundantly, and it is then immediately readable (S3's strong read-after-write
//! consistency); `put` returns only after that acknowledgement. [`PutMode::CreateNew`] sends
//! `If-None-Match: *` (on the PUT, or on the CompleteMultipartUpload of a large body), so S3
//! itself refuses to replace an existing object: a 412 becomes [`StorageError::AlreadyExists`],
//! a 409 ConditionalRequestConflict (a concurrent conditional write) a transient error. A
//! S3-compatible store that ignores `If-None-Match` would silently overwrite: check yours.
//!
//! Bodies larger than [`MultipartSettings::threshold`] go up as a multipart upload of
//! [`MultipartSettings::part_size`] parts, a few at a time, each with a CRC32 checksum that S3
//! verifies; a failed upload is aborted (set the bucket lifecycle rule
//! `AbortIncompleteMultipartUpload` as well, for uploads cut off by a crash).
//!
//! Retries and timeouts: the SDK's own retries are disabled ([`RetryConfig::disabled`]) so that
//! [`pgec2_core::storage::retry::Retrying`] is the only retry loop (and decides with
//! [`StorageError::is_permanent`]), and so is its stalled-stream protection: requests run under
//! our stall detector ([`pgec2_core::storage::progress`]) instead, fed by every 64 KiB of a request
//! body sent, every chunk of a response body received and every answer. No request has a
//! fixed deadline; the SDK keeps only a connect timeout. Credentials
//! come from the AWS default chain (environment, profile, web identity, EC2 instance profile).
//! Hosts need `s3:PutObject`, `s3:GetObject` and `s3:ListBucket` (without ListBucket S3 answers
//! 403 instead of 404 for missing objects); deletes need `s3:DeleteObject`. With object lock
//! ([`S3Settings::object_lock`], a bucket created with Object Lock enabled) writes also need
//! `s3:PutObjectRetention`, and retention `s3:GetObjectRetention`.

/// Sets storage class, object lock and server-side encryption on a PutObject or
/// CreateMultipartUpload request.
macro_rules! with_write_options {
    ($request:expr, $store:expr) => {{
        let (lock_mode, lock_until) = $store.lock_headers();
        let request = $request
            .set_storage_class($store.storage_class.clone())
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(lock_until);
        match &$store.settings.encryption {
            Some(ObjectEncryption { sse: ServerSideEncryption::Aes256, .. }) => {
                request.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some(ObjectEncryption { sse: ServerSideEncryption::AwsKms, kms_key_id }) => request
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(kms_key_id.clone()),
            None => request,
        }
    }};
}

mod errors;
mod multipart;
mod open;
mod progress_body;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::StalledStreamProtectionConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockMode, StorageClass};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use self::errors::{Request, storage_error};
use self::progress_body::BodyProgress;
use pgec2_core::storage::lock::{LockMode, ObjectLock};
use pgec2_core::storage::progress::{self, Cut};
use pgec2_core::storage::{ObjectKey, ObjectMeta, PutMode, Storage, StorageError, Timeouts};

pub use self::errors::describe as describe_error;
pub use self::multipart::MultipartSettings;
pub use self::open::open_storage;
pub use pgec2_core::storage::url::{ObjectEncryption, ServerSideEncryption};

/// Bytes of a request body that may still sit in the kernel's send buffer once the HTTP client
/// has taken the last of it (Linux grows a TCP send buffer up to 4 MiB).
const SEND_BUFFER_ALLOWANCE: u64 = 4 * 1024 * 1024;

/// Region used with a custom endpoint when none is configured (S3-compatible stores ignore it).
const ENDPOINT_DEFAULT_REGION: &str = "us-east-1";

/// Storage classes whose objects cannot be read without a restore first: an archive there
/// could not be fetched during recovery.
const UNREADABLE_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE"];

/// How to reach one bucket and how to write objects there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket that is this store's root (no leading or trailing `/`).
    pub prefix: String,
    /// `None`: the default chain's region (or us-east-1 with a custom endpoint).
    pub region: Option<String>,
    /// An S3-compatible endpoint, addressed path-style (`http://host:port/bucket/key`).
    pub endpoint: Option<String>,
    /// `STANDARD`, `STANDARD_IA`, `INTELLIGENT_TIERING`, ...; `None` for the bucket's default.
    pub storage_class: Option<String>,
    pub encryption: Option<ObjectEncryption>,
    pub timeouts: Timeouts,
    pub multipart: MultipartSettings,
    /// Keys per ListObjectsV2 page (1 to 1000).
    pub list_page_size: i32,
    /// S3 Object Lock on every object written (the bucket must have Object Lock enabled).
    pub object_lock: Option<ObjectLock>,
}

impl S3Settings {
    /// Settings for `bucket` and `prefix` with every option at its default.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
            region: None,
            endpoint: None,
            storage_class: None,
            encryption: None,
            timeouts: Timeouts::default(),
            multipart: MultipartSettings::default(),
            list_page_size: 1000,
            object_lock: None,
        }
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> StorageError {
        StorageError::InvalidUrl { url: self.url(), reason: reason.into() }
    }

    fn storage_class(&self) -> Result<Option<StorageClass>, StorageError> {
        let Some(name) = self.storage_class.as_deref() else { return Ok(None) };
        let class = StorageClass::from(name);
        if UNREADABLE_CLASSES.contains(&name) {
            return Err(self.invalid(format!(
                "storage class {name} needs a restore before objects can be read; use STANDARD_IA, \
                 INTELLIGENT_TIERING or GLACIER_IR for a cheaper archive that recovery can still read"
            )));
        }
        if !StorageClass::values().contains(&class.as_str()) {
            let known: Vec<&str> =
                StorageClass::values().iter().copied().filter(|value| !UNREADABLE_CLASSES.contains(value)).collect();
            return Err(self.invalid(format!("unknown storage class {name:?}; expected one of {}", known.join(", "))));
        }
        Ok(Some(class))
    }

    fn validate(&self) -> Result<(), StorageError> {
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self.bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(self.invalid("a bucket name has 3 to 63 lowercase letters, digits, '-' or '.'"));
        }
        if !self.prefix.is_empty() {
            ObjectKey::new(self.prefix.clone()).map_err(|_| self.invalid("the prefix has empty or '..' segments"))?;
        }
        if !(1..=1000).contains(&self.list_page_size) {
            return Err(self.invalid("the list page size must be between 1 and 1000"));
        }
        self.multipart.validate().map_err(|reason| self.invalid(reason))?;
        self.storage_class().map(|_| ())
    }
}

/// An S3 bucket (or a prefix of one) as a [`Storage`].
#[derive(Clone, Debug)]
pub struct S3Storage {
    client: Client,
    settings: S3Settings,
    storage_class: Option<StorageClass>,
    /// `prefix/`, or empty for the bucket's root.
    root: String,
}

impl S3Storage {
    /// Connects with the AWS default credential chain and region provider.
    pub async fn connect(settings: S3Settings) -> Result<Self, StorageError> {
        settings.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        let region =
            settings.region.clone().or_else(|| settings.endpoint.as_ref().map(|_| ENDPOINT_DEFAULT_REGION.to_string()));
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(settings.invalid("no AWS region: set the storage region or AWS_REGION"));
        }
        Self::from_sdk_config(&sdk_config, settings)
    }

    /// Uses an already loaded SDK configuration (credentials, region); `settings` still decide
    /// endpoint, region override, timeouts and retries.
    pub fn from_sdk_config(sdk_config: &SdkConfig, settings: S3Settings) -> Result<Self, StorageError> {
        settings.validate()?;
        let operation = settings.timeouts.operation;
        let mut config = aws_sdk_s3::config::Builder::from(sdk_config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().connect_timeout(operation.min(Duration::from_secs(10))).build())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(region) = &settings.region {
            config = config.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint.clone()).force_path_style(true);
        }
        let storage_class = settings.storage_class()?;
        let root = if settings.prefix.is_empty() { String::new() } else { format!("{}/", settings.prefix) };
        Ok(Self { client: Client::from_conf(config.build()), settings, storage_class, root })
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The object lock mode and retention date of an object written now.
    fn lock_headers(&self) -> (Option<ObjectLockMode>, Option<aws_sdk_s3::primitives::DateTime>) {
        let Some(lock) = self.settings.object_lock else { return (None, None) };
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        let until = aws_sdk_s3::primitives::DateTime::from_secs(lock.until(chrono::Utc::now()).timestamp());
        (Some(mode), Some(until))
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn request<'a>(&self, store: &'a str, operation: &'static str, key: &'a str) -> Request<'a> {
        Request { store, operation, key }
    }

    /// Sends one request (under the stall detector when the caller has none), converting its
    /// failure; an answer is progress.
    async fn send<T, E>(
        &self,
        request: Request<'_>,
        call: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, StorageError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match self.watched(request, call).await? {
            Ok(output) => Ok(output),
            Err(error) => Err(storage_error(request, error)),
        }
    }

    /// Runs `work` under the stall detector unless the caller already watches it.
    async fn watched<T>(&self, request: Request<'_>, work: impl Future<Output = T>) -> Result<T, StorageError> {
        let stall = self.settings.timeouts.operation;
        let output = progress::watch_unless_watched(stall, work).await.map_err(|cut| match cut {
            Cut::Stalled(after) | Cut::Deadline(after) => {
                StorageError::stalled(request.store, request.operation, request.key, after)
            }
        })?;
        progress::note();
        Ok(output)
    }

    /// An interceptor noting progress as a request body of `size` bytes is sent (for the attempt
    /// this task runs).
    fn body_progress(&self, size: u64) -> BodyProgress {
        let drain = self.settings.timeouts.transfer_time(size.min(SEND_BUFFER_ALLOWANCE));
        BodyProgress { progress: progress::current().unwrap_or_default(), drain }
    }

    async fn put_object(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let store = self.describe();
        let size = body.len() as u64;
        let put = self.client.put_object().bucket(&self.settings.bucket).key(self.object_key(key.as_str()));
        let mut put = with_write_options!(put, self).body(ByteStream::from(body));
        if mode == PutMode::CreateNew {
            put = put.if_none_match("*");
        }
        let request = self.request(&store, "put", key.as_str());
        self.watched(request, async { put.customize().interceptor(self.body_progress(size)).send().await })
            .await?
            .map(|_| ())
            .map_err(|error| storage_error(request, error))
    }

    /// One ListObjectsV2 page: the objects on it and the token of the next page.
    async fn list_page(
        &self,
        store: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), StorageError> {
        let call = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(self.object_key(prefix))
            .max_keys(self.settings.list_page_size)
            .set_continuation_token(token)
            .send();
        let page = self.send(self.request(store, "list", prefix), call).await?;
        let mut objects = Vec::new();
        for object in page.contents() {
            let Some(full_key) = object.key() else { continue };
            let Some(relative) = full_key.strip_prefix(&self.root) else { continue };
            match ObjectKey::new(relative) {
                Ok(key) => objects.push(ObjectMeta {
                    key,
                    size: object.size().and_then(|size| u64::try_from(size).ok()).unwrap_or(0),
                    last_modified: object.last_modified().and_then(to_chrono),
                }),
                Err(_) => {
                    tracing::warn!(bucket = %self.settings.bucket, key = full_key, "skipping an object whose key is not a valid object key")
                }
            }
        }
        let next =
            if page.is_truncated() == Some(true) { page.next_continuation_token().map(str::to_string) } else { None };
        Ok((objects, next))
    }
}

impl S3Storage {
    /// Reads an object (its first `len` bytes when given) into `buffer`, chunk by chunk, each
    /// chunk progress for the stall detector.
    async fn get_range(&self, key: &ObjectKey, len: Option<u64>, mut buffer: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let store = self.describe();
        let request = self.request(&store, "get", key.as_str());
        let range = len.map(|len| format!("bytes=0-{}", len - 1));
        let call = self.client.get_object().bucket(&self.settings.bucket).key(self.object_key(key.as_str()));
        let output = match self.send(request, call.set_range(range).send()).await {
            Ok(output) => output,
            // A range past the end of an empty object.
            Err(StorageError::Permanent { message, .. }) if len.is_some() && message.contains("HTTP 416") => {
                buffer.clear();
                return Ok(buffer);
            }
            Err(error) => return Err(error),
        };
        let size = output.content_length().and_then(|length| u64::try_from(length).ok()).unwrap_or(0);
        buffer.clear();
        buffer.reserve(usize::try_from(size).unwrap_or(0));
        let mut body = output.body;
        // The body arrives in chunks appended to the buffer: no second, aggregated copy.
        let read = async {
            while let Some(chunk) = body.try_next().await? {
                buffer.extend_from_slice(&chunk);
                progress::note();
            }
            Ok::<(), aws_sdk_s3::primitives::ByteStreamError>(())
        };
        match self.watched(request, read).await? {
            Ok(()) => Ok(buffer),
            Err(error) => Err(request.transient(format!("failed to read the response body: {error}"))),
        }
    }
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

#[async_trait]
impl Storage for S3Storage {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        if body.len() as u64 > self.settings.multipart.threshold {
            multipart::upload(self, key, body, mode).await
        } else {
            self.put_object(key, body, mode).await
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        self.get_into(key, Vec::new()).await.map(Bytes::from)
    }

    async fn get_into(&self, key: &ObjectKey, buffer: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        self.get_range(key, None, buffer).await
    }

    async fn get_start(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.get_range(key, Some(len), Vec::new()).await.map(Bytes::from)
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        let store = self.describe();
        let call = self.client.head_object().bucket(&self.settings.bucket).key(self.object_key(key.as_str())).send();
        match self.send(self.request(&store, "head", key.as_str()), call).await {
            Ok(output) => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: output.content_length().and_then(|length| u64::try_from(length).ok()).unwrap_or(0),
                last_modified: output.last_modified().and_then(to_chrono),
            })),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The object's `x-amz-object-lock-retain-until-date` from HeadObject (S3 answers it to a
    /// caller with `s3:GetObjectRetention`), only when this store locks what it writes (other
    /// stores have no locked objects to ask about).
    async fn retained_until(&self, key: &ObjectKey) -> Result<Option<DateTime<Utc>>, StorageError> {
        if self.settings.object_lock.is_none() {
            return Ok(None);
        }
        let store = self.describe();
        let call = self.client.head_object().bucket(&self.settings.bucket).key(self.object_key(key.as_str())).send();
        match self.send(self.request(&store, "head-retention", key.as_str()), call).await {
            Ok(output) => Ok(output.object_lock_retain_until_date().and_then(to_chrono)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let store = self.describe();
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self.list_page(&store, prefix, token).await?;
            objects.extend(page);
            match next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let store = self.describe();
        let call = self.client.delete_object().bucket(&self.settings.bucket).key(self.object_key(key.as_str())).send();
        match self.send(self.request(&store, "delete", key.as_str()), call).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn describe(&self) -> String {
        self.settings.url()
    }
}
