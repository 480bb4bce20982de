//! The health of a server's continuous archiving: what `pgec2-agent archive-status --json`
//! reports (PostgreSQL's `pg_stat_archiver` plus the segments waiting in
//! `pg_wal/archive_status`) and how the operator reads it ([`assess`]).
//!
//! Archiving is *failing* when the most recent attempt failed and segments are waiting (the
//! store is unreachable, credentials expired, the archive refused a segment); it is *lagging*
//! when more segments wait than a threshold even though attempts succeed (the store is too slow
//! for the write rate). Either way the segments stay in `pg_wal` — nothing is lost yet — but the
//! recovery point stops advancing and the disk fills, so a user must know.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::stream_status::StreamStatus;

/// What the archiver of one server reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiverStatus {
    /// The server is in recovery (a standby or restoring): it archives nothing of its own.
    pub in_recovery: bool,
    /// Segments archived since the statistics were reset.
    pub archived_count: i64,
    /// The newest WAL file archived successfully.
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    /// Failed archive_command runs since the statistics were reset.
    pub failed_count: i64,
    /// The WAL file whose archiving failed most recently.
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// WAL files waiting to be archived (`.ready` files in `pg_wal/archive_status`).
    pub waiting: u64,
    /// The oldest of them.
    pub oldest_waiting: Option<String>,
    /// How long the oldest of them has waited, in seconds (server clock).
    #[serde(default)]
    pub oldest_waiting_seconds: Option<u64>,
    /// Segments the archive queue cap dropped without archiving them (the agent's record
    /// `pg_wal/.pgec2-archive-holes`), until a base backup taken after them is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_holes: Option<ArchiveHoles>,
    /// WAL streaming (`wal-receive`'s `status.json`), when it runs on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStatus>,
}

/// One segment the archive queue cap dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedSegment {
    pub file: String,
    pub dropped_at: DateTime<Utc>,
    /// Bytes waiting to be archived when it was dropped, and the cap.
    pub queue_bytes: u64,
    pub cap_bytes: u64,
}

/// The holes in the archive: how many segments were dropped, the first and the last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHoles {
    pub dropped_segments: usize,
    pub first: DroppedSegment,
    pub last: DroppedSegment,
}

impl ArchiveHoles {
    /// The one-line warning, naming the range and what to do.
    pub fn describe(&self) -> String {
        format!(
            "the archive has a hole: {} WAL segment(s) were dropped by the queue cap (transfer.archive_queue_max_mb), \
             from {} ({}) to {} ({}); point-in-time recovery cannot cross them: fix archiving, then take a new base \
             backup",
            self.dropped_segments,
            self.first.file,
            self.first.dropped_at.format("%Y-%m-%dT%H:%M:%SZ"),
            self.last.file,
            self.last.dropped_at.format("%Y-%m-%dT%H:%M:%SZ"),
        )
    }
}

/// The operator's reading of an [`ArchiverStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveHealth {
    /// Nothing waits beyond the threshold and the last attempt succeeded.
    Healthy,
    /// The server is in recovery; archiving starts after promotion.
    InRecovery,
    /// The last archive_command failed and segments are waiting.
    Failing { wal: String, at: Option<DateTime<Utc>>, waiting: u64 },
    /// More segments wait than the threshold, or the oldest has waited longer than allowed,
    /// although attempts succeed.
    Lagging { waiting: u64, oldest: Option<String>, oldest_seconds: Option<u64> },
}

/// When waiting WAL counts as lagging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LagThresholds {
    /// More files waiting than this.
    pub max_waiting: u64,
    /// The oldest waiting file older than this many seconds.
    pub max_wait_seconds: u64,
}

impl Default for LagThresholds {
    /// 16 files (256 MB of 16 MB segments) or 5 minutes.
    fn default() -> Self {
        Self { max_waiting: 16, max_wait_seconds: 300 }
    }
}

impl ArchiveHealth {
    /// A one-line explanation for a condition message.
    pub fn describe(&self, status: &ArchiverStatus) -> String {
        match self {
            ArchiveHealth::Healthy => match (&status.last_archived_wal, status.last_archived_time) {
                (Some(wal), Some(at)) => format!("last archived {wal} at {}", at.to_rfc3339()),
                _ => "archive_command is set; no WAL file needed archiving yet".to_string(),
            },
            ArchiveHealth::InRecovery => "the server is in recovery; it archives after promotion".to_string(),
            ArchiveHealth::Failing { wal, at, waiting } => format!(
                "archive_command failed for {wal}{}; {waiting} WAL file(s) wait in pg_wal (kept until archived); \
                 check the storage is reachable and writable from the host and the agent's log",
                at.map(|at| format!(" at {}", at.to_rfc3339())).unwrap_or_default()
            ),
            ArchiveHealth::Lagging { waiting, oldest, oldest_seconds } => format!(
                "{waiting} WAL file(s) wait to be archived (oldest {}{}); the store is slower than the write rate \
                 or archive_command stalls",
                oldest.as_deref().unwrap_or("unknown"),
                oldest_seconds.map(|seconds| format!(", waiting for {seconds} s")).unwrap_or_default()
            ),
        }
    }
}

/// Reads `status`: failing when the newest attempt failed and something waits, lagging when more
/// files wait, or the oldest has waited longer, than `thresholds` allow.
pub fn assess(status: &ArchiverStatus, thresholds: &LagThresholds) -> ArchiveHealth {
    if status.in_recovery {
        return ArchiveHealth::InRecovery;
    }
    let failed_last = match (status.last_failed_time, status.last_archived_time) {
        (Some(failed), Some(archived)) => failed > archived,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if failed_last && status.waiting > 0 {
        return ArchiveHealth::Failing {
            wal: status.last_failed_wal.clone().unwrap_or_else(|| "an unknown WAL file".to_string()),
            at: status.last_failed_time,
            waiting: status.waiting,
        };
    }
    let waited_too_long = status.waiting > 0
        && status.oldest_waiting_seconds.is_some_and(|seconds| seconds > thresholds.max_wait_seconds);
    if status.waiting > thresholds.max_waiting || waited_too_long {
        return ArchiveHealth::Lagging {
            waiting: status.waiting,
            oldest: status.oldest_waiting.clone(),
            oldest_seconds: status.oldest_waiting_seconds,
        };
    }
    ArchiveHealth::Healthy
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const EIGHT: LagThresholds = LagThresholds { max_waiting: 8, max_wait_seconds: 300 };

    fn at(second: u32) -> Option<DateTime<Utc>> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).single()
    }

    fn archived(second: u32) -> ArchiverStatus {
        ArchiverStatus {
            archived_count: 3,
            last_archived_wal: Some("000000010000000000000003".into()),
            last_archived_time: at(second),
            ..ArchiverStatus::default()
        }
    }

    #[test]
    fn a_server_that_archived_its_last_segment_is_healthy() {
        assert_eq!(assess(&archived(10), &EIGHT), ArchiveHealth::Healthy);
        assert!(ArchiveHealth::Healthy.describe(&archived(10)).contains("000000010000000000000003"));
    }

    #[test]
    fn a_failure_after_the_last_success_with_segments_waiting_is_failing() {
        let status = ArchiverStatus {
            failed_count: 2,
            last_failed_wal: Some("000000010000000000000004".into()),
            last_failed_time: at(20),
            waiting: 1,
            ..archived(10)
        };
        let health = assess(&status, &EIGHT);
        assert!(matches!(&health, ArchiveHealth::Failing { wal, waiting: 1, .. } if wal == "000000010000000000000004"));
        assert!(health.describe(&status).contains("check the storage"));
    }

    #[test]
    fn an_old_failure_followed_by_successes_is_healthy_again() {
        let status = ArchiverStatus {
            failed_count: 5,
            last_failed_wal: Some("000000010000000000000002".into()),
            last_failed_time: at(5),
            ..archived(10)
        };
        assert_eq!(assess(&status, &EIGHT), ArchiveHealth::Healthy);
    }

    #[test]
    fn a_failure_with_nothing_waiting_is_not_reported_as_failing() {
        // The failed file was archived on a retry whose statistics have not been flushed yet.
        let status = ArchiverStatus { last_failed_wal: Some("x".into()), last_failed_time: at(20), ..archived(10) };
        assert_eq!(assess(&status, &EIGHT), ArchiveHealth::Healthy);
    }

    #[test]
    fn a_server_that_never_archived_and_failed_is_failing() {
        let status = ArchiverStatus {
            failed_count: 1,
            last_failed_wal: Some("000000010000000000000001".into()),
            last_failed_time: at(1),
            waiting: 1,
            ..ArchiverStatus::default()
        };
        assert!(matches!(assess(&status, &EIGHT), ArchiveHealth::Failing { .. }));
    }

    #[test]
    fn a_backlog_over_the_threshold_is_lagging_and_at_the_threshold_is_not() {
        let status =
            ArchiverStatus { waiting: 9, oldest_waiting: Some("0000000100000000000000A0".into()), ..archived(10) };
        assert!(matches!(assess(&status, &EIGHT), ArchiveHealth::Lagging { waiting: 9, .. }));
        assert_eq!(assess(&ArchiverStatus { waiting: 8, ..status }, &EIGHT), ArchiveHealth::Healthy);
    }

    #[test]
    fn a_file_waiting_longer_than_allowed_is_lagging_even_alone() {
        let stuck = ArchiverStatus {
            waiting: 1,
            oldest_waiting: Some("0000000100000000000000A0".into()),
            oldest_waiting_seconds: Some(301),
            ..archived(10)
        };
        let health = assess(&stuck, &EIGHT);
        assert!(matches!(health, ArchiveHealth::Lagging { waiting: 1, oldest_seconds: Some(301), .. }));
        assert!(health.describe(&stuck).contains("waiting for 301 s"), "{}", health.describe(&stuck));
        assert_eq!(
            assess(&ArchiverStatus { oldest_waiting_seconds: Some(300), ..stuck.clone() }, &EIGHT),
            ArchiveHealth::Healthy
        );
        // An older agent that does not report the age: only the count counts.
        assert_eq!(assess(&ArchiverStatus { oldest_waiting_seconds: None, ..stuck }, &EIGHT), ArchiveHealth::Healthy);
    }

    #[test]
    fn a_server_in_recovery_archives_nothing_of_its_own() {
        let status = ArchiverStatus { in_recovery: true, waiting: 100, ..ArchiverStatus::default() };
        assert_eq!(assess(&status, &EIGHT), ArchiveHealth::InRecovery);
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let status = ArchiverStatus { waiting: 2, oldest_waiting: Some("a".into()), ..archived(10) };
        let json = serde_json::to_string(&status).expect("json");
        assert_eq!(serde_json::from_str::<ArchiverStatus>(&json).expect("parse"), status);
    }
}
