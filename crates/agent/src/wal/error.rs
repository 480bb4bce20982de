//! What can go wrong in `wal-push` and `wal-fetch`; every message is one line naming the file
//! and what to do.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use pgec2_core::encryption::KeyError;
use pgec2_core::envelope::EnvelopeError;
use pgec2_core::identity::IdentityError;
use pgec2_core::storage::StorageError;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{name:?} is not a WAL file name (a segment, .history, .partial or .backup file)")]
    InvalidName { name: String },
    #[error("failed to read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("refusing to archive {}: {reason}", path.display())]
    NotASegment { path: PathBuf, reason: String },
    #[error("cannot tell which cluster {file} belongs to: set PGDATA (postgres.pgdata) to its data directory")]
    NoDataDirectory { file: String },
    #[error("refusing to archive {file}: {error}")]
    Identity { file: String, error: Box<IdentityError> },
    #[error(
        "refusing to overwrite {key} with a different {file}: the archive holds blake3 {stored}, this file is \
         blake3 {local}; archived WAL is never replaced, find out which cluster wrote it"
    )]
    DifferentContent { file: String, key: String, stored: String, local: String },
    #[error(
        "refusing to archive {file} into {archive}: {reason}; a restored copy archives into an archive of its own \
         (backup-fetch --archive-mode)"
    )]
    TimelineConflict { file: String, archive: String, reason: String },
    #[error(
        "failed to archive {file}: the archived copy {key} is corrupt ({error}); it is never overwritten automatically: inspect and remove it by hand"
    )]
    StoredCopyCorrupt { file: String, key: String, error: EnvelopeError },
    #[error("failed to {action} {file}: {error}")]
    Storage { action: &'static str, file: String, error: Box<StorageError> },
    #[error("failed to fetch {file}: the archived object {key} is corrupt: {error}")]
    Corrupt { file: String, key: String, error: EnvelopeError },
    #[error("failed to {action} {file}: cannot decrypt the archived object {key}: {error}")]
    Undecryptable { action: &'static str, file: String, key: String, error: Box<KeyError> },
    #[error("failed to compress {file}: {error}")]
    Seal { file: String, error: EnvelopeError },
    #[error("failed to write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error(
        "{action} of {file} did not finish within {after:?}: the store is slow or unreachable \
         (raise transfer.command_timeout_secs if transfers are just slow)"
    )]
    Timeout { action: &'static str, file: String, after: Duration },
    #[error(
        "cannot tell whether the missing segment is the end of the archive or a hole: {reason}; recovery stops \
         rather than risk ending early: fix the cause and start the server again"
    )]
    HoleCheck { reason: String },
    #[error("failed to fetch {file} from the wal-g archive (storage.walg_prefix): {reason}")]
    Walg { file: String, reason: String },
    #[error("failed to run a blocking task: {0}")]
    Task(String),
}

impl WalError {
    /// A storage failure while `action`ing `file`.
    pub fn storage(action: &'static str, file: &str, error: StorageError) -> Self {
        WalError::Storage { action, file: file.to_string(), error: Box::new(error) }
    }

    /// An archived object could not be read while fetching `file`: undecryptable for want of
    /// its key, or corrupt.
    pub fn unreadable(file: String, key: String, error: EnvelopeError) -> Self {
        match error {
            EnvelopeError::Key(error) => WalError::Undecryptable { action: "fetch", file, key, error: Box::new(error) },
            error => WalError::Corrupt { file, key, error },
        }
    }

    /// Like [`WalError::unreadable`], for the archived copy `wal-push` compares a file with.
    pub fn stored_copy_unreadable(file: String, key: String, error: EnvelopeError) -> Self {
        match error {
            EnvelopeError::Key(error) => {
                WalError::Undecryptable { action: "archive", file, key, error: Box::new(error) }
            }
            error => WalError::StoredCopyCorrupt { file, key, error },
        }
    }

    /// True when the archive simply does not have the file (wal-fetch exits 1, quietly).
    pub fn is_not_found(&self) -> bool {
        matches!(self, WalError::Storage { error, .. } if error.is_not_found())
    }
}

/// Runs blocking filesystem or CPU work off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WalError> + Send + 'static,
) -> Result<T, WalError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| WalError::Task(error.to_string()))?
}
