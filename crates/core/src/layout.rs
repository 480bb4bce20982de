//! Where a cluster's objects live inside its archive. Every key is built here; nothing else
//! formats object keys. See `docs/storage-layout.md`.
//!
//! ```text
//! <archive>/cluster.json                           identity of the one cluster archiving here
//! <archive>/probes/<name>                          conditional-create probes, one per claim
//! <archive>/wal/<file name>                        WAL segments, .history, .partial, .backup files
//! <archive>/backups/<name>/manifest.json           the backup's file list (written after the parts)
//! <archive>/backups/<name>/parts/<index:06>        size-bounded bundles of file contents
//! <archive>/backups/<name>/backup_label            exactly as pg_backup_stop returned it
//! <archive>/backups/<name>/tablespace_map          exactly as pg_backup_stop returned it
//! <archive>/backups/<name>/complete.json           commit marker, written last
//! <archive>/backups/<name>/permanent               present while the backup is pinned
//! <archive>/leases/<id>.json                       what a running restore or standby still reads
//! ```
//! `<archive>` is the storage URL's root plus an optional sub-prefix (the operator gives each
//! host `<namespace>/<name>` inside a policy's bucket). Every object is wrapped in an
//! [`crate::envelope`] recording compression and checksum.

use std::sync::Arc;

use crate::encryption::Keyring;
use crate::storage::{ObjectKey, Storage, StorageError};

/// One cluster's archive: the store it lives in, the layout of its keys there, and the keys
/// its WAL segments and backup parts are encrypted with (none by default).
#[derive(Clone, Debug)]
pub struct Archive {
    pub storage: Arc<dyn Storage>,
    pub layout: ArchiveLayout,
    pub keyring: Keyring,
}

impl Archive {
    pub fn new(storage: Arc<dyn Storage>, layout: ArchiveLayout) -> Self {
        Self { storage, layout, keyring: Keyring::none() }
    }

    /// The same archive, with WAL segments and backup parts encrypted and decrypted by `keyring`.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = keyring;
        self
    }

    /// The archive's location for messages, e.g. `s3://bucket/base/default/orders-db`.
    pub fn describe(&self) -> String {
        let store = self.storage.describe();
        if self.layout.prefix.is_empty() {
            store
        } else if store.ends_with('/') {
            format!("{store}{}", self.layout.prefix)
        } else {
            format!("{store}/{}", self.layout.prefix)
        }
    }
}

/// The keys of one cluster's archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveLayout {
    /// Prefix inside the storage root, without leading or trailing '/'; empty for the root itself.
    prefix: String,
}

impl ArchiveLayout {
    /// The archive at the storage root.
    pub fn root() -> Self {
        Self { prefix: String::new() }
    }

    /// The archive under `prefix` inside the storage root (e.g. `default/orders-db`).
    pub fn under(prefix: &str) -> Result<Self, StorageError> {
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            ObjectKey::new(prefix.clone())?;
        }
        Ok(Self { prefix })
    }

    /// The prefix inside the storage root ("" for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, relative: &str) -> Result<ObjectKey, StorageError> {
        if self.prefix.is_empty() {
            ObjectKey::new(relative)
        } else {
            ObjectKey::new(format!("{}/{relative}", self.prefix))
        }
    }

    fn list_prefix(&self, relative: &str) -> String {
        if self.prefix.is_empty() { relative.to_string() } else { format!("{}/{relative}", self.prefix) }
    }

    /// `cluster.json`: system identifier and version of the cluster that owns this archive.
    pub fn cluster_identity(&self) -> Result<ObjectKey, StorageError> {
        self.key("cluster.json")
    }

    /// A conditional-create probe object ([`crate::storage::probe`]).
    pub fn probe(&self, name: &str) -> Result<ObjectKey, StorageError> {
        self.key(&format!("probes/{name}"))
    }

    /// A WAL file (segment, history, partial or backup history) by its `pg_wal` name.
    pub fn wal_file(&self, file_name: &str) -> Result<ObjectKey, StorageError> {
        if file_name.contains('/') {
            return Err(StorageError::InvalidKey { key: file_name.to_string() });
        }
        self.key(&format!("wal/{file_name}"))
    }

    /// The listing prefix of all WAL files.
    pub fn wal_prefix(&self) -> String {
        self.list_prefix("wal/")
    }

    /// The listing prefix of all backups.
    pub fn backups_prefix(&self) -> String {
        self.list_prefix("backups/")
    }

    /// The listing prefix of one backup's objects.
    pub fn backup_prefix(&self, backup: &str) -> String {
        self.list_prefix(&format!("backups/{backup}/"))
    }

    fn backup_object(&self, backup: &str, object: &str) -> Result<ObjectKey, StorageError> {
        if backup.is_empty() || backup.contains('/') {
            return Err(StorageError::InvalidKey { key: backup.to_string() });
        }
        self.key(&format!("backups/{backup}/{object}"))
    }

    pub fn backup_manifest(&self, backup: &str) -> Result<ObjectKey, StorageError> {
        self.backup_object(backup, "manifest.json")
    }

    pub fn backup_part(&self, backup: &str, index: u32) -> Result<ObjectKey, StorageError> {
        self.backup_object(backup, &format!("parts/{index:06}"))
    }

    pub fn backup_label(&self, backup: &str) -> Result<ObjectKey, StorageError> {
        self.backup_object(backup, "backup_label")
    }

    pub fn tablespace_map(&self, backup: &str) -> Result<ObjectKey, StorageError> {
        self.backup_object(backup, "tablespace_map")
    }

    /// The commit marker: a backup exists for readers only once this object does.
    pub fn backup_complete(&self, backup: &str) -> Result<ObjectKey, StorageError> {
        self.backup_object(backup, "complete.json")
    }

    /// Present while the backup is pinned (`backup-mark`), so retention keeps it.
    pub fn backup_permanent(&self, backup: &str) -> Result<ObjectKey, StorageError> {
        self.backup_object(backup, "permanent")
    }

    /// One object of the handshake of a snapshot backup (see [`crate::catalog::snapshot`]):
    /// `snapshot-requests/<backup>/<object>`.
    pub fn snapshot_handshake(&self, backup: &str, object: &str) -> Result<ObjectKey, StorageError> {
        if backup.is_empty() || backup.contains('/') {
            return Err(StorageError::InvalidKey { key: backup.to_string() });
        }
        self.key(&format!("snapshot-requests/{backup}/{object}"))
    }

    /// The listing prefix of all snapshot handshakes.
    pub fn snapshot_requests_prefix(&self) -> String {
        self.list_prefix("snapshot-requests/")
    }

    /// A lease held by a restore or standby (see [`crate::leases`]).
    pub fn lease(&self, id: &str) -> Result<ObjectKey, StorageError> {
        let valid =
            !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !valid {
            return Err(StorageError::InvalidKey { key: id.to_string() });
        }
        self.key(&format!("leases/{id}.json"))
    }

    /// The listing prefix of all leases.
    pub fn leases_prefix(&self) -> String {
        self.list_prefix("leases/")
    }

    /// The lease id of a listed key under [`ArchiveLayout::leases_prefix`].
    pub fn parse_lease_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.leases_prefix())?.strip_suffix(".json").filter(|id| !id.contains('/'))
    }

    /// Splits a listed key of this archive into (backup name, object name) when it is a backup object.
    pub fn parse_backup_key<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&self.backups_prefix())?;
        rest.split_once('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_prefixed_archive_stay_under_the_prefix() {
        let layout = ArchiveLayout::under("/default/orders/").expect("layout");
        assert_eq!(
            layout.wal_file("000000010000000000000001").expect("key").as_str(),
            "default/orders/wal/000000010000000000000001"
        );
        assert_eq!(
            layout.backup_part("base_1", 7).expect("key").as_str(),
            "default/orders/backups/base_1/parts/000007"
        );
        assert_eq!(
            layout.parse_backup_key("default/orders/backups/base_1/complete.json"),
            Some(("base_1", "complete.json"))
        );
        assert_eq!(ArchiveLayout::root().cluster_identity().expect("key").as_str(), "cluster.json");
        let lease = layout.lease("restore-1f2e").expect("key");
        assert_eq!(lease.as_str(), "default/orders/leases/restore-1f2e.json");
        assert_eq!(layout.parse_lease_key(lease.as_str()), Some("restore-1f2e"));
    }

    #[test]
    fn names_that_would_escape_the_archive_are_refused() {
        let layout = ArchiveLayout::root();
        assert!(layout.wal_file("../x").is_err());
        assert!(layout.backup_manifest("a/b").is_err());
        assert!(layout.lease("../x").is_err());
        assert!(layout.lease("").is_err());
        assert!(ArchiveLayout::under("a/../b").is_err());
    }
}
