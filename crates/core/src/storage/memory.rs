//! An in-process object store, for tests and for the operator's unit tests.
//!
//! Durability: none, objects live as long as the [`MemoryStorage`] (clones share the same map).
//! Atomicity matches the other backends: a `put` is visible whole or not at all, and
//! [`PutMode::CreateNew`] is decided under the map's lock, so of two concurrent creates exactly
//! one wins.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ObjectKey, ObjectMeta, PutMode, Storage, StorageError};

/// A shared in-memory map from key to bytes. Cloning gives another handle to the same objects.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    objects: Arc<Mutex<BTreeMap<String, StoredObject>>>,
}

#[derive(Clone, Debug)]
struct StoredObject {
    body: Bytes,
    last_modified: DateTime<Utc>,
}

impl StoredObject {
    fn meta(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        Ok(ObjectMeta {
            key: ObjectKey::new(key)?,
            size: self.body.len() as u64,
            last_modified: Some(self.last_modified),
        })
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.objects().len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects().is_empty()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, StoredObject>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let mut objects = self.objects();
        if mode == PutMode::CreateNew && objects.contains_key(key.as_str()) {
            return Err(StorageError::already_exists(&self.describe(), key.as_str()));
        }
        objects.insert(key.as_str().to_string(), StoredObject { body, last_modified: Utc::now() });
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        match self.objects().get(key.as_str()) {
            Some(object) => Ok(object.body.clone()),
            None => Err(StorageError::not_found(&self.describe(), key.as_str())),
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        self.objects().get(key.as_str()).map(|object| object.meta(key.as_str())).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let objects = self.objects();
        objects
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, object)| object.meta(key))
            .collect()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.objects().remove(key.as_str());
        Ok(())
    }

    fn describe(&self) -> String {
        "memory://".to_string()
    }
}
