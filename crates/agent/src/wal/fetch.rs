//! Restoring one WAL file: download, verify, decompress, write atomically.

use std::io::Write;
use std::path::PathBuf;

use pgec2_core::envelope::{self, EnvelopeError, Header};
use pgec2_core::layout::Archive;
use pgec2_core::storage::ObjectKey;
use pgec2_core::wal::WalFileName;

use super::durable;
use super::error::{WalError, blocking};
use super::prefetch::START_LEN;

/// Bytes decompressed and written at a time.
const WRITE_PIECE: usize = 256 * 1024;

/// Downloads `name` and returns its verified, decompressed content; `None` when the archive does
/// not have it.
pub async fn download(archive: &Archive, name: &WalFileName) -> Result<Option<Vec<u8>>, WalError> {
    let file = name.file_name();
    let Some((key, stored)) = get_stored(archive, &file).await? else { return Ok(None) };
    let (owned_key, keyring) = (key.to_string(), archive.keyring.clone());
    let content = blocking(move || {
        envelope::open_with(&stored, &keyring)
            .map(|(content, _)| content)
            .map_err(|error| WalError::unreadable(file, owned_key, error))
    })
    .await?;
    Ok(Some(content))
}

/// Downloads `name` and decompresses it straight into a temp file next to the path `dest`
/// chooses (from the object's header), verifying it as it goes; only verified, fsynced content
/// is renamed into place. Returns the first [`START_LEN`] bytes of the content; `None` when the
/// archive does not have it. The content is never held in memory whole.
pub async fn download_to(
    archive: &Archive,
    name: &WalFileName,
    dest: impl FnOnce(&Header) -> PathBuf + Send + 'static,
) -> Result<Option<Vec<u8>>, WalError> {
    let file = name.file_name();
    let Some((key, stored)) = get_stored(archive, &file).await? else { return Ok(None) };
    let (key, keyring) = (key.to_string(), archive.keyring.clone());
    blocking(move || {
        let corrupt = |error| WalError::unreadable(file.clone(), key.clone(), error);
        let reader = envelope::open_reader_with(&stored, &keyring).map_err(corrupt)?;
        let dest = dest(reader.header());
        let mut failure: Option<EnvelopeError> = None;
        let mut start = Vec::with_capacity(START_LEN);
        durable::write_atomically_with(&dest, |out| {
            stream_content(reader, out, &mut start).map_err(|error| match error {
                StreamError::Write(error) => error,
                StreamError::Content(error) => {
                    failure = Some(error);
                    std::io::Error::other("the archived object did not verify")
                }
            })
        })
        .map_err(|error| match failure.take() {
            Some(error) => corrupt(error),
            None => WalError::Write { path: dest.clone(), error },
        })?;
        Ok(Some(start))
    })
    .await
}

enum StreamError {
    Write(std::io::Error),
    Content(EnvelopeError),
}

/// Writes the content `reader` yields to `out`, keeping its start, and verifies it to the end.
fn stream_content(
    mut reader: envelope::ContentReader<'_>,
    out: &mut std::fs::File,
    start: &mut Vec<u8>,
) -> Result<(), StreamError> {
    let mut piece = vec![0u8; WRITE_PIECE];
    loop {
        let read = reader.read_content(&mut piece).map_err(StreamError::Content)?;
        if read == 0 {
            break;
        }
        let wanted = START_LEN.saturating_sub(start.len()).min(read);
        start.extend_from_slice(&piece[..wanted]);
        out.write_all(&piece[..read]).map_err(StreamError::Write)?;
    }
    reader.finish().map(|_| ()).map_err(StreamError::Content)
}

/// The stored bytes of `file`; `None` when the archive does not have it.
async fn get_stored(archive: &Archive, file: &str) -> Result<Option<(ObjectKey, bytes::Bytes)>, WalError> {
    let storage_error = |error| WalError::storage("fetch", file, error);
    let key = archive.layout.wal_file(file).map_err(storage_error)?;
    match archive.storage.get(&key).await {
        Ok(stored) => Ok(Some((key, stored))),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(storage_error(error)),
    }
}
