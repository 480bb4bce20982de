//! The agent's connection to its PostgreSQL server and the version-aware low-level backup API.
//!
//! - [`connect`]: one tokio-postgres connection from the configuration (libpq's `PG*`
//!   variables), with a connect timeout; every query is bounded by [`timed`].
//! - [`backup_api`]: the non-exclusive base backup on one session (`pg_backup_start` /
//!   `pg_backup_stop` from PostgreSQL 15, `pg_start_backup` / `pg_stop_backup` for 13 and 14).

use std::future::Future;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::config::PostgresSettings;

pub mod archiver;
pub mod backup_api;

pub use backup_api::{BackupSession, BackupStart, BackupStop, ServerFacts};

/// Deadline of a small query (facts, settings).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Failures talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "failed to connect to PostgreSQL at {target}: {source}; check PGHOST/PGPORT/PGUSER and that the server runs"
    )]
    Connect { target: String, source: tokio_postgres::Error },
    #[error("connecting to PostgreSQL at {target} timed out after {after:?}")]
    ConnectTimeout { target: String, after: Duration },
    #[error("failed to {what}: {source}")]
    Query { what: &'static str, source: tokio_postgres::Error },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("PostgreSQL answered unexpectedly to {what}: {detail}")]
    Unexpected { what: &'static str, detail: String },
    #[error("PostgreSQL {version} is not supported: pgec2 backs up PostgreSQL 13 to 17")]
    UnsupportedVersion { version: u32 },
}

/// Opens one connection; its I/O task runs on the current runtime until the client is dropped.
pub async fn connect(settings: &PostgresSettings) -> Result<Client, PostgresError> {
    let target = format!("{}:{}", settings.host, settings.port);
    let config = settings.connection_config();
    let deadline = settings.connect_timeout + Duration::from_secs(5);
    let (client, connection) = tokio::time::timeout(deadline, config.connect(NoTls))
        .await
        .map_err(|_| PostgresError::ConnectTimeout { target: target.clone(), after: deadline })?
        .map_err(|source| PostgresError::Connect { target, source })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Runs a query future with a deadline, naming it in errors.
pub async fn timed<T>(
    what: &'static str,
    after: Duration,
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PostgresError> {
    tokio::time::timeout(after, query)
        .await
        .map_err(|_| PostgresError::Timeout { what, after })?
        .map_err(|source| PostgresError::Query { what, source })
}
