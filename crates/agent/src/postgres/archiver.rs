//! Reads the state of the server's continuous archiving: `pg_stat_archiver` and the WAL files
//! waiting in `pg_wal/archive_status` (through `pg_ls_archive_statusdir()`, so no file system
//! access is needed).

use pgec2_core::archiver::ArchiverStatus;
use tokio_postgres::Client;

use super::{PostgresError, QUERY_TIMEOUT, timed};

const QUERY: &str = "\
SELECT pg_is_in_recovery(), a.archived_count, a.last_archived_wal, a.last_archived_time, \
       a.failed_count, a.last_failed_wal, a.last_failed_time, w.waiting, w.oldest, \
       extract(epoch FROM now() - w.oldest_since)::bigint \
FROM pg_stat_archiver a, \
     (SELECT count(*) AS waiting, min(name) AS oldest, min(modification) AS oldest_since \
      FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') w";

/// The archiver's state as the server sees it now.
pub async fn status(client: &Client) -> Result<ArchiverStatus, PostgresError> {
    let row = timed("read pg_stat_archiver", QUERY_TIMEOUT, client.query_one(QUERY, &[])).await?;
    let unexpected = |detail: String| PostgresError::Unexpected { what: "the archiver status query", detail };
    let waiting: i64 = row.try_get(7).map_err(|error| unexpected(error.to_string()))?;
    let oldest: Option<String> = row.try_get(8).map_err(|error| unexpected(error.to_string()))?;
    let oldest_seconds: Option<i64> = row.try_get(9).map_err(|error| unexpected(error.to_string()))?;
    Ok(ArchiverStatus {
        in_recovery: row.try_get(0).map_err(|error| unexpected(error.to_string()))?,
        archived_count: row.try_get(1).map_err(|error| unexpected(error.to_string()))?,
        last_archived_wal: row.try_get(2).map_err(|error| unexpected(error.to_string()))?,
        last_archived_time: row.try_get(3).map_err(|error| unexpected(error.to_string()))?,
        failed_count: row.try_get(4).map_err(|error| unexpected(error.to_string()))?,
        last_failed_wal: row.try_get(5).map_err(|error| unexpected(error.to_string()))?,
        last_failed_time: row.try_get(6).map_err(|error| unexpected(error.to_string()))?,
        waiting: u64::try_from(waiting).unwrap_or(0),
        oldest_waiting: oldest.map(|name| name.trim_end_matches(".ready").to_string()),
        oldest_waiting_seconds: oldest_seconds.map(|seconds| u64::try_from(seconds).unwrap_or(0)),
        archive_holes: None,
        stream: None,
    })
}
