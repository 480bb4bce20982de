//! The backup catalog of an archive: which backups exist (committed or not), what each
//! recorded, pins, manifests, and the WAL index. Everything reads through the [`Storage`]
//! trait, so the agent and the operator (which has storage access but no PostgreSQL) share it.
//!
//! A backup is *committed* once `backups/<name>/complete.json` exists; everything else under
//! `backups/<name>/` without that object is an uncommitted backup: running, or abandoned.
//!
//! One damaged object damages one entry: a commit marker that cannot be read or parsed (or a
//! committed backup without its manifest), or a timeline history file that cannot be read or
//! parsed, is listed as [`Damaged`] with its key and the reason, and the other entries are read
//! as usual. Only failures that may go away (time-outs, throttling, a store that is down) fail a
//! whole scan.
//!
//! [`Storage`]: crate::storage::Storage

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::compression::{Algorithm, Compression};
use crate::envelope;
use crate::layout::Archive;
use crate::manifest::BackupManifest;
use crate::storage::{ObjectKey, ObjectMeta, PutMode, StorageError};
use crate::wal::SegmentSize;

mod backup_info;
pub mod fixtures;
mod recovery_target;
mod restore_plan;
pub mod snapshot;
mod streamed_tail;
mod timeline;
mod wal_archive;

pub use backup_info::{BACKUP_INFO_FORMAT, BackupInfo, BackupKind, BackupName, BackupType};
pub use recovery_target::{InvalidTarget, RecoveryTarget};
pub use restore_plan::{RestorePlan, TargetError, plan_restore};
pub use streamed_tail::{load_streamed_ends, partial_end};
pub use timeline::{TimelineError, TimelineHistory, TimelineSpan};
pub use wal_archive::{ArchivedSegment, LaterWal, WalArchive};

/// How many catalog objects are read or deleted at once.
const CATALOG_CONCURRENCY: usize = 8;

/// Failures reading or changing the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("failed to {action} {key}: {source}")]
    Storage { action: &'static str, key: String, source: Box<StorageError> },
    #[error("object {key} is unreadable: {reason}; the archive may be damaged, check it with backup-verify")]
    Corrupt { key: String, reason: String },
    #[error("backup {name} is not a committed backup in {archive}: run backup-list to see the backups")]
    NoSuchBackup { name: String, archive: String },
    #[error(
        "backup {name} in {archive} is damaged: {key}: {reason}; restore another backup (backup-list), \
         or delete this one with `delete garbage {name} --confirm`"
    )]
    DamagedBackup { name: String, archive: String, key: String, reason: String },
    #[error("there is no committed backup in {archive}: take one with backup-push")]
    NoBackups { archive: String },
}

fn storage(action: &'static str, key: &str) -> impl FnOnce(StorageError) -> CatalogError {
    let key = key.to_string();
    move |source| CatalogError::Storage { action, key, source: Box::new(source) }
}

fn corrupt(key: &str, reason: impl std::fmt::Display) -> CatalogError {
    CatalogError::Corrupt { key: key.to_string(), reason: reason.to_string() }
}

/// An entry that could not be read: listed with the object at fault and why, never taken for
/// garbage (retention deletes it only when it is named, see [`crate::retention`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damaged {
    /// The backup name, or the WAL file name of a history file.
    pub name: String,
    /// The object that could not be used.
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is damaged: {}: {}", self.name, self.key, self.reason)
    }
}

/// The entry an error damages, or the error back when it may go away on a later attempt.
pub(crate) fn damage_of(name: &str, key: &str, error: CatalogError) -> Result<Damaged, CatalogError> {
    let reason = match error {
        CatalogError::Corrupt { reason, .. } => reason,
        CatalogError::Storage { source, .. } if source.is_permanent() => source.to_string(),
        other => return Err(other),
    };
    Ok(Damaged { name: name.to_string(), key: key.to_string(), reason })
}

/// A backup prefix without a commit marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UncommittedBackup {
    pub name: String,
    /// When its newest object was written (`None` if the store does not say).
    pub last_modified: Option<DateTime<Utc>>,
    pub objects: usize,
    pub bytes: u64,
}

/// One scan of `backups/`.
#[derive(Clone, Debug, Default)]
pub struct BackupSet {
    /// Committed backups, oldest first, `permanent` reflecting the pin marker.
    pub committed: Vec<BackupInfo>,
    pub uncommitted: Vec<UncommittedBackup>,
    /// Backups with a commit marker that cannot be used, by name.
    pub damaged: Vec<Damaged>,
    /// Every object under each backup's prefix, by backup name.
    pub objects: BTreeMap<String, Vec<ObjectMeta>>,
}

impl BackupSet {
    /// The committed backup called `name`, or the newest one for `LATEST`.
    pub fn find(&self, name: &str, archive: &Archive) -> Result<&BackupInfo, CatalogError> {
        if name == "LATEST" {
            return self.committed.last().ok_or_else(|| CatalogError::NoBackups { archive: archive.describe() });
        }
        if let Some(damaged) = self.damaged.iter().find(|damaged| damaged.name == name) {
            return Err(CatalogError::DamagedBackup {
                name: name.to_string(),
                archive: archive.describe(),
                key: damaged.key.clone(),
                reason: damaged.reason.clone(),
            });
        }
        self.committed
            .iter()
            .find(|backup| backup.name == name)
            .ok_or_else(|| CatalogError::NoSuchBackup { name: name.to_string(), archive: archive.describe() })
    }

    /// The committed backups of one kind, oldest first.
    pub fn of_kind(&self, kind: BackupKind) -> Vec<BackupInfo> {
        self.committed.iter().filter(|backup| backup.kind == kind).cloned().collect()
    }

    /// The cluster's WAL segment size as the backups record it (default when there are none).
    pub fn segment_size(&self) -> SegmentSize {
        self.committed.last().map(BackupInfo::segment_size).unwrap_or_default()
    }
}

/// Lists every backup of the archive and reads the commit record of the committed ones; a
/// commit record that cannot be used makes that backup [`Damaged`], not the scan fail.
pub async fn scan_backups(archive: &Archive) -> Result<BackupSet, CatalogError> {
    let prefix = archive.layout.backups_prefix();
    let listing = archive.storage.list(&prefix).await.map_err(storage("list", &prefix))?;
    let mut objects: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for meta in listing {
        if let Some((name, _)) = archive.layout.parse_backup_key(meta.key.as_str()) {
            objects.entry(name.to_string()).or_default().push(meta);
        }
    }
    let has = |metas: &[ObjectMeta], object: &str| metas.iter().any(|meta| meta.key.file_name() == object);
    let committed_names: Vec<(String, bool, bool)> = objects
        .iter()
        .filter(|(_, metas)| has(metas, "complete.json"))
        .map(|(name, metas)| (name.clone(), has(metas, "permanent"), has(metas, "manifest.json")))
        .collect();
    let read: Vec<Result<BackupInfo, Damaged>> = futures::stream::iter(committed_names)
        .map(|(name, pinned, has_manifest)| async move { read_listed_info(archive, &name, pinned, has_manifest).await })
        .buffer_unordered(CATALOG_CONCURRENCY)
        .try_collect()
        .await?;
    let (mut committed, mut damaged): (Vec<BackupInfo>, Vec<Damaged>) = (Vec::new(), Vec::new());
    for entry in read {
        match entry {
            Ok(info) => committed.push(info),
            Err(entry) => damaged.push(entry),
        }
    }
    committed.sort_by(|left, right| (left.start_time, &left.name).cmp(&(right.start_time, &right.name)));
    damaged.sort_by(|left, right| left.name.cmp(&right.name));
    let uncommitted = objects
        .iter()
        .filter(|(_, metas)| !has(metas, "complete.json"))
        .map(|(name, metas)| UncommittedBackup {
            name: name.clone(),
            last_modified: metas.iter().map(|meta| meta.last_modified).max().flatten(),
            objects: metas.len(),
            bytes: metas.iter().map(|meta| meta.size).sum(),
        })
        .collect();
    Ok(BackupSet { committed, uncommitted, damaged, objects })
}

/// The commit record of a listed committed backup, or why that backup is damaged.
async fn read_listed_info(
    archive: &Archive,
    name: &str,
    pinned: bool,
    has_manifest: bool,
) -> Result<Result<BackupInfo, Damaged>, CatalogError> {
    let key = archive.layout.backup_complete(name).map_err(storage("name", name))?;
    if !has_manifest {
        let manifest = archive.layout.backup_manifest(name).map_err(storage("name", name))?;
        let reason = "the backup is committed but its manifest is missing".to_string();
        return Ok(Err(Damaged { name: name.to_string(), key: manifest.to_string(), reason }));
    }
    match read_info(archive, name).await {
        Ok(mut info) => {
            info.permanent = pinned;
            Ok(Ok(info))
        }
        Err(error) => damage_of(name, key.as_str(), error).map(Err),
    }
}

/// Reads a backup's `complete.json` (its `permanent` field as recorded at creation).
pub async fn read_info(archive: &Archive, name: &str) -> Result<BackupInfo, CatalogError> {
    let key = archive.layout.backup_complete(name).map_err(storage("name", name))?;
    let info: BackupInfo = get_json(archive, &key).await?;
    if info.name != name {
        return Err(corrupt(key.as_str(), format!("it describes backup {:?}", info.name)));
    }
    Ok(info)
}

/// Reads and validates a backup's manifest.
pub async fn read_manifest(archive: &Archive, name: &str) -> Result<BackupManifest, CatalogError> {
    let key = archive.layout.backup_manifest(name).map_err(storage("name", name))?;
    let manifest: BackupManifest = get_json(archive, &key).await?;
    manifest.validate().map_err(|error| corrupt(key.as_str(), error))?;
    if manifest.backup != name {
        return Err(corrupt(key.as_str(), format!("it describes backup {:?}", manifest.backup)));
    }
    Ok(manifest)
}

/// Pins (`permanent = true`) or unpins a committed backup.
pub async fn set_permanent(archive: &Archive, name: &str, permanent: bool) -> Result<(), CatalogError> {
    let complete = archive.layout.backup_complete(name).map_err(storage("name", name))?;
    if archive.storage.head(&complete).await.map_err(storage("read", complete.as_str()))?.is_none() {
        return Err(CatalogError::NoSuchBackup { name: name.to_string(), archive: archive.describe() });
    }
    if permanent {
        set_pin_marker(archive, name).await
    } else {
        let marker = archive.layout.backup_permanent(name).map_err(storage("name", name))?;
        archive.storage.delete(&marker).await.map_err(storage("delete", marker.as_str()))
    }
}

/// Writes the pin marker of backup `name` (committed or being written).
pub async fn set_pin_marker(archive: &Archive, name: &str) -> Result<(), CatalogError> {
    let marker = archive.layout.backup_permanent(name).map_err(storage("name", name))?;
    let pin = serde_json::json!({ "backup": name, "pinned_at": Utc::now() });
    put_json(archive, &marker, &pin, PutMode::Overwrite).await
}

/// Lists `wal/` (history files listed, not read: enough for retention).
pub async fn list_wal_archive(archive: &Archive, segment_size: SegmentSize) -> Result<WalArchive, CatalogError> {
    let prefix = archive.layout.wal_prefix();
    let listing = archive.storage.list(&prefix).await.map_err(storage("list", &prefix))?;
    let mut wal = WalArchive::from_listing(listing, &prefix, segment_size);
    wal.location = archive.describe();
    Ok(wal)
}

/// Lists `wal/`, loads every timeline history file and reads where the streamed tails end
/// ([`load_streamed_ends`]); a history that cannot be read or parsed is recorded in
/// [`WalArchive::damaged_histories`] and its timeline treated as a root.
pub async fn load_wal_archive(archive: &Archive, segment_size: SegmentSize) -> Result<WalArchive, CatalogError> {
    let mut wal = list_wal_archive(archive, segment_size).await?;
    load_streamed_ends(archive, &mut wal).await?;
    let keys: Vec<(u32, ObjectKey)> =
        wal.history_files.iter().map(|(&timeline, meta)| (timeline, meta.key.clone())).collect();
    let histories: Vec<Result<TimelineHistory, (u32, Damaged)>> = futures::stream::iter(keys)
        .map(|(timeline, key)| async move {
            match read_history(archive, timeline, &key).await {
                Ok(history) => Ok(Ok(history)),
                Err(error) => {
                    let name = key.file_name().to_string();
                    damage_of(&name, key.as_str(), error).map(|damaged| Err((timeline, damaged)))
                }
            }
        })
        .buffer_unordered(CATALOG_CONCURRENCY)
        .try_collect()
        .await?;
    for history in histories {
        match history {
            Ok(history) => wal.set_history(history),
            Err((timeline, damaged)) => {
                wal.damaged_histories.insert(timeline, damaged);
            }
        }
    }
    Ok(wal)
}

async fn read_history(archive: &Archive, timeline: u32, key: &ObjectKey) -> Result<TimelineHistory, CatalogError> {
    let content = get_content(archive, key).await?;
    let text = String::from_utf8_lossy(&content);
    TimelineHistory::parse(timeline, &text).map_err(|error| corrupt(key.as_str(), error))
}

/// Reads an object and opens its envelope (checksum verified).
pub async fn get_content(archive: &Archive, key: &ObjectKey) -> Result<Vec<u8>, CatalogError> {
    let stored = archive.storage.get(key).await.map_err(storage("read", key.as_str()))?;
    envelope::open(&stored).map(|(content, _)| content).map_err(|error| corrupt(key.as_str(), error))
}

/// Reads a JSON object stored in an envelope.
pub async fn get_json<T: DeserializeOwned>(archive: &Archive, key: &ObjectKey) -> Result<T, CatalogError> {
    let content = get_content(archive, key).await?;
    serde_json::from_slice(&content).map_err(|error| corrupt(key.as_str(), error))
}

/// Stores a small value as JSON in an uncompressed envelope.
pub async fn put_json<T: Serialize>(
    archive: &Archive,
    key: &ObjectKey,
    value: &T,
    mode: PutMode,
) -> Result<(), CatalogError> {
    put_json_sized(archive, key, value, mode, Compression { algorithm: Algorithm::None, level: 0 }).await.map(|_| ())
}

/// Stores a value as JSON in an envelope with `compression`; returns the stored size.
pub async fn put_json_sized<T: Serialize>(
    archive: &Archive,
    key: &ObjectKey,
    value: &T,
    mode: PutMode,
    compression: Compression,
) -> Result<u64, CatalogError> {
    let json = serde_json::to_vec_pretty(value).map_err(|error| corrupt(key.as_str(), error))?;
    let (stored, _) = envelope::seal(&json, compression).map_err(|error| corrupt(key.as_str(), error))?;
    let size = stored.len() as u64;
    let written = match mode {
        // Safe to repeat: an object an earlier attempt stored with this content is ours.
        PutMode::CreateNew => archive.storage.put_new_or_identical(key, Bytes::from(stored)).await.map(|_| ()),
        PutMode::Overwrite => archive.storage.put(key, Bytes::from(stored), mode).await,
    };
    written.map_err(storage("write", key.as_str()))?;
    Ok(size)
}

/// Deletes objects, several at once; stops at the first failure.
pub async fn delete_objects(archive: &Archive, keys: Vec<ObjectKey>) -> Result<(), CatalogError> {
    futures::stream::iter(keys)
        .map(|key| async move { archive.storage.delete(&key).await.map_err(storage("delete", key.as_str())) })
        .buffer_unordered(CATALOG_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}
