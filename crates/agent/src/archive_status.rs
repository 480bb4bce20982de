//! `archive-status`: the state of the server's continuous archiving, as the operator's health
//! check and a person on the host read it. Exit 0 whenever the state could be read, healthy or
//! not; the report says which.

use std::path::Path;
use std::process::ExitCode;

use pgec2_core::archiver::{self, ArchiveHealth, ArchiverStatus, LagThresholds};

use crate::cli::JsonArgs;
use crate::config::{AgentConfig, ConfigError};
use crate::postgres::{self, PostgresError};

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
    let status = postgres::archiver::status(&client).await?;
    if args.json {
        println!("{}", crate::output::json(&status)?);
    } else {
        println!("{}", render_text(&status));
    }
    Ok(ExitCode::SUCCESS)
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
