//! Reading a wal-g archive beside pgec2's own (`storage.walg_prefix`), so a cluster that wal-g
//! archived until now switches to pgec2 without losing its recovery window:
//!
//! - [`restore`]: `backup-fetch` of a wal-g backup;
//! - [`wal`]: `wal-fetch` serving wal-g's WAL when pgec2's archive lacks a file;
//! - [`list`]: wal-g's backups in `backup-list`;
//! - [`check`]: `import-check`, what a wal-g prefix would let pgec2 restore;
//! - [`retention`]: `delete` counting wal-g's backups, deleting them only with `--include-wal-g`.
//!
//! Nothing here writes under the wal-g prefix; only `delete … --include-wal-g` deletes there.

pub mod check;
pub mod list;
pub mod restore;
pub mod retention;
pub mod wal;

use pgec2_core::walg::WalgArchive;

use crate::config::{AgentConfig, ConfigError};

/// The wal-g archive the configuration points at, if any, read with wal-g's libsodium key when
/// one is set (`[walg]`).
pub async fn open(config: &AgentConfig) -> Result<Option<WalgArchive>, ConfigError> {
    let Some(storage) = config.storage.open_walg().await? else { return Ok(None) };
    Ok(Some(WalgArchive::new(storage).with_key(config.walg.libsodium_key()?)))
}
