//! The errors of the backup commands. Each message says what failed, on which object, and
//! what to do; `main` prints the first line to stderr.

use std::path::PathBuf;

use pgec2_core::catalog::{CatalogError, TargetError};
use pgec2_core::envelope::EnvelopeError;
use pgec2_core::identity::IdentityError;
use pgec2_core::retention::RetentionError;
use pgec2_core::storage::StorageError;

use super::pack::PackError;
use super::refusal::Refusal;
use super::walk::WalkError;
use crate::config::ConfigError;
use crate::postgres::PostgresError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Config(Box<ConfigError>),
    #[error(transparent)]
    Postgres(Box<PostgresError>),
    #[error(transparent)]
    Catalog(Box<CatalogError>),
    #[error("refusing to restore: {0}")]
    Target(#[from] TargetError),
    #[error(transparent)]
    Retention(Box<RetentionError>),
    #[error(transparent)]
    Identity(Box<IdentityError>),
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("failed to {action} {key}: {source}")]
    Storage { action: &'static str, key: String, source: Box<StorageError> },
    #[error("failed to compress {object}: {source}")]
    Seal { object: String, source: EnvelopeError },
    #[error("failed to {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    /// Restored data could not be made durable (a sync failed: the disk did not keep what was
    /// written).
    #[error(
        "failed to make the restore durable: syncing {what} failed: {source}; the restored files are removed: check \
         the disk (dmesg) and restore again"
    )]
    Durability { what: String, source: std::io::Error },
    /// A backup's parts could not be made durable (a sync of the store failed): nothing was
    /// committed.
    #[error(
        "failed to make the parts of backup {backup} durable in {store}: {source}; the backup was not committed: \
         check the repository's disk (dmesg), then take a new backup (`delete garbage` removes this one's parts)"
    )]
    NotDurable { backup: String, store: String, source: Box<StorageError> },
    /// A precondition is not met: the refusal says what, where and what to do.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Stored data does not match its checksum or its manifest.
    #[error("backup {backup} is damaged: {detail}; restore from another backup")]
    Damaged { backup: String, detail: String },
    #[error("failed to restore from backup {backup}: cannot decrypt {object}: {error}; nothing was written")]
    Undecryptable { backup: String, object: String, error: pgec2_core::encryption::KeyError },
    #[error(transparent)]
    Walg(#[from] pgec2_core::walg::WalgError),
    #[error(transparent)]
    Incremental(#[from] super::increment::IncrementalError),
    #[error("an internal task failed: {0}")]
    Task(String),
}

impl BackupError {
    /// Maps a storage error on `key` during `action`.
    pub fn storage(action: &'static str, key: &str) -> impl FnOnce(StorageError) -> Self {
        let key = key.to_string();
        move |source| BackupError::Storage { action, key, source: Box::new(source) }
    }

    /// Maps an I/O error on `path` during `action`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BackupError::Io { action, path, source }
    }
}

macro_rules! boxed_from {
    ($($source:ty => $variant:ident),* $(,)?) => {
        $(impl From<$source> for BackupError {
            fn from(error: $source) -> Self {
                BackupError::$variant(Box::new(error))
            }
        })*
    };
}

boxed_from!(
    ConfigError => Config,
    PostgresError => Postgres,
    CatalogError => Catalog,
    RetentionError => Retention,
    IdentityError => Identity,
);
