//! Making a restore's files durable without a blocking fsync per file.
//!
//! A restore writes thousands of files; an fsync each forces a journal commit each. Instead, a
//! restore picks one of two methods from the file systems it writes to, before the first file:
//!
//! - [`SyncMethod::FileSystem`] (ext4, xfs, btrfs or tmpfs, Linux 5.8 or later): a handle on every
//!   file system of the restore is opened first. While files are written, their writeback is
//!   started in the background (`POSIX_FADV_DONTNEED`, which starts writing dirty pages without
//!   waiting) every [`WRITEBACK_INTERVAL`] bytes and when a file is complete, so the disk works
//!   during the whole restore. At the end, one `syncfs(2)` per file system makes every restored
//!   file, directory and link durable, in one journal commit, and reports any writeback error the
//!   file system recorded since the handle was opened (Linux 5.8 and later keep one per file
//!   system), which then fails the restore.
//! - [`SyncMethod::EachFile`] (any other file system, such as NFS or FUSE, or an older kernel):
//!   every file is fsynced by a small pool of threads as soon as it is complete (large files'
//!   writeback started every [`WRITEBACK_INTERVAL`] by an fdatasync), every directory at the end.
//!
//! Either way [`RestoreSync::finish`] returns only once everything written is durable, and its
//! error names what could not be made durable. The roots, their parents and the files written
//! after the data files (`backup_label`, settings) are fsynced one by one in both methods (see
//! [`super::destination`]).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

pub use pgec2_core::fs_sync::SyncMethod;

use super::BackupError;
use super::destination::{Durability, Journal};

/// Bytes written to one file after which its writeback is started, so the disk writes large
/// files while the rest still streams in.
pub const WRITEBACK_INTERVAL: u64 = 32 * 1024 * 1024;

/// Threads syncing files (each-file method) or starting their writeback (file-system method).
const SYNC_THREADS: usize = 4;

/// A file system the restore writes to: a handle opened before the first file was written.
struct FileSystemHandle {
    root: PathBuf,
    device: u64,
    handle: File,
}

/// What the sync threads do with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncRequest {
    /// A file still being written: start (or, for each-file, write) back its data so far.
    Writeback,
    /// A complete file: start its writeback (file-system method) or fsync it (each-file).
    Complete,
}

/// The durability of one restore's data files and directories.
pub struct RestoreSync {
    method: SyncMethod,
    file_systems: Vec<FileSystemHandle>,
    sender: Option<SyncSender<(SyncRequest, File, PathBuf)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    failure: Arc<Mutex<Option<BackupError>>>,
    journal: Journal,
}

impl RestoreSync {
    /// Starts the sync threads and, for the file-system method, opens a handle on the file
    /// system of every root (before anything is written under them).
    pub fn start(method: SyncMethod, roots: &[PathBuf], journal: Journal) -> Result<Self, BackupError> {
        let mut file_systems: Vec<FileSystemHandle> = Vec::new();
        if method == SyncMethod::FileSystem {
            for root in roots {
                let handle = File::open(root).map_err(BackupError::io("open", root))?;
                let device = handle.metadata().map_err(BackupError::io("stat", root))?.dev();
                if file_systems.iter().all(|known| known.device != device) {
                    file_systems.push(FileSystemHandle { root: root.clone(), device, handle });
                }
            }
        }
        let (sender, receiver) = sync_channel(64);
        let receiver = Arc::new(Mutex::new(receiver));
        let failure = Arc::new(Mutex::new(None));
        let threads = (0..SYNC_THREADS)
            .map(|_| {
                let (receiver, failure, journal) = (receiver.clone(), failure.clone(), journal.clone());
                std::thread::spawn(move || sync_loop(method, &receiver, &failure, &journal))
            })
            .collect();
        Ok(Self { method, file_systems, sender: Some(sender), threads, failure, journal })
    }

    pub fn method(&self) -> SyncMethod {
        self.method
    }

    /// Hands a file to the sync threads (blocks while they are behind, so open files stay few).
    pub fn submit(&self, request: SyncRequest, file: File, path: PathBuf) -> Result<(), BackupError> {
        if let Some(error) = self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            return Err(error);
        }
        match &self.sender {
            Some(sender) => sender
                .send((request, file, path))
                .map_err(|_| BackupError::Task("the restore's sync threads stopped".to_string())),
            None => Err(BackupError::Task("the restore's sync threads are closed".to_string())),
        }
    }

    /// Waits for the sync threads, then (file-system method) syncs every file system: when it
    /// returns `Ok`, every file handed over, and every directory and link under the roots, is
    /// durable. `directories` (created by the restore, deepest last) are fsynced one by one with
    /// the each-file method.
    pub fn finish(mut self, directories: &[PathBuf]) -> Result<(), BackupError> {
        self.sender = None;
        for thread in self.threads.drain(..) {
            thread.join().map_err(|_| BackupError::Task("a restore sync thread panicked".to_string()))?;
        }
        if let Some(error) = self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            return Err(error);
        }
        match self.method {
            SyncMethod::EachFile => {
                for directory in directories.iter().rev() {
                    sync_directory(directory, &self.journal)?;
                }
            }
            SyncMethod::FileSystem => {
                for file_system in &self.file_systems {
                    self.sync_file_system(file_system)?;
                }
            }
        }
        Ok(())
    }

    fn sync_file_system(&self, file_system: &FileSystemHandle) -> Result<(), BackupError> {
        let failed = |source: std::io::Error| BackupError::Durability {
            what: format!("the file system holding {}", file_system.root.display()),
            source,
        };
        if let Some(error) = self
            .journal
            .injected_failure(Durability::SyncFileSystem { root: file_system.root.clone(), device: file_system.device })
        {
            return Err(failed(error));
        }
        pgec2_core::fs_sync::sync_file_system(&file_system.handle).map_err(failed)?;
        self.journal
            .record(|| Durability::SyncFileSystem { root: file_system.root.clone(), device: file_system.device });
        Ok(())
    }
}

/// fsyncs a directory, recording it.
pub fn sync_directory(path: &Path, journal: &Journal) -> Result<(), BackupError> {
    let failed = |source| BackupError::Durability { what: format!("directory {}", path.display()), source };
    if let Some(error) = journal.injected_failure(Durability::SyncDirectory(path.to_path_buf())) {
        return Err(failed(error));
    }
    File::open(path).and_then(|dir| dir.sync_all()).map_err(failed)?;
    journal.record(|| Durability::SyncDirectory(path.to_path_buf()));
    Ok(())
}

fn sync_loop(
    method: SyncMethod,
    receiver: &Mutex<Receiver<(SyncRequest, File, PathBuf)>>,
    failure: &Mutex<Option<BackupError>>,
    journal: &Journal,
) {
    loop {
        let next = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        let Ok((request, file, path)) = next else { return };
        let outcome = match (method, request) {
            // Advice only: a file system that ignores it writes back at syncfs instead.
            (SyncMethod::FileSystem, _) => {
                pgec2_core::fs_sync::start_writeback(&file);
                Ok(())
            }
            (SyncMethod::EachFile, SyncRequest::Writeback) => file.sync_data(),
            (SyncMethod::EachFile, SyncRequest::Complete) => {
                match journal.injected_failure(Durability::SyncFile(path.clone())) {
                    Some(error) => Err(error),
                    None => file.sync_all(),
                }
            }
        };
        match outcome {
            Ok(()) if method == SyncMethod::EachFile && request == SyncRequest::Complete => {
                journal.record(|| Durability::SyncFile(path.clone()));
            }
            Ok(()) => {}
            Err(source) => {
                let mut slot = failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                slot.get_or_insert(BackupError::Durability { what: format!("file {}", path.display()), source });
            }
        }
    }
}
