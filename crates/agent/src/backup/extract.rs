//! Writing a backup's files into a checked [`Destination`]: directories, empty files, the
//! parts' contents, symlinks and tablespace links, then one durability step for all of them
//! (see [`super::restore_sync`]).
//!
//! ```text
//! download  `concurrency` requests in flight, stored parts in index order
//!    │  (async tasks)
//! decode    one thread per core: decompress a part whole and verify its checksum as it is
//!    │      decompressed (the envelope's BLAKE3), check it against the manifest
//! write     one thread, parts in index order: cut into files, verify every file's checksum,
//!    │      write (large files preallocated)
//! sync      writeback started in the background as files complete; one syncfs per file
//!           system (or an fsync per file and directory) before `extract` returns
//! ```
//!
//! Memory: `concurrency + decoders` buffers of stored (compressed) bytes and `decoders + 1`
//! buffers of part content, allocated once and reused; fewer of each for parts larger than
//! 2 MiB (see [`super::restore_buffers`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::fcntl::{FallocateFlags, fallocate};
use pgec2_core::encryption::Keyring;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, FileEntry};

use super::BackupError;
use super::destination::{Destination, Durability};
use super::parts::{Assembler, FileSink, StoredPart, decode_part, download_in_order};
use super::restore_buffers::RestoreBuffers;
use super::restore_sync::{RestoreSync, SyncMethod, SyncRequest, WRITEBACK_INTERVAL};
use super::stages::{Stage, StageTimes};

/// Files at least this large get their blocks reserved before they are written.
const PREALLOCATE_FROM: u64 = 1024 * 1024;

/// A decoded part: its index and content (a buffer from the content pool).
pub(super) type Decoded = Result<(u32, Vec<u8>), BackupError>;

/// Run by a decoder on each part it verified, before its stored bytes are reused (the chain
/// restore's pre-verification keeps them in its spool).
pub(super) type Keep = Arc<dyn Fn(&StoredPart) -> Result<(), BackupError> + Send + Sync>;

/// What a decoder takes, in this order: a free content buffer, then the next stored part.
type DecodeInput = Mutex<(Receiver<Vec<u8>>, tokio::sync::mpsc::Receiver<StoredPart>)>;

/// Restores every directory, file and link of `manifest` into `destination` and makes them
/// durable. The caller created the roots. Returns the number of stored bytes downloaded.
pub async fn extract(
    archive: &Archive,
    manifest: Arc<BackupManifest>,
    destination: Arc<Destination>,
    concurrency: usize,
) -> Result<u64, BackupError> {
    let started = Instant::now();
    let times = Arc::new(StageTimes::default());
    let directories = create_directories(&manifest, &destination)?;
    let (sync, method) = start_sync(&destination)?;
    let writer = {
        let (manifest, destination, times) = (manifest.clone(), destination.clone(), times.clone());
        move |decoded, content_free| write_parts(&manifest, &destination, sync, decoded, content_free, &times)
    };
    let (stored, sync) = run_pipeline(archive, &manifest, &BTreeSet::new(), concurrency, &times, None, writer).await?;
    finish_restore(&manifest, &destination, &directories, sync, &times)?;
    times.log_restore(&manifest.backup, method, started.elapsed(), manifest.data_bytes(), stored);
    Ok(stored)
}

/// Starts the durability machinery for `destination`.
pub(super) fn start_sync(destination: &Destination) -> Result<(RestoreSync, SyncMethod), BackupError> {
    let roots = destination.roots();
    let method = destination.sync_method.unwrap_or_else(|| SyncMethod::choose(&roots));
    Ok((RestoreSync::start(method, &roots, destination.journal.clone())?, method))
}

/// Links, directory modes, then one durability step for everything written.
pub(super) fn finish_restore(
    manifest: &BackupManifest,
    destination: &Destination,
    directories: &[PathBuf],
    sync: RestoreSync,
    times: &StageTimes,
) -> Result<(), BackupError> {
    create_links(manifest, destination)?;
    set_directory_modes(manifest, destination, directories)?;
    let sync_started = Instant::now();
    sync.finish(directories)?;
    for path in destination.roots_and_parents() {
        destination.sync_directory(&path)?;
    }
    times.add(Stage::Sync, sync_started.elapsed());
    Ok(())
}

/// Downloads and decodes `manifest`'s parts (but `skipped`), runs `keep` on each verified part,
/// and hands them, decoded, to `writer` on a blocking thread (which gets the decoded parts as
/// they come and gives content buffers back). Returns the stored bytes downloaded and what the
/// writer returned.
pub(super) async fn run_pipeline<R: Send + 'static>(
    archive: &Archive,
    manifest: &Arc<BackupManifest>,
    skipped: &BTreeSet<u32>,
    concurrency: usize,
    times: &Arc<StageTimes>,
    keep: Option<Keep>,
    writer: impl FnOnce(Receiver<Decoded>, SyncSender<Vec<u8>>) -> Result<R, BackupError> + Send + 'static,
) -> Result<(u64, R), BackupError> {
    let buffers = RestoreBuffers::for_manifest(manifest, concurrency);
    let (concurrency, decoders) = (buffers.downloads, buffers.decoders);
    let (stored_free, stored_pool) = tokio::sync::mpsc::channel::<Vec<u8>>(buffers.stored());
    for _ in 0..buffers.stored() {
        let _ = stored_free.try_send(Vec::new());
    }
    let (parts_sender, parts) = tokio::sync::mpsc::channel::<StoredPart>(decoders);
    let (content_free, content_pool) = sync_channel::<Vec<u8>>(buffers.content());
    for _ in 0..buffers.content() {
        let _ = content_free.try_send(Vec::new());
    }
    let (decoded_sender, decoded) = sync_channel::<Decoded>(decoders + 1);
    let decode_input = Arc::new(Mutex::new((content_pool, parts)));
    for _ in 0..decoders {
        let (input, output, stored_free) = (decode_input.clone(), decoded_sender.clone(), stored_free.clone());
        let (manifest, times, keyring, keep) = (manifest.clone(), times.clone(), archive.keyring.clone(), keep.clone());
        let decoder = Decoder { manifest, keyring, keep, times };
        std::thread::spawn(move || decoder.run(&input, &output, &stored_free));
    }
    drop((decoded_sender, stored_free, decode_input));
    let writer = tokio::task::spawn_blocking(move || writer(decoded, content_free));
    let producer = download_in_order(archive, manifest, skipped, concurrency, stored_pool, parts_sender, times);
    let (produced, written) = tokio::join!(producer, writer);
    let written = written.map_err(|error| BackupError::Task(error.to_string()))?;
    // A failed download comes first: the writer then only saw its parts stop coming.
    let produced = produced?;
    Ok((produced, written?))
}

/// A decoder thread's inputs.
struct Decoder {
    manifest: Arc<BackupManifest>,
    keyring: Keyring,
    keep: Option<Keep>,
    times: Arc<StageTimes>,
}

impl Decoder {
    /// Takes a free content buffer, then the next stored part (in that order, so the oldest part
    /// taken always has a buffer and the writer never waits forever), decodes it, runs `keep`,
    /// hands its stored buffer back to the downloads and the content to the writer.
    fn run(&self, input: &DecodeInput, output: &SyncSender<Decoded>, stored_free: &tokio::sync::mpsc::Sender<Vec<u8>>) {
        loop {
            let (content, part) = {
                let mut input = input.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let Ok(content) = input.0.recv() else { return };
                let Some(part) = input.1.blocking_recv() else { return };
                (content, part)
            };
            let index = part.info.index;
            let backup = &self.manifest.backup;
            let decoded = self.times.time(Stage::Decompress, || decode_part(backup, &self.keyring, &part, content));
            let decoded = match (decoded, &self.keep) {
                (Ok(content), Some(keep)) => keep(&part).map(|()| content),
                (decoded, _) => decoded,
            };
            let _ = stored_free.try_send(part.stored);
            let failed = decoded.is_err();
            if output.send(decoded.map(|content| (index, content))).is_err() || failed {
                return;
            }
        }
    }
}

/// The writer: writes decoded parts in index order through a [`RestoreSink`]; returns the sync
/// step once every part is written.
fn write_parts(
    manifest: &BackupManifest,
    destination: &Destination,
    sync: RestoreSync,
    decoded: Receiver<Decoded>,
    content_free: SyncSender<Vec<u8>>,
    times: &StageTimes,
) -> Result<RestoreSync, BackupError> {
    let mut sink = RestoreSink { manifest, destination, current: None, unsynced: 0, sync, times };
    write_empty_files(manifest, &mut sink)?;
    feed_parts(manifest, &BTreeSet::new(), decoded, content_free, times, &mut sink)?;
    Ok(sink.sync)
}

/// Cuts decoded parts, in index order, into files for `sink`, verifying every file's checksum;
/// `skipped` parts are not downloaded, and the files with a piece in one reach neither `sink`
/// nor a check.
pub(super) fn feed_parts(
    manifest: &BackupManifest,
    skipped: &BTreeSet<u32>,
    decoded: Receiver<Decoded>,
    content_free: SyncSender<Vec<u8>>,
    times: &StageTimes,
    sink: &mut dyn FileSink,
) -> Result<(), BackupError> {
    let mut assembler = Assembler::new(manifest)?;
    let mut waiting = BTreeMap::new();
    let mut next = 0u32;
    let mut wait_started = Instant::now();
    let skip_ahead = |assembler: &mut Assembler, next: &mut u32| {
        while skipped.contains(next) {
            assembler.skip(*next);
            *next += 1;
        }
    };
    skip_ahead(&mut assembler, &mut next);
    while let Ok(part) = decoded.recv() {
        let (index, content) = part?;
        waiting.insert(index, content);
        while let Some(content) = waiting.remove(&next) {
            times.add(Stage::WriterWait, wait_started.elapsed());
            let mismatches = assembler.feed(next, &content, sink)?;
            if let Some(mismatch) = mismatches.into_iter().next() {
                let detail = format!(
                    "file {} hashes to {}, the manifest says {}",
                    mismatch.path, mismatch.actual, mismatch.expected
                );
                return Err(BackupError::Damaged { backup: manifest.backup.clone(), detail });
            }
            let _ = content_free.try_send(content);
            next += 1;
            skip_ahead(&mut assembler, &mut next);
            wait_started = Instant::now();
        }
    }
    if next as usize != manifest.parts.len() {
        return Err(BackupError::Task(format!("the restore stopped before part {next} was written")));
    }
    Ok(())
}

/// Creates the manifest's directories (0700 while restoring; final modes are set at the end).
pub(super) fn create_directories(
    manifest: &BackupManifest,
    destination: &Destination,
) -> Result<Vec<PathBuf>, BackupError> {
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
        destination.journal.record(|| Durability::Written(link.clone()));
    }
    Ok(())
}

/// Sets the directories' recorded modes.
fn set_directory_modes(
    manifest: &BackupManifest,
    destination: &Destination,
    created: &[PathBuf],
) -> Result<(), BackupError> {
    for (directory, path) in manifest.directories.iter().zip(created) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(directory.mode))
            .map_err(BackupError::io("chmod", path))?;
        destination.journal.record(|| Durability::Written(path.clone()));
    }
    Ok(())
}

/// Creates a file that must not exist yet, readable by its owner only until it is complete.
pub(super) fn create_new_file(path: &std::path::Path) -> Result<File, BackupError> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(BackupError::io("create", path))
}

/// Writes files as the [`Assembler`] hands them over.
struct RestoreSink<'a> {
    manifest: &'a BackupManifest,
    destination: &'a Destination,
    current: Option<(File, PathBuf)>,
    /// Bytes written to the current file since its writeback was last started.
    unsynced: u64,
    sync: RestoreSync,
    times: &'a StageTimes,
}

impl FileSink for RestoreSink<'_> {
    fn begin(&mut self, file: &FileEntry) -> Result<(), BackupError> {
        let path = self.destination.resolve(self.manifest, &file.path);
        let handle = create_new_file(&path)?;
        if file.size >= PREALLOCATE_FROM {
            // Reserves the file's blocks in one extent; advice only (not every file system can).
            let length = i64::try_from(file.size).unwrap_or(i64::MAX);
            let _ = fallocate(&handle, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, length);
        }
        self.destination.give(&path)?;
        self.current = Some((handle, path));
        self.unsynced = 0;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        let Some((handle, path)) = self.current.as_mut() else {
            return Err(BackupError::Task("a file piece arrived before its file".to_string()));
        };
        let started = Instant::now();
        handle.write_all(bytes).map_err(BackupError::io("write", path.as_path()))?;
        self.times.add(Stage::Write, started.elapsed());
        self.unsynced += bytes.len() as u64;
        if self.unsynced >= WRITEBACK_INTERVAL {
            self.unsynced = 0;
            let second = handle.try_clone().map_err(BackupError::io("reopen", path.as_path()))?;
            self.sync.submit(SyncRequest::Writeback, second, path.clone())?;
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
        self.destination.journal.record(|| Durability::Written(path.clone()));
        self.sync.submit(SyncRequest::Complete, handle, path)
    }
}
