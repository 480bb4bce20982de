//! A chain restore's pre-verification: before anything is written to the destination, every
//! part the restore will read, of every backup of the chain (the full one, the incrementals
//! between, and the newest), is downloaded through the archive's retrying store and checked
//! against the checksum its manifest records: its envelope opens, its header records the
//! manifest's length and checksum, and its content, decompressed a piece at a time, hashes to
//! that checksum. The first damaged or unreadable part stops the restore, naming the backup,
//! the object, the expected and found checksums, with nothing written.
//!
//! Parts the restore skips (every block in them superseded by a newer backup, see
//! [`super::chain_restore`]) are not read. Downloads run `concurrency` at once; each holds one
//! stored part (at most the part size, compressed) and a small decompression buffer, so the
//! pre-verification holds no more than the restore's pipeline does.
//!
//! The verified stored bytes are kept in a [`Spool`] beside the destination when its file
//! system has room, and the restore reads them from there: each part crosses the network once.
//! Without room the restore downloads them again.
//!
//! A full backup restored alone is not pre-verified: its restore verifies every part and file
//! as it reads them and removes what it wrote when one fails, and reading it twice would double
//! the cost of the most common restore.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use pgec2_core::encryption::Keyring;
use pgec2_core::envelope::{self, EnvelopeError};
use pgec2_core::increment::final_length;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, PartInfo};

use super::BackupError;
use super::increment::IncrementalError;
use super::restore_spool::Spool;
use super::stages::{Stage, StageTimes};

/// Content decompressed at a time while a part is checked.
const SCRATCH_BYTES: usize = 256 * 1024;

/// A chain ready to be restored: checked ([`super::chain_restore::load_chain`]) and, when it
/// holds more than one backup, pre-verified.
#[derive(Debug)]
pub struct VerifiedChain {
    /// The full backup first, the backup restored last.
    pub chain: Vec<Arc<BackupManifest>>,
    /// The verified parts, when kept on local disk.
    pub spool: Option<Spool>,
    /// The restore's stage times, the pre-verification's included.
    pub times: Arc<StageTimes>,
    /// When the restore started (before the pre-verification).
    pub started: Instant,
}

impl VerifiedChain {
    /// Where the restore reads the chain's parts from: the spool, or the archive.
    pub fn source<'a>(&'a self, archive: &'a Archive) -> &'a Archive {
        self.spool.as_ref().map_or(archive, Spool::archive)
    }
}

/// Pre-verifies `chain` (see the module's description) for a restore into `dest`; `skipped`
/// holds, per backup of the chain, the parts the restore does not read.
pub async fn verify_chain(
    archive: &Archive,
    chain: Vec<Arc<BackupManifest>>,
    skipped: &[BTreeSet<u32>],
    dest: &Path,
    concurrency: usize,
) -> Result<VerifiedChain, BackupError> {
    let (started, times) = (Instant::now(), Arc::new(StageTimes::default()));
    let Some(newest) = chain.last().cloned().filter(|_| chain.len() > 1) else {
        return Ok(VerifiedChain { chain, spool: None, times, started });
    };
    let reads: Vec<(String, PartInfo)> = chain
        .iter()
        .zip(skipped)
        .flat_map(|(manifest, skipped)| {
            let wanted = manifest.parts.iter().filter(|part| !skipped.contains(&part.index));
            wanted.map(|part| (manifest.backup.clone(), part.clone()))
        })
        .collect();
    let stored: u64 = reads.iter().map(|(_, part)| part.stored_bytes).sum();
    let spool = Spool::beside(dest, archive, stored, newest.files.iter().map(final_length).sum());
    let check = PartCheck {
        archive: archive.clone(),
        restoring: newest.backup.clone(),
        spool: spool.as_ref().map(|spool| spool.root().to_path_buf()),
        failed: Arc::new(AtomicBool::new(false)),
    };
    // Every check runs to its end, even after one failed, so that nothing writes into the
    // spool once it is removed.
    let mut checks =
        futures::stream::iter(reads).map(|(backup, part)| check.run(backup, part)).buffer_unordered(concurrency.max(1));
    let mut first_error = None;
    while let Some(outcome) = checks.next().await {
        if let Err(error) = outcome {
            check.failed.store(true, Ordering::SeqCst);
            first_error.get_or_insert(error);
        }
    }
    times.add(Stage::Verify, started.elapsed());
    match first_error {
        Some(error) => Err(error),
        None => Ok(VerifiedChain { chain, spool, times, started }),
    }
}

/// Checks one part at a time; shared by the checks in flight.
struct PartCheck {
    archive: Archive,
    /// The backup being restored (the newest of the chain).
    restoring: String,
    /// Where verified parts are kept.
    spool: Option<PathBuf>,
    /// A check failed: the others still to start do nothing.
    failed: Arc<AtomicBool>,
}

impl PartCheck {
    async fn run(&self, backup: String, part: PartInfo) -> Result<(), BackupError> {
        if self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let key =
            self.archive.layout.backup_part(&backup, part.index).map_err(BackupError::storage("name", &backup))?;
        let damaged = {
            let (restoring, backup, object) = (self.restoring.clone(), backup.clone(), key.to_string());
            move |problem: String| {
                BackupError::from(IncrementalError::DamagedChain { restoring, backup, object, problem })
            }
        };
        let stored = match self.archive.storage.get(&key).await {
            Ok(stored) => stored,
            Err(error) => return Err(damaged(format!("the part cannot be read: {error}"))),
        };
        let (keyring, spool) = (self.archive.keyring.clone(), self.spool.clone());
        tokio::task::spawn_blocking(move || {
            check_stored(&stored, &keyring, &part).map_err(damaged)?;
            match spool {
                Some(root) => Spool::keep(&root, key.as_str(), &stored),
                None => Ok(()),
            }
        })
        .await
        .map_err(|error| BackupError::Task(error.to_string()))?
    }
}

/// Checks the stored bytes of a part against what the manifest records for it: the problem
/// found, expected and found checksums named, otherwise `Ok`.
fn check_stored(stored: &[u8], keyring: &Keyring, part: &PartInfo) -> Result<(), String> {
    let (expected, expected_len) = (&part.checksum, part.content_bytes);
    let mut reader = envelope::open_reader_with(stored, keyring).map_err(|error| {
        format!("the manifest records checksum {expected}, but the stored part does not open: {error}")
    })?;
    let header = *reader.header();
    if header.content_hash_hex() != *expected || header.content_len != expected_len {
        return Err(format!(
            "the manifest records checksum {expected} ({expected_len} bytes), the part's header records checksum {} \
             ({} bytes)",
            header.content_hash_hex(),
            header.content_len
        ));
    }
    let mut scratch = vec![0u8; SCRATCH_BYTES];
    loop {
        match reader.read_content(&mut scratch) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(EnvelopeError::ChecksumMismatch { actual, actual_len, .. }) => {
                return Err(format!(
                    "the manifest records checksum {expected} ({expected_len} bytes), its content hashes to {actual} \
                     ({actual_len} bytes)"
                ));
            }
            Err(error) => {
                return Err(format!(
                    "the manifest records checksum {expected} ({expected_len} bytes), its content does not \
                     decompress: {error}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pgec2_core::compression::Compression;

    use super::*;

    fn sealed(content: &[u8]) -> (Vec<u8>, PartInfo) {
        let (stored, header) = envelope::seal(content, Compression::default()).expect("seal");
        let info = PartInfo {
            index: 0,
            content_bytes: content.len() as u64,
            stored_bytes: stored.len() as u64,
            checksum: header.content_hash_hex(),
        };
        (stored, info)
    }

    #[test]
    fn a_stored_part_with_a_changed_byte_is_named_with_the_expected_and_found_checksums() {
        let content: Vec<u8> = (0..3_000_000u32).map(|n| (n % 251) as u8 ^ (n / 7919) as u8).collect();
        let (stored, info) = sealed(&content);
        check_stored(&stored, &Keyring::none(), &info).expect("an intact part verifies");
        for position in [envelope::HEADER_LEN + 10, stored.len() / 2, stored.len() - 1] {
            let mut damaged = stored.clone();
            damaged[position] ^= 0xff;
            let problem = check_stored(&damaged, &Keyring::none(), &info).expect_err("a changed byte is found");
            assert!(problem.contains(&info.checksum), "names the expected checksum: {problem}");
        }
        let other = PartInfo { checksum: "0".repeat(64), ..info.clone() };
        let problem = check_stored(&stored, &Keyring::none(), &other).expect_err("a different checksum");
        assert!(problem.contains(&info.checksum) && problem.contains(&other.checksum), "{problem}");
    }
}
