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

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::time::{Duration, Instant};

use pgec2_core::encryption::Keyring;
use pgec2_core::envelope::{self, EnvelopeError};
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, FileEntry, PartInfo, Piece};

use tokio::task::JoinHandle;

use super::BackupError;
use super::stages::{Stage, StageTimes};

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

/// One part's download: its position in the order, the part, how long it took.
type Download = JoinHandle<Result<(usize, StoredPart, Duration), BackupError>>;

/// Downloads the manifest's parts but `skipped`, up to `concurrency` requests in flight (each in
/// its own task, so downloads go on while the decoders are busy), each into a buffer from `free`,
/// and hands them on in index order. Returns the number of stored bytes downloaded.
///
/// A slot is refilled as soon as any download finishes, not only the oldest: a part that
/// completes ahead of a slower one waits in its buffer for its turn while the next request
/// starts, so one slow answer (a store's long tail) does not leave the other slots idle. Memory
/// stays the buffers of `free`; parts start in index order, so the oldest part not yet handed on
/// always holds a buffer or has been handed on, and the pipeline never waits on itself.
pub async fn download_in_order(
    archive: &Archive,
    manifest: &BackupManifest,
    skipped: &BTreeSet<u32>,
    concurrency: usize,
    mut free: tokio::sync::mpsc::Receiver<Vec<u8>>,
    next: tokio::sync::mpsc::Sender<StoredPart>,
    times: &StageTimes,
) -> Result<u64, BackupError> {
    let concurrency = concurrency.max(1);
    let mut parts = manifest.parts.iter().filter(|part| !skipped.contains(&part.index)).cloned().enumerate().peekable();
    let mut in_flight: FuturesUnordered<Download> = FuturesUnordered::new();
    // Downloaded parts waiting for the ones before them, by their position in the order.
    let mut arrived: BTreeMap<usize, StoredPart> = BTreeMap::new();
    let mut handed_on = 0usize;
    let mut stored = 0u64;
    let outcome = 'pipeline: loop {
        while let Some(part) = arrived.remove(&handed_on) {
            stored += part.stored.len() as u64;
            if next.send(part).await.is_err() {
                break 'pipeline Ok(stored);
            }
            handed_on += 1;
        }
        let may_start = in_flight.len() < concurrency && parts.peek().is_some();
        if !may_start && in_flight.is_empty() {
            break Ok(stored);
        }
        tokio::select! {
            finished = in_flight.next(), if !in_flight.is_empty() => match finished {
                Some(Ok(Ok((position, part, took)))) => {
                    times.add(Stage::Download, took);
                    arrived.insert(position, part);
                }
                Some(Ok(Err(error))) => break Err(error),
                Some(Err(error)) => break Err(BackupError::Task(error.to_string())),
                None => {}
            },
            buffer = free.recv(), if may_start => {
                // No buffer comes back once the decoders stopped: stop too (their error is the cause).
                let Some(buffer) = buffer else { break Ok(stored) };
                let Some((position, part)) = parts.next() else { continue };
                let (archive, backup) = (archive.clone(), manifest.backup.clone());
                in_flight.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let part = download_part(&archive, &backup, part, buffer).await?;
                    Ok((position, part, started.elapsed()))
                }));
            }
        }
    };
    for download in in_flight.iter() {
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
    use std::sync::Arc;

    use bytes::Bytes;
    use pgec2_core::compression::Compression;
    use pgec2_core::layout::ArchiveLayout;
    use pgec2_core::manifest::Chunk;
    use pgec2_core::storage::PutMode;
    use pgec2_core::storage::fault::{Fault, FaultHandle, FaultInjecting, Operation, Rule};
    use pgec2_core::storage::memory::MemoryStorage;

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

    /// Eight small parts in a store whose first GET of part 0 stalls for `stall`.
    async fn parts_behind_a_slow_first_part(stall: Duration) -> (Archive, BackupManifest, FaultHandle) {
        let store = FaultInjecting::new(MemoryStorage::new());
        let faults = store.handle();
        let archive = Archive::new(Arc::new(store), ArchiveLayout::root());
        let mut manifest = BackupManifest::new("base_1");
        for index in 0..8u32 {
            let content = vec![index as u8; 100];
            let (stored, header) = envelope::seal(&content, Compression::default()).expect("seal");
            let key = archive.layout.backup_part("base_1", index).expect("key");
            archive.storage.put(&key, Bytes::from(stored.clone()), PutMode::CreateNew).await.expect("put");
            manifest.parts.push(PartInfo {
                index,
                content_bytes: 100,
                stored_bytes: stored.len() as u64,
                checksum: header.content_hash_hex(),
            });
        }
        let first = archive.layout.backup_part("base_1", 0).expect("key").to_string();
        faults.add(Rule::new(Fault::Stall(stall)).on(Operation::Get).matching(move |key| key == first).times(1));
        (archive, manifest, faults)
    }

    #[tokio::test]
    async fn a_slow_part_does_not_idle_the_other_download_slots_and_parts_still_come_in_order() {
        let (archive, manifest, faults) = parts_behind_a_slow_first_part(Duration::from_millis(600)).await;
        let buffers = 4;
        let (free_sender, free) = tokio::sync::mpsc::channel(buffers);
        for _ in 0..buffers {
            free_sender.try_send(Vec::new()).expect("buffer");
        }
        let (next, mut parts) = tokio::sync::mpsc::channel::<StoredPart>(2);
        let consumer = tokio::spawn(async move {
            let mut order = Vec::new();
            while let Some(part) = parts.recv().await {
                order.push(part.info.index);
                let _ = free_sender.send(part.stored).await;
            }
            order
        });
        let times = StageTimes::default();
        let skipped = BTreeSet::new();
        let downloads = download_in_order(&archive, &manifest, &skipped, 2, free, next, &times);
        let watcher = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            faults.calls(Operation::Get)
        };
        let (downloaded, started_during_stall) = tokio::join!(downloads, watcher);
        let downloaded = downloaded.expect("downloads");
        // Part 0 stalls in one slot; the other slot goes on with parts 1, 2, 3 (one buffer each)
        // while they wait for part 0, instead of stopping after part 1.
        assert_eq!(started_during_stall, buffers as u64, "GETs started while part 0 stalled");
        assert_eq!(consumer.await.expect("consumer"), (0..8).collect::<Vec<u32>>(), "parts out of order");
        assert_eq!(downloaded, manifest.parts.iter().map(|part| part.stored_bytes).sum::<u64>());
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
