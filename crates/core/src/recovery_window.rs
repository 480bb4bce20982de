//! What can be recovered from the archive: the WAL path from a backup along a timeline's
//! history, the gaps in it, the recovery window (earliest and latest restorable point), and
//! the WAL continuity report of `wal-verify`. Pure functions over a [`WalArchive`] and the
//! backup list, used by the agent (restore target checks, `wal-verify`) and by the operator
//! (status of a host's recoverability).
//!
//! Recovery reads segment `n` from the newest timeline of the target timeline's history that
//! began at or before `n` (and, for the segment where that timeline began, falls back to the
//! parent's copy), exactly as PostgreSQL's `XLogFileReadAnyTLI` does.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{ArchivedSegment, BackupInfo, TimelineHistory, WalArchive};
use crate::wal::{Lsn, TimelineId};

/// The WAL a recovery from one position along one timeline can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPath {
    pub timeline: TimelineId,
    /// First segment number the path starts at.
    pub first_segment: u64,
    /// The last segment readable without a gap from `first_segment` (`None`: not even the first).
    pub end: Option<ArchivedSegment>,
    /// The newest segment of the path present in the archive, possibly beyond a gap.
    pub newest: Option<ArchivedSegment>,
    /// Names of segments missing between `first_segment` and `newest`, oldest first.
    pub missing: Vec<String>,
}

impl RecoveryPath {
    /// The first LSN not covered by the contiguous WAL (`end`'s segment's end).
    pub fn end_lsn(&self, archive: &WalArchive) -> Option<Lsn> {
        self.end.as_ref().map(|segment| archive.segment_size.start_of(segment.segment + 1))
    }

    /// True when the contiguous WAL reaches at least segment `segment`.
    pub fn covers(&self, segment: u64) -> bool {
        self.end.as_ref().is_some_and(|end| end.segment >= segment)
    }
}

/// Walks the segments recovery along `history` needs from `first_segment` to the newest one
/// archived on that path.
pub fn walk(archive: &WalArchive, history: &TimelineHistory, first_segment: u64) -> RecoveryPath {
    let size = archive.segment_size;
    let spans = history.spans();
    let newest_number = spans
        .iter()
        .filter_map(|span| {
            let first = size.segment_of(span.begin).max(first_segment);
            let last = span.end.map_or(u64::MAX, |end| size.segment_of(end));
            archive.newest_segment_within(span.timeline, first, last)
        })
        .max();
    let mut path =
        RecoveryPath { timeline: history.timeline, first_segment, end: None, newest: None, missing: Vec::new() };
    let Some(newest_number) = newest_number else {
        path.missing.push(size.segment_name(history.timeline_at(size.start_of(first_segment)), first_segment));
        return path;
    };
    for segment in first_segment..=newest_number {
        let candidates = history.timelines_for_segment(segment, size);
        let found = candidates.iter().find_map(|&timeline| archive.segment(timeline, segment));
        match found {
            Some(present) => {
                if path.missing.is_empty() {
                    path.end = Some(present.clone());
                }
                path.newest = Some(present);
            }
            None => path.missing.push(size.segment_name(candidates[0], segment)),
        }
    }
    path
}

/// The timeline a restore of `backup` recovers along, and whether PostgreSQL's own choice
/// (`recovery_target_timeline = 'latest'`) is usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineChoice {
    pub timeline: TimelineId,
    /// True when `latest` selects `timeline`; false when `latest` would pick a timeline that
    /// branched off before the backup ended, so the restore must name `timeline` explicitly.
    pub latest_works: bool,
}

/// Which timeline a restore should follow (PostgreSQL's `recovery_target_timeline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimelineRequest {
    /// The newest timeline in the archive (PostgreSQL's default).
    #[default]
    Latest,
    /// The backup's own timeline.
    Current,
    Id(TimelineId),
}

impl std::str::FromStr for TimelineRequest {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "latest" => Ok(TimelineRequest::Latest),
            "current" => Ok(TimelineRequest::Current),
            number => number
                .parse()
                .map(TimelineRequest::Id)
                .map_err(|_| format!("{text:?} is not latest, current or a timeline id")),
        }
    }
}

/// Chooses the timeline to recover `backup` along: PostgreSQL's `latest` when the backup can
/// reach it, otherwise the newest timeline that descends from the backup after its end.
pub fn choose_timeline(archive: &WalArchive, backup: &BackupInfo) -> TimelineChoice {
    let latest = archive.latest_timeline_from(backup.timeline);
    if archive.history(latest).is_reachable_from(backup.timeline, backup.finish_lsn) {
        return TimelineChoice { timeline: latest, latest_works: true };
    }
    let timeline = archive
        .timelines()
        .into_iter()
        .filter(|&timeline| timeline >= backup.timeline)
        .filter(|&timeline| archive.history(timeline).is_reachable_from(backup.timeline, backup.finish_lsn))
        .max()
        .unwrap_or(backup.timeline);
    TimelineChoice { timeline, latest_works: false }
}

/// Ancestors of `history`'s timeline that kept archiving after the timeline branched off them:
/// (ancestor, branch point, the ancestor's newest segment). A restore following `history`
/// does not see what those ancestors wrote after the branch point.
pub fn diverged_ancestors(archive: &WalArchive, history: &TimelineHistory) -> Vec<(TimelineId, Lsn, String)> {
    let size = archive.segment_size;
    history
        .ancestors
        .iter()
        .filter_map(|&(ancestor, branch)| {
            let newest = archive.newest_segment_within(ancestor, size.segment_of(branch) + 1, u64::MAX)?;
            Some((ancestor, branch, size.segment_name(ancestor, newest)))
        })
        .collect()
}

/// The span of time and WAL a restore can reach on one timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecoveryWindow {
    pub timeline: TimelineId,
    /// The oldest backup from which the latest point is reachable without a gap.
    pub earliest_backup: String,
    /// Targets must not be earlier than this backup's end.
    pub earliest_time: DateTime<Utc>,
    pub earliest_lsn: Lsn,
    /// End of the contiguous archived WAL.
    pub latest_lsn: Lsn,
    /// When the last contiguous segment was archived (an upper bound of its commit times).
    pub latest_time: Option<DateTime<Utc>>,
    /// The newest backup that can recover along this timeline.
    pub newest_backup: String,
}

/// The recovery window on `timeline` (default: the newest timeline in the archive).
/// `backups` are the kept, committed backups; `None` when no backup can recover along it.
pub fn recovery_window(
    backups: &[BackupInfo],
    archive: &WalArchive,
    timeline: Option<TimelineId>,
) -> Option<RecoveryWindow> {
    let timeline = timeline.or_else(|| archive.timelines().into_iter().max())?;
    let history = archive.history(timeline);
    let mut usable: Vec<(&BackupInfo, RecoveryPath)> = backups
        .iter()
        .filter(|backup| history.is_reachable_from(backup.timeline, backup.finish_lsn))
        .map(|backup| (backup, walk(archive, &history, backup.start_segment())))
        .filter(|(backup, path)| path.covers(backup.finish_segment()))
        .collect();
    usable.sort_by_key(|(backup, _)| backup.start_lsn);
    let (newest, newest_path) = usable.last()?;
    let latest = newest_path.end.clone()?;
    let (earliest, _) =
        usable.iter().find(|(_, path)| path.end.as_ref().map(|end| end.segment) == Some(latest.segment))?;
    Some(RecoveryWindow {
        timeline,
        earliest_backup: earliest.name.clone(),
        earliest_time: earliest.finish_time,
        earliest_lsn: earliest.finish_lsn,
        latest_lsn: archive.segment_size.start_of(latest.segment + 1),
        latest_time: latest.last_modified,
        newest_backup: newest.name.clone(),
    })
}

/// The result of checking WAL continuity (`wal-verify`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContinuityReport {
    /// True when nothing is missing.
    pub ok: bool,
    /// One entry per timeline some kept backup can recover along.
    pub timelines: Vec<TimelineReport>,
    /// Timelines with segments in the archive but no `.history` file (timeline > 1).
    pub missing_history_files: Vec<String>,
    /// History files that cannot be read or parsed, with their keys and why.
    pub damaged_history_files: Vec<crate::catalog::Damaged>,
    /// Timelines in the archive that no kept backup can recover along (not an error).
    pub unreachable_timelines: Vec<TimelineId>,
}

/// Continuity of one timeline's recovery path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineReport {
    pub timeline: TimelineId,
    /// The oldest kept backup that recovers along this timeline.
    pub from_backup: String,
    pub first_segment: String,
    /// Newest archived segment on the path.
    pub newest_segment: Option<String>,
    /// Segments missing between the two, oldest first.
    pub missing_segments: Vec<String>,
}

/// Checks, for every timeline in the archive, that the WAL from the oldest kept backup that
/// can recover along it up to the newest archived segment on that path is complete, and that
/// every timeline after the first has its history file.
pub fn verify_continuity(backups: &[BackupInfo], archive: &WalArchive) -> ContinuityReport {
    let mut report = ContinuityReport::default();
    for timeline in archive.timelines() {
        if timeline > 1 && !archive.history_files.contains_key(&timeline) {
            report.missing_history_files.push(format!("{timeline:08X}.history"));
        }
        if let Some(damaged) = archive.damaged_histories.get(&timeline) {
            report.damaged_history_files.push(damaged.clone());
            continue;
        }
        let history = archive.history(timeline);
        let oldest = backups
            .iter()
            .filter(|backup| history.is_reachable_from(backup.timeline, backup.finish_lsn))
            .min_by_key(|backup| backup.start_lsn);
        let Some(backup) = oldest else {
            report.unreachable_timelines.push(timeline);
            continue;
        };
        let path = walk(archive, &history, backup.start_segment());
        let size = archive.segment_size;
        report.timelines.push(TimelineReport {
            timeline,
            from_backup: backup.name.clone(),
            first_segment: size.segment_name(history.timeline_at(backup.start_lsn), backup.start_segment()),
            newest_segment: path.newest.map(|segment| segment.name),
            missing_segments: path.missing,
        });
    }
    report.ok = report.missing_history_files.is_empty()
        && report.damaged_history_files.is_empty()
        && report.timelines.iter().all(|timeline| timeline.missing_segments.is_empty());
    report
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::storage::{ObjectKey, ObjectMeta};
    use crate::wal::SegmentSize;

    const SEGMENT: u64 = 16 * 1024 * 1024;

    fn archive(names: &[&str]) -> WalArchive {
        let listing = names
            .iter()
            .enumerate()
            .map(|(index, name)| ObjectMeta {
                key: ObjectKey::new(format!("wal/{name}")).expect("key"),
                size: 1,
                last_modified: Utc.timestamp_opt(1_000 + index as i64, 0).single(),
            })
            .collect();
        WalArchive::from_listing(listing, "wal/", SegmentSize::default())
    }

    fn backup(name: &str, timeline: TimelineId, start_segment: u64, finish_segment: u64) -> BackupInfo {
        let time = |seconds: u64| Utc.timestamp_opt(seconds as i64, 0).single().expect("time");
        let builder = BackupInfo::builder().named(name).timeline(timeline).segments(start_segment, finish_segment);
        builder.times(time(start_segment), time(finish_segment)).build()
    }

    #[test]
    fn a_missing_segment_ends_the_contiguous_path_and_is_named() {
        let archive = archive(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000005",
            "000000010000000000000006",
        ]);
        let path = walk(&archive, &archive.history(1), 2);
        assert_eq!(path.end.as_ref().map(|segment| segment.segment), Some(3));
        assert_eq!(path.newest.as_ref().map(|segment| segment.segment), Some(6));
        assert_eq!(path.missing, vec!["000000010000000000000004"]);
        assert_eq!(path.end_lsn(&archive), Some(Lsn(4 * SEGMENT)));
    }

    #[test]
    fn the_path_follows_a_timeline_switch_through_the_history_file() {
        let mut archive = archive(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "00000002.history",
            "000000020000000000000003",
            "000000020000000000000004",
        ]);
        archive.set_history(TimelineHistory::parse(2, "1\t0/3000100\tx\n").expect("history"));
        let path = walk(&archive, &archive.history(2), 2);
        assert!(path.missing.is_empty());
        assert_eq!(path.end.as_ref().map(|segment| (segment.timeline, segment.segment)), Some((2, 4)));
        let report = verify_continuity(&[backup("b1", 1, 2, 2)], &archive);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.timelines.len(), 2);
    }

    #[test]
    fn wal_verify_names_a_gap_and_a_missing_history_file() {
        let archive = archive(&["000000010000000000000002", "000000010000000000000004", "000000020000000000000005"]);
        let report = verify_continuity(&[backup("b1", 1, 2, 2)], &archive);
        assert!(!report.ok);
        assert_eq!(report.timelines[0].missing_segments, vec!["000000010000000000000003"]);
        assert_eq!(report.missing_history_files, vec!["00000002.history"]);
    }

    #[test]
    fn latest_is_avoided_when_the_newest_timeline_branched_before_the_backup_ended() {
        let mut archive = archive(&["000000010000000000000009", "00000002.history", "000000020000000000000004"]);
        archive.set_history(TimelineHistory::parse(2, "1\t0/4000000\tx\n").expect("history"));
        let early = backup("early", 1, 2, 3);
        let late = backup("late", 1, 8, 9);
        assert_eq!(choose_timeline(&archive, &early), TimelineChoice { timeline: 2, latest_works: true });
        assert_eq!(choose_timeline(&archive, &late), TimelineChoice { timeline: 1, latest_works: false });
    }

    #[test]
    fn a_parent_that_kept_archiving_after_a_branch_is_reported() {
        let mut archive = archive(&["000000010000000000000004", "000000010000000000000006", "00000002.history"]);
        archive.set_history(TimelineHistory::parse(2, "1\t0/4000100\tx\n").expect("history"));
        assert_eq!(
            diverged_ancestors(&archive, &archive.history(2)),
            vec![(1, Lsn(0x4000100), "000000010000000000000006".to_string())]
        );
        assert_eq!("current".parse::<TimelineRequest>(), Ok(TimelineRequest::Current));
        assert_eq!("3".parse::<TimelineRequest>(), Ok(TimelineRequest::Id(3)));
        assert!("newest".parse::<TimelineRequest>().is_err());
    }

    #[test]
    fn the_window_starts_at_the_oldest_backup_that_reaches_the_newest_wal() {
        let archive = archive(&[
            "000000010000000000000002",
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006",
        ]);
        let backups = [backup("cut-off", 1, 2, 2), backup("b2", 1, 4, 4), backup("b3", 1, 5, 5)];
        let window = recovery_window(&backups, &archive, None).expect("window");
        assert_eq!(window.earliest_backup, "b2");
        assert_eq!(window.newest_backup, "b3");
        assert_eq!(window.earliest_lsn, Lsn(4 * SEGMENT + 0x100));
        assert_eq!(window.latest_lsn, Lsn(7 * SEGMENT));
        assert_eq!(window.latest_time, Utc.timestamp_opt(1_003, 0).single());
    }

    #[test]
    fn no_window_without_a_backup_whose_own_wal_is_archived() {
        let archive = archive(&["000000010000000000000002"]);
        assert_eq!(recovery_window(&[backup("b", 1, 2, 3)], &archive, None), None);
    }
}
