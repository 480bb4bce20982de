//! `backup-verify`: re-reads every stored object of a backup and checks it: the commit record,
//! the manifest, `backup_label` and `tablespace_map` (envelope checksums), every part (envelope
//! checksum, and size and checksum against the manifest) and every file (BLAKE3 against the
//! manifest). Problems are collected, not stopped at, so one run names every damaged part.

use futures::StreamExt;
use pgec2_core::catalog;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::BackupManifest;
use serde::Serialize;

use super::BackupError;
use super::parts::{Assembler, Discard, fetch_part};

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
}

/// Verifies backup `name` (or `LATEST`), downloading `concurrency` parts at once.
pub async fn verify_backup(archive: &Archive, name: &str, concurrency: usize) -> Result<VerifyReport, BackupError> {
    let backups = catalog::scan_backups(archive).await?;
    let info = backups.find(name, archive)?.clone();
    let mut report = VerifyReport { backup: info.name.clone(), ..VerifyReport::default() };
    let manifest = match catalog::read_manifest(archive, &info.name).await {
        Ok(manifest) => manifest,
        Err(error) => {
            report.problems.push(error.to_string());
            return Ok(report);
        }
    };
    report.files = manifest.files.len();
    report.parts = manifest.parts.len();
    report.data_bytes = manifest.data_bytes();
    check_label_files(archive, &manifest, &mut report).await?;
    check_parts(archive, &manifest, concurrency, &mut report).await?;
    report.ok = report.problems.is_empty();
    Ok(report)
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

/// Checks every part; file checksums are followed until the first unreadable part (a file
/// continuing past it cannot be checked), part checksums to the end.
async fn check_parts(
    archive: &Archive,
    manifest: &BackupManifest,
    concurrency: usize,
    report: &mut VerifyReport,
) -> Result<(), BackupError> {
    let mut assembler = Some(Assembler::new(manifest)?);
    let mut parts = futures::stream::iter(manifest.parts.clone())
        .map(|part| fetch_part(archive.clone(), manifest.backup.clone(), part))
        .buffered(concurrency.max(1));
    let mut index = 0u32;
    while let Some(part) = parts.next().await {
        match part {
            Ok(part) => {
                report.stored_bytes += part.stored_bytes;
                if let Some(assembler) = assembler.as_mut() {
                    for mismatch in assembler.feed(part.index, &part.content, &mut Discard)? {
                        report.problems.push(format!(
                            "file {} hashes to {}, the manifest says {}",
                            mismatch.path, mismatch.actual, mismatch.expected
                        ));
                    }
                }
            }
            Err(error) => {
                report.problems.push(error.to_string());
                if assembler.take().is_some() {
                    report.problems.push(format!("files continuing after part {index} were not checked"));
                }
            }
        }
        index += 1;
    }
    Ok(())
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
        out
    }
}
