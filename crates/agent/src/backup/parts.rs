//! Reading a backup's parts back: download in index order with `concurrency` requests in
//! flight, open each envelope (decompress, verify its checksum) and compare it with the
//! manifest; then cut the content into file pieces and verify every file's BLAKE3 checksum as
//! its bytes pass. Shared by backup-fetch (which writes the pieces, see [`super::extract`]) and
//! backup-verify (which only checks them).
//!
//! backup-fetch reads the stored (compressed) bytes of a part into a reused buffer
//! ([`download_part`]) and decodes it into a reused content buffer ([`decode_part`]): the part's
//! header is checked against the manifest before anything else, and its checksum as it is
//! decompressed, before any of its bytes reaches a file (a damaged part fails the restore, which
//! then removes what it wrote).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use pgec2_core::encryption::Keyring;
use pgec2_core::envelope::{self, EnvelopeError};
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, FileEntry, PartInfo, Piece};

use tokio::task::JoinHandle;

use super::BackupError;
use super::stages::{Stage, StageTimes};

/// A downloaded, verified part.
#[derive(Debug)]
pub struct PartContent {
    pub index: u32,
    pub content: Vec<u8>,
    pub stored_bytes: u64,
}

/// Downloads one part, opens its envelope and checks it against the manifest.
pub async fn fetch_part(archive: Archive, backup: String, part: PartInfo) -> Result<PartContent, BackupError> {
    let key = archive.layout.backup_part(&backup, part.index).map_err(BackupError::storage("name", &backup))?;
    let stored = archive.storage.get(&key).await.map_err(BackupError::storage("download", key.as_str()))?;
    let stored_bytes = stored.len() as u64;
    let damaged =
        |detail: String| BackupError::Damaged { backup: backup.clone(), detail: format!("part {key}: {detail}") };
    let keyring = archive.keyring.clone();
    let (content, header) = tokio::task::spawn_blocking(move || envelope::open_with(&stored, &keyring))
        .await
        .map_err(|error| BackupError::Task(error.to_string()))?
        .map_err(|error| damaged(error.to_string()))?;
    if header.content_hash_hex() != part.checksum || content.len() as u64 != part.content_bytes {
        return Err(damaged(format!(
            "holds {} bytes hashing to {}, the manifest expects {} bytes hashing to {}",
            content.len(),
            header.content_hash_hex(),
            part.content_bytes,
            part.checksum
        )));
    }
    Ok(PartContent { index: part.index, content, stored_bytes })
}

/// The stored bytes of one part, downloaded but not yet opened.
#[derive(Clone, Debug)]
pub struct StoredPart {
    pub info: PartInfo,
    pub key: String,
    pub stored: Vec<u8>,
}

/// Downloads the stored bytes of one part into `buffer` (reusing its capacity).
pub async fn download_part(
    archive: &Archive,
    backup: &str,
    part: PartInfo,
    buffer: Vec<u8>,
) -> Result<StoredPart, BackupError> {
    let key = archive.layout.backup_part(backup, part.index).map_err(BackupError::storage("name", backup))?;
    let stored =
        archive.storage.get_into(&key, buffer).await.map_err(BackupError::storage("download", key.as_str()))?;
    Ok(StoredPart { info: part, key: key.to_string(), stored })
}

/// Downloads the manifest's parts but `skipped`, `concurrency` at once (each in its own task, so downloads
/// go on while the decoders are busy), each into a buffer from `free`, and hands them on in
/// index order. Returns the number of stored bytes downloaded.
pub async fn download_in_order(
    archive: &Archive,
    manifest: &BackupManifest,
    skipped: &BTreeSet<u32>,
    concurrency: usize,
    mut free: tokio::sync::mpsc::Receiver<Vec<u8>>,
    next: tokio::sync::mpsc::Sender<StoredPart>,
    times: &StageTimes,
) -> Result<u64, BackupError> {
    let mut pending: VecDeque<JoinHandle<Result<(StoredPart, Duration), BackupError>>> = VecDeque::new();
    let mut parts = manifest.parts.iter().filter(|part| !skipped.contains(&part.index)).cloned();
    let mut stored = 0u64;
    let outcome = loop {
        while pending.len() < concurrency {
            let Some(part) = parts.next() else { break };
            // No buffer comes back once the decoders stopped: stop too (their error is the cause).
            let Some(buffer) = free.recv().await else { break };
            let (archive, backup) = (archive.clone(), manifest.backup.clone());
            pending.push_back(tokio::spawn(async move {
                let started = Instant::now();
                let part = download_part(&archive, &backup, part, buffer).await?;
                Ok((part, started.elapsed()))
            }));
        }
        let Some(head) = pending.pop_front() else { break Ok(stored) };
        let part = match head.await {
            Ok(Ok((part, took))) => {
                times.add(Stage::Download, took);
                part
            }
            Ok(Err(error)) => break Err(error),
            Err(error) => break Err(BackupError::Task(error.to_string())),
        };
        stored += part.stored.len() as u64;
        if next.send(part).await.is_err() {
            break Ok(stored);
        }
    };
    for download in pending {
        download.abort();
    }
    outcome
}

/// Decodes a downloaded part into `content` (reusing its capacity): the header is checked
/// against the manifest before anything else, the content decompressed whole and its checksum
/// verified as it is decompressed.
pub fn decode_part(
    backup: &str,
    keyring: &Keyring,
    part: &StoredPart,
    mut content: Vec<u8>,
) -> Result<Vec<u8>, BackupError> {
    let damaged = |detail: String| BackupError::Damaged {
        backup: backup.to_string(),
        detail: format!("part {}: {detail}", part.key),
    };
    // What went wrong, against what the manifest expects (a content checksum mismatch says both).
    let unreadable = |error: EnvelopeError| match error {
        EnvelopeError::ChecksumMismatch { .. } => damaged(error.to_string()),
        error => damaged(format!(
            "the manifest expects {} bytes hashing to {}, but the stored part does not decode: {error}",
            part.info.content_bytes, part.info.checksum
        )),
    };
    let mut reader = envelope::open_reader_with(&part.stored, keyring).map_err(unreadable)?;
    let header = *reader.header();
    let length = usize::try_from(header.content_len).ok().filter(|_| header.content_len == part.info.content_bytes);
    let Some(length) = length.filter(|_| header.content_hash_hex() == part.info.checksum) else {
        return Err(damaged(format!(
            "holds {} bytes hashing to {}, the manifest expects {} bytes hashing to {}",
            header.content_len,
            header.content_hash_hex(),
            part.info.content_bytes,
            part.info.checksum
        )));
    };
    content.resize(length, 0);
    let mut filled = 0;
    while filled < length {
        match reader.read_content(&mut content[filled..]).map_err(unreadable)? {
            0 => return Err(damaged(format!("its content ends after {filled} of {length} bytes"))),
            read => filled += read,
        }
    }
    reader.finish().map_err(unreadable)?;
    Ok(content)
}

/// Where the bytes of restored files go.
pub trait FileSink {
    /// A file starts (its first piece follows).
    fn begin(&mut self, file: &FileEntry) -> Result<(), BackupError>;
    /// The next bytes of the current file.
    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError>;
    /// The current file is complete and its checksum verified.
    fn finish(&mut self, file: &FileEntry) -> Result<(), BackupError>;
}

/// A sink that keeps nothing (backup-verify).
pub struct Discard;

impl FileSink for Discard {
    fn begin(&mut self, _: &FileEntry) -> Result<(), BackupError> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> Result<(), BackupError> {
        Ok(())
    }
    fn finish(&mut self, _: &FileEntry) -> Result<(), BackupError> {
        Ok(())
    }
}

/// A file whose bytes do not hash to the manifest's checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChecksumMismatch {
    pub path: String,
    pub expected: String,
    pub actual: String,
}

/// Cuts parts fed in index order into files and verifies each file's checksum.
pub struct Assembler<'m> {
    manifest: &'m BackupManifest,
    pieces: Vec<Vec<Piece>>,
    current: Option<(usize, blake3::Hasher)>,
    /// Files with a piece in a part that was skipped: neither passed on nor verified.
    incomplete: BTreeSet<usize>,
}

impl<'m> Assembler<'m> {
    pub fn new(manifest: &'m BackupManifest) -> Result<Self, BackupError> {
        let pieces = manifest.pieces_by_part().map_err(|error| BackupError::Damaged {
            backup: manifest.backup.clone(),
            detail: format!("manifest: {error}"),
        })?;
        Ok(Self { manifest, pieces, current: None, incomplete: BTreeSet::new() })
    }

    /// Part `index` is not read (nothing the restore needs is in it): the files with a piece in
    /// it are not passed to the sink, nor verified, from now on.
    pub fn skip(&mut self, index: u32) {
        let pieces = std::mem::take(self.pieces.get_mut(index as usize).unwrap_or(&mut Vec::new()));
        for piece in pieces {
            self.incomplete.insert(piece.file);
            if self.current.as_ref().is_some_and(|(current, _)| *current == piece.file) {
                self.current = None;
            }
        }
    }

    /// Feeds part `index` (parts must come in index order); returns the files completed in it
    /// whose checksum did not match (the sink's `finish` is not called for those).
    pub fn feed(
        &mut self,
        index: u32,
        content: &[u8],
        sink: &mut dyn FileSink,
    ) -> Result<Vec<ChecksumMismatch>, BackupError> {
        let mut mismatches = Vec::new();
        let pieces = std::mem::take(self.pieces.get_mut(index as usize).unwrap_or(&mut Vec::new()));
        for piece in pieces {
            if self.incomplete.contains(&piece.file) {
                continue;
            }
            let file = &self.manifest.files[piece.file];
            if self.current.as_ref().is_none_or(|(current, _)| *current != piece.file) {
                sink.begin(file)?;
                self.current = Some((piece.file, blake3::Hasher::new()));
            }
            let start = usize::try_from(piece.part_offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(piece.length).unwrap_or(usize::MAX));
            let bytes = content.get(start..end).ok_or_else(|| self.short_part(index))?;
            sink.write(bytes)?;
            if let Some((_, hasher)) = self.current.as_mut() {
                hasher.update(bytes);
            }
            if piece.file_offset + piece.length == file.size {
                if let Some(mismatch) = self.complete(piece.file) {
                    mismatches.push(mismatch);
                } else {
                    sink.finish(file)?;
                }
            }
        }
        Ok(mismatches)
    }

    fn short_part(&self, index: u32) -> BackupError {
        let detail = format!("part {index} is shorter than the manifest says");
        BackupError::Damaged { backup: self.manifest.backup.clone(), detail }
    }

    fn complete(&mut self, file_index: usize) -> Option<ChecksumMismatch> {
        let (_, hasher) = self.current.take()?;
        let file = &self.manifest.files[file_index];
        let actual = hasher.finalize().to_hex().to_string();
        (actual != file.checksum).then(|| ChecksumMismatch {
            path: file.path.clone(),
            expected: file.checksum.clone(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use pgec2_core::manifest::Chunk;

    use super::*;

    struct Collect(Vec<(String, Vec<u8>)>);

    impl FileSink for Collect {
        fn begin(&mut self, file: &FileEntry) -> Result<(), BackupError> {
            self.0.push((file.path.clone(), Vec::new()));
            Ok(())
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
            if let Some((_, content)) = self.0.last_mut() {
                content.extend_from_slice(bytes);
            }
            Ok(())
        }
        fn finish(&mut self, _: &FileEntry) -> Result<(), BackupError> {
            Ok(())
        }
    }

    fn entry(path: &str, content: &[u8], chunks: Vec<Chunk>) -> FileEntry {
        let checksum = blake3::hash(content).to_hex().to_string();
        FileEntry {
            path: path.into(),
            size: content.len() as u64,
            mode: 0o600,
            mtime: 0,
            checksum,
            chunks,
            blocks: None,
        }
    }

    #[test]
    fn files_are_reassembled_across_parts_and_a_changed_byte_is_named() {
        let mut manifest = BackupManifest::new("b");
        manifest.files = vec![
            entry("a", b"abc", vec![Chunk { part: 0, offset: 0, length: 3 }]),
            entry(
                "b",
                b"defgh",
                vec![Chunk { part: 0, offset: 3, length: 1 }, Chunk { part: 1, offset: 0, length: 4 }],
            ),
        ];
        manifest.parts = vec![
            PartInfo { index: 0, content_bytes: 4, stored_bytes: 0, checksum: String::new() },
            PartInfo { index: 1, content_bytes: 4, stored_bytes: 0, checksum: String::new() },
        ];
        let mut sink = Collect(Vec::new());
        let mut assembler = Assembler::new(&manifest).expect("assembler");
        assert!(assembler.feed(0, b"abcd", &mut sink).expect("part 0").is_empty());
        assert!(assembler.feed(1, b"efgh", &mut sink).expect("part 1").is_empty());
        assert_eq!(sink.0, vec![("a".to_string(), b"abc".to_vec()), ("b".to_string(), b"defgh".to_vec())]);

        let mut assembler = Assembler::new(&manifest).expect("assembler");
        assembler.feed(0, b"abcd", &mut Discard).expect("part 0");
        let mismatches = assembler.feed(1, b"efgX", &mut Discard).expect("part 1");
        assert_eq!(mismatches.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(), vec!["b"]);
    }
}
