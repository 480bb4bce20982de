//! Restoring one WAL file: download, verify, decompress, write atomically.

use std::path::Path;

use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::wal::WalFileName;

use super::durable;
use super::error::{WalError, blocking};

/// Downloads `name` and returns its verified, decompressed content; `None` when the archive does
/// not have it.
pub async fn download(archive: &Archive, name: &WalFileName) -> Result<Option<Vec<u8>>, WalError> {
    let file = name.file_name();
    let storage_error = |error| WalError::storage("fetch", &file, error);
    let key = archive.layout.wal_file(&file).map_err(storage_error)?;
    let stored = match archive.storage.get(&key).await {
        Ok(stored) => stored,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(storage_error(error)),
    };
    let (owned_file, owned_key) = (file.clone(), key.to_string());
    let content = blocking(move || {
        envelope::open(&stored).map(|(content, _)| content).map_err(|error| WalError::Corrupt {
            file: owned_file,
            key: owned_key,
            error,
        })
    })
    .await?;
    Ok(Some(content))
}

/// Writes restored content to `dest` through a temp file in the same directory.
pub async fn write_destination(dest: &Path, content: Vec<u8>) -> Result<Vec<u8>, WalError> {
    let dest = dest.to_path_buf();
    blocking(move || {
        durable::write_atomically(&dest, &content).map_err(|error| WalError::Write { path: dest.clone(), error })?;
        Ok(content)
    })
    .await
}
