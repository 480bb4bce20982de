//! The copy pipeline of backup-push: one blocking reader packs files into parts (see
//! [`super::pack`]) and hands them over a channel of one slot to `concurrency` workers that
//! compress, checksum and upload them. At most `concurrency + 2` parts are in memory: one being
//! filled, one waiting, and one per worker.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use pgec2_core::compression::Compression;
use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::PartInfo;
use pgec2_core::storage::PutMode;

use super::BackupError;
use super::pack::{Packed, PackedPart, pack_files};
use super::walk::SourceFile;

/// Content bytes per part. Large enough that per-object overhead is small on S3 (the size of
/// the AWS CLI's multipart chunks), small enough that `concurrency + 2` parts in memory stay
/// modest (peak memory of backup-push and backup-fetch: docs/benchmarks.md).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

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
        let (sender, receiver) = tokio::sync::mpsc::channel::<PackedPart>(1);
        let part_size = self.part_size;
        let reader = tokio::task::spawn_blocking(move || {
            pack_files(files, part_size, |part| sender.blocking_send(part).is_ok())
        });
        let incoming = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|part| (part, receiver))
        });
        let uploaded: Result<Vec<PartInfo>, BackupError> =
            incoming.map(|part| self.upload(part)).buffer_unordered(self.concurrency.max(1)).try_collect().await;
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

    /// Compresses and stores one part (never overwriting an object).
    async fn upload(&self, part: PackedPart) -> Result<PartInfo, BackupError> {
        let index = part.index;
        let content_bytes = part.content.len() as u64;
        let compression = self.compression;
        let (stored, header) = tokio::task::spawn_blocking(move || envelope::seal(&part.content, compression))
            .await
            .map_err(|error| BackupError::Task(error.to_string()))?
            .map_err(|source| BackupError::Seal { object: format!("part {index}"), source })?;
        let key =
            self.archive.layout.backup_part(&self.backup, index).map_err(BackupError::storage("name", &self.backup))?;
        let stored_bytes = stored.len() as u64;
        self.archive
            .storage
            .put(&key, Bytes::from(stored), PutMode::CreateNew)
            .await
            .map_err(BackupError::storage("upload", key.as_str()))?;
        tracing::debug!(part = index, content_bytes, stored_bytes, "uploaded part");
        Ok(PartInfo { index, content_bytes, stored_bytes, checksum: header.content_hash_hex() })
    }
}
