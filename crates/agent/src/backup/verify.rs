//! `backup-verify`: re-reads every stored object of a backup and checks it: the commit record,
//! the manifest, `backup_label` and `tablespace_map` (envelope checksums), every part (envelope
//! checksum, and size and checksum against the manifest) and every file (BLAKE3 against the
//! manifest). Problems are collected, not stopped at, so one run names every damaged part.
//!
//! An incremental backup's stored blocks are checked one by one against their own checksums
//! ([`super::block_check`]), and every backup of its chain is verified with it (the report's
//! `ancestors`), since a restore needs them all. A part whose checksum does not match is still
//! decoded when its compression allows, so that the damaged file and block are named too.

use futures::StreamExt;
use pgec2_core::catalog::{self, BackupSet};
use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, PartInfo};
use serde::Serialize;

use super::BackupError;
use super::block_check::BlockCheck;
use super::buffer_pool::BufferPool;
use super::parts::{Assembler, decode_part, download_part};
use super::restore_buffers::RestoreBuffers;

/// What `backup-verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub backup: String,
    pub ok: bool,
    pub parts: usize,
    pub files: usize,
    pub data_bytes: u64,
    pub stored_bytes: u64,
    /// One line per problem, naming the object.
    pub problems: Vec<String>,
    /// For an incremental backup, the report of every backup of its chain, the full one first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<VerifyReport>,
}

/// Verifies backup `name` (or `LATEST`) and, when it is incremental, every backup it builds
/// on, downloading `concurrency` parts at once.
pub async fn verify_backup(archive: &Archive, name: &str, concurrency: usize) -> Result<VerifyReport, BackupError> {
    let backups = catalog::scan_backups(archive).await?;
    let info = backups.find(name, archive)?.clone();
    let (mut report, manifest) = verify_one(archive, &info.name, concurrency).await?;
    let chain = manifest.and_then(|manifest| manifest.incremental).map(|of| of.chain).unwrap_or_default();
    for ancestor in chain {
        report.ancestors.push(verify_ancestor(archive, &backups, &ancestor, concurrency).await?);
    }
    report.ok = report.problems.is_empty() && report.ancestors.iter().all(|ancestor| ancestor.ok);
    Ok(report)
}

/// Verifies one backup of a chain; one that is no longer committed is a problem of its own.
async fn verify_ancestor(
    archive: &Archive,
    backups: &BackupSet,
    name: &str,
    concurrency: usize,
) -> Result<VerifyReport, BackupError> {
    if !backups.committed.iter().any(|backup| backup.name == name) {
        let key = archive.layout.backup_complete(name).map_err(BackupError::storage("name", name))?;
        let problem = format!("{key}: the chain needs this backup but it is not a committed backup in the archive");
        return Ok(VerifyReport { backup: name.to_string(), problems: vec![problem], ..VerifyReport::default() });
    }
    Ok(verify_one(archive, name, concurrency).await?.0)
}

/// Verifies the objects of one committed backup; returns its manifest when it could be read.
async fn verify_one(
    archive: &Archive,
    name: &str,
    concurrency: usize,
) -> Result<(VerifyReport, Option<BackupManifest>), BackupError> {
    let mut report = VerifyReport { backup: name.to_string(), ..VerifyReport::default() };
    let manifest = match catalog::read_manifest(archive, name).await {
        Ok(manifest) => manifest,
        Err(error) => {
            report.problems.push(error.to_string());
            return Ok((report, None));
        }
    };
    report.files = manifest.files.len();
    report.parts = manifest.parts.len();
    report.data_bytes = manifest.data_bytes();
    check_label_files(archive, &manifest, &mut report).await?;
    check_parts(archive, &manifest, concurrency, &mut report).await?;
    report.ok = report.problems.is_empty();
    Ok((report, Some(manifest)))
}

async fn check_label_files(
    archive: &Archive,
    manifest: &BackupManifest,
    report: &mut VerifyReport,
) -> Result<(), BackupError> {
    let name = &manifest.backup;
    let mut keys = vec![archive.layout.backup_label(name).map_err(BackupError::storage("name", name))?];
    if !manifest.tablespaces.is_empty() {
        keys.push(archive.layout.tablespace_map(name).map_err(BackupError::storage("name", name))?);
    }
    for key in keys {
        if let Err(error) = catalog::get_content(archive, &key).await {
            report.problems.push(error.to_string());
        }
    }
    Ok(())
}

/// Checks every part, and every file's and stored block's checksum as the parts pass. A part
/// whose checksum fails is decoded anyway when possible, to name the files and blocks it
/// damages; when it cannot be, files continuing after it are not checked.
///
/// Each part in flight holds its stored bytes and its content whole, so parts larger than the
/// local unit get fewer in flight: the memory a restore of the same backup would take
/// ([`RestoreBuffers::whole_parts`]). The buffers are reused from part to part.
async fn check_parts(
    archive: &Archive,
    manifest: &BackupManifest,
    concurrency: usize,
    report: &mut VerifyReport,
) -> Result<(), BackupError> {
    let mut assembler = Some(Assembler::new(manifest)?);
    let mut blocks = BlockCheck::default();
    let in_flight = RestoreBuffers::for_manifest(manifest, concurrency).whole_parts();
    let buffers = PartBuffers::default();
    let mut parts = futures::stream::iter(manifest.parts.clone())
        .map(|part| read_part(archive, &manifest.backup, part, &buffers))
        .buffered(in_flight);
    let mut index = 0u32;
    while let Some(part) = parts.next().await {
        let content = match part {
            Ok((content, stored_bytes)) => {
                report.stored_bytes += stored_bytes;
                Some(content)
            }
            Err(error) => {
                report.problems.push(error.to_string());
                let info = manifest.parts.get(index as usize).cloned();
                let salvaged = match info {
                    Some(info) => salvage(archive, &manifest.backup, info).await,
                    None => None,
                };
                if salvaged.is_none() && assembler.take().is_some() {
                    report.problems.push(format!("files continuing after part {index} were not checked"));
                }
                salvaged
            }
        };
        if let (Some(content), Some(assembler)) = (&content, assembler.as_mut()) {
            for mismatch in assembler.feed(index, content, &mut blocks)? {
                report.problems.push(format!(
                    "file {} hashes to {}, the manifest says {}",
                    mismatch.path, mismatch.actual, mismatch.expected
                ));
            }
            for mismatch in blocks.mismatches.drain(..) {
                report.problems.push(format!("backup {}: {mismatch}", manifest.backup));
            }
        }
        if let Some(content) = content {
            buffers.content.give_back(content);
        }
        index += 1;
    }
    Ok(())
}

/// Downloads one part and decodes it (its header against the manifest, its checksum verified as
/// it is decompressed); returns its content and its stored size.
async fn read_part(
    archive: &Archive,
    backup: &str,
    part: PartInfo,
    buffers: &PartBuffers,
) -> Result<(Vec<u8>, u64), BackupError> {
    let stored = download_part(archive, backup, part, buffers.stored.take()).await?;
    let stored_bytes = stored.stored.len() as u64;
    let (backup, keyring, content) = (backup.to_string(), archive.keyring.clone(), buffers.content.take());
    let (stored, decoded) = tokio::task::spawn_blocking(move || {
        let decoded = decode_part(&backup, &keyring, &stored, content);
        (stored, decoded)
    })
    .await
    .map_err(|error| BackupError::Task(error.to_string()))?;
    buffers.stored.give_back(stored.stored);
    decoded.map(|content| (content, stored_bytes))
}

/// Buffers of parts that finished, for the next parts: stored bytes and decoded content.
#[derive(Default)]
struct PartBuffers {
    stored: BufferPool,
    content: BufferPool,
}

/// The whole content of a part whose checksum failed, read past the failed check, when its
/// envelope still decodes to the length the manifest records; `None` otherwise.
async fn salvage(archive: &Archive, backup: &str, part: PartInfo) -> Option<Vec<u8>> {
    let key = archive.layout.backup_part(backup, part.index).ok()?;
    let stored = archive.storage.get(&key).await.ok()?;
    let keyring = archive.keyring.clone();
    let content = tokio::task::spawn_blocking(move || {
        let mut reader = envelope::open_reader_with(&stored, &keyring).ok()?;
        let mut content = Vec::new();
        let mut piece = vec![0u8; 256 * 1024];
        while let Ok(read) = reader.read_content(&mut piece) {
            if read == 0 {
                break;
            }
            content.extend_from_slice(&piece[..read]);
        }
        Some(content)
    })
    .await
    .ok()??;
    (content.len() as u64 == part.content_bytes).then_some(content)
}

impl VerifyReport {
    /// Human-readable lines.
    pub fn render(&self) -> String {
        let mut out = format!(
            "backup {}: {} ({} files, {} parts, {} bytes of data, {} bytes stored)\n",
            self.backup,
            if self.ok { "ok" } else { "DAMAGED" },
            self.files,
            self.parts,
            self.data_bytes,
            self.stored_bytes
        );
        for problem in &self.problems {
            out.push_str(&format!("  {problem}\n"));
        }
        for ancestor in &self.ancestors {
            for (number, line) in ancestor.render().lines().enumerate() {
                out.push_str(if number == 0 { "  builds on " } else { "  " });
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The first problem found, and the backup it is in (this one or an ancestor).
    pub fn first_problem(&self) -> Option<(&str, &str)> {
        let own = self.problems.first().map(|problem| (self.backup.as_str(), problem.as_str()));
        own.or_else(|| self.ancestors.iter().find_map(VerifyReport::first_problem))
    }
}
