//! `wal-receive`: WAL streaming into the archive, so the recovery point trails the server by
//! seconds instead of `archive_timeout`.
//!
//! ```text
//!  PostgreSQL ──START_REPLICATION SLOT s PHYSICAL──▶ source.rs (pg_walstream + message.rs)
//!                                                       │ XLogData 'w'
//!                                                       ▼
//!                                 spool.rs  <spool>/<segment>.partial ──full──▶ <segment>
//!                                   │ every --partial-interval                   │
//!                                   ▼                                            ▼
//!                 archive.rs  wal/<segment>.partial (replaced      wal/<segment> through wal-push's
//!                             only by a longer copy of itself)     own code (create-only; first wins)
//!                                   └──────────── durable ──────────────┘
//!                                                   ▼
//!                   standby status update: flush = archived position (the slot keeps the rest)
//! ```
//!
//! Every fault (server restart, network, store) ends the session; the receiver connects again
//! after a back-off and resumes from the slot, at the start of the segment holding the slot's
//! position, so nothing acknowledged is ever missing from the archive. Errors that retrying
//! cannot fix (the archive belongs to another cluster, a segment differs from the archived one)
//! stop it. `status.json` in the spool says where it stands ([`status`]).

use std::process::ExitCode;
use std::time::Duration;

use pgec2_core::backoff::Backoff;

use crate::cli::WalReceiveArgs;
use crate::config::AgentConfig;

mod archive;
mod bridge;
mod error;
pub mod message;
mod session;
mod source;
mod spool;
pub mod status;
pub mod tail;

pub use error::ReceiveError;

/// The pause before the first connection attempt after a fault, doubling while attempts fail
/// without streaming anything, up to 30 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// `wal-receive`: streams until interrupted (SIGINT/SIGTERM) or an error retrying cannot fix.
pub async fn command(config_path: Option<&std::path::Path>, args: WalReceiveArgs) -> Result<ExitCode, ReceiveError> {
    if args.status {
        return Ok(print_status(&args));
    }
    let config = AgentConfig::load(config_path)?;
    let target = archive::Target {
        archive: config.storage().await?,
        compression: config.compression,
        data_dir: config.pgdata().map(std::path::Path::to_path_buf),
    };
    let mut status = status::StatusFile::new(&args.spool, &args.slot);
    let mut reconnects = RECONNECT.retries();
    loop {
        let mut progressed = false;
        let outcome = tokio::select! {
            outcome = session::run(&config, &args, &target, &mut status, &mut progressed) => outcome,
            _ = shutdown_signal() => {
                status.status.state = "stopped".into();
                status.write();
                return Ok(ExitCode::SUCCESS);
            }
        };
        let Err(error) = outcome else { continue };
        if !error.is_transient() {
            status.failed("stopped", &error);
            status.write();
            return Err(error);
        }
        if progressed {
            reconnects.reset();
        }
        let pause = reconnects.next_delay();
        tracing::warn!(%error, retry_in_s = pause.as_secs(), "wal-receive: streaming interrupted, resuming from the slot");
        status.failed("reconnecting", &error);
        status.write();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown_signal() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else { return std::future::pending().await };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// `wal-receive --status [--json]`: exit 0 when streaming, 1 otherwise, 2 without a status.
fn print_status(args: &WalReceiveArgs) -> ExitCode {
    let status = match status::read(&args.spool) {
        Ok(status) => status,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        if let Err(error) = crate::output::print_json(&status) {
            eprintln!("error: cannot print the status: {error}");
            return ExitCode::from(2);
        }
    } else {
        let lsn = |lsn: Option<pgec2_core::wal::Lsn>| lsn.map(|lsn| lsn.to_string()).unwrap_or_else(|| "-".into());
        println!("state:     {} (slot {})", status.state, status.slot);
        println!("server:    {}", lsn(status.server_lsn));
        println!("archived:  {} (lag {} bytes)", lsn(status.archived_lsn), status.lag_bytes.unwrap_or_default());
        for warning in &status.warnings {
            println!("warning:   {}: {}", warning.kind, warning.message);
        }
        if let Some(error) = &status.last_error {
            println!("last error: {error}");
        }
    }
    if status.state == "streaming" { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
