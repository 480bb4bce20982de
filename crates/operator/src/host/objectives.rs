//! Recovery objectives (pure): how much committed work losing the host now would lose, as time
//! (the recovery point), and how long its last verified restore took (the recovery time),
//! against the policy's `objectives`: `status.recoverability` and the `RpoMet` and `RtoMet`
//! conditions.
//!
//! The recovery point is read from the archiver's state the archive check last reported:
//! - WAL files wait in `pg_wal` (archiving fails or lags): everything written since the newest
//!   archived segment is at risk, `now − lastArchivedTime` (or the oldest waiting file's age
//!   when nothing was ever archived);
//! - nothing waits: only the current segment is unarchived, and PostgreSQL switches it within
//!   `archive_timeout` of its first write, so `min(now − lastArchivedTime, archiveTimeout)`:
//!   an idle server does not miss its objective for want of writes.
//!
//! With WAL streaming (`status.archiving.streaming`) the archive also holds the streamed WAL up
//! to when the receiver last caught up, so the recovery point is the smaller of the two.

use k8s_openapi::jiff::Timestamp;
use pgec2_api::{ArchivingStatus, RecoveryObjectives};

/// The recovery point in seconds, when the archiver has reported anything.
pub fn rpo_seconds(archiving: &ArchivingStatus, archive_timeout_seconds: i64, now: Timestamp) -> Option<i64> {
    let waiting = archiving.waiting_files.unwrap_or(0) > 0;
    let since_archived = archiving.last_archived_time.as_ref().map(|time| now.duration_since(time.0).as_secs().max(0));
    let archived = match (since_archived, waiting) {
        (Some(since), true) => Some(since),
        (Some(since), false) => Some(since.min(archive_timeout_seconds)),
        (None, true) => archiving.oldest_waiting_seconds,
        (None, false) => None,
    };
    let streamed = archiving.streaming.as_ref().and_then(|streaming| streaming.archived_time.as_ref());
    let streamed = streamed.map(|time| now.duration_since(time.0).as_secs().max(0));
    [archived, streamed].into_iter().flatten().min()
}

/// Whether a measured value meets its objective, for a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met {
        message: String,
    },
    Missed {
        message: String,
    },
    /// Nothing measured yet.
    Unknown {
        message: String,
    },
}

/// The objectives in seconds, from the policy's durations (invalid ones are left out: the
/// policy's validation reports them).
pub fn objective_seconds(objectives: &RecoveryObjectives) -> (Option<i64>, Option<i64>) {
    let seconds = |text: &Option<String>| {
        text.as_deref()
            .and_then(pgec2_api::validation::parse_duration_seconds)
            .and_then(|value| i64::try_from(value).ok())
    };
    (seconds(&objectives.rpo), seconds(&objectives.rto))
}

/// The RPO verdict of `measured` seconds against `objective` seconds.
pub fn rpo_verdict(measured: Option<i64>, objective: i64) -> Verdict {
    match measured {
        None => Verdict::Unknown { message: "the archive check has not reported the archiver's state yet".into() },
        Some(seconds) if seconds <= objective => Verdict::Met {
            message: format!("at most {seconds}s of committed work is unarchived (objective {objective}s)"),
        },
        Some(seconds) => Verdict::Missed {
            message: format!(
                "{seconds}s of committed work is not archived, more than the objective of {objective}s: \
                 see the ContinuousArchiving condition and status.archiving"
            ),
        },
    }
}

/// The RTO verdict of the last verified restore's `measured` seconds against `objective`.
pub fn rto_verdict(measured: Option<i64>, objective: i64) -> Verdict {
    match measured {
        None => Verdict::Unknown { message: "no restore of this host's backups has been timed yet".into() },
        Some(seconds) if seconds <= objective => {
            Verdict::Met { message: format!("the last verified restore took {seconds}s (objective {objective}s)") }
        }
        Some(seconds) => Verdict::Missed {
            message: format!(
                "the last verified restore took {seconds}s, more than the objective of {objective}s: use snapshot \
                 backups, more frequent base backups or a faster volume"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn archiving(last_archived: Option<i64>, waiting: i64, oldest: Option<i64>) -> ArchivingStatus {
        ArchivingStatus {
            last_archived_time: last_archived.map(|seconds| Time(at(seconds))),
            waiting_files: Some(waiting),
            oldest_waiting_seconds: oldest,
            ..ArchivingStatus::default()
        }
    }

    #[test]
    fn the_recovery_point_grows_while_wal_waits_and_is_bounded_by_archive_timeout_when_none_does() {
        assert_eq!(rpo_seconds(&archiving(Some(0), 3, Some(90)), 60, at(300)), Some(300), "archiving stopped");
        assert_eq!(rpo_seconds(&archiving(Some(0), 0, None), 60, at(300)), Some(60), "idle: the switch bounds it");
        assert_eq!(rpo_seconds(&archiving(Some(0), 0, None), 60, at(20)), Some(20));
        assert_eq!(rpo_seconds(&archiving(None, 2, Some(45)), 60, at(300)), Some(45), "never archived");
        assert_eq!(rpo_seconds(&archiving(None, 0, None), 60, at(300)), None);
    }

    #[test]
    fn with_streaming_the_recovery_point_is_when_the_streamed_archive_last_caught_up() {
        let streaming = |caught_up: i64| pgec2_api::StreamingStatus {
            state: "streaming".into(),
            archived_time: Some(Time(at(caught_up))),
            ..pgec2_api::StreamingStatus::default()
        };
        let streamed = ArchivingStatus { streaming: Some(streaming(297)), ..archiving(Some(0), 0, None) };
        assert_eq!(rpo_seconds(&streamed, 60, at(300)), Some(3), "the .partial trails by seconds");
        let stalled = ArchivingStatus { streaming: Some(streaming(0)), ..archiving(Some(200), 0, None) };
        assert_eq!(rpo_seconds(&stalled, 60, at(300)), Some(60), "a stalled receiver: archive_command bounds it");
        let only_streamed = ArchivingStatus { streaming: Some(streaming(290)), ..archiving(None, 0, None) };
        assert_eq!(rpo_seconds(&only_streamed, 60, at(300)), Some(10));
    }

    #[test]
    fn verdicts_compare_with_the_objective_and_say_what_to_look_at() {
        assert!(matches!(rpo_verdict(Some(300), 300), Verdict::Met { .. }));
        let Verdict::Missed { message } = rpo_verdict(Some(301), 300) else { panic!("missed") };
        assert!(message.contains("ContinuousArchiving"), "{message}");
        assert!(matches!(rpo_verdict(None, 300), Verdict::Unknown { .. }));
        assert!(matches!(rto_verdict(Some(10), 1800), Verdict::Met { .. }));
        assert!(matches!(rto_verdict(Some(1801), 1800), Verdict::Missed { .. }));
        let objectives = RecoveryObjectives { rpo: Some("5m".into()), rto: Some("1h30m".into()) };
        assert_eq!(objective_seconds(&objectives), (Some(300), Some(5400)));
    }
}
