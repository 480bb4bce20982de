//! pgec2-agent: the program on each PostgreSQL host.
//!
//! - [`wal`]: `wal-push` / `wal-fetch`, the archive_command and restore_command;
//! - [`wal_receive`]: `wal-receive`, streaming WAL from a replication slot into the archive;
//! - [`backup`]: base backups, restores with point-in-time recovery, listing, pinning,
//!   retention, verification;
//! - [`host`]: `host apply`, converging a machine to a `HostSpec`;
//! - [`lease`]: the lease a restore holds on its archive, taken by `backup-fetch` and renewed
//!   by `wal-fetch`;
//! - [`archive_status`]: the health of continuous archiving, read by the operator;
//! - [`config`]: the TOML file and environment overrides;
//! - [`kms`]: KMS keys for client-side encryption;
//! - [`walg`]: reading a wal-g archive beside pgec2's (`storage.walg_prefix`), and `import-check`;
//! - [`output`]: the one JSON document a `--json` command prints on stdout.

pub mod archive_status;
pub mod backup;
pub mod cli;
pub mod config;
pub mod drill_check;
pub mod host;
pub mod kms;
pub mod lease;
pub mod logging;
pub mod output;
pub mod postgres;
pub mod wal;
pub mod wal_receive;
pub mod walg;

/// Raised by commands whose implementation has not landed yet.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not available in this build of pgec2-agent")]
pub struct NotAvailable(pub &'static str);
