//! `wal-fetch` from the wal-g archive: a file pgec2's archive does not have (WAL that wal-g
//! pushed before the switch), decrypted when wal-g encrypted it, decompressed and written
//! atomically: a wrong key or a damaged object leaves nothing at the destination.

use std::io::Read;
use std::path::{Path, PathBuf};

use pgec2_core::walg::{WalgArchive, WalgError};

use crate::wal::WalError;
use crate::wal::durable;
use crate::wal::prefetch::START_LEN;

/// Writes wal-g's copy of `file` to `dest` and returns its first [`START_LEN`] bytes; `None`
/// when wal-g did not archive it either.
pub async fn fetch(walg: &WalgArchive, file: &str, dest: &Path) -> Result<Option<Vec<u8>>, WalError> {
    let walg_error = |error: WalgError| WalError::Walg { file: file.to_string(), reason: error.to_string() };
    let Some(key) = walg.find_wal(file).await.map_err(walg_error)? else { return Ok(None) };
    let stored = walg.get(&key).await.map_err(walg_error)?;
    let content = walg.content(&key);
    let (file, dest): (String, PathBuf) = (file.to_string(), dest.to_path_buf());
    let task = tokio::task::spawn_blocking(move || {
        let unreadable = |error: WalgError| WalError::Walg { file: file.clone(), reason: error.to_string() };
        let mut decoder = content.open(&stored[..]).map_err(unreadable)?;
        let mut start = Vec::with_capacity(START_LEN);
        let mut failed_read = None;
        durable::write_atomically_with(&dest, |out| {
            let mut piece = vec![0u8; 256 * 1024];
            loop {
                let read = decoder.read(&mut piece).inspect_err(|error| failed_read = Some(content.explain(error)))?;
                if read == 0 {
                    return Ok(());
                }
                let wanted = START_LEN.saturating_sub(start.len()).min(read);
                start.extend_from_slice(&piece[..wanted]);
                std::io::Write::write_all(out, &piece[..read])?;
            }
        })
        .map_err(|error| match failed_read.take() {
            Some(failure) => unreadable(failure),
            None => WalError::Write { path: dest.clone(), error },
        })?;
        Ok(Some(start))
    });
    task.await.map_err(|error| WalError::Task(error.to_string()))?
}
