//! Reading a backup's parts back: download in index order with `concurrency` requests in
//! flight, open each envelope (decompress, verify its checksum) and compare it with the
//! manifest; then cut the content into file pieces and verify every file's BLAKE3 checksum as
//! its bytes stream past. Shared by backup-fetch (which writes the pieces) and backup-verify
//! (which only checks them).
//!
//! backup-fetch never holds a part's content: [`download_part`] reads the stored (compressed)
//! bytes into a reused buffer, and [`feed_stored`] decompresses them a piece at a time straight
//! into the files, checking the part's header against the manifest before the first byte is
//! written and its envelope checksum at its end (a damaged part fails the restore, which then
//! removes what it wrote).

use std::io::Read;

use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, FileEntry, PartInfo, Piece};

use super::BackupError;

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
    let (content, header) = tokio::task::spawn_blocking(move || envelope::open(&stored))
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
#[derive(Debug)]
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

/// Opens a downloaded part and feeds its content to `assembler` through `scratch`: the header
/// is checked against the manifest first, the envelope checksum at the end of the content.
pub fn feed_stored(
    assembler: &mut Assembler<'_>,
    part: &StoredPart,
    sink: &mut dyn FileSink,
    scratch: &mut [u8],
) -> Result<Vec<ChecksumMismatch>, BackupError> {
    let backup = &assembler.manifest.backup;
    let damaged = |detail: String| BackupError::Damaged {
        backup: backup.clone(),
        detail: format!("part {}: {detail}", part.key),
    };
    let mut reader = envelope::open_reader(&part.stored).map_err(|error| damaged(error.to_string()))?;
    let header = *reader.header();
    if header.content_hash_hex() != part.info.checksum || header.content_len != part.info.content_bytes {
        return Err(damaged(format!(
            "holds {} bytes hashing to {}, the manifest expects {} bytes hashing to {}",
            header.content_len,
            header.content_hash_hex(),
            part.info.content_bytes,
            part.info.checksum
        )));
    }
    let mismatches = assembler.feed_reader(part.info.index, &part.key, &mut reader, sink, scratch)?;
    reader.finish().map_err(|error| damaged(error.to_string()))?;
    Ok(mismatches)
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

/// Bytes a part's content is read and written in at a time.
pub const FEED_PIECE: usize = 256 * 1024;

/// Cuts parts fed in index order into files and verifies each file's checksum.
pub struct Assembler<'m> {
    manifest: &'m BackupManifest,
    pieces: Vec<Vec<Piece>>,
    current: Option<(usize, blake3::Hasher)>,
}

impl<'m> Assembler<'m> {
    pub fn new(manifest: &'m BackupManifest) -> Result<Self, BackupError> {
        let pieces = manifest.pieces_by_part().map_err(|error| BackupError::Damaged {
            backup: manifest.backup.clone(),
            detail: format!("manifest: {error}"),
        })?;
        Ok(Self { manifest, pieces, current: None })
    }

    /// Feeds part `index` (parts must come in index order); returns the files completed in it
    /// whose checksum did not match (the sink's `finish` is not called for those).
    pub fn feed(
        &mut self,
        index: u32,
        content: &[u8],
        sink: &mut dyn FileSink,
    ) -> Result<Vec<ChecksumMismatch>, BackupError> {
        let mut scratch = vec![0u8; FEED_PIECE.min(content.len().max(1))];
        self.feed_reader(index, &index.to_string(), &mut &content[..], sink, &mut scratch)
    }

    /// Like [`Assembler::feed`], reading the part's content from `content` through `scratch`.
    /// The caller checks that nothing follows the last piece.
    pub fn feed_reader(
        &mut self,
        index: u32,
        part_name: &str,
        content: &mut dyn Read,
        sink: &mut dyn FileSink,
        scratch: &mut [u8],
    ) -> Result<Vec<ChecksumMismatch>, BackupError> {
        let mut mismatches = Vec::new();
        let pieces = std::mem::take(self.pieces.get_mut(index as usize).unwrap_or(&mut Vec::new()));
        let scratch_len = scratch.len().max(1) as u64;
        for piece in pieces {
            let file = &self.manifest.files[piece.file];
            if self.current.as_ref().is_none_or(|(current, _)| *current != piece.file) {
                sink.begin(file)?;
                self.current = Some((piece.file, blake3::Hasher::new()));
            }
            let mut remaining = piece.length;
            while remaining > 0 {
                let length = usize::try_from(remaining.min(scratch_len)).unwrap_or(scratch.len());
                let bytes = &mut scratch[..length];
                content.read_exact(bytes).map_err(|error| self.unreadable(index, part_name, &error))?;
                sink.write(bytes)?;
                if let Some((_, hasher)) = self.current.as_mut() {
                    hasher.update(bytes);
                }
                remaining -= length as u64;
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

    fn unreadable(&self, index: u32, part_name: &str, error: &std::io::Error) -> BackupError {
        let detail = if error.kind() == std::io::ErrorKind::UnexpectedEof {
            format!("part {index} is shorter than the manifest says")
        } else {
            format!("part {part_name}: {error}")
        };
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
        FileEntry { path: path.into(), size: content.len() as u64, mode: 0o600, mtime: 0, checksum, chunks }
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
