//! A directory on a local (or mounted) filesystem as an object store: `file:///abs/dir`.
//!
//! Each object is one file at `<root>/<key>`; `/` in keys become directories.
//!
//! Durability: `put` writes the body to a temporary file in the target's directory, fsyncs it,
//! moves it into place (a rename for [`PutMode::Overwrite`]; a hard link then unlink of the
//! temporary for [`PutMode::CreateNew`], which fails atomically when the target exists) and
//! fsyncs the directory, as well as the parents of any directory it had to create. When `put`
//! returns, the object survives a crash of the machine; before, readers see either the old
//! object or none, never a partial one. Deletes are not fsynced: after a crash a deleted object
//! may come back, which callers (retention, garbage collection) tolerate by deleting again.
//!
//! [`Storage::put_deferred`] creates an object without those fsyncs, and [`Storage::sync_deferred`]
//! makes all such objects durable at once (one `syncfs` where the file system allows it): see
//! the `local_deferred` module.
//!
//! Limits: a key cannot be both an object and a prefix of other objects' directories (`a` and
//! `a/b`), since a path is either a file or a directory; such a put fails permanently. Temporary
//! files start with [`TEMP_PREFIX`], are never listed, and keys whose last segment starts with it
//! are refused. Every filesystem call runs on tokio's blocking pool under a backstop deadline
//! from [`Timeouts`] (the stall limit plus the transfer time of its size) and notes progress for
//! the stall detector every MiB written or read; a call that overruns its deadline keeps running
//! in the background, so an overwriting put that times out may still land later (with the same
//! bytes), and a create that times out may be found taken by its own object on retry.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::local_deferred::Deferred;
use super::progress::{self, Progress};
use super::{DEFERRED_WRITES, ObjectKey, ObjectMeta, PutMode, PutOutcome, Storage, StorageError, Timeouts, create};
use crate::fs_sync::SyncMethod;

/// Name prefix of the temporary files a put writes before moving them into place.
pub const TEMP_PREFIX: &str = ".pgec2-tmp.";

/// Bytes written or read between two progress notes.
const IO_PIECE: usize = 1024 * 1024;

/// How many times a put recreates a directory that a concurrent delete removed as empty.
const DIRECTORY_RACE_ATTEMPTS: usize = 3;

/// A directory backend. Cheap to clone (clones share what their deferred creates left to sync).
#[derive(Clone, Debug)]
pub struct LocalStorage {
    root: PathBuf,
    timeouts: Timeouts,
    pub(super) deferred: Arc<Deferred>,
}

impl LocalStorage {
    /// A store rooted at `root`, an absolute path. The directory is created by the first put.
    pub fn new(root: impl Into<PathBuf>, timeouts: Timeouts) -> Result<Self, StorageError> {
        let root = root.into();
        if !root.is_absolute() || root.components().any(|part| part == std::path::Component::ParentDir) {
            return Err(StorageError::InvalidUrl {
                url: format!("file://{}", root.display()),
                reason: "a local store needs an absolute path without '..', e.g. file:///var/lib/pgec2/archive"
                    .to_string(),
            });
        }
        Ok(Self { root, timeouts, deferred: Arc::new(Deferred::default()) })
    }

    /// This store with its deferred creates made durable by `method`, whatever its file system
    /// chooses (tests of the method the file system would not choose).
    pub fn with_sync_method(mut self, method: SyncMethod) -> Self {
        self.deferred = Arc::new(Deferred::forced(method));
        self
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> Result<PathBuf, StorageError> {
        if key.file_name().starts_with(TEMP_PREFIX) {
            return Err(StorageError::InvalidKey { key: key.as_str().to_string() });
        }
        Ok(self.root.join(key.as_str()))
    }

    fn context(&self, operation: &'static str, key: &str) -> Context {
        Context { store: self.describe(), operation, key: key.to_string(), progress: progress::current() }
    }

    /// Runs `work` on the blocking pool, giving up after `deadline`.
    async fn blocking<T, F>(&self, context: Context, deadline: Duration, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Context) -> Result<T, StorageError> + Send + 'static,
    {
        let (store, operation, key) = (context.store.clone(), context.operation, context.key.clone());
        let task = tokio::task::spawn_blocking(move || work(&context));
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(StorageError::permanent(
                &store,
                operation,
                &key,
                format!("the filesystem task failed: {join_error}"),
            )),
            Err(_elapsed) => Err(StorageError::timeout(&store, operation, &key, deadline)),
        }
    }
}

/// What an I/O error is about, to turn it into a [`StorageError`]; and the progress record of
/// the attempt (the work runs on the blocking pool, outside the attempt's task).
#[derive(Debug)]
pub(super) struct Context {
    pub(super) store: String,
    pub(super) operation: &'static str,
    pub(super) key: String,
    progress: Option<Progress>,
}

impl Context {
    fn note_progress(&self) {
        if let Some(progress) = &self.progress {
            progress.note();
        }
    }

    pub(super) fn error(&self, action: &str, path: &Path, error: io::Error) -> StorageError {
        let message = format!("failed to {action} {}: {error}", path.display());
        match error.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                StorageError::transient(&self.store, self.operation, &self.key, message)
            }
            _ => StorageError::permanent(&self.store, self.operation, &self.key, message),
        }
    }

    fn not_found(&self) -> StorageError {
        StorageError::not_found(&self.store, &self.key)
    }
}

/// True for errors meaning "no object at this path".
fn is_absent(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory)
}

fn fsync_directory(context: &Context, directory: &Path) -> Result<(), StorageError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| context.error("fsync directory", directory, error))
}

/// Creates `directory` and its missing ancestors, fsyncing the parent of each one created so the
/// new entries survive a crash.
fn create_directories(context: &Context, directory: &Path) -> Result<(), StorageError> {
    let mut missing = Vec::new();
    let mut current = directory;
    while !current.is_dir() {
        missing.push(current);
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }
    for created in missing.into_iter().rev() {
        match fs::create_dir(created) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && created.is_dir() => continue,
            Err(error) => return Err(context.error("create directory", created, error)),
        }
        if let Some(parent) = created.parent() {
            fsync_directory(context, parent)?;
        }
    }
    Ok(())
}

/// Creates a new, uniquely named temporary file in `directory`, creating the directory when
/// needed (again, when a concurrent delete removed it as empty in between).
pub(super) fn create_temp_file(context: &Context, directory: &Path) -> Result<(PathBuf, File), StorageError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        create_directories(context, directory)?;
        let temp = directory.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(error) if error.kind() == io::ErrorKind::NotFound && attempt < DIRECTORY_RACE_ATTEMPTS => continue,
            Err(error) => return Err(context.error("create temporary file", &temp, error)),
        }
    }
}

/// Refuses a CreateNew whose target exists, and any put whose target is a directory.
pub(super) fn check_target(context: &Context, path: &Path, mode: PutMode) -> Result<(), StorageError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(StorageError::permanent(
            &context.store,
            context.operation,
            &context.key,
            format!("{} is a directory: a local store cannot hold both an object and objects below it", path.display()),
        )),
        Ok(_) if mode == PutMode::CreateNew => Err(StorageError::already_exists(&context.store, &context.key)),
        Ok(_) => Ok(()),
        Err(error) if is_absent(&error) => Ok(()),
        Err(error) => Err(context.error("inspect", path, error)),
    }
}

/// The durable write described in the module docs.
fn put_file(context: &Context, path: &Path, body: &[u8], mode: PutMode) -> Result<(), StorageError> {
    check_target(context, path, mode)?;
    let directory = path.parent().unwrap_or(Path::new("/"));
    let (temp, mut file) = create_temp_file(context, directory)?;
    let result = write_and_place(context, &temp, &mut file, path, body, mode);
    drop(file);
    if result.is_err() || mode == PutMode::CreateNew {
        // After a successful link the temporary is a second name of the object; remove it.
        let _ = fs::remove_file(&temp);
    }
    result?;
    fsync_directory(context, directory)
}

fn write_and_place(
    context: &Context,
    temp: &Path,
    file: &mut File,
    path: &Path,
    body: &[u8],
    mode: PutMode,
) -> Result<(), StorageError> {
    write_body(context, temp, file, body)?;
    file.sync_all().map_err(|error| context.error("fsync", temp, error))?;
    match mode {
        PutMode::Overwrite => fs::rename(temp, path).map_err(|error| context.error("rename into", path, error)),
        PutMode::CreateNew => link_new(context, temp, path),
    }
}

/// Writes `body` to the temporary file, noting progress after each piece.
pub(super) fn write_body(context: &Context, temp: &Path, file: &mut File, body: &[u8]) -> Result<(), StorageError> {
    for piece in body.chunks(IO_PIECE) {
        file.write_all(piece).map_err(|error| context.error("write", temp, error))?;
        context.note_progress();
    }
    Ok(())
}

/// Links the complete temporary file to `path`, failing with [`StorageError::AlreadyExists`] when
/// the key is taken.
pub(super) fn link_new(context: &Context, temp: &Path, path: &Path) -> Result<(), StorageError> {
    match fs::hard_link(temp, path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            Err(StorageError::already_exists(&context.store, &context.key))
        }
        Err(error) => Err(context.error("link (the filesystem must support hard links)", path, error)),
    }
}

/// Appends at most `limit` bytes of `file` to `buffer`, noting progress after each piece.
fn read_pieces(
    context: &Context,
    path: &Path,
    file: File,
    buffer: &mut Vec<u8>,
    limit: u64,
) -> Result<(), StorageError> {
    let mut source = file.take(limit);
    loop {
        let read = (&mut source)
            .take(IO_PIECE as u64)
            .read_to_end(buffer)
            .map_err(|error| context.error("read", path, error))?;
        context.note_progress();
        if read == 0 {
            return Ok(());
        }
    }
}

/// Opens the file of an object for reading; its size.
fn open_object(context: &Context, path: &Path) -> Result<(File, u64), StorageError> {
    let file = File::open(path).map_err(|error| match is_absent(&error) {
        true => context.not_found(),
        false => context.error("open", path, error),
    })?;
    let meta = file.metadata().map_err(|error| context.error("inspect", path, error))?;
    if meta.is_dir() { Err(context.not_found()) } else { Ok((file, meta.len())) }
}

fn meta_of(key: ObjectKey, meta: &fs::Metadata) -> ObjectMeta {
    let last_modified = meta.modified().ok().map(DateTime::<Utc>::from);
    ObjectMeta { key, size: meta.len(), last_modified }
}

/// Removes `directory` and its ancestors below `root` while they are empty.
fn remove_empty_directories(root: &Path, directory: &Path) {
    let mut current = directory;
    while current != root && current.starts_with(root) {
        if fs::remove_dir(current).is_err() {
            return;
        }
        match current.parent() {
            Some(parent) => current = parent,
            None => return,
        }
    }
}

/// Checks a list prefix and returns the directory part to walk (`wal/00` → `wal`).
fn prefix_directory(prefix: &str) -> Result<&str, StorageError> {
    let directory = prefix.rsplit_once('/').map(|(directory, _)| directory).unwrap_or("");
    let valid = directory.is_empty()
        || directory.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if valid && !prefix.contains('\0') {
        Ok(directory)
    } else {
        Err(StorageError::InvalidKey { key: prefix.to_string() })
    }
}

/// Collects the objects under `directory` (whose key is `relative`) whose keys start with `prefix`.
fn walk(
    context: &Context,
    directory: &Path,
    relative: &str,
    prefix: &str,
    found: &mut Vec<ObjectMeta>,
) -> Result<(), StorageError> {
    let entries = match fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if is_absent(&error) => return Ok(()),
        Err(error) => return Err(context.error("list directory", directory, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| context.error("list directory", directory, error))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let key = if relative.is_empty() { name } else { format!("{relative}/{name}") };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(error) if is_absent(&error) => continue,
            Err(error) => return Err(context.error("inspect", &entry.path(), error)),
        };
        if meta.is_dir() {
            let below = format!("{key}/");
            if below.starts_with(prefix) || prefix.starts_with(&below) {
                walk(context, &entry.path(), &key, prefix, found)?;
            }
        } else if meta.is_file() && key.starts_with(prefix) {
            found.push(meta_of(ObjectKey::new(key)?, &meta));
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put(&self, key: &ObjectKey, body: Bytes, mode: PutMode) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let deadline = self.timeouts.for_transfer(body.len() as u64);
        self.blocking(self.context("put", key.as_str()), deadline, move |context| put_file(context, &path, &body, mode))
            .await
    }

    /// A create without fsyncs, made durable by `sync_deferred` (the `local_deferred` module).
    async fn put_deferred(&self, key: &ObjectKey, body: Bytes) -> Result<PutOutcome, StorageError> {
        let path = self.path_of(key)?;
        let deadline = self.timeouts.for_transfer(body.len() as u64);
        let (root, deferred, written, target) = (self.root.clone(), self.deferred.clone(), body.clone(), path.clone());
        let created = self
            .blocking(self.context("put", key.as_str()), deadline, move |context| {
                deferred.create(context, &root, &target, &written)
            })
            .await;
        match created {
            Ok(()) => Ok(PutOutcome::Created),
            Err(StorageError::AlreadyExists { .. }) => {
                let comparison = create::compare_whole(self, key, &body).await?;
                create::settle(&self.describe(), key, comparison)?;
                let deferred = self.deferred.clone();
                self.blocking(self.context("put", key.as_str()), deadline, move |context| {
                    deferred.found(context, &path)
                })
                .await?;
                Ok(PutOutcome::AlreadyIdentical)
            }
            Err(error) => Err(error),
        }
    }

    /// One `syncfs`, or an fsync per directory (the `local_deferred` module); bounded by the
    /// transfer time of what is left to write back.
    async fn sync_deferred(&self) -> Result<(), StorageError> {
        let deadline = self.timeouts.for_transfer(self.deferred.pending_bytes());
        let deferred = self.deferred.clone();
        self.blocking(self.context("sync", DEFERRED_WRITES), deadline, move |context| deferred.sync(context)).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        self.get_into(key, Vec::new()).await.map(Bytes::from)
    }

    async fn get_into(&self, key: &ObjectKey, mut buffer: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let path = self.path_of(key)?;
        let opened = path.clone();
        let (file, size) = self
            .blocking(self.context("get", key.as_str()), self.timeouts.operation, move |context| {
                open_object(context, &opened)
            })
            .await?;
        self.blocking(self.context("get", key.as_str()), self.timeouts.for_transfer(size), move |context| {
            buffer.clear();
            buffer.reserve(usize::try_from(size).unwrap_or(0));
            read_pieces(context, &path, file, &mut buffer, u64::MAX)?;
            Ok(buffer)
        })
        .await
    }

    async fn get_start(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        self.blocking(self.context("get", key.as_str()), self.timeouts.for_transfer(len), move |context| {
            let (file, _) = open_object(context, &path)?;
            let mut buffer = Vec::new();
            read_pieces(context, &path, file, &mut buffer, len)?;
            Ok(Bytes::from(buffer))
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        let path = self.path_of(key)?;
        let key = key.clone();
        self.blocking(self.context("head", key.as_str()), self.timeouts.operation, move |context| {
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => Ok(Some(meta_of(key, &meta))),
                Ok(_) => Ok(None),
                Err(error) if is_absent(&error) => Ok(None),
                Err(error) => Err(context.error("inspect", &path, error)),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let directory = prefix_directory(prefix)?.to_string();
        let start = if directory.is_empty() { self.root.clone() } else { self.root.join(&directory) };
        let prefix = prefix.to_string();
        self.blocking(self.context("list", &prefix), self.timeouts.operation, move |context| {
            let mut found = Vec::new();
            walk(context, &start, &directory, &prefix, &mut found)?;
            found.sort_by(|left, right| left.key.cmp(&right.key));
            Ok(found)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        self.blocking(self.context("delete", key.as_str()), self.timeouts.operation, move |context| {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if is_absent(&error) => return Ok(()),
                Err(error) => return Err(context.error("remove", &path, error)),
            }
            if let Some(directory) = path.parent() {
                remove_empty_directories(&root, directory);
            }
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::retry::{RetryPolicy, Retrying};

    #[tokio::test]
    async fn get_into_replaces_the_buffers_content_and_reads_what_get_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalStorage::new(dir.path(), Timeouts::default()).expect("store");
        let store = Retrying::new(local, Timeouts::default(), RetryPolicy::default());
        let key = ObjectKey::new("parts/000001").expect("key");
        store.put(&key, Bytes::from_static(b"stored bytes"), PutMode::CreateNew).await.expect("put");
        let buffer = b"what the buffer held before, longer than the object".to_vec();
        let read = store.get_into(&key, buffer).await.expect("get into");
        assert_eq!(read, b"stored bytes");
        assert_eq!(read, store.get(&key).await.expect("get"));
        let missing = store.get_into(&ObjectKey::new("parts/000002").expect("key"), read).await;
        assert!(missing.is_err_and(|error| error.is_not_found()));
    }
}
