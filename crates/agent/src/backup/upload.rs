//! The copy pipeline of backup-push: one blocking reader packs files into parts (see
//! [`super::pack`]) and hands them over a channel of one slot to `concurrency` workers that
//! compress, checksum and upload them.
//!
//! Memory is a fixed set of buffers, allocated once and reused for every part: per worker, one
//! content buffer (given back to the reader as soon as the part is compressed, before the
//! upload), one compression context and one output buffer. Nothing is allocated per part, so the
//! allocator does not pile up freed multi-megabyte buffers between threads.

use std::sync::Mutex;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use pgec2_core::compression::Compression;
use pgec2_core::envelope::Sealer;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::PartInfo;
use tokio::sync::mpsc::Sender;

use super::BackupError;
use super::pack::{Packed, PackedPart, pack_files};
use super::walk::SourceFile;

/// Content bytes per part. Large enough that per-object overhead stays small on S3 (about 500
/// requests per GiB of data), small enough that the parts in memory stay modest: backup-push
/// holds two buffers of this size per worker, backup-fetch one stored part per download slot
/// (peak memory of both: docs/benchmarks.md). Restores read any part size.
pub const PART_SIZE: usize = 2 * 1024 * 1024;

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
        let concurrency = self.concurrency.max(1);
        // One content buffer per worker: a worker gives its buffer back once the part is
        // compressed, and the reader refills it (a few milliseconds from the page cache) while
        // the worker uploads, so the next part is ready when the worker is.
        let buffer_count = concurrency;
        let (free_sender, mut free_receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(buffer_count);
        for _ in 0..buffer_count {
            // Capacity is address space only: pages are touched (and count) as parts fill them.
            let _ = free_sender.try_send(Vec::with_capacity(self.part_size));
        }
        let (sender, receiver) = tokio::sync::mpsc::channel::<PackedPart>(1);
        let part_size = self.part_size;
        let reader = tokio::task::spawn_blocking(move || {
            pack_files(files, part_size, || free_receiver.blocking_recv(), |part| sender.blocking_send(part).is_ok())
        });
        let incoming = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|part| (part, receiver))
        });
        let workers = Workers { free: free_sender, idle: Mutex::new(Vec::with_capacity(concurrency)) };
        let uploaded: Result<Vec<PartInfo>, BackupError> =
            incoming.map(|part| self.upload(part, &workers)).buffer_unordered(concurrency).try_collect().await;
        // No more buffers come back: a reader waiting for one stops with `Cancelled`.
        drop(workers);
        let packed = reader.await.map_err(|error| BackupError::Task(error.to_string()))?;
        match (packed, uploaded) {
            // An upload failed: that is the cause (the reader then stops with `Cancelled`).
            (_, Err(error)) => Err(error),
            (Err(error), Ok(_)) => Err(BackupError::Pack(error)),
            (Ok(packed), Ok(mut parts)) => {
                parts.sort_by_key(|part| part.index);
                Ok((packed, parts))
            }
        }
    }

    /// Compresses and stores one part (never overwriting an object; an identical one is ours).
    async fn upload(&self, part: PackedPart, workers: &Workers) -> Result<PartInfo, BackupError> {
        let index = part.index;
        let content_bytes = part.content.len() as u64;
        let mut state = workers.take(self.compression, index)?;
        let (content, state, sealed) = tokio::task::spawn_blocking(move || {
            let sealed = state.sealer.seal_into(&part.content, &mut state.out);
            (part.content, state, sealed)
        })
        .await
        .map_err(|error| BackupError::Task(error.to_string()))?;
        // The content buffer goes back to the reader now, while this part uploads.
        let _ = workers.free.try_send(content);
        let header = sealed.map_err(|source| BackupError::Seal { object: format!("part {index}"), source })?;
        let key =
            self.archive.layout.backup_part(&self.backup, index).map_err(BackupError::storage("name", &self.backup))?;
        let WorkerState { sealer, out } = state;
        let stored_bytes = out.len() as u64;
        let body = Bytes::from(out);
        // A create that is safe to repeat: a part an earlier attempt stored is recognised as ours.
        self.archive
            .storage
            .put_new_or_identical(&key, body.clone())
            .await
            .map_err(BackupError::storage("upload", key.as_str()))?;
        // The store has let go of the body: its buffer serves the next part.
        workers.give_back(WorkerState { sealer, out: body.try_into_mut().map(Vec::from).unwrap_or_default() });
        tracing::debug!(part = index, content_bytes, stored_bytes, "uploaded part");
        Ok(PartInfo { index, content_bytes, stored_bytes, checksum: header.content_hash_hex() })
    }
}

/// What the upload workers share: the way back for content buffers, and idle compression
/// contexts with their output buffers.
struct Workers {
    free: Sender<Vec<u8>>,
    idle: Mutex<Vec<WorkerState>>,
}

/// One worker's compression context and output buffer.
struct WorkerState {
    sealer: Sealer,
    out: Vec<u8>,
}

impl Workers {
    fn take(&self, compression: Compression, index: u32) -> Result<WorkerState, BackupError> {
        if let Some(state) = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop() {
            return Ok(state);
        }
        let sealer =
            Sealer::new(compression).map_err(|source| BackupError::Seal { object: format!("part {index}"), source })?;
        Ok(WorkerState { sealer, out: Vec::new() })
    }

    fn give_back(&self, state: WorkerState) {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(state);
    }
}
