//! The non-exclusive low-level backup API, held on one session.
//!
//! PostgreSQL 15 renamed the functions: `pg_backup_start(label, fast)` and
//! `pg_backup_stop(wait_for_archive)`; 13 and 14 have `pg_start_backup(label, fast, exclusive)`
//! and `pg_stop_backup(exclusive, wait_for_archive)`. Both return the same things: the start
//! LSN, then the stop LSN with the `backup_label` and `tablespace_map` contents, which the
//! backup must store exactly as returned. The backup is aborted by the server if the session
//! ends before the stop, so dropping the client cancels a backup cleanly.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgec2_core::wal::{Lsn, TimelineId};
use tokio_postgres::Client;

use super::{PostgresError, QUERY_TIMEOUT, timed};

/// Deadline of `pg_backup_start` (a fast checkpoint of a busy server can take a while).
pub const START_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Deadline of `pg_backup_stop` (and of the wait for the backup's WAL in the archive after it).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What the backup needs to know about the server before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    /// `server_version_num`, e.g. 150012.
    pub version_num: u32,
    pub system_identifier: u64,
    pub data_directory: PathBuf,
    pub wal_segment_size: u64,
    /// `archive_mode`: `on`, `always` or `off`.
    pub archive_mode: String,
    pub in_recovery: bool,
}

impl ServerFacts {
    /// Reads the facts over `client`.
    pub async fn read(client: &Client) -> Result<Self, PostgresError> {
        let sql = "SELECT current_setting('server_version_num')::int4, \
                          (SELECT system_identifier::text FROM pg_control_system()), \
                          current_setting('data_directory'), \
                          (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size'), \
                          current_setting('archive_mode'), \
                          pg_is_in_recovery()";
        let row = timed("read the server's settings", QUERY_TIMEOUT, client.query_one(sql, &[])).await?;
        let what = "the server's settings";
        let version: i32 = column(&row, 0, what)?;
        let system_identifier: String = column(&row, 1, what)?;
        let segment_size: i64 = column(&row, 3, what)?;
        let unexpected = |detail: String| PostgresError::Unexpected { what, detail };
        Ok(Self {
            version_num: u32::try_from(version).map_err(|_| unexpected(format!("server_version_num {version}")))?,
            system_identifier: system_identifier
                .parse()
                .map_err(|_| unexpected(format!("system identifier {system_identifier:?}")))?,
            data_directory: PathBuf::from(column::<String>(&row, 2, what)?),
            wal_segment_size: u64::try_from(segment_size)
                .map_err(|_| unexpected(format!("wal_segment_size {segment_size}")))?,
            archive_mode: column(&row, 4, what)?,
            in_recovery: column(&row, 5, what)?,
        })
    }

    /// The major version (15 for 150012).
    pub fn major_version(&self) -> u32 {
        self.version_num / 10_000
    }
}

/// What the start of a backup returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupStart {
    /// Server clock just before the start.
    pub time: DateTime<Utc>,
    /// The backup's start LSN (its checkpoint's redo point).
    pub lsn: Lsn,
    pub timeline: TimelineId,
}

/// What the stop of a backup returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupStop {
    /// Server clock when the stop returned.
    pub time: DateTime<Utc>,
    pub lsn: Lsn,
    /// `backup_label`, exactly as returned.
    pub backup_label: String,
    /// `tablespace_map`, exactly as returned (empty when there are no tablespaces).
    pub tablespace_map: String,
    /// `pg_snapshot_xmax` of a snapshot taken after the stop.
    pub next_xid: Option<u64>,
}

/// A base backup in progress on one session.
#[derive(Debug)]
pub struct BackupSession<'c> {
    client: &'c Client,
    version_num: u32,
}

impl<'c> BackupSession<'c> {
    /// Starts a non-exclusive backup with an immediate checkpoint.
    pub async fn start(
        client: &'c Client,
        version_num: u32,
        label: &str,
    ) -> Result<(Self, BackupStart), PostgresError> {
        if version_num < 130_000 {
            return Err(PostgresError::UnsupportedVersion { version: version_num });
        }
        // The server's time-outs must not end this session: a stop waits for archiving
        // (statement_timeout), and the session idles while the files are copied
        // (idle_session_timeout, PostgreSQL 14 and later; idle_in_transaction_session_timeout).
        timed("disable the session's time-outs", QUERY_TIMEOUT, client.batch_execute(session_settings(version_num)))
            .await?;
        let row =
            timed("read the server clock", QUERY_TIMEOUT, client.query_one("SELECT clock_timestamp()", &[])).await?;
        let time: DateTime<Utc> = column(&row, 0, "the server clock")?;
        let sql = if version_num >= 150_000 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let row = timed("start the backup", START_TIMEOUT, client.query_one(sql, &[&label])).await?;
        let lsn = parse_lsn("the backup start", &column::<String>(&row, 0, "the backup start")?)?;
        let timeline_sql = "SELECT timeline_id FROM pg_control_checkpoint()";
        let row = timed("read the timeline", QUERY_TIMEOUT, client.query_one(timeline_sql, &[])).await?;
        let timeline: i32 = column(&row, 0, "the timeline")?;
        let timeline = TimelineId::try_from(timeline)
            .map_err(|_| PostgresError::Unexpected { what: "the timeline", detail: timeline.to_string() })?;
        Ok((Self { client, version_num }, BackupStart { time, lsn, timeline }))
    }

    /// Stops the backup without waiting for WAL archiving: PostgreSQL still switches to a new
    /// segment, and the caller waits for the backup's WAL in the archive itself (PostgreSQL's
    /// own wait polls once a second, a second lost on every backup).
    pub async fn stop(self) -> Result<BackupStop, PostgresError> {
        let sql = if self.version_num >= 150_000 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        };
        let row = timed("stop the backup", STOP_TIMEOUT, self.client.query_one(sql, &[])).await?;
        let what = "the backup stop";
        let lsn = parse_lsn(what, &column::<String>(&row, 0, what)?)?;
        let backup_label: String = column(&row, 1, what)?;
        let tablespace_map: Option<String> = column(&row, 2, what)?;
        let after = "SELECT clock_timestamp(), pg_snapshot_xmax(pg_current_snapshot())::text";
        let row = timed("read the server clock", QUERY_TIMEOUT, self.client.query_one(after, &[])).await?;
        let next_xid = column::<String>(&row, 1, "the next transaction id")?.parse().ok();
        let time = column(&row, 0, "the server clock")?;
        Ok(BackupStop { time, lsn, backup_label, tablespace_map: tablespace_map.unwrap_or_default(), next_xid })
    }
}

/// The settings the backup session gives itself: no server time-out may end it.
fn session_settings(version_num: u32) -> &'static str {
    if version_num >= 140_000 {
        "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET idle_session_timeout = 0"
    } else {
        "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0"
    }
}

/// Reads column `index` of `row`, an error (not a panic) when its type is not `T`.
fn column<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r tokio_postgres::Row,
    index: usize,
    what: &'static str,
) -> Result<T, PostgresError> {
    row.try_get(index).map_err(|error| PostgresError::Unexpected { what, detail: error.to_string() })
}

fn parse_lsn(what: &'static str, text: &str) -> Result<Lsn, PostgresError> {
    text.parse().map_err(|_| PostgresError::Unexpected { what, detail: format!("LSN {text:?}") })
}

/// The `START TIMELINE` line of a backup label.
pub fn label_timeline(label: &str) -> Option<TimelineId> {
    label.lines().find_map(|line| line.strip_prefix("START TIMELINE:")).and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_is_read_from_a_backup_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
                     START TIME: 2026-01-31 12:00:00 UTC\nLABEL: pgec2\nSTART TIMELINE: 3\n";
        assert_eq!(label_timeline(label), Some(3));
        assert_eq!(label_timeline("LABEL: x\n"), None);
    }
}
