//! Object storage: one trait, several backends.
//!
//! Every backend stores opaque byte objects under [`ObjectKey`]s. Callers never format keys
//! inline: [`crate::layout::ArchiveLayout`] builds them. Backends:
//! - [`local`]: a directory on a filesystem (`file:///abs/dir`), durable via fsync + rename;
//! - AWS S3 or an S3-compatible store (`s3://bucket/prefix`): the `pgec2-storage-s3` crate,
//!   which keeps the AWS SDK out of this crate;
//! - [`memory`]: an in-process map, for tests;
//! - [`fault`]: a wrapper that injects failures and stalls into any backend, for tests.
//!
//! Every operation is bounded by a timeout and transient failures are retried by
//! [`retry::Retrying`]; errors say whether they are permanent ([`StorageError::is_permanent`]).
//!
//! The agent and the operator open a store with `pgec2_storage_s3::open_storage`, which parses
//! the URL ([`url::StorageUrl`]), builds the backend and wraps it in [`retry::Retrying`]; a
//! `file://` URL alone opens with [`url::open_file_storage`]:
//!
//! ```no_run
//! # async fn example() -> Result<(), pgec2_core::storage::StorageError> {
//! use bytes::Bytes;
//! use pgec2_core::storage::url::{StorageConfig, StorageUrl, open_file_storage};
//! use pgec2_core::storage::{ObjectKey, PutMode, PutOutcome};
//!
//! let config = StorageConfig::new("file:///var/lib/pgec2/archive");
//! let StorageUrl::File { root } = StorageUrl::parse(&config.url)? else { unreachable!() };
//! let storage = open_file_storage(&config, root)?;
//! let key = ObjectKey::new("wal/000000010000000000000001")?;
//! // A conditional create that is also safe to repeat with the same bytes:
//! let outcome = storage.put_new_or_identical(&key, Bytes::from_static(b"...")).await?;
//! assert!(matches!(outcome, PutOutcome::Created | PutOutcome::AlreadyIdentical));
//! # Ok(()) }
//! ```
//!
//! Durability: when `put` returns `Ok`, the object is complete and survives a crash of the
//! writer (and, for S3, of the machine); each backend's page says how. The one exception is
//! [`Storage::put_deferred`], whose objects are durable once [`Storage::sync_deferred`] returned.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub mod conformance;
mod create;
pub mod fault;
pub mod local;
mod local_deferred;
pub mod lock;
pub mod memory;
pub mod probe;
pub mod progress;
pub mod retry;
pub mod url;

/// What a failed [`Storage::sync_deferred`] names as its subject (it has no single key).
pub const DEFERRED_WRITES: &str = "new objects";

/// A key of an object inside a storage backend, relative to the backend's root.
///
/// Keys use `/` as separator, never start with `/` and never contain `..` segments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Builds a key from its `/`-separated text, refusing empty, absolute or `..` keys, empty
    /// segments (`a//b`, a trailing `/`) and NUL characters: every key maps to exactly one file
    /// path in the local backend and to the same object key in S3.
    pub fn new(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        let valid = !key.contains('\0')
            && key.split('/').all(|segment| !segment.is_empty() && segment != ".." && segment != ".");
        if valid { Ok(Self(key)) } else { Err(StorageError::InvalidKey { key }) }
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key with `/child` appended.
    pub fn join(&self, child: &str) -> Result<Self, StorageError> {
        if self.0.ends_with('/') {
            Self::new(format!("{}{child}", self.0))
        } else {
            Self::new(format!("{}/{child}", self.0))
        }
    }

    /// The last `/`-separated segment of the key.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a listing or a `head` knows about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    /// Size of the stored bytes.
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// How `put` treats an object that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there (used only for mutable catalog objects such as pins).
    Overwrite,
    /// Create only if absent; an existing object gives [`StorageError::AlreadyExists`].
    /// S3 uses `If-None-Match: *`; the local backend uses a hard link, which fails on existing.
    CreateNew,
}

/// Storage failures, actionable by their variant.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key} not found in {store}")]
    NotFound { store: String, key: String },
    #[error("object {key} already exists in {store}")]
    AlreadyExists { store: String, key: String },
    #[error("invalid object key {key:?}: keys are relative, '/'-separated and contain no '..'")]
    InvalidKey { key: String },
    #[error("invalid storage url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{operation} of {key} in {store} timed out after {after:?}")]
    Timeout { store: String, operation: &'static str, key: String, after: Duration },
    /// The stall detector cut an attempt that made no progress (no bytes, no answer).
    #[error("{operation} of {key} in {store} timed out: no progress for {after:?}")]
    Stalled { store: String, operation: &'static str, key: String, after: Duration },
    /// A create-only write found the key taken by other content; nothing was replaced.
    #[error(
        "object {key} already exists in {store} with different content ({detail}); it was not replaced: \
         find out which writer stored it before removing anything"
    )]
    DifferentContent { store: String, key: String, detail: String },
    /// A failure that may go away when retried (5xx, throttling, connection reset).
    #[error("{operation} of {key} in {store} failed (transient): {message}")]
    Transient { store: String, operation: &'static str, key: String, message: String },
    /// A failure that retrying will not fix (access denied, bad bucket, disk full).
    #[error("{operation} of {key} in {store} failed: {message}")]
    Permanent { store: String, operation: &'static str, key: String, message: String },
}

impl StorageError {
    /// True when retrying the same operation cannot succeed.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, StorageError::Timeout { .. } | StorageError::Stalled { .. } | StorageError::Transient { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// True when a create found its key taken (with content of unknown or different kind).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StorageError::AlreadyExists { .. } | StorageError::DifferentContent { .. })
    }

    pub fn not_found(store: &str, key: &str) -> Self {
        StorageError::NotFound { store: store.to_string(), key: key.to_string() }
    }

    pub fn already_exists(store: &str, key: &str) -> Self {
        StorageError::AlreadyExists { store: store.to_string(), key: key.to_string() }
    }

    pub fn timeout(store: &str, operation: &'static str, key: &str, after: Duration) -> Self {
        StorageError::Timeout { store: store.to_string(), operation, key: key.to_string(), after }
    }

    pub fn stalled(store: &str, operation: &'static str, key: &str, after: Duration) -> Self {
        StorageError::Stalled { store: store.to_string(), operation, key: key.to_string(), after }
    }

    pub fn transient(store: &str, operation: &'static str, key: &str, message: impl Into<String>) -> Self {
        StorageError::Transient { store: store.to_string(), operation, key: key.to_string(), message: message.into() }
    }

    pub fn permanent(store: &str, operation: &'static str, key: &str, message: impl Into<String>) -> Self {
        StorageError::Permanent { store: store.to_string(), operation, key: key.to_string(), message: message.into() }
    }
}

/// Limits every backend applies to its operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The stall limit: an attempt that makes no progress for this long (no byte sent or
    /// received, no answer) is cut and retried ([`progress`]). A transfer that keeps moving is
    /// never cut by it, however slow the link.
    pub operation: Duration,
    /// The slowest link an operation must still succeed on: the time budget of an operation
    /// moving `size` bytes grows by `size / min_bytes_per_second` ([`Timeouts::transfer_time`]).
    pub min_bytes_per_second: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { operation: Duration::from_secs(30), min_bytes_per_second: 256 * 1024 }
    }
}

impl Timeouts {
    /// Time to move `size` bytes at the slowest link we support.
    pub fn transfer_time(&self, size: u64) -> Duration {
        Duration::from_secs_f64(size as f64 / self.min_bytes_per_second.max(1) as f64)
    }

    /// A backstop deadline for one call moving `size` bytes: the stall limit plus the transfer
    /// time (backends that cannot observe progress use it).
    pub fn for_transfer(&self, size: u64) -> Duration {
        self.operation + self.transfer_time(size)
    }
}

/// An object store. Implementations must be safe to share between tasks.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Stores `body` under `key`. Returns only once the object is complete and durable.
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError>;

    /// Reads a whole object; [`StorageError::NotFound`] when absent.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError>;

    /// Reads a whole object into `buffer` (its content replaced, its capacity reused) and
    /// returns it; [`StorageError::NotFound`] when absent. Callers that read many objects pass
    /// the same buffer back each time, so large objects are read without allocating each time.
    async fn get_into(&self, key: &ObjectKey, mut buffer: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let body = self.get(key).await?;
        buffer.clear();
        buffer.extend_from_slice(&body);
        Ok(buffer)
    }

    /// Reads the first `len` bytes of an object (all of it when shorter); [`StorageError::NotFound`]
    /// when absent. S3 sends a ranged GET, so comparing an envelope header costs no download.
    async fn get_start(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        let body = self.get(key).await?;
        Ok(body.slice(..body.len().min(usize::try_from(len).unwrap_or(usize::MAX))))
    }

    /// Metadata of one object, `None` when absent.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError>;

    /// Every object whose key starts with `prefix` (a key prefix, not only a directory), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Removes an object; removing an absent object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// Until when an object lock keeps `key` from deletion ([`lock`]); `None` when it is not
    /// locked, or when the store has no object lock.
    async fn retained_until(&self, _key: &ObjectKey) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        Ok(None)
    }

    /// A short human description used in messages, e.g. `s3://bucket/prefix` or `file:///backups`.
    fn describe(&self) -> String;

    /// Creates `key` with `body` unless it exists; when it exists with the same content, that is
    /// success too ([`PutOutcome::AlreadyIdentical`]).
    ///
    /// This makes a conditional create idempotent: when an earlier attempt (or an earlier run of
    /// the same command) stored the object but its answer was lost, the key is taken by our own
    /// content. Envelopes ([`crate::envelope`]) are compared by the content length and hash in
    /// their header (only the header is read back, whatever the compression); other bodies byte
    /// for byte. Different content is a [`StorageError::DifferentContent`] error.
    async fn put_new_or_identical(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StorageError> {
        match self.put(key, body.clone(), PutMode::CreateNew).await {
            Ok(()) => Ok(PutOutcome::Created),
            Err(StorageError::AlreadyExists { .. }) => {
                let comparison = create::compare_stored(self, key, &body).await?;
                create::settle(&self.describe(), key, comparison).map(|()| PutOutcome::AlreadyIdentical)
            }
            Err(error) => Err(error),
        }
    }

    /// Creates `key` as [`Storage::put_new_or_identical`] does, but the object need survive a
    /// crash of the machine only once a later [`Storage::sync_deferred`] returned `Ok`: until
    /// then a crash may leave it missing or torn (cut short, its end zeros). Readers in this
    /// process see it whole as soon as this returns.
    ///
    /// For many objects that one record commits (a backup's parts, committed by its manifest and
    /// `complete.json`), one sync before the commit replaces a durability barrier per object.
    /// Nothing may reference such an object from a committed record before the sync returned
    /// `Ok`. A backend that defers accepts a taken key only when its object is identical byte
    /// for byte (a crash may have left an intact header on a torn body), and makes it durable
    /// with the others. The default is the durable create: nothing is deferred (S3, memory).
    async fn put_deferred(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StorageError> {
        self.put_new_or_identical(key, body).await
    }

    /// Makes durable every object [`Storage::put_deferred`] stored through this store before
    /// this call. A failed sync is not retried, by [`retry::Retrying`] either: the failure it
    /// saw may be reported only once, so a second sync could succeed with the objects still not
    /// durable. The default does nothing (every put is durable already).
    async fn sync_deferred(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// What [`Storage::put_new_or_identical`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds the body.
    Created,
    /// The object already held exactly the body; nothing was written.
    AlreadyIdentical,
}

/// A shared backend is a backend: `Arc<dyn Storage>` and `Arc<S>` can be wrapped by
/// [`retry::Retrying`] and [`fault::FaultInjecting`] while the caller keeps a handle.
#[async_trait]
impl<T: Storage + ?Sized> Storage for std::sync::Arc<T> {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        (**self).put(key, body, mode).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        (**self).get(key).await
    }

    async fn get_into(&self, key: &ObjectKey, buffer: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        (**self).get_into(key, buffer).await
    }

    async fn get_start(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        (**self).get_start(key, len).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        (**self).head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        (**self).list(prefix).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        (**self).delete(key).await
    }

    async fn retained_until(&self, key: &ObjectKey) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        (**self).retained_until(key).await
    }

    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn put_new_or_identical(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StorageError> {
        (**self).put_new_or_identical(key, body).await
    }

    async fn put_deferred(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StorageError> {
        (**self).put_deferred(key, body).await
    }

    async fn sync_deferred(&self) -> Result<(), StorageError> {
        (**self).sync_deferred().await
    }
}
