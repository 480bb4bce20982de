//! Putting streamed WAL into the archive.
//!
//! - A completed segment goes through `wal-push`'s own code ([`crate::wal::push`]): the same key,
//!   identity and timeline guards, and create-only write, so whichever of archive_command and
//!   wal-receive stores a segment first wins and the other finds identical content.
//! - The segment being filled is stored as `<segment>.partial`, replaced as it grows. A stored
//!   partial is only ever replaced by a longer copy that begins with its content: a partial that
//!   is not a prefix of this stream (another cluster or timeline) is refused, never overwritten.
//!   Its envelope header records the content length, so the segment's start plus that length
//!   is the streamed end restores check LSN targets against; nothing else needs recording.

use std::path::Path;

use bytes::Bytes;
use pgec2_core::compression::Compression;
use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::storage::PutMode;
use pgec2_core::wal::WalFileName;

use super::error::ReceiveError;
use crate::wal::{self, PushOutcome, WalError};

/// Where the archive and the cluster are, for every upload.
pub struct Target {
    pub archive: Archive,
    pub compression: Compression,
    /// The cluster's data directory when this host has it (owner and timeline caches, history).
    pub data_dir: Option<std::path::PathBuf>,
}

/// Archives the completed segment at `path` exactly as `wal-push` would.
pub async fn push_segment(target: &Target, path: &Path) -> Result<PushOutcome, ReceiveError> {
    Ok(wal::push(&target.archive, target.compression, path, target.data_dir.as_deref()).await?)
}

/// What is known of the stored partial of the segment being filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredPartial {
    /// Bytes of the segment the stored partial holds (0: none stored).
    pub len: u64,
}

/// Stores `content` (the first bytes of the segment `segment_name`, read from `path`) as
/// `<segment>.partial`. `known` is `None` until the stored partial was looked at once in this
/// run. Returns the length now stored (unchanged when the store already holds more).
pub async fn push_partial(
    target: &Target,
    segment_name: &str,
    path: &Path,
    content: Vec<u8>,
    known: Option<StoredPartial>,
) -> Result<StoredPartial, ReceiveError> {
    let name = WalFileName::Partial { timeline: timeline_of(segment_name), segment_name: segment_name.to_string() };
    let file = name.file_name();
    let data_dir = target.data_dir.as_deref();
    let first_page = &content[..content.len().min(8192)];
    let claimant = wal::push::claimant_for(&name, path, first_page, data_dir).await?;
    wal::owner::ensure(&target.archive, &claimant, data_dir, &file).await?;
    wal::timeline_guard::ensure(&target.archive, &name, path, data_dir).await?;
    let key = target.archive.layout.wal_file(&file).map_err(|error| WalError::storage("archive", &file, error))?;
    let stored = match known {
        Some(known) => known,
        None => stored_partial(target, &key, &file, &content).await?,
    };
    if stored.len >= content.len() as u64 {
        return Ok(stored);
    }
    let len = content.len() as u64;
    let (compression, keyring) = (target.compression, target.archive.keyring.clone());
    let sealed = tokio::task::spawn_blocking(move || envelope::seal_with(&content, compression, &keyring))
        .await
        .map_err(|error| WalError::Task(error.to_string()))?
        .map_err(|error| WalError::Seal { file: file.clone(), error })?;
    target
        .archive
        .storage
        .put(&key, Bytes::from(sealed.0), PutMode::Overwrite)
        .await
        .map_err(|error| WalError::storage("archive", &file, error))?;
    Ok(StoredPartial { len })
}

/// The stored partial's length, after checking that it is a prefix of `content` (when it is
/// longer than `content`, that `content` is a prefix of it cannot be checked without reading
/// it whole; it is then left alone until this stream catches up with it).
async fn stored_partial(
    target: &Target,
    key: &pgec2_core::storage::ObjectKey,
    file: &str,
    content: &[u8],
) -> Result<StoredPartial, ReceiveError> {
    let stored = match target.archive.storage.get(key).await {
        Ok(stored) => stored,
        Err(error) if error.is_not_found() => return Ok(StoredPartial::default()),
        Err(error) => return Err(WalError::storage("archive", file, error).into()),
    };
    let header = *envelope::open_reader_with(&stored, &target.archive.keyring)
        .map_err(|error| WalError::stored_copy_unreadable(file.to_string(), key.to_string(), error))?
        .header();
    let Ok(stored_len) = usize::try_from(header.content_len) else {
        return Err(ReceiveError::PartialDiverged { key: key.to_string() });
    };
    if stored_len <= content.len() && blake3::hash(&content[..stored_len]).as_bytes() != &header.content_hash {
        return Err(ReceiveError::PartialDiverged { key: key.to_string() });
    }
    Ok(StoredPartial { len: header.content_len })
}

fn timeline_of(segment_name: &str) -> u32 {
    segment_name.get(..8).and_then(|text| u32::from_str_radix(text, 16).ok()).unwrap_or(1)
}
