//! The local store's deferred writes: [`Storage::put_deferred`] and [`Storage::sync_deferred`]
//! for a directory.
//!
//! A durable create costs two journal commits (the file's fsync, the directory's fsync), about
//! 8 ms on an ext4 disk: for the ~550 parts of a 2.7 GB backup, seconds of waiting. A deferred
//! create writes the temporary file and moves it into place with a hard link (create-only, like
//! every create), without those fsyncs; the sync makes all of them durable at once. How, is
//! chosen at the store's first deferred create, from its root ([`SyncMethod::choose`], the same
//! choice backup-fetch makes for a restore):
//!
//! - [`SyncMethod::FileSystem`] (ext4, xfs, btrfs, tmpfs on Linux 5.8 or later): a handle on the
//!   root's file system is opened before the first deferred object is written. Each object's
//!   writeback is started as soon as it is written (the disk works while the backup goes on),
//!   and the sync is one `syncfs` on that handle: every file, link and directory written since,
//!   in one journal commit, and any writeback error the file system recorded since the handle
//!   was opened. An object on another file system than the root (a mount point below it) is
//!   handled as with the other method.
//! - [`SyncMethod::EachFile`] (any other file system, an older kernel): each object's data is
//!   fsynced before it is linked into place, so its name never points at a torn file; the sync
//!   fsyncs each directory that received new objects, once.
//!
//! A taken key is accepted only when the stored object is identical byte for byte, and that
//! object is fsynced with its directory at the sync (it may be a killed writer's object that no
//! sync covered). Syncs run one at a time and a failed sync is final: every later sync of the
//! store fails with its error, since the file system reports a writeback error once and a second
//! `syncfs` would succeed with the data still lost. Directories a create makes are fsynced as
//! they are made, deferred or not (a few per backup).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::local::{Context, check_target, create_temp_file, link_new, write_body};
use super::{PutMode, StorageError};
use crate::fs_sync::{self, SyncMethod};

/// What the deferred creates of one store left to make durable. Shared by the store's clones.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    state: Mutex<State>,
    /// Bytes created since the last sync: the sync's deadline grows with them.
    pending_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Chosen at the first deferred create (or forced by [`Deferred::forced`]).
    method: Option<SyncMethod>,
    /// [`SyncMethod::FileSystem`]: the root's file system, opened before the first object.
    file_system: Option<FileSystem>,
    /// Directories holding new objects not yet durable (the each-file method, another file
    /// system than the root's, or objects found in place).
    directories: BTreeSet<PathBuf>,
    /// The first failed sync's error: every later sync fails with it.
    failed: Option<String>,
}

#[derive(Debug)]
struct FileSystem {
    root: PathBuf,
    device: u64,
    handle: File,
}

impl Deferred {
    /// Deferred creates made durable by `method`, whatever the root's file system.
    pub(super) fn forced(method: SyncMethod) -> Self {
        Self { state: Mutex::new(State { method: Some(method), ..State::default() }), ..Self::default() }
    }

    /// Bytes created since the last sync.
    pub(super) fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// A deferred create of `path` (below `root`) holding `body`; see the module documentation.
    pub(super) fn create(&self, context: &Context, root: &Path, path: &Path, body: &[u8]) -> Result<(), StorageError> {
        check_target(context, path, PutMode::CreateNew)?;
        let directory = path.parent().unwrap_or(Path::new("/"));
        let (temp, mut file) = create_temp_file(context, directory)?;
        let covered = self.device_synced_whole(context, root);
        let result = covered.and_then(|covered| {
            write_body(context, &temp, &mut file, body)?;
            let device = file.metadata().map_err(|error| context.error("inspect", &temp, error))?.dev();
            let whole = covered == Some(device);
            if whole {
                fs_sync::start_writeback(&file);
            } else {
                file.sync_all().map_err(|error| context.error("fsync", &temp, error))?;
            }
            link_new(context, &temp, path)?;
            Ok(whole)
        });
        drop(file);
        // After a successful link the temporary is a second name of the object; remove it.
        let _ = fs::remove_file(&temp);
        let whole = result?;
        self.pending_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        if !whole {
            self.state().directories.insert(directory.to_path_buf());
        }
        Ok(())
    }

    /// An object found in place, identical to what a deferred create meant to store: its data
    /// made durable now, its directory at the sync.
    pub(super) fn found(&self, context: &Context, path: &Path) -> Result<(), StorageError> {
        File::open(path)
            .and_then(|file| file.sync_all())
            .map_err(|error| context.error("fsync the object found at", path, error))?;
        if let Some(directory) = path.parent() {
            self.state().directories.insert(directory.to_path_buf());
        }
        Ok(())
    }

    /// Makes every deferred create that returned before this call durable.
    pub(super) fn sync(&self, context: &Context) -> Result<(), StorageError> {
        let failed =
            |message: String| StorageError::permanent(&context.store, context.operation, &context.key, message);
        // Held throughout: syncs run one at a time, and creates wait for a running sync.
        let mut state = self.state();
        if let Some(earlier) = &state.failed {
            return Err(failed(format!(
                "an earlier sync failed, so nothing written since is known durable: {earlier}"
            )));
        }
        let pending = self.pending_bytes();
        match sync_state(&mut state) {
            Ok(()) => {
                self.pending_bytes.fetch_sub(pending, Ordering::Relaxed);
                Ok(())
            }
            Err(message) => {
                state.failed = Some(message.clone());
                Err(failed(message))
            }
        }
    }

    /// The device whose objects the sync covers with one `syncfs`, if any: the method is chosen
    /// (and the root's file system opened) at the first call.
    fn device_synced_whole(&self, context: &Context, root: &Path) -> Result<Option<u64>, StorageError> {
        let mut state = self.state();
        let method = *state.method.get_or_insert_with(|| SyncMethod::choose(&[root.to_path_buf()]));
        if method == SyncMethod::EachFile {
            return Ok(None);
        }
        if state.file_system.is_none() {
            let handle = File::open(root).map_err(|error| context.error("open", root, error))?;
            let device = handle.metadata().map_err(|error| context.error("inspect", root, error))?.dev();
            state.file_system = Some(FileSystem { root: root.to_path_buf(), device, handle });
        }
        Ok(state.file_system.as_ref().map(|file_system| file_system.device))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single assignment or insertion: a poisoned lock holds consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The file system's `syncfs` (when the method is whole file systems), then every directory
/// holding new objects; the error's description when one fails.
fn sync_state(state: &mut State) -> Result<(), String> {
    if let Some(file_system) = &state.file_system {
        fs_sync::sync_file_system(&file_system.handle).map_err(|error| {
            format!("failed to sync the file system holding {}: {error}", file_system.root.display())
        })?;
    }
    while let Some(directory) = state.directories.pop_first() {
        File::open(&directory)
            .and_then(|handle| handle.sync_all())
            .map_err(|error| format!("failed to fsync directory {}: {error}", directory.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::compression::{Algorithm, Compression};
    use crate::envelope;
    use crate::storage::local::{LocalStorage, TEMP_PREFIX};
    use crate::storage::{ObjectKey, PutOutcome, Storage, StorageError, Timeouts};

    use super::*;

    fn store(root: &Path, method: SyncMethod) -> LocalStorage {
        LocalStorage::new(root, Timeouts::default()).expect("store").with_sync_method(method)
    }

    fn files_under(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(directory)
            .expect("read directory")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn deferred_creates_leave_no_temporary_file_and_sync_with_either_method() {
        for method in [SyncMethod::FileSystem, SyncMethod::EachFile] {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = store(dir.path(), method);
            for index in 0..3 {
                let key = ObjectKey::new(format!("backups/b/parts/{index:06}")).expect("key");
                let outcome = storage.put_deferred(&key, Bytes::from(vec![index; 4096])).await.expect("create");
                assert_eq!(outcome, PutOutcome::Created, "{method:?}");
            }
            assert_eq!(storage.deferred.pending_bytes(), 3 * 4096, "{method:?}");
            storage.sync_deferred().await.expect("sync");
            assert_eq!(storage.deferred.pending_bytes(), 0, "{method:?}");
            let parts = files_under(&dir.path().join("backups/b/parts"));
            assert_eq!(parts, vec!["000000", "000001", "000002"], "{method:?}: no {TEMP_PREFIX} file left");
            let waiting = storage.deferred.state().directories.len();
            assert_eq!(waiting, 0, "{method:?}: every directory synced");
        }
    }

    #[tokio::test]
    async fn a_deferred_create_refuses_an_object_torn_after_its_intact_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = store(dir.path(), SyncMethod::FileSystem);
        let stored_as_is = Compression { algorithm: Algorithm::None, level: 0 };
        let (sealed, _) = envelope::seal(&[7u8; 64 * 1024], stored_as_is).expect("seal");
        let key = ObjectKey::new("backups/b/parts/000000").expect("key");
        // What a crash before the sync can leave: the header written back, the rest not.
        let mut torn = sealed.clone();
        torn[envelope::HEADER_LEN..].fill(0);
        let path = dir.path().join(key.as_str());
        fs::create_dir_all(path.parent().expect("parent")).expect("directories");
        fs::write(&path, &torn).expect("torn object");

        let durable_create = storage.put_new_or_identical(&key, Bytes::from(sealed.clone())).await;
        assert_eq!(
            durable_create.expect("a header comparison"),
            PutOutcome::AlreadyIdentical,
            "the header alone agrees"
        );
        let refused = storage.put_deferred(&key, Bytes::from(sealed)).await.expect_err("the torn object");
        assert!(matches!(&refused, StorageError::DifferentContent { .. }), "{refused:?}");
        assert!(refused.to_string().contains("differing from byte"), "{refused}");
        assert_eq!(fs::read(&path).expect("read"), torn, "the stored object is left as it was");
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_later_sync_of_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = store(dir.path(), SyncMethod::EachFile);
        let key = ObjectKey::new("backups/b/parts/000000").expect("key");
        storage.put_deferred(&key, Bytes::from_static(b"part")).await.expect("create");
        // The directory holding the object is gone before its entry was made durable.
        fs::remove_dir_all(dir.path().join("backups/b")).expect("remove");
        let failed = storage.sync_deferred().await.expect_err("the directory cannot be fsynced");
        assert!(failed.is_permanent(), "{failed:?}");
        assert!(failed.to_string().contains("failed to fsync directory"), "{failed}");
        assert!(failed.to_string().contains(&storage.describe()), "names the store: {failed}");

        let next = ObjectKey::new("backups/c/parts/000000").expect("key");
        storage.put_deferred(&next, Bytes::from_static(b"part")).await.expect("a create after the failure");
        let again = storage.sync_deferred().await.expect_err("a failed sync is final");
        assert!(again.to_string().contains("an earlier sync failed"), "{again}");
    }
}
