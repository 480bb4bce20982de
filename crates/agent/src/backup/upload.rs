//! The copy pipeline of backup-push: one blocking reader packs files into parts (see
//! [`super::pack`]) and hands them to `concurrency` compression workers; sealed parts go on to
//! up to `concurrency` uploads in flight (`concurrency` = [`parts_in_flight`]: fewer for parts
//! larger than [`PART_SIZE`]). Compressing and uploading are separate stages that run side by
//! side ([`super::two_stages`]), so workers compress the next parts while earlier ones are being
//! stored (S3 waits for the network, a local store writes): all cores compress while the uploads
//! overlap, even at a concurrency of one.
//!
//! Parts are stored with deferred durability ([`Storage::put_deferred`]: on a local directory, no
//! fsync per part) and made durable together by [`sync_parts`], which the backup awaits before it
//! writes the manifest that refers to them.
//!
//! Memory is a fixed set of buffers, allocated once and reused for every part: `concurrency + 1`
//! content buffers (one is given back to the reader as soon as its part is compressed, so the
//! reader fills the next one meanwhile), `concurrency` compression contexts and at most
//! `2 × concurrency` output buffers (compressing, waiting for an upload slot, uploading). Nothing
//! is allocated per part, so the allocator does not pile up freed multi-megabyte buffers between
//! threads.

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use pgec2_core::compression::Compression;
use pgec2_core::encryption::Keyring;
use pgec2_core::envelope::{Header, Sealer};
use pgec2_core::layout::Archive;
use pgec2_core::manifest::PartInfo;
use tokio::sync::mpsc::Sender;

use super::BackupError;
use super::buffer_pool::BufferPool;
use super::pack::{Packed, PackedPart, pack_files};
use super::stages::{Stage, StageTimes};
use super::two_stages::in_two_stages;
use super::walk::SourceFile;

/// Content bytes per part on a local directory (and the unit of the memory bounds below): large
/// enough that per-object overhead stays small (about 500 objects per GiB of data), small enough
/// that the parts in memory stay modest. Restores read any part size.
pub const PART_SIZE: usize = 2 * 1024 * 1024;

/// Content bytes per part on S3, where every part is a request: half the requests of
/// [`PART_SIZE`]; restores from S3 took 0.8 × the time of 2 MiB parts (docs/benchmarks.md,
/// "Round nine: part size on S3").
pub const S3_PART_SIZE: usize = 4 * 1024 * 1024;

/// Largest part size `backup.part_size_mib` accepts. Fewer parts are in flight when they are
/// larger (below, and [`super::restore_buffers`]), but at least two in each stage: at 8 MiB a
/// backup of incompressible data peaked at 69 MB, past the 64 MB budget (docs/benchmarks.md).
pub const MAX_PART_SIZE_MIB: usize = 4;

/// Parts compressing or uploading at once: `concurrency`, fewer when parts are larger than
/// [`PART_SIZE`], so that about the same bytes are in flight whatever the part size; at least
/// two unless `concurrency` asks for one (compression on two threads, or one part uploading
/// while the next compresses).
pub fn parts_in_flight(concurrency: usize, part_size: usize) -> usize {
    let concurrency = concurrency.max(1);
    let budget = concurrency.saturating_mul(PART_SIZE) / part_size.max(1);
    budget.clamp(concurrency.min(2), concurrency)
}

/// How to write parts.
#[derive(Clone, Debug)]
pub struct PartWriter {
    pub archive: Archive,
    pub backup: String,
    pub compression: Compression,
    pub concurrency: usize,
    pub part_size: usize,
}

impl PartWriter {
    /// Copies `files` into the backup's parts; returns the file entries and the parts by index.
    pub async fn copy(&self, files: Vec<SourceFile>) -> Result<(Packed, Vec<PartInfo>), BackupError> {
        let started = Instant::now();
        let concurrency = parts_in_flight(self.concurrency, self.part_size);
        let times = std::sync::Arc::new(StageTimes::default());
        let buffer_count = concurrency + 1;
        let (free_sender, mut free_receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(buffer_count);
        for _ in 0..buffer_count {
            // Capacity is address space only: pages are touched (and count) as parts fill them.
            let _ = free_sender.try_send(Vec::with_capacity(self.part_size));
        }
        let (sender, receiver) = tokio::sync::mpsc::channel::<PackedPart>(1);
        let part_size = self.part_size;
        let reader_times = times.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let times = &*reader_times;
            pack_files(
                files,
                part_size,
                times,
                || times.time(Stage::ReaderWait, || free_receiver.blocking_recv()),
                |part| times.time(Stage::ReaderWait, || sender.blocking_send(part).is_ok()),
            )
        });
        let incoming = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|part| (part, receiver))
        });
        let workers = Workers { free: free_sender, idle: Mutex::new(Vec::new()), outputs: BufferPool::default() };
        // Compression goes on while every upload slot is busy (see [`in_two_stages`]).
        let (compressed, uploaded) = in_two_stages(
            incoming,
            concurrency,
            |part| self.compress(part, &workers, &times),
            |sealed| self.upload(sealed, &workers, &times),
            || BackupError::Task("the uploads stopped".to_string()),
        )
        .await;
        // No more buffers come back: a reader waiting for one stops with `Cancelled`.
        drop(workers);
        let packed = reader.await.map_err(|error| BackupError::Task(error.to_string()))?;
        match (packed, compressed, uploaded) {
            // An upload failed: that is the cause (compression and the reader then stop).
            (_, _, Err(error)) => Err(error),
            // Compression failed: the reader then stops with `Cancelled`.
            (_, Err(error), Ok(_)) => Err(error),
            (Err(error), Ok(()), Ok(_)) => Err(BackupError::Pack(error)),
            (Ok(packed), Ok(()), Ok(mut parts)) => {
                parts.sort_by_key(|part| part.index);
                let content = parts.iter().map(|part| part.content_bytes).sum();
                let stored = parts.iter().map(|part| part.stored_bytes).sum();
                times.log(&self.backup, started.elapsed(), content, stored);
                Ok((packed, parts))
            }
        }
    }

    /// Compresses one part on a blocking thread; its content buffer goes back to the reader.
    async fn compress(
        &self,
        part: PackedPart,
        workers: &Workers,
        times: &std::sync::Arc<StageTimes>,
    ) -> Result<SealedPart, BackupError> {
        let index = part.index;
        let content_bytes = part.content.len() as u64;
        let (mut sealer, mut out) = workers.take(self.compression, &self.archive.keyring, index)?;
        let times = times.clone();
        let (content, sealer, out, sealed) = tokio::task::spawn_blocking(move || {
            let sealed = times.time(Stage::Compress, || sealer.seal_into(&part.content, &mut out));
            (part.content, sealer, out, sealed)
        })
        .await
        .map_err(|error| BackupError::Task(error.to_string()))?;
        // The content buffer goes back to the reader now, while this part uploads.
        let _ = workers.free.try_send(content);
        workers.give_back_sealer(sealer);
        let header = sealed.map_err(|source| BackupError::Seal { object: format!("part {index}"), source })?;
        Ok(SealedPart { index, content_bytes, header, out })
    }

    /// Stores one sealed part (never overwriting an object; an identical one is ours), durable
    /// once [`sync_parts`] returned.
    async fn upload(&self, part: SealedPart, workers: &Workers, times: &StageTimes) -> Result<PartInfo, BackupError> {
        let SealedPart { index, content_bytes, header, out } = part;
        let key =
            self.archive.layout.backup_part(&self.backup, index).map_err(BackupError::storage("name", &self.backup))?;
        let stored_bytes = out.len() as u64;
        let body = Bytes::from(out);
        let started = Instant::now();
        // A create that is safe to repeat: a part an earlier attempt stored is recognised as ours.
        self.archive
            .storage
            .put_deferred(&key, body.clone())
            .await
            .map_err(BackupError::storage("upload", key.as_str()))?;
        times.add(Stage::Upload, started.elapsed());
        // The store has let go of the body: its buffer serves the next part.
        workers.give_back_output(body.try_into_mut().map(Vec::from).unwrap_or_default());
        tracing::debug!(part = index, content_bytes, stored_bytes, "uploaded part");
        Ok(PartInfo { index, content_bytes, stored_bytes, checksum: header.content_hash_hex() })
    }
}

/// Makes every part stored by [`PartWriter::copy`] durable (one `syncfs` on a local directory
/// where the file system allows it; nothing to do on S3); logs how long it took.
pub async fn sync_parts(archive: &Archive, backup: &str) -> Result<(), BackupError> {
    let started = Instant::now();
    archive.storage.sync_deferred().await.map_err(|source| BackupError::NotDurable {
        backup: backup.to_string(),
        store: archive.describe(),
        source: Box::new(source),
    })?;
    tracing::info!(backup, sync_s = %format!("{:.3}", started.elapsed().as_secs_f64()), "parts made durable");
    Ok(())
}

/// A compressed part on its way to the store.
struct SealedPart {
    index: u32,
    content_bytes: u64,
    header: Header,
    out: Vec<u8>,
}

/// What the workers share: the way back for content buffers, idle compression contexts, and
/// output buffers whose upload finished.
struct Workers {
    free: Sender<Vec<u8>>,
    idle: Mutex<Vec<Sealer>>,
    outputs: BufferPool,
}

impl Workers {
    fn take(&self, compression: Compression, keyring: &Keyring, index: u32) -> Result<(Sealer, Vec<u8>), BackupError> {
        let out = self.outputs.take();
        if let Some(sealer) = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop() {
            return Ok((sealer, out));
        }
        // Parts are encrypted when the archive encrypts (each with a data key of its own).
        let sealer = Sealer::with_keyring(compression, keyring.clone())
            .map_err(|source| BackupError::Seal { object: format!("part {index}"), source })?;
        Ok((sealer, out))
    }

    fn give_back_sealer(&self, sealer: Sealer) {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(sealer);
    }

    fn give_back_output(&self, out: Vec<u8>) {
        self.outputs.give_back(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn larger_parts_keep_about_the_same_bytes_in_flight() {
        assert_eq!(parts_in_flight(4, 2 * MIB), 4);
        assert_eq!(parts_in_flight(4, MIB), 4, "smaller parts do not raise the concurrency");
        assert_eq!(parts_in_flight(4, 4 * MIB), 2);
        assert_eq!(parts_in_flight(16, 4 * MIB), 8);
        assert_eq!(parts_in_flight(4, 8 * MIB), 2, "at least two: compressing while uploading");
        assert_eq!(parts_in_flight(1, 8 * MIB), 1, "a concurrency of one is kept");
        assert_eq!(parts_in_flight(0, 2 * MIB), 1);
    }
}
