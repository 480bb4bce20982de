//! Reads the files of a backup, in manifest order, into size-bounded parts (see
//! [`pgec2_core::manifest`] for the format) and records each file's chunks and BLAKE3 checksum.
//!
//! Runs on a blocking thread. Memory is bounded by the caller: one part is filled at a time, in a
//! buffer the caller hands out (and gets back once the part is compressed), and handed to
//! `emit`, which blocks while the upload pipeline is full.
//!
//! Files change while a backup copies them, and that is fine: WAL replay from the backup's start
//! rewrites every block changed after it. A file that vanished is skipped; a file that shrank is
//! recorded with the bytes read; a file that grew is read up to its size when opened.

use std::fs::File;
use std::io::Read;

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use pgec2_core::manifest::{BLOCK_SIZE, BlockDelta, Chunk, FileEntry, block_checksum};

use super::stages::{Stage, StageTimes};
use super::walk::SourceFile;

/// A filled part, ready to compress and upload.
#[derive(Debug)]
pub struct PackedPart {
    pub index: u32,
    pub content: Vec<u8>,
}

/// Why packing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("failed to read {path} for the backup: {source}")]
    Read { path: String, source: std::io::Error },
    /// The consumer of parts went away (an upload failed); its error is the one to report.
    #[error("the upload of the backup's parts stopped")]
    Cancelled,
}

/// The result of packing: file entries with chunks, and how many parts were emitted.
#[derive(Debug, Default)]
pub struct Packed {
    pub files: Vec<FileEntry>,
    pub part_count: u32,
}

/// Packs `files` into parts of at most `part_size` content bytes, handing each full part to
/// `emit` (which returns `false` when the consumer is gone). Parts are filled in buffers taken
/// from `buffers` (which blocks until one is free and returns `None` when the consumer is gone),
/// so the caller bounds and reuses the memory parts occupy. Time spent reading and checksumming
/// is added to `times`.
pub fn pack_files(
    files: Vec<SourceFile>,
    part_size: usize,
    times: &StageTimes,
    mut buffers: impl FnMut() -> Option<Vec<u8>>,
    mut emit: impl FnMut(PackedPart) -> bool,
) -> Result<Packed, PackError> {
    let mut packer = Packer {
        part_size,
        page_batch: Vec::new(),
        current: None,
        index: 0,
        times,
        buffers: &mut buffers,
        emit: &mut emit,
    };
    let mut entries = Vec::with_capacity(files.len());
    for source in files {
        if let Some(entry) = packer.pack_file(source)? {
            entries.push(entry);
        }
    }
    packer.flush()?;
    Ok(Packed { files: entries, part_count: packer.index })
}

struct Packer<'e, B: FnMut() -> Option<Vec<u8>>, E: FnMut(PackedPart) -> bool> {
    part_size: usize,
    /// The read buffer of [`Packer::pack_pages`], kept between files.
    page_batch: Vec<u8>,
    /// The part being filled, taken from `buffers` when the first byte goes into it.
    current: Option<Vec<u8>>,
    index: u32,
    times: &'e StageTimes,
    buffers: &'e mut B,
    emit: &'e mut E,
}

impl<B: FnMut() -> Option<Vec<u8>>, E: FnMut(PackedPart) -> bool> Packer<'_, B, E> {
    /// Copies one file into the current part(s); `None` when it vanished before it was opened.
    fn pack_file(&mut self, source: SourceFile) -> Result<Option<FileEntry>, PackError> {
        let read_error =
            |source_error| PackError::Read { path: source.absolute.display().to_string(), source: source_error };
        let mut file = match File::open(&source.absolute) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %source.relative, "file vanished during the backup; WAL replay recreates it if needed");
                return Ok(None);
            }
            Err(error) => return Err(read_error(error)),
        };
        let expected = file.metadata().map_err(read_error)?.len();
        if let Some(since) = source.pages_since {
            return self.pack_pages(source, file, since).map(Some);
        }
        // Read ahead the whole file at the kernel's largest window; advice only, so a refusal
        // (a file system without readahead) changes nothing.
        let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
        let mut hasher = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut copied = 0u64;
        while copied < expected {
            let index = self.index;
            let part_size = self.part_size;
            let times = self.times;
            let current = self.current_part()?;
            let room = (part_size - current.len()) as u64;
            let start = current.len();
            let wanted = room.min(expected - copied);
            let read = times.time(Stage::Read, || (&mut file).take(wanted).read_to_end(current)).map_err(read_error)?;
            if read == 0 {
                break;
            }
            times.time(Stage::Checksum, || hasher.update(&current[start..]));
            chunks.push(Chunk { part: index, offset: start as u64, length: read as u64 });
            copied += read as u64;
            if current.len() >= part_size {
                self.flush()?;
            }
        }
        Ok(Some(FileEntry {
            path: source.relative,
            size: copied,
            mode: source.mode,
            mtime: source.mtime,
            checksum: hasher.finalize().to_hex().to_string(),
            chunks,
            blocks: None,
        }))
    }

    /// Copies the blocks of a relation file whose page LSN is at least `since`, or zero (a
    /// page being initialised may be new): reads `PAGE_BATCH` blocks at a time, so memory
    /// stays bounded whatever the file's size. A partial block at the end (the file was being
    /// extended) is left out: WAL replay from this backup's start writes it.
    fn pack_pages(&mut self, source: SourceFile, mut file: File, since: u64) -> Result<FileEntry, PackError> {
        let read_error = |error| PackError::Read { path: source.absolute.display().to_string(), source: error };
        let mut batch = std::mem::take(&mut self.page_batch);
        batch.resize(PAGE_BATCH * BLOCK, 0);
        let mut delta = DeltaBuilder::default();
        let mut block = 0u32;
        loop {
            let read = self.times.time(Stage::Read, || read_full(&mut file, &mut batch)).map_err(read_error)?;
            for page in batch[..read - read % BLOCK].chunks_exact(BLOCK) {
                if page_lsn(page).is_none_or(|lsn| lsn == 0 || lsn >= since) {
                    self.times.time(Stage::Checksum, || delta.add(block, page));
                    self.append(page, &mut delta.chunks)?;
                }
                block += 1;
            }
            if read < batch.len() {
                break;
            }
        }
        self.page_batch = batch;
        Ok(delta.entry(source, u64::from(block) * BLOCK as u64))
    }

    /// Appends `bytes` to the current part(s), extending `chunks`.
    fn append(&mut self, mut bytes: &[u8], chunks: &mut Vec<Chunk>) -> Result<(), PackError> {
        while !bytes.is_empty() {
            let (index, part_size) = (self.index, self.part_size);
            let current = self.current_part()?;
            let start = current.len();
            let take = (part_size - start).min(bytes.len());
            current.extend_from_slice(&bytes[..take]);
            match chunks.last_mut() {
                Some(last) if last.part == index && last.offset + last.length == start as u64 => {
                    last.length += take as u64
                }
                _ => chunks.push(Chunk { part: index, offset: start as u64, length: take as u64 }),
            }
            bytes = &bytes[take..];
            if current.len() >= part_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// The part being filled, starting one in a free buffer when there is none.
    fn current_part(&mut self) -> Result<&mut Vec<u8>, PackError> {
        if self.current.is_none() {
            let mut buffer = (self.buffers)().ok_or(PackError::Cancelled)?;
            buffer.clear();
            self.current = Some(buffer);
        }
        self.current.as_mut().ok_or(PackError::Cancelled)
    }

    /// Hands the current part to the consumer, if it holds anything.
    fn flush(&mut self) -> Result<(), PackError> {
        let Some(content) = self.current.take() else { return Ok(()) };
        if content.is_empty() {
            self.current = Some(content);
            return Ok(());
        }
        if !(self.emit)(PackedPart { index: self.index, content }) {
            return Err(PackError::Cancelled);
        }
        self.index += 1;
        Ok(())
    }
}

/// PostgreSQL's block size, as a length.
const BLOCK: usize = BLOCK_SIZE as usize;

/// Blocks read at once by [`Packer::pack_pages`] (256 KiB).
const PAGE_BATCH: usize = 32;

/// The LSN in a page's header (`pd_lsn`: two 32-bit halves, high first, in the machine's byte
/// order, as PostgreSQL writes them).
pub fn page_lsn(page: &[u8]) -> Option<u64> {
    let high = u32::from_ne_bytes(page.get(0..4)?.try_into().ok()?);
    let low = u32::from_ne_bytes(page.get(4..8)?.try_into().ok()?);
    Some((u64::from(high) << 32) | u64::from(low))
}

/// Reads until `buffer` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The entry of a relation file copied block by block, built as its blocks are chosen.
#[derive(Default)]
struct DeltaBuilder {
    hasher: blake3::Hasher,
    ranges: Vec<[u32; 2]>,
    checksums: String,
    chunks: Vec<Chunk>,
    stored: u64,
}

impl DeltaBuilder {
    fn add(&mut self, block: u32, page: &[u8]) {
        self.hasher.update(page);
        let mut page_hasher = blake3::Hasher::new();
        page_hasher.update(page);
        self.checksums.push_str(&block_checksum(&page_hasher));
        match self.ranges.last_mut() {
            Some([first, count]) if *first + *count == block => *count += 1,
            _ => self.ranges.push([block, 1]),
        }
        self.stored += page.len() as u64;
    }

    fn entry(self, source: SourceFile, length: u64) -> FileEntry {
        FileEntry {
            path: source.relative,
            size: self.stored,
            mode: source.mode,
            mtime: source.mtime,
            checksum: self.hasher.finalize().to_hex().to_string(),
            chunks: self.chunks,
            blocks: Some(BlockDelta { length, ranges: self.ranges, checksums: self.checksums }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use pgec2_core::manifest::{BackupManifest, PartInfo};

    use super::*;

    fn source(dir: &Path, name: &str, content: &[u8]) -> SourceFile {
        let absolute = dir.join(name);
        std::fs::write(&absolute, content).expect("write");
        SourceFile { relative: name.to_string(), absolute, mode: 0o600, mtime: 0, pages_since: None }
    }

    #[test]
    fn files_are_split_across_parts_and_the_manifest_reassembles_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..2500u32).map(|n| (n % 251) as u8).collect();
        let files = vec![
            source(dir.path(), "small", b"hello"),
            source(dir.path(), "empty", b""),
            source(dir.path(), "big", &big),
            SourceFile {
                relative: "gone".into(),
                absolute: dir.path().join("gone"),
                mode: 0o600,
                mtime: 0,
                pages_since: None,
            },
        ];
        let mut parts = Vec::new();
        let packed = pack_files(
            files,
            1000,
            &StageTimes::default(),
            || Some(Vec::new()),
            |part| {
                parts.push(part);
                true
            },
        )
        .expect("pack");
        assert_eq!(packed.part_count, 3);
        assert_eq!(packed.files.len(), 3, "the vanished file is skipped");
        assert_eq!(packed.files[2].chunks.len(), 3);
        assert_eq!(packed.files[2].checksum, blake3::hash(&big).to_hex().to_string());

        let mut manifest = BackupManifest::new("b");
        manifest.files = packed.files;
        manifest.parts = parts
            .iter()
            .map(|part| PartInfo {
                index: part.index,
                content_bytes: part.content.len() as u64,
                stored_bytes: 0,
                checksum: String::new(),
            })
            .collect();
        manifest.validate().expect("the packed manifest is valid");
        let mut rebuilt = Vec::new();
        for chunk in &manifest.files[2].chunks {
            let content = &parts[chunk.part as usize].content;
            rebuilt.extend_from_slice(&content[chunk.offset as usize..(chunk.offset + chunk.length) as usize]);
        }
        assert_eq!(rebuilt, big);
    }

    #[test]
    fn packing_stops_when_the_uploads_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = vec![source(dir.path(), "a", &[1u8; 3000])];
        assert!(matches!(
            pack_files(files.clone(), 1000, &StageTimes::default(), || Some(Vec::new()), |_| false),
            Err(PackError::Cancelled)
        ));
        assert!(matches!(
            pack_files(files, 1000, &StageTimes::default(), || None, |_| true),
            Err(PackError::Cancelled)
        ));
    }
}
