//! Reading a wal-g archive (read-only; pgec2 never writes wal-g's layout).
//!
//! Under a wal-g prefix:
//! - `basebackups_005/<name>_backup_stop_sentinel.json`: a finished backup ([`sentinel`]);
//! - `basebackups_005/<name>/tar_partitions/part_NNN.tar.<ext>`: the data directory as tar
//!   files, the last holding `backup_label` (and `tablespace_map`);
//! - `basebackups_005/<name>/tar_partitions/pg_control.tar.<ext>`: `global/pg_control`,
//!   restored last;
//! - `wal_005/<file>.<ext>`: WAL segments, `.history` and `.backup` files.
//!
//! pgec2 never writes this layout; it deletes from it only when `delete … --include-wal-g` asks
//! ([`retention`]).
//!
//! `<ext>` names the compression ([`compression::Method`]: lz4, zstd, brotli, lzma). With
//! `WALG_LIBSODIUM_KEY` wal-g encrypts the compressed partitions and WAL (not the JSON sentinels);
//! [`WalgArchive::with_key`] reads them ([`libsodium`], [`content`]). Delta backups are not read.

pub mod compression;
pub mod content;
pub mod continuity;
pub mod libsodium;
pub mod retention;
pub mod sentinel;
pub mod tar;

use std::sync::Arc;

use crate::storage::{ObjectKey, Storage, StorageError};

pub use compression::Method;
pub use content::ContentReader;
pub use libsodium::{KeyTransform, LibsodiumKey};
pub use sentinel::Sentinel;

/// Where wal-g keeps base backups.
pub const BACKUPS_DIR: &str = "basebackups_005/";
/// Where wal-g keeps WAL.
pub const WAL_DIR: &str = "wal_005/";
/// The suffix of a finished backup's sentinel.
pub const SENTINEL_SUFFIX: &str = "_backup_stop_sentinel.json";

/// What can go wrong reading a wal-g archive.
#[derive(Debug, thiserror::Error)]
pub enum WalgError {
    #[error("failed to read the wal-g archive at {key}: {error}")]
    Storage { key: String, error: StorageError },
    #[error("wal-g sentinel {key} is not valid: {reason}; check the wal-g archive with wal-g backup-list")]
    Sentinel { key: String, reason: String },
    #[error("wal-g object {key} uses {method} compression, which pgec2 does not read yet")]
    Unsupported { key: String, method: String },
    #[error("wal-g backup {name} is a delta backup, which pgec2 does not restore: restore a full wal-g backup")]
    Delta { name: String },
    #[error("no wal-g backup {name} under the wal-g prefix: run backup-list to see the wal-g backups")]
    NoSuchBackup { name: String },
    #[error(
        "wal-g object {key} is encrypted (it does not start as {method} data) and no wal-g libsodium key is set: \
         set walg.libsodium_key or walg.libsodium_key_path (WALG_LIBSODIUM_KEY, WALG_LIBSODIUM_KEY_PATH) as wal-g had it"
    )]
    MissingKey { key: String, method: Method },
    #[error("failed to read wal-g object {key}: {error}")]
    Decrypt { key: String, error: libsodium::LibsodiumError },
    #[error("wal-g object {key} does not decompress: {reason}")]
    Unreadable { key: String, reason: String },
}

/// One finished wal-g backup.
#[derive(Clone, Debug)]
pub struct WalgBackup {
    pub name: String,
    pub sentinel: Sentinel,
}

impl WalgBackup {
    /// The timeline the backup started on (from its name, `base_<segment>`).
    pub fn timeline(&self) -> u32 {
        self.name
            .strip_prefix("base_")
            .and_then(|segment| segment.get(..8))
            .and_then(|tli| u32::from_str_radix(tli, 16).ok())
            .unwrap_or(1)
    }
}

/// A wal-g archive: its store, keys relative to the wal-g prefix, and wal-g's libsodium key
/// when the archive is encrypted.
#[derive(Clone)]
pub struct WalgArchive {
    pub storage: Arc<dyn Storage>,
    libsodium: Option<LibsodiumKey>,
}

impl WalgArchive {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self { storage, libsodium: None }
    }

    /// The same archive read with wal-g's libsodium key.
    pub fn with_key(self, key: Option<LibsodiumKey>) -> Self {
        Self { libsodium: key, ..self }
    }

    /// How to read the content of the stored object `key` (decrypted, decompressed).
    pub fn content(&self, key: &str) -> ContentReader {
        ContentReader::new(key, self.libsodium.clone())
    }

    fn key(&self, key: &str) -> Result<ObjectKey, WalgError> {
        ObjectKey::new(key).map_err(|error| WalgError::Storage { key: key.to_string(), error })
    }

    /// Every finished backup, oldest first (by finish time).
    pub async fn backups(&self) -> Result<Vec<WalgBackup>, WalgError> {
        let listed = self.list(BACKUPS_DIR).await?;
        let mut backups = Vec::new();
        for object in listed {
            let key = object.key.as_str();
            let Some(name) = key.strip_prefix(BACKUPS_DIR).and_then(|rest| rest.strip_suffix(SENTINEL_SUFFIX)) else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            let bytes = self.get(key).await?;
            let sentinel =
                Sentinel::parse(&bytes).map_err(|reason| WalgError::Sentinel { key: key.to_string(), reason })?;
            backups.push(WalgBackup { name: name.to_string(), sentinel });
        }
        backups.sort_by(|a, b| a.sentinel.finish_time.cmp(&b.sentinel.finish_time).then(a.name.cmp(&b.name)));
        Ok(backups)
    }

    /// The backup `name`, or the newest one for `LATEST`.
    pub async fn backup(&self, name: &str) -> Result<WalgBackup, WalgError> {
        let backups = self.backups().await?;
        let found = if name == "LATEST" { backups.last() } else { backups.iter().find(|backup| backup.name == name) };
        found.cloned().ok_or_else(|| WalgError::NoSuchBackup { name: name.to_string() })
    }

    /// The keys of `name`'s tar partitions in restore order: `part_NNN` by number, then
    /// `pg_control`.
    pub async fn partitions(&self, name: &str) -> Result<Vec<String>, WalgError> {
        let dir = format!("{BACKUPS_DIR}{name}/tar_partitions/");
        let mut parts: Vec<(u64, String)> = Vec::new();
        for object in self.list(&dir).await? {
            let key = object.key.as_str().to_string();
            let file = &key[dir.len().min(key.len())..];
            let order = match file.strip_prefix("part_").and_then(|rest| rest.split('.').next()) {
                Some(number) => number.parse::<u64>().unwrap_or(u64::MAX - 1),
                None if file.starts_with("pg_control.") => u64::MAX,
                None => continue,
            };
            parts.push((order, key));
        }
        parts.sort();
        Ok(parts.into_iter().map(|(_, key)| key).collect())
    }

    /// Every WAL object: (file name without suffix, key).
    pub async fn wal_files(&self) -> Result<Vec<(String, String)>, WalgError> {
        let listed = self.list(WAL_DIR).await?;
        Ok(listed
            .into_iter()
            .filter_map(|object| {
                let key = object.key.as_str().to_string();
                let file = key.strip_prefix(WAL_DIR)?;
                let (name, _) = Method::split(file)?;
                Some((name.to_string(), key))
            })
            .collect())
    }

    /// The key of WAL file `file` (a segment, `.history` or `.backup` name); `None` when wal-g
    /// did not archive it.
    pub async fn find_wal(&self, file: &str) -> Result<Option<String>, WalgError> {
        let listed = self.list(&format!("{WAL_DIR}{file}.")).await?;
        Ok(listed
            .into_iter()
            .map(|object| object.key.as_str().to_string())
            .find(|key| key.strip_prefix(WAL_DIR).and_then(Method::split).is_some_and(|(name, _)| name == file)))
    }

    /// The stored (still compressed and encrypted) bytes of `key`.
    pub async fn get(&self, key: &str) -> Result<bytes::Bytes, WalgError> {
        let object = self.key(key)?;
        self.storage.get(&object).await.map_err(|error| WalgError::Storage { key: key.to_string(), error })
    }

    /// The names of the directories under `basebackups_005/` (finished or not).
    pub async fn backup_dirs(&self) -> Result<Vec<String>, WalgError> {
        let mut dirs: Vec<String> = self
            .list(BACKUPS_DIR)
            .await?
            .iter()
            .filter_map(|object| {
                object.key.as_str().strip_prefix(BACKUPS_DIR)?.split_once('/').map(|(dir, _)| dir.to_string())
            })
            .collect();
        dirs.dedup();
        Ok(dirs)
    }

    /// Every key under `prefix`.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, WalgError> {
        Ok(self.list(prefix).await?.into_iter().map(|object| object.key.as_str().to_string()).collect())
    }

    /// Deletes `key`: only retention does, when told to (`delete … --include-wal-g`).
    pub async fn delete(&self, key: &str) -> Result<(), WalgError> {
        let object = self.key(key)?;
        self.storage.delete(&object).await.map_err(|error| WalgError::Storage { key: key.to_string(), error })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<crate::storage::ObjectMeta>, WalgError> {
        self.storage.list(prefix).await.map_err(|error| WalgError::Storage { key: prefix.to_string(), error })
    }
}
