//! What can go wrong in `wal-receive`; each message is one line naming the object and what to do.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::wal::WalError;

use super::message::MalformedMessage;

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "failed to connect for replication to {target}: {reason}; check the server is up and pg_hba.conf allows a replication connection"
    )]
    Connect { target: String, reason: String },
    #[error("replication command {command} failed on {target}: {reason}")]
    Command { command: String, target: String, reason: String },
    #[error("the replication stream from {target} broke: {reason}")]
    Stream { target: String, reason: String },
    #[error("no message from {target} for {seconds} s (not even a keepalive): the connection is taken for dead")]
    Silent { target: String, seconds: u64 },
    #[error(transparent)]
    Malformed(#[from] MalformedMessage),
    #[error("the server sent WAL at {got} while {expected} was expected next: the stream is not contiguous")]
    NotContiguous { expected: String, got: String },
    #[error("failed to write the spool file {}: {error}", path.display())]
    Spool { path: PathBuf, error: std::io::Error },
    #[error("failed to archive streamed WAL: {0}")]
    Archive(#[from] WalError),
    #[error(
        "refusing to replace {key}: the archive holds a partial segment that is not a prefix of what this server \
         streams (another cluster or timeline wrote it); find out who wrote it before streaming into this archive"
    )]
    PartialDiverged { key: String },
    #[error("cannot read the slot's state over SQL: {0}")]
    SlotQuery(String),
}

impl ReceiveError {
    /// Errors after which the receiver reconnects and resumes from the slot; the others stop it
    /// (the archive refuses the WAL, or the configuration is wrong).
    pub fn is_transient(&self) -> bool {
        match self {
            ReceiveError::Connect { .. }
            | ReceiveError::Command { .. }
            | ReceiveError::Stream { .. }
            | ReceiveError::Silent { .. }
            | ReceiveError::Malformed(_)
            | ReceiveError::NotContiguous { .. }
            | ReceiveError::Spool { .. }
            | ReceiveError::SlotQuery(_) => true,
            ReceiveError::Archive(error) => !matches!(
                error,
                WalError::DifferentContent { .. }
                    | WalError::Identity { .. }
                    | WalError::TimelineConflict { .. }
                    | WalError::StoredCopyCorrupt { .. }
                    | WalError::Config(_)
            ),
            ReceiveError::Config(_) | ReceiveError::PartialDiverged { .. } => false,
        }
    }
}
