//! What the archive check reads beyond PostgreSQL's archiver (pure): the holes the agent's
//! archive queue cap made (`status.archiving.holes` and the `ArchiveComplete` condition) and
//! the state of WAL streaming (`status.archiving.streaming`), from the agent's
//! `archive-status --json` ([`ArchiverStatus::archive_holes`] and [`ArchiverStatus::stream`]).

use k8s_openapi::jiff::Timestamp;
use pgec2_api::{ArchiveHolesStatus, StreamingStatus};
use pgec2_core::archiver::{ArchiveHoles, ArchiverStatus};
use pgec2_core::stream_status::StreamStatus;

use crate::archive::time;
use crate::kube_layer::conditions::Truth;

/// `status.archiving.holes` of what the agent recorded.
pub fn holes(holes: &ArchiveHoles) -> ArchiveHolesStatus {
    ArchiveHolesStatus {
        dropped_segments: i64::try_from(holes.dropped_segments).unwrap_or(i64::MAX),
        first_dropped_wal: holes.first.file.clone(),
        first_dropped_time: time(holes.first.dropped_at),
        last_dropped_wal: holes.last.file.clone(),
        last_dropped_time: time(holes.last.dropped_at),
    }
}

/// `status.archiving.streaming` of the receiver's status, its lag in seconds measured at `now`.
pub fn streaming(stream: &StreamStatus, now: Timestamp) -> StreamingStatus {
    let archived_time = stream.archived_at.and_then(time);
    StreamingStatus {
        state: stream.state.clone(),
        slot: stream.slot.clone(),
        archived_lsn: stream.archived_lsn.map(|lsn| lsn.to_string()),
        lag_seconds: archived_time.as_ref().map(|at| now.duration_since(at.0).as_secs().max(0)),
        archived_time,
        lag_bytes: stream.lag_bytes.and_then(|bytes| i64::try_from(bytes).ok()),
        slot_wal_status: stream.slot_wal_status.clone(),
        warnings: stream.warnings.iter().map(|warning| format!("{}: {}", warning.kind, warning.message)).collect(),
        last_error: stream.last_error.clone(),
    }
}

/// The `ArchiveComplete` condition: truth, reason and message.
pub fn completeness(archiver: &ArchiverStatus) -> (Truth, &'static str, String) {
    match &archiver.archive_holes {
        Some(holes) => (Truth::False, "ArchiveHole", holes.describe()),
        None => (Truth::True, "NoHoles", "no WAL segment was dropped by the archive queue cap".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use pgec2_core::wal::Lsn;

    use super::*;

    /// The JSON `pgec2-agent archive-status --json` prints on a primary whose queue cap dropped
    /// two segments and whose wal-receive service streams.
    const AGENT_ANSWER: &str = r#"{
      "in_recovery": false,
      "archived_count": 40,
      "last_archived_wal": "000000010000000000000030",
      "last_archived_time": "2026-12-07T04:00:00Z",
      "failed_count": 3,
      "last_failed_wal": "000000010000000000000029",
      "last_failed_time": "2026-12-07T03:50:00Z",
      "waiting": 0,
      "oldest_waiting": null,
      "oldest_waiting_seconds": null,
      "archive_holes": {
        "dropped_segments": 2,
        "first": {"file": "000000010000000000000027", "dropped_at": "2026-12-07T03:40:00Z", "queue_bytes": 83886080, "cap_bytes": 67108864},
        "last": {"file": "000000010000000000000028", "dropped_at": "2026-12-07T03:41:00Z", "queue_bytes": 83886080, "cap_bytes": 67108864}
      },
      "stream": {
        "state": "streaming",
        "slot": "pgec2_wal_receive",
        "systemIdentifier": "7300000000000000001",
        "timeline": 1,
        "serverLsn": "0/31000100",
        "receivedLsn": "0/31000100",
        "archivedLsn": "0/31000000",
        "archivedAt": "2026-12-07T04:00:58Z",
        "lagBytes": 256,
        "slotWalStatus": "reserved",
        "slotSafeWalBytes": 1073741824,
        "maxSlotWalKeepSizeMb": 1024,
        "warnings": [],
        "lastError": null,
        "lastErrorAt": null,
        "updatedAt": "2026-12-07T04:00:58Z"
      }
    }"#;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a time")
    }

    #[test]
    fn the_agents_holes_record_becomes_a_false_archive_complete_naming_the_range() {
        let archiver: ArchiverStatus = serde_json::from_str(AGENT_ANSWER).expect("the agent's answer parses");
        let recorded = archiver.archive_holes.as_ref().expect("holes");
        let status = holes(recorded);
        assert_eq!(status.dropped_segments, 2);
        assert_eq!(status.first_dropped_wal, "000000010000000000000027");
        assert_eq!(status.last_dropped_wal, "000000010000000000000028");
        assert_eq!(status.last_dropped_time.map(|time| time.0), Some(at("2026-12-07T03:41:00Z")));
        let (truth, reason, message) = completeness(&archiver);
        assert_eq!((truth, reason), (Truth::False, "ArchiveHole"));
        assert!(
            message.contains("from 000000010000000000000027") && message.contains("take a new base backup"),
            "{message}"
        );
        let whole = ArchiverStatus { archive_holes: None, ..archiver };
        assert_eq!(completeness(&whole).0, Truth::True);
    }

    #[test]
    fn the_streaming_lag_is_measured_from_when_the_archive_last_caught_up() {
        let archiver: ArchiverStatus = serde_json::from_str(AGENT_ANSWER).expect("the agent's answer parses");
        let stream = archiver.stream.as_ref().expect("stream");
        assert_eq!(stream.archived_lsn, Some(Lsn(0x3100_0000)));
        let status = streaming(stream, at("2026-12-07T04:01:05Z"));
        assert_eq!(status.state, "streaming");
        assert_eq!(status.lag_seconds, Some(7));
        assert_eq!(status.lag_bytes, Some(256));
        assert_eq!(status.archived_lsn.as_deref(), Some("0/31000000"));
        assert_eq!(status.slot_wal_status.as_deref(), Some("reserved"));
    }

    #[test]
    fn the_archive_check_reports_holes_streaming_and_the_streamed_recovery_point_in_the_status() {
        let archiver: ArchiverStatus = serde_json::from_str(AGENT_ANSWER).expect("the agent's answer parses");
        let health = pgec2_core::archiver::assess(&archiver, &pgec2_core::archiver::LagThresholds::default());
        let mut draft = crate::host::status::Draft::new(None, Some(1), at("2026-12-07T04:01:05Z"));
        draft.archive_health(&archiver, &health);
        draft.recoverability(&pgec2_api::fixtures::policy("nightly").build().spec, None);
        let status = draft.finish();
        let complete =
            status.conditions.iter().find(|condition| condition.type_ == "ArchiveComplete").expect("condition");
        assert_eq!((complete.status.as_str(), complete.reason.as_str()), ("False", "ArchiveHole"));
        let archiving = status.archiving.as_ref().expect("archiving");
        assert_eq!(archiving.holes.as_ref().map(|holes| holes.dropped_segments), Some(2));
        assert_eq!(archiving.streaming.as_ref().and_then(|streaming| streaming.lag_seconds), Some(7));
        let rpo = status.recoverability.as_ref().and_then(|recoverability| recoverability.rpo_seconds);
        assert_eq!(rpo, Some(7), "the streamed .partial, not the last archived segment 65 s ago");
    }

    #[test]
    fn an_answer_from_an_agent_without_holes_or_streaming_still_parses() {
        let older = r#"{"in_recovery": false, "archived_count": 1, "last_archived_wal": null,
            "last_archived_time": null, "failed_count": 0, "last_failed_wal": null,
            "last_failed_time": null, "waiting": 0, "oldest_waiting": null}"#;
        let archiver: ArchiverStatus = serde_json::from_str(older).expect("parses");
        assert!(archiver.archive_holes.is_none() && archiver.stream.is_none());
    }
}
