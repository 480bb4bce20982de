//! `backup-fetch` of an incremental backup: its whole chain restored in one pass.
//!
//! 1. before anything is written ([`load_chain`]): every ancestor named by the newest manifest
//!    is a committed backup, its manifest is readable and valid, every part it lists is stored
//!    at the size the manifest records, and the encryption key opens it; the first failure
//!    names the backup and the object and nothing is written;
//! 2. [`ChainPlan`] decides which backup supplies each block of each file (the newest that
//!    stored it, see [`pgec2_core::increment`]);
//! 3. before the first write (before even the restore directory is created), every part the
//!    restore will read, of every backup of the chain, is downloaded and verified against the
//!    checksum its manifest records ([`super::chain_verify`]); a damaged or unreadable part stops
//!    the restore with nothing written. The verified parts are kept in a spool beside the
//!    destination when there is room, and read from there below;
//! 4. the newest backup's directories are created and each of its files created at its final
//!    length;
//! 5. the backups' parts are read oldest first, through the same download and decode pipeline
//!    as a full restore (every part's and every file's checksum verified); each block is
//!    written once, by the backup that supplies it, and each block of an incremental is checked
//!    against its own checksum as it is written. A part holding no file that its backup
//!    supplies blocks of (all superseded by newer backups) is not downloaded at all;
//! 6. modes, times, links, then one durability step, as for a full restore.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use pgec2_core::catalog::{self, BackupSet};
use pgec2_core::increment::{BlockSet, ChainPlan, final_length};
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BLOCK_SIZE, BackupManifest, FileEntry, block_checksum};

use super::BackupError;
use super::chain_verify::VerifiedChain;
use super::destination::{Destination, Durability};
use super::extract::{create_directories, create_new_file, feed_parts, finish_restore, run_pipeline, start_sync};
use super::increment::IncrementalError;
use super::parts::FileSink;
use super::restore_sync::SyncRequest;

/// The manifests of the chain `newest` builds on, oldest (the full backup) first, `newest`
/// last; checked as step 1 says. A full backup is a chain of one.
pub async fn load_chain(
    archive: &Archive,
    backups: &BackupSet,
    newest: Arc<BackupManifest>,
) -> Result<Vec<Arc<BackupManifest>>, BackupError> {
    let Some(of) = newest.incremental.clone() else {
        super::fetch::check_keys(archive, &newest).await?;
        return Ok(vec![newest]);
    };
    let broken = |backup: &str, object: String, reason: String| IncrementalError::BrokenChain {
        restoring: newest.backup.clone(),
        backup: backup.to_string(),
        object,
        reason,
    };
    let mut chain = Vec::with_capacity(of.chain.len() + 1);
    for name in &of.chain {
        let complete = archive.layout.backup_complete(name).map_err(BackupError::storage("name", name))?;
        if !backups.committed.iter().any(|backup| &backup.name == name) {
            let reason = "it is not a committed backup in the archive (deleted, damaged or never finished)";
            return Err(broken(name, complete.to_string(), reason.to_string()).into());
        }
        let manifest = catalog::read_manifest(archive, name).await.map_err(|error| {
            let key = archive.layout.backup_manifest(name).map(|key| key.to_string()).unwrap_or_default();
            broken(name, key, error.to_string())
        })?;
        chain.push(Arc::new(manifest));
    }
    chain.push(newest.clone());
    for manifest in &chain {
        check_parts_stored(archive, backups, manifest)
            .map_err(|(object, reason)| broken(&manifest.backup, object, reason))?;
        super::fetch::check_keys(archive, manifest).await?;
    }
    let refs: Vec<&BackupManifest> = chain.iter().map(Arc::as_ref).collect();
    ChainPlan::build(&refs).map_err(|error| IncrementalError::Chain { restoring: newest.backup.clone(), error })?;
    Ok(chain)
}

/// Every part of `manifest` is listed, at the stored size it records.
fn check_parts_stored(
    archive: &Archive,
    backups: &BackupSet,
    manifest: &BackupManifest,
) -> Result<(), (String, String)> {
    let listed: BTreeMap<&str, u64> = backups
        .objects
        .get(&manifest.backup)
        .map(|objects| objects.iter().map(|meta| (meta.key.as_str(), meta.size)).collect())
        .unwrap_or_default();
    for part in &manifest.parts {
        let key = archive
            .layout
            .backup_part(&manifest.backup, part.index)
            .map_err(|error| (manifest.backup.clone(), error.to_string()))?;
        match listed.get(key.as_str()) {
            None => return Err((key.to_string(), "the part is missing".to_string())),
            Some(&size) if size != part.stored_bytes => {
                let reason = format!("the part holds {size} bytes, the manifest records {}", part.stored_bytes);
                return Err((key.to_string(), reason));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Per backup of `chain`, the parts its restore does not read (see [`unneeded_parts`]; every
/// part of a backup that supplies no block).
pub fn unread_parts(chain: &[Arc<BackupManifest>]) -> Result<Vec<BTreeSet<u32>>, BackupError> {
    let Some(newest) = chain.last() else { return Ok(Vec::new()) };
    let refs: Vec<&BackupManifest> = chain.iter().map(Arc::as_ref).collect();
    let plan =
        ChainPlan::build(&refs).map_err(|error| IncrementalError::Chain { restoring: newest.backup.clone(), error })?;
    Ok(chain.iter().zip(&plan.supplies).map(|(manifest, supplies)| unneeded_parts(manifest, supplies)).collect())
}

/// Restores the last backup of `verified`'s chain into `destination` (roots created), reading
/// the parts from the spool when the pre-verification kept them (else from `archive`); returns
/// the stored bytes read.
pub async fn extract_chain(
    archive: &Archive,
    verified: &VerifiedChain,
    destination: Arc<Destination>,
    concurrency: usize,
) -> Result<u64, BackupError> {
    let (chain, times, source) = (&verified.chain, &verified.times, verified.source(archive));
    let Some(newest) = chain.last().cloned() else { return Ok(0) };
    let refs: Vec<&BackupManifest> = chain.iter().map(Arc::as_ref).collect();
    let plan =
        ChainPlan::build(&refs).map_err(|error| IncrementalError::Chain { restoring: newest.backup.clone(), error })?;
    let directories = create_directories(&newest, &destination)?;
    let (sync, method) = start_sync(&destination)?;
    create_files(&newest, &destination)?;
    let mut stored = 0;
    for (manifest, supplies) in chain.iter().zip(plan.supplies) {
        if supplies.is_empty() {
            continue;
        }
        let skipped = unneeded_parts(manifest, &supplies);
        let backup = manifest.backup.clone();
        let mut sink =
            ChainSink { backup, newest: newest.clone(), destination: destination.clone(), supplies, current: None };
        let writer = {
            let (manifest, times) = (manifest.clone(), times.clone());
            let skipped = skipped.clone();
            move |decoded, content_free| feed_parts(&manifest, &skipped, decoded, content_free, &times, &mut sink)
        };
        stored += run_pipeline(source, manifest, &skipped, concurrency, times, None, writer).await?.0;
    }
    for file in &newest.files {
        let path = destination.resolve(&newest, &file.path);
        let handle = OpenOptions::new().write(true).open(&path).map_err(BackupError::io("open", &path))?;
        handle.set_permissions(std::fs::Permissions::from_mode(file.mode)).map_err(BackupError::io("chmod", &path))?;
        let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(file.mtime).unwrap_or(0));
        handle.set_modified(mtime).map_err(BackupError::io("set the modification time of", &path))?;
        destination.journal.record(|| Durability::Written(path.clone()));
        sync.submit(SyncRequest::Complete, handle, path)?;
    }
    finish_restore(&newest, &destination, &directories, sync, times)?;
    let data_bytes = newest.files.iter().map(final_length).sum();
    times.log_restore(&newest.backup, method, verified.started.elapsed(), data_bytes, stored);
    Ok(stored)
}

/// The parts of `manifest` holding no piece of a file it supplies blocks of: every block in
/// them is superseded by a newer backup of the chain (or belongs to a file deleted since), so
/// the restore does not download them.
fn unneeded_parts(manifest: &BackupManifest, supplies: &BTreeMap<String, BlockSet>) -> BTreeSet<u32> {
    let needed: BTreeSet<u32> = manifest
        .files
        .iter()
        .filter(|file| supplies.get(&file.path).is_some_and(|blocks| !blocks.is_empty()))
        .flat_map(|file| file.chunks.iter().map(|chunk| chunk.part))
        .collect();
    manifest.parts.iter().map(|part| part.index).filter(|index| !needed.contains(index)).collect()
}

/// Creates every file of the newest backup, empty and at its final length.
fn create_files(newest: &BackupManifest, destination: &Destination) -> Result<(), BackupError> {
    for file in &newest.files {
        let path = destination.resolve(newest, &file.path);
        let handle = create_new_file(&path)?;
        handle.set_len(final_length(file)).map_err(BackupError::io("set the length of", &path))?;
        destination.give(&path)?;
    }
    Ok(())
}

/// Writes the blocks one backup of the chain supplies.
struct ChainSink {
    /// The backup whose parts pass.
    backup: String,
    newest: Arc<BackupManifest>,
    destination: Arc<Destination>,
    /// Blocks this backup supplies, by file path.
    supplies: BTreeMap<String, BlockSet>,
    current: Option<CurrentFile>,
}

/// The file whose stored bytes are passing.
struct CurrentFile {
    handle: File,
    path: PathBuf,
    backup: String,
    manifest_path: String,
    wanted: BlockSet,
    /// Index into `wanted`'s ranges: blocks pass in ascending order.
    cursor: usize,
    /// For blocks stored as changes: the block numbers in stored order and their checksums.
    delta: Option<(Vec<u32>, String)>,
    /// Bytes of the stored content passed so far.
    offset: u64,
    block_hasher: blake3::Hasher,
}

impl CurrentFile {
    fn wants(&mut self, block: u64) -> bool {
        let ranges = self.wanted.ranges();
        while ranges.get(self.cursor).is_some_and(|range| range.1 <= block) {
            self.cursor += 1;
        }
        ranges.get(self.cursor).is_some_and(|range| range.0 <= block)
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), BackupError> {
        while !bytes.is_empty() {
            let within = self.offset % BLOCK_SIZE;
            let take = usize::try_from(BLOCK_SIZE - within).unwrap_or(usize::MAX).min(bytes.len());
            let position = self.offset / BLOCK_SIZE;
            let block = match &self.delta {
                None => position,
                Some((blocks, _)) => {
                    u64::from(*blocks.get(position as usize).ok_or_else(|| self.damaged("more blocks than listed"))?)
                }
            };
            if self.wants(block) {
                self.handle
                    .write_all_at(&bytes[..take], block * BLOCK_SIZE + within)
                    .map_err(BackupError::io("write", &self.path))?;
            }
            if self.delta.is_some() {
                self.block_hasher.update(&bytes[..take]);
                if within + take as u64 == BLOCK_SIZE {
                    self.check_block(position as usize, block)?;
                }
            }
            self.offset += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    fn check_block(&mut self, position: usize, block: u64) -> Result<(), BackupError> {
        let actual = block_checksum(&self.block_hasher);
        self.block_hasher = blake3::Hasher::new();
        let expected = self.delta.as_ref().and_then(|(_, checksums)| {
            checksums.get(position * actual.len()..(position + 1) * actual.len()).map(str::to_string)
        });
        if expected.as_deref() != Some(actual.as_str()) {
            return Err(self.damaged(&format!("block {block} hashes to {actual}, the manifest says {expected:?}")));
        }
        Ok(())
    }

    fn damaged(&self, detail: &str) -> BackupError {
        BackupError::Damaged { backup: self.backup.clone(), detail: format!("file {}: {detail}", self.manifest_path) }
    }
}

impl FileSink for ChainSink {
    fn begin(&mut self, file: &FileEntry) -> Result<(), BackupError> {
        self.current = None;
        let Some(wanted) = self.supplies.remove(&file.path) else { return Ok(()) };
        let path = self.destination.resolve(&self.newest, &file.path);
        let handle = OpenOptions::new().write(true).open(&path).map_err(BackupError::io("open", &path))?;
        let delta = file.blocks.as_ref().map(|delta| (delta.blocks().collect(), delta.checksums.clone()));
        self.current = Some(CurrentFile {
            handle,
            path,
            backup: self.backup.clone(),
            manifest_path: file.path.clone(),
            wanted,
            cursor: 0,
            delta,
            offset: 0,
            block_hasher: blake3::Hasher::new(),
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        match self.current.as_mut() {
            Some(current) => current.write(bytes),
            None => Ok(()),
        }
    }

    fn finish(&mut self, _: &FileEntry) -> Result<(), BackupError> {
        self.current = None;
        Ok(())
    }
}
