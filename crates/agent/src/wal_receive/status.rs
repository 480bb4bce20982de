//! The receiver's status: kept in memory, written to `<spool>/status.json` (atomically) after
//! every archive step and failure, and read back by `wal-receive --status`. The slot's health
//! comes from `pg_replication_slots` over an ordinary SQL connection (a replication connection
//! cannot read views).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use pgec2_core::stream_status::{StreamStatus, StreamWarning};
use pgec2_core::wal::Lsn;

use super::error::ReceiveError;
use crate::config::PostgresSettings;
use crate::postgres;

/// The status file inside the spool directory.
pub const STATUS_FILE: &str = "status.json";

/// Deadline of the slot query.
const SLOT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The status document and where it is written.
pub struct StatusFile {
    path: PathBuf,
    pub status: StreamStatus,
}

impl StatusFile {
    pub fn new(spool: &Path, slot: &str) -> Self {
        let status = StreamStatus { state: "starting".into(), slot: slot.to_string(), ..StreamStatus::default() };
        Self { path: spool.join(STATUS_FILE), status }
    }

    /// Records that the archive now holds WAL up to `archived`.
    pub fn archived(&mut self, archived: Lsn) {
        self.status.archived_lsn = Some(archived);
        self.status.archived_at = Some(Utc::now());
        self.refresh_lag();
    }

    /// Records the server's end of WAL and what has been received. When the archive already
    /// holds the server's end (an idle primary), the archive is confirmed current as of now: the
    /// recovery point of an idle host does not age while nothing is written. Returns whether it
    /// was confirmed.
    pub fn positions(&mut self, server: Lsn, received: Lsn) -> bool {
        let server = server.max(self.status.server_lsn.unwrap_or_default());
        self.status.server_lsn = Some(server);
        self.status.received_lsn = Some(received);
        let current = self.status.archived_lsn.is_some_and(|archived| archived >= server);
        if current {
            self.status.archived_at = Some(Utc::now());
        }
        self.refresh_lag();
        current
    }

    fn refresh_lag(&mut self) {
        if let (Some(server), Some(archived)) = (self.status.server_lsn, self.status.archived_lsn) {
            self.status.lag_bytes = Some(server.0.saturating_sub(archived.0));
        }
    }

    /// Records a failure (and the state it leaves the receiver in).
    pub fn failed(&mut self, state: &str, error: &ReceiveError) {
        self.status.state = state.to_string();
        self.status.last_error = Some(error.to_string());
        self.status.last_error_at = Some(Utc::now());
    }

    /// Adds a warning, replacing one of the same kind.
    pub fn warn(&mut self, kind: &str, message: String) {
        self.status.warnings.retain(|warning| warning.kind != kind);
        self.status.warnings.push(StreamWarning { kind: kind.to_string(), message });
    }

    pub fn clear_warning(&mut self, kind: &str) {
        self.status.warnings.retain(|warning| warning.kind != kind);
    }

    /// Writes the document; a failure to write it is logged, never fatal to streaming.
    pub fn write(&mut self) {
        self.status.updated_at = Some(Utc::now());
        let Ok(text) = serde_json::to_vec_pretty(&self.status) else { return };
        if let Err(error) = crate::wal::durable::write_atomically(&self.path, &text) {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the wal-receive status file");
        }
    }
}

/// Reads the status file of the spool `dir`.
pub fn read(dir: &Path) -> Result<StreamStatus, String> {
    let path = dir.join(STATUS_FILE);
    let text = std::fs::read(&path).map_err(|error| {
        format!("cannot read {}: {error}; is wal-receive running with this spool directory?", path.display())
    })?;
    serde_json::from_slice(&text).map_err(|error| format!("{} is not a wal-receive status: {error}", path.display()))
}

/// The server's facts the receiver needs, and the slot as the server sees it.
pub struct SlotHealth {
    pub segment_size: u64,
    pub max_slot_wal_keep_size_mb: Option<i64>,
    /// `None` when the slot does not exist.
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
}

/// Reads the WAL segment size, the cap on slots, and the slot's `wal_status` and
/// `safe_wal_size` (one ordinary SQL connection, one query).
pub async fn slot_health(settings: &PostgresSettings, slot: &str) -> Result<SlotHealth, ReceiveError> {
    let failed = |error: postgres::PostgresError| ReceiveError::SlotQuery(error.to_string());
    let client = postgres::connect(settings).await.map_err(failed)?;
    let query = "SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'), \
                 s.wal_status, s.safe_wal_size \
                 FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1";
    let row = postgres::timed("read the slot's state", SLOT_QUERY_TIMEOUT, client.query_one(query, &[&slot]))
        .await
        .map_err(failed)?;
    let segment_size: Option<i64> = row.get(0);
    Ok(SlotHealth {
        segment_size: segment_size.and_then(|size| u64::try_from(size).ok()).unwrap_or_default(),
        max_slot_wal_keep_size_mb: row.get(1),
        wal_status: row.get(2),
        safe_wal_size: row.get(3),
    })
}

/// Applies what the server says about the slot to the status (warnings included).
pub fn apply_slot_health(file: &mut StatusFile, health: &SlotHealth) {
    file.status.slot_wal_status = health.wal_status.clone();
    file.status.slot_safe_wal_bytes = health.safe_wal_size;
    file.status.max_slot_wal_keep_size_mb = health.max_slot_wal_keep_size_mb;
    if health.max_slot_wal_keep_size_mb == Some(-1) {
        file.warn(
            "SlotUncapped",
            "the server sets max_slot_wal_keep_size = -1: if this receiver stops reading, the slot keeps WAL until \
             the primary's disk is full; set a cap (host apply sets one)"
                .into(),
        );
    } else {
        file.clear_warning("SlotUncapped");
    }
    if health.wal_status.as_deref() == Some("unreserved") {
        file.warn(
            "SlotAtRisk",
            "the slot holds more WAL than max_slot_wal_keep_size allows: the server will give it up at its next \
             checkpoint unless the receiver catches up"
                .into(),
        );
    } else {
        file.clear_warning("SlotAtRisk");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_at(archived: u64, server: u64) -> StatusFile {
        let mut file = StatusFile::new(Path::new("/nonexistent"), "slot");
        file.archived(Lsn(archived));
        file.positions(Lsn(server), Lsn(server));
        file
    }

    #[test]
    fn an_idle_primary_whose_wal_is_all_archived_keeps_the_archive_confirmed_current() {
        let mut file = status_at(0x3000, 0x3000);
        let old = Utc::now() - chrono::Duration::minutes(10);
        file.status.archived_at = Some(old);
        assert!(file.positions(Lsn(0x3000), Lsn(0x3000)), "confirmed");
        let confirmed = file.status.archived_at.expect("archived_at");
        assert!(confirmed > old + chrono::Duration::minutes(9), "a caught-up keepalive confirms the archive as of now");
        assert_eq!(file.status.lag_bytes, Some(0));
    }

    #[test]
    fn wal_the_archive_does_not_have_yet_leaves_the_recovery_point_where_it_was() {
        let mut file = status_at(0x3000, 0x3000);
        let old = Utc::now() - chrono::Duration::minutes(10);
        file.status.archived_at = Some(old);
        assert!(!file.positions(Lsn(0x5000), Lsn(0x4000)), "not confirmed");
        assert_eq!(file.status.archived_at, Some(old), "the server is ahead: the archive is not current");
        assert_eq!(file.status.lag_bytes, Some(0x2000));
    }
}
