//! Writing a backup's files into a checked [`Destination`]: directories, empty files, the
//! parts' contents (downloaded `concurrency` at once, written by one thread in order while each
//! file's checksum is verified), symlinks and tablespace links. Every file is fsynced by a small
//! pool of threads as soon as it is complete, so syncing overlaps the download; directories are
//! fsynced at the end.
//!
//! Memory: `concurrency + 1` buffers of stored (compressed) bytes, allocated once and reused:
//! one per download in flight and one being written. The writer decompresses a part a piece at
//! a time into the files (see [`super::parts::feed_stored`]), so no part's content is ever held
//! whole.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::task::JoinHandle;

use std::collections::VecDeque;

use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, FileEntry};

use super::BackupError;
use super::destination::{Destination, Durability, Journal};
use super::parts::{Assembler, FEED_PIECE, FileSink, StoredPart, download_part, feed_stored};

/// Threads fsyncing completed files.
const FSYNC_THREADS: usize = 4;

/// Bytes written to one file after which its writeback is started (an fdatasync of a second
/// handle, on the fsync threads): the disk writes large files while the rest still streams in,
/// instead of all at once in the final fsyncs.
const WRITEBACK_INTERVAL: u64 = 32 * 1024 * 1024;

/// Restores every directory, file and link of `manifest` into `destination`. The caller
/// created the roots. Returns the number of stored bytes downloaded.
pub async fn extract(
    archive: &Archive,
    manifest: Arc<BackupManifest>,
    destination: Arc<Destination>,
    concurrency: usize,
) -> Result<u64, BackupError> {
    let directories = create_directories(&manifest, &destination)?;
    let concurrency = concurrency.max(1);
    let (free_sender, free_receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(concurrency + 1);
    for _ in 0..=concurrency {
        let _ = free_sender.try_send(Vec::new());
    }
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<StoredPart>(1);
    let writer_manifest = manifest.clone();
    let writer_destination = destination.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut sink = RestoreSink::new(&writer_manifest, &writer_destination);
        let mut assembler = Assembler::new(&writer_manifest)?;
        let mut scratch = vec![0u8; FEED_PIECE];
        write_empty_files(&writer_manifest, &mut sink)?;
        while let Some(part) = receiver.blocking_recv() {
            let mismatches = feed_stored(&mut assembler, &part, &mut sink, &mut scratch)?;
            if let Some(mismatch) = mismatches.into_iter().next() {
                let detail = format!(
                    "file {} hashes to {}, the manifest says {}",
                    mismatch.path, mismatch.actual, mismatch.expected
                );
                return Err(BackupError::Damaged { backup: writer_manifest.backup.clone(), detail });
            }
            // The buffer serves the next download (the channel has room for every buffer).
            let _ = free_sender.try_send(part.stored);
        }
        sink.close()
    });
    let producer = download_in_order(archive, &manifest, concurrency, free_receiver, sender);
    let (produced, written) = tokio::join!(producer, writer);
    let written = written.map_err(|error| BackupError::Task(error.to_string()))?;
    written?;
    let stored = produced?;
    create_links(&manifest, &destination)?;
    finish_directories(&manifest, &destination, &directories)?;
    Ok(stored)
}

/// Downloads the manifest's parts, `concurrency` at once (each in its own task, so downloads
/// go on while the writer is busy), each into a buffer from `free`, and hands them to the
/// writer in index order. Returns the number of stored bytes downloaded.
async fn download_in_order(
    archive: &Archive,
    manifest: &BackupManifest,
    concurrency: usize,
    mut free: tokio::sync::mpsc::Receiver<Vec<u8>>,
    writer: tokio::sync::mpsc::Sender<StoredPart>,
) -> Result<u64, BackupError> {
    let mut pending: VecDeque<JoinHandle<Result<StoredPart, BackupError>>> = VecDeque::new();
    let mut parts = manifest.parts.iter().cloned();
    let mut stored = 0u64;
    let outcome = loop {
        while pending.len() < concurrency {
            let Some(part) = parts.next() else { break };
            // No buffer comes back once the writer stopped: stop too (its error is the cause).
            let Some(buffer) = free.recv().await else { break };
            let (archive, backup) = (archive.clone(), manifest.backup.clone());
            pending.push_back(tokio::spawn(async move { download_part(&archive, &backup, part, buffer).await }));
        }
        let Some(next) = pending.pop_front() else { break Ok(stored) };
        let part = match next.await {
            Ok(Ok(part)) => part,
            Ok(Err(error)) => break Err(error),
            Err(error) => break Err(BackupError::Task(error.to_string())),
        };
        stored += part.stored.len() as u64;
        if writer.send(part).await.is_err() {
            break Ok(stored);
        }
    };
    for download in pending {
        download.abort();
    }
    outcome
}

/// Creates the manifest's directories (0700 while restoring; final modes are set at the end).
fn create_directories(manifest: &BackupManifest, destination: &Destination) -> Result<Vec<PathBuf>, BackupError> {
    let mut created = Vec::with_capacity(manifest.directories.len());
    for directory in &manifest.directories {
        let path = destination.resolve(manifest, &directory.path);
        std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(BackupError::io("create", &path))?;
        destination.give(&path)?;
        created.push(path);
    }
    Ok(created)
}

fn write_empty_files(manifest: &BackupManifest, sink: &mut RestoreSink) -> Result<(), BackupError> {
    for file in manifest.files.iter().filter(|file| file.size == 0) {
        if file.checksum != blake3::hash(b"").to_hex().as_str() {
            return Err(BackupError::Damaged {
                backup: manifest.backup.clone(),
                detail: format!("empty file {} has a checksum", file.path),
            });
        }
        sink.begin(file)?;
        sink.finish(file)?;
    }
    Ok(())
}

/// Tablespace links `pg_tblspc/<oid>` → their directory, and the backup's other symlinks.
fn create_links(manifest: &BackupManifest, destination: &Destination) -> Result<(), BackupError> {
    let tablespace_links = manifest.tablespaces.iter().filter_map(|tablespace| {
        let location = destination.tablespaces.get(&tablespace.oid)?;
        Some((destination.data_dir.join(tablespace.link_path()), location.clone()))
    });
    let other_links =
        manifest.symlinks.iter().map(|link| (destination.resolve(manifest, &link.path), PathBuf::from(&link.target)));
    for (link, target) in tablespace_links.chain(other_links) {
        std::os::unix::fs::symlink(&target, &link).map_err(BackupError::io("create symlink", &link))?;
        destination.give(&link)?;
    }
    Ok(())
}

/// Sets the directories' recorded modes and makes every directory entry durable.
fn finish_directories(
    manifest: &BackupManifest,
    destination: &Destination,
    created: &[PathBuf],
) -> Result<(), BackupError> {
    for (directory, path) in manifest.directories.iter().zip(created) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(directory.mode))
            .map_err(BackupError::io("chmod", path))?;
    }
    for path in created.iter().rev().chain(destination.roots_and_parents().iter()) {
        destination.sync_directory(path)?;
    }
    Ok(())
}

/// Writes files as the [`Assembler`] hands them over.
struct RestoreSink<'a> {
    manifest: &'a BackupManifest,
    destination: &'a Destination,
    current: Option<(File, PathBuf)>,
    /// Bytes written to the current file since its writeback was last started.
    unsynced: u64,
    fsync: FsyncPool,
}

impl<'a> RestoreSink<'a> {
    fn new(manifest: &'a BackupManifest, destination: &'a Destination) -> Self {
        let fsync = FsyncPool::start(FSYNC_THREADS, destination.journal.clone());
        Self { manifest, destination, current: None, unsynced: 0, fsync }
    }

    /// Waits for every pending fsync; the first failure is the result.
    fn close(self) -> Result<(), BackupError> {
        self.fsync.finish()
    }
}

impl FileSink for RestoreSink<'_> {
    fn begin(&mut self, file: &FileEntry) -> Result<(), BackupError> {
        let path = self.destination.resolve(self.manifest, &file.path);
        let handle = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(BackupError::io("create", &path))?;
        self.destination.give(&path)?;
        self.current = Some((handle, path));
        self.unsynced = 0;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        let Some((handle, path)) = self.current.as_mut() else {
            return Err(BackupError::Task("a file piece arrived before its file".to_string()));
        };
        handle.write_all(bytes).map_err(BackupError::io("write", path.as_path()))?;
        self.unsynced += bytes.len() as u64;
        if self.unsynced >= WRITEBACK_INTERVAL {
            self.unsynced = 0;
            let second = handle.try_clone().map_err(BackupError::io("reopen", path.as_path()))?;
            self.fsync.submit(Sync::Writeback, second, path.clone())?;
        }
        Ok(())
    }

    fn finish(&mut self, file: &FileEntry) -> Result<(), BackupError> {
        let Some((handle, path)) = self.current.take() else {
            return Err(BackupError::Task("a file ended before it began".to_string()));
        };
        handle.set_permissions(std::fs::Permissions::from_mode(file.mode)).map_err(BackupError::io("chmod", &path))?;
        let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(file.mtime).unwrap_or(0));
        handle.set_modified(mtime).map_err(BackupError::io("set the modification time of", &path))?;
        self.fsync.submit(Sync::Complete, handle, path)
    }
}

/// What an fsync thread does with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// A file still being written: write back its data so far (fdatasync).
    Writeback,
    /// A complete file: make it and its metadata durable (fsync).
    Complete,
}

type SyncRequest = (Sync, File, PathBuf);

/// Threads that fsync completed files; the channel is bounded so open files stay few.
struct FsyncPool {
    sender: Option<SyncSender<SyncRequest>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    failure: Arc<Mutex<Option<BackupError>>>,
}

impl FsyncPool {
    fn start(threads: usize, journal: Journal) -> Self {
        let (sender, receiver) = sync_channel::<SyncRequest>(64);
        let receiver = Arc::new(Mutex::new(receiver));
        let failure = Arc::new(Mutex::new(None));
        let threads = (0..threads)
            .map(|_| {
                let (receiver, failure, journal) = (receiver.clone(), failure.clone(), journal.clone());
                std::thread::spawn(move || fsync_loop(&receiver, &failure, &journal))
            })
            .collect();
        Self { sender: Some(sender), threads, failure }
    }

    fn submit(&self, sync: Sync, file: File, path: PathBuf) -> Result<(), BackupError> {
        if let Some(error) = self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            return Err(error);
        }
        match &self.sender {
            Some(sender) => {
                sender.send((sync, file, path)).map_err(|_| BackupError::Task("the fsync threads stopped".to_string()))
            }
            None => Err(BackupError::Task("the fsync pool is closed".to_string())),
        }
    }

    fn finish(mut self) -> Result<(), BackupError> {
        self.sender = None;
        for thread in self.threads.drain(..) {
            thread.join().map_err(|_| BackupError::Task("an fsync thread panicked".to_string()))?;
        }
        match self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn fsync_loop(receiver: &Mutex<Receiver<SyncRequest>>, failure: &Mutex<Option<BackupError>>, journal: &Journal) {
    loop {
        let next = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        let Ok((sync, file, path)) = next else { return };
        let synced = match sync {
            Sync::Writeback => file.sync_data(),
            Sync::Complete => file.sync_all(),
        };
        if synced.is_ok() && sync == Sync::Complete {
            journal.record(|| Durability::SyncFile(path.clone()));
        }
        if let Err(source) = synced {
            let mut slot = failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.get_or_insert(BackupError::Io { action: "fsync", path, source });
        }
    }
}
