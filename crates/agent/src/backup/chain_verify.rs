//! A chain restore's pre-verification: before anything is written to the destination, every
//! part the restore will read, of every backup of the chain (the full one, the incrementals
//! between, and the newest), is downloaded through the archive's retrying store and checked
//! against what its manifest records: its envelope opens, its header records the manifest's
//! length and checksum, and its content, decompressed, hashes to that checksum. The first
//! damaged or unreadable part stops the restore, naming the backup, the object, the expected
//! and found checksums, with nothing written.
//!
//! Parts the restore skips (every block in them superseded by a newer backup, see
//! [`super::chain_restore`]) are not read. The parts go through the restore's own download and
//! decode pipeline ([`run_pipeline`]: `concurrency` downloads in flight, one decoder per core,
//! buffers allocated once per backup and reused), without the writer: the pre-verification holds
//! no more memory than the restore that follows it.
//!
//! The verified stored bytes are kept in a [`Spool`] beside the destination when its file
//! system has room, and the restore reads them from there: each part crosses the network once.
//! Without room (or when writing to the spool fails: its disk filled meanwhile) the restore
//! downloads them again.
//!
//! A full backup restored alone is not pre-verified: its restore verifies every part and file
//! as it reads them and removes what it wrote when one fails, and reading it twice would double
//! the cost of the most common restore.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use pgec2_core::increment::final_length;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::BackupManifest;

use super::BackupError;
use super::extract::{Decoded, Keep, run_pipeline};
use super::increment::IncrementalError;
use super::parts::StoredPart;
use super::restore_spool::Spool;
use super::stages::{Stage, StageTimes};

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
    let read = |manifest: &BackupManifest, skipped: &BTreeSet<u32>| {
        manifest.parts.iter().filter(|part| !skipped.contains(&part.index)).map(|part| part.stored_bytes).sum::<u64>()
    };
    let stored = chain.iter().zip(skipped).map(|(manifest, skipped)| read(manifest, skipped)).sum();
    let spool = Spool::beside(dest, archive, stored, newest.files.iter().map(final_length).sum());
    // A part the spool cannot keep (its disk filled meanwhile) gives the spool up: the restore
    // then downloads the parts again.
    let abandoned = Arc::new(AtomicBool::new(false));
    let keep: Option<Keep> = spool.as_ref().map(|spool| {
        let (root, abandoned) = (spool.root().to_path_buf(), abandoned.clone());
        Arc::new(move |part: &StoredPart| {
            if abandoned.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Err(error) = Spool::keep(&root, &part.key, &part.stored) {
                tracing::info!(%error, "the restore spool is given up; verified parts are downloaded again");
                abandoned.store(true, Ordering::SeqCst);
            }
            Ok(())
        }) as Keep
    });
    // The pipeline's own stage times are not the restore's: the pre-verification is one stage.
    let pipeline_times = Arc::new(StageTimes::default());
    for (manifest, skipped) in chain.iter().zip(skipped) {
        if manifest.parts.iter().all(|part| skipped.contains(&part.index)) {
            continue;
        }
        run_pipeline(archive, manifest, skipped, concurrency, &pipeline_times, keep.clone(), check_only)
            .await
            .map_err(|error| in_chain(&newest.backup, &manifest.backup, error))?;
    }
    times.add(Stage::Verify, started.elapsed());
    let spool = spool.filter(|_| !abandoned.load(Ordering::SeqCst));
    Ok(VerifiedChain { chain, spool, times, started })
}

/// The pipeline's writer for the pre-verification: gives every content buffer back. After the
/// first failure it stops giving them back (the decoders stop) but waits for every decoder to
/// end, so that none keeps a part in the spool once the spool is removed.
fn check_only(decoded: Receiver<Decoded>, content_free: SyncSender<Vec<u8>>) -> Result<(), BackupError> {
    let (mut content_free, mut first_error) = (Some(content_free), None);
    while let Ok(part) = decoded.recv() {
        match (part, content_free.as_ref()) {
            (Ok((_, content)), Some(free)) => {
                let _ = free.try_send(content);
            }
            (Ok(_), None) => {}
            (Err(error), _) => {
                first_error.get_or_insert(error);
                content_free = None;
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A failure to read or verify a part of `backup` while restoring `restoring`, said as such.
fn in_chain(restoring: &str, backup: &str, error: BackupError) -> BackupError {
    let detail = match error {
        BackupError::Damaged { detail, .. } => detail,
        BackupError::Storage { key, source, .. } => format!("part {key} cannot be read: {source}"),
        error => return error,
    };
    IncrementalError::DamagedChain { restoring: restoring.to_string(), backup: backup.to_string(), detail }.into()
}

#[cfg(test)]
mod tests {
    use pgec2_core::compression::{Algorithm, Compression};
    use pgec2_core::encryption::{Keyring, StaticKey};
    use pgec2_core::envelope;
    use pgec2_core::manifest::PartInfo;

    use super::super::parts::decode_part;
    use super::*;

    fn sealed(content: &[u8], compression: Compression, keyring: &Keyring) -> StoredPart {
        let (stored, header) = envelope::seal_with(content, compression, keyring).expect("seal");
        let info = PartInfo {
            index: 0,
            content_bytes: content.len() as u64,
            stored_bytes: stored.len() as u64,
            checksum: header.content_hash_hex(),
        };
        StoredPart { info, key: "backups/b/parts/000000".to_string(), stored }
    }

    /// What the pre-verification says of `part`, as the restore of a chain ending in `newest`.
    fn verified(part: &StoredPart, keyring: &Keyring) -> Result<(), String> {
        let outcome = decode_part("b", keyring, part, Vec::new()).map_err(|error| in_chain("newest", "b", error));
        outcome.map(|_| ()).map_err(|error| error.to_string())
    }

    #[test]
    fn a_stored_part_with_a_changed_byte_is_named_with_the_expected_checksum_compressed_or_encrypted() {
        let content: Vec<u8> = (0..3_000_000u32).map(|n| (n % 251) as u8 ^ (n / 7919) as u8).collect();
        let key = StaticKey::from_bytes([7; 32], "test key".to_string());
        let keyrings = [Keyring::none(), Keyring::new(Some(Arc::new(key)), Vec::new())];
        let compressions = [Algorithm::Zstd, Algorithm::Lz4, Algorithm::None]
            .map(|algorithm| Compression { algorithm, level: if algorithm == Algorithm::Zstd { 3 } else { 0 } });
        for (keyring, compression) in keyrings.iter().flat_map(|keyring| compressions.map(|c| (keyring, c))) {
            let part = sealed(&content, compression, keyring);
            verified(&part, keyring).expect("an intact part verifies");
            for position in [envelope::HEADER_LEN + 10, part.stored.len() / 2, part.stored.len() - 1] {
                let mut damaged = part.clone();
                damaged.stored[position] ^= 0xff;
                let problem = verified(&damaged, keyring).expect_err("a changed byte is found");
                assert!(
                    problem.starts_with("cannot restore backup newest: backup b of its chain is damaged"),
                    "{problem}"
                );
                assert!(problem.contains(&part.info.checksum), "names the expected checksum: {problem}");
                assert!(problem.contains(&part.key) && problem.contains("backup-verify"), "{problem}");
            }
            let mut other = part.clone();
            other.info.checksum = "0".repeat(64);
            let problem = verified(&other, keyring).expect_err("a different checksum");
            assert!(problem.contains(&part.info.checksum) && problem.contains(&other.info.checksum), "{problem}");
        }
    }
}
