//! `archive-status`: the state of the server's continuous archiving, as the operator's health
//! check and a person on the host read it, with the holes the archive queue cap made
//! (`archive_holes` in the JSON, `archiving: HOLE` first in the text; see [`queue_cap`]). Exit 0 whenever the state could be read, healthy or
//! not; the report says which.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pgec2_core::archiver::{self, ArchiveHealth, ArchiverStatus, LagThresholds};

use crate::cli::JsonArgs;
use crate::config::{AgentConfig, ConfigError};
use crate::postgres::{self, PostgresError};
use crate::wal::queue_cap;

/// Failures of `archive-status`.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveStatusError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error("failed to render the archiver status as JSON: {0}")]
    Render(#[from] serde_json::Error),
}

/// Prints the archiver status (JSON with `--json`).
pub async fn command(config_path: Option<&Path>, args: JsonArgs) -> Result<ExitCode, ArchiveStatusError> {
    let config = AgentConfig::load(config_path)?;
    let client = postgres::connect(&config.postgres).await?;
    let mut status = postgres::archiver::status(&client).await?;
    let data_dir = match config.pgdata() {
        Some(dir) => Some(dir.to_path_buf()),
        None => data_directory(&client).await,
    };
    status.archive_holes = data_dir.and_then(|dir| queue_cap::holes(&dir.join("pg_wal")));
    status.stream = streaming_status(&config);
    if args.json {
        println!("{}", crate::output::json(&status)?);
    } else {
        if let Some(holes) = &status.archive_holes {
            println!("archiving: HOLE: {}", holes.describe());
        }
        println!("{}", render_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// The state of `wal-receive` when the host runs it (its `status.json` in its spool: the
/// configured one, else the ec2 service's).
fn streaming_status(config: &AgentConfig) -> Option<pgec2_core::stream_status::StreamStatus> {
    let default = Path::new(pgec2_core::host_spec::EC2_WAL_RECEIVE_SPOOL);
    let spool = config.postgres.wal_receive_spool.as_deref().unwrap_or(default);
    spool
        .join(crate::wal_receive::status::STATUS_FILE)
        .exists()
        .then(|| crate::wal_receive::status::read(spool).ok())
        .flatten()
}

/// The server's data directory, when the connection may read it.
async fn data_directory(client: &tokio_postgres::Client) -> Option<PathBuf> {
    let query = client.query_one("SELECT current_setting('data_directory')", &[]);
    let row = tokio::time::timeout(std::time::Duration::from_secs(10), query).await.ok()?.ok()?;
    row.try_get::<_, String>(0).ok().map(PathBuf::from)
}

/// The human-readable report.
pub fn render_text(status: &ArchiverStatus) -> String {
    // The operator applies its own thresholds to the JSON.
    let health = archiver::assess(status, &LagThresholds::default());
    let verdict = match health {
        ArchiveHealth::Healthy => "healthy",
        ArchiveHealth::InRecovery => "in recovery",
        ArchiveHealth::Failing { .. } => "FAILING",
        ArchiveHealth::Lagging { .. } => "LAGGING",
    };
    format!(
        "archiving: {verdict}: {}\narchived: {} (failed attempts: {})\nwaiting:  {}",
        health.describe(status),
        status.archived_count,
        status.failed_count,
        status.waiting
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_leads_with_the_verdict() {
        let status = ArchiverStatus {
            last_failed_wal: Some("000000010000000000000007".into()),
            last_failed_time: Some(chrono::DateTime::UNIX_EPOCH),
            failed_count: 3,
            waiting: 2,
            ..ArchiverStatus::default()
        };
        let text = render_text(&status);
        assert!(text.starts_with("archiving: FAILING: archive_command failed for 000000010000000000000007"), "{text}");
        assert!(text.contains("waiting:  2"));
    }
}
