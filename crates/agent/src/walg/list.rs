//! wal-g's backups as `backup-list` shows them, beside pgec2's, marked `"format": "wal-g"`.

use chrono::{DateTime, Utc};
use pgec2_core::walg::WalgArchive;
use serde::Serialize;

use crate::backup::BackupError;

/// One wal-g backup in `backup-list --json`.
#[derive(Clone, Debug, Serialize)]
pub struct ListedWalgBackup {
    pub name: String,
    pub format: &'static str,
    pub start_time: Option<DateTime<Utc>>,
    pub finish_time: Option<DateTime<Utc>>,
    pub timeline: u32,
    pub pg_version: u32,
    pub data_bytes: u64,
    pub stored_bytes: u64,
    pub permanent: bool,
    /// Set for a delta backup (which pgec2 does not restore).
    pub increment_from: Option<String>,
}

/// The wal-g archive's finished backups, oldest first.
pub async fn backups(walg: &WalgArchive) -> Result<Vec<ListedWalgBackup>, BackupError> {
    Ok(walg
        .backups()
        .await?
        .into_iter()
        .map(|backup| ListedWalgBackup {
            timeline: backup.timeline(),
            format: "wal-g",
            start_time: backup.sentinel.start_time,
            finish_time: backup.sentinel.finish_time,
            pg_version: backup.sentinel.pg_version,
            data_bytes: backup.sentinel.uncompressed_size,
            stored_bytes: backup.sentinel.compressed_size,
            permanent: backup.sentinel.permanent,
            increment_from: backup.sentinel.increment_from,
            name: backup.name,
        })
        .collect())
}
