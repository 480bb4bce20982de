//! Choosing the backup and timeline for a restore and refusing recovery targets that cannot
//! work, before anything is written.
//!
//! Rules (documented for users in `docs/agent.md`):
//! - `LATEST` with a time target picks the newest backup that finished at or before the time;
//!   with an LSN target the newest that ended at or before the LSN; with an xid target the newest
//!   whose recorded next transaction id is at or below the xid (so the transaction commits after
//!   the backup's end). Otherwise `LATEST` is the newest committed backup.
//! - The backup's own WAL (start to end segment) must be archived without a gap.
//! - A time or LSN earlier than the backup's end is refused (PostgreSQL cannot stop before the
//!   backup is consistent).
//! - An LSN beyond the end of the contiguous archived WAL is refused exactly; a time later than
//!   when the last contiguous segment was archived is refused (a segment is archived after every
//!   commit it holds, so a later target cannot be reached from the archive). When the path ends
//!   there and the archive holds the streamed `.partial` of the next segment (`wal-receive`),
//!   recovery reads that too: the end is where the partial ends (its recorded length) for an LSN,
//!   when it was last stored for a time.
//! - Without a target, a gap in the archive is refused: recovery would stop at the gap and lose
//!   what was archived after it. The message names the missing segment.
//! - A timeline history file that cannot be read is refused when the restore would read it:
//!   the chosen timeline's own, or one PostgreSQL probes at the end of recovery (timelines after
//!   the chosen one). When PostgreSQL's `latest` would probe one, the timeline is named instead.
//! - xid and restore-point targets cannot be bounded from the archive listing; PostgreSQL stops
//!   with "recovery ended before configured recovery target was reached" if one is not found.

use super::{BackupInfo, RecoveryTarget, WalArchive};
use crate::recovery_window::{RecoveryPath, TimelineChoice, TimelineRequest, choose_timeline, walk};
use crate::wal::Lsn;

/// What a restore will use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePlan {
    pub backup: BackupInfo,
    pub timeline: TimelineChoice,
    /// The WAL recovery will read along the chosen timeline.
    pub path: RecoveryPath,
}

/// Why a restore is refused before anything is written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no committed backup in the archive: take one with backup-push")]
    NoBackups,
    #[error("backup {0} is not a committed backup: run backup-list to see the backups")]
    NoSuchBackup(String),
    #[error("no backup ends before {target}: the oldest backup {oldest} ends at {end}; choose a later target")]
    NoBackupBeforeTarget { target: String, oldest: String, end: String },
    #[error(
        "{target} is before the end of backup {backup} ({end}): a restore cannot stop before its backup is consistent; \
         choose a later target or an older backup"
    )]
    BeforeBackupEnd { target: String, backup: String, end: String },
    #[error(
        "{target} is after the last archived WAL in {archive} ({end}){gap}: it cannot be reached from the archive; \
         wait for archiving (or run pg_switch_wal() on the source) and retry, or choose an earlier target"
    )]
    AfterArchiveEnd { target: String, archive: String, end: String, gap: String },
    #[error(
        "backup {backup} cannot be restored: WAL segment {segment} it needs is missing from the archive (run wal-verify)"
    )]
    BackupWalMissing { backup: String, segment: String },
    #[error(
        "timeline {timeline} does not descend from backup {backup} (timeline {backup_timeline}) after the backup's end: \
         choose another --target-timeline or another backup"
    )]
    TimelineUnreachable { timeline: u32, backup: String, backup_timeline: u32 },
    #[error(
        "timeline history file {file} is damaged ({key}: {reason}): a restore along timeline {timeline} reads it; \
         choose another --target-timeline or backup, or restore the file (wal-verify lists damaged files)"
    )]
    HistoryDamaged { file: String, key: String, reason: String, timeline: u32 },
    #[error(
        "WAL segment {segment} is missing from the archive: recovery would stop at {end} and lose what was archived \
         after it; run wal-verify, and to restore up to the gap pass a --target-lsn before {end}"
    )]
    GapInArchive { segment: String, end: Lsn },
}

/// Picks the backup for `name` (a backup name or `LATEST`) and `target`, chooses the timeline,
/// and checks that the target can be reached. `committed` is oldest first.
pub fn plan_restore(
    committed: &[BackupInfo],
    wal: &WalArchive,
    name: &str,
    target: &RecoveryTarget,
    timeline: TimelineRequest,
) -> Result<RestorePlan, TargetError> {
    let backup = select_backup(committed, name, target)?.clone();
    let timeline = match timeline {
        TimelineRequest::Latest => choose_timeline(wal, &backup),
        TimelineRequest::Current => TimelineChoice { timeline: backup.timeline, latest_works: false },
        TimelineRequest::Id(id) if wal.history(id).is_reachable_from(backup.timeline, backup.finish_lsn) => {
            TimelineChoice { timeline: id, latest_works: false }
        }
        TimelineRequest::Id(id) => {
            return Err(TargetError::TimelineUnreachable {
                timeline: id,
                backup: backup.name.clone(),
                backup_timeline: backup.timeline,
            });
        }
    };
    let timeline = avoid_damaged_histories(wal, &backup, timeline)?;
    let path = walk(wal, &wal.history(timeline.timeline), backup.start_segment());
    if !path.covers(backup.finish_segment()) {
        let segment = path.missing.first().cloned().unwrap_or_default();
        return Err(TargetError::BackupWalMissing { backup: backup.name.clone(), segment });
    }
    check_target(&backup, wal, &path, target)?;
    Ok(RestorePlan { backup, timeline, path })
}

/// Refuses a timeline whose recovery reads a damaged history file: its own, or one PostgreSQL
/// probes after it (`<n+1>.history`, … up to the first absent); names the timeline explicitly
/// when `latest` would probe a damaged one from the backup's timeline on.
fn avoid_damaged_histories(
    wal: &WalArchive,
    backup: &BackupInfo,
    mut choice: TimelineChoice,
) -> Result<TimelineChoice, TargetError> {
    let probed_after = |from: u32| (from + 1..).take_while(move |timeline| wal.history_files.contains_key(timeline));
    let read = std::iter::once(choice.timeline).filter(|&timeline| timeline > 1).chain(probed_after(choice.timeline));
    for timeline in read {
        if let Some(damaged) = wal.damaged_histories.get(&timeline) {
            return Err(TargetError::HistoryDamaged {
                file: damaged.name.clone(),
                key: damaged.key.clone(),
                reason: damaged.reason.clone(),
                timeline: choice.timeline,
            });
        }
    }
    if choice.latest_works
        && probed_after(backup.timeline).any(|timeline| wal.damaged_histories.contains_key(&timeline))
    {
        choice.latest_works = false;
    }
    Ok(choice)
}

fn select_backup<'b>(
    committed: &'b [BackupInfo],
    name: &str,
    target: &RecoveryTarget,
) -> Result<&'b BackupInfo, TargetError> {
    let oldest = committed.first().ok_or(TargetError::NoBackups)?;
    if name != "LATEST" {
        return committed
            .iter()
            .find(|backup| backup.name == name)
            .ok_or_else(|| TargetError::NoSuchBackup(name.to_string()));
    }
    let ends_before = |backup: &&BackupInfo| match target {
        RecoveryTarget::Time(time) => backup.finish_time <= *time,
        RecoveryTarget::Lsn(lsn) => backup.finish_lsn <= *lsn,
        RecoveryTarget::Xid(xid) => backup.next_xid.is_some_and(|next| next <= *xid),
        RecoveryTarget::EndOfArchive | RecoveryTarget::Immediate | RecoveryTarget::Name(_) => true,
    };
    committed.iter().rev().find(ends_before).ok_or_else(|| TargetError::NoBackupBeforeTarget {
        target: target.to_string(),
        oldest: oldest.name.clone(),
        end: format!("{} (LSN {})", oldest.finish_time.to_rfc3339(), oldest.finish_lsn),
    })
}

/// The streamed `.partial` recovery reads after the path's last complete segment: the copy of
/// the next segment on the timeline recovery asks for first, when nothing is archived past it
/// (over a gap, `wal-fetch` stops at the hole instead).
struct StreamedTail {
    name: String,
    stored_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Where it ends, when its header was read ([`WalArchive::partial_end`]).
    end: Option<Lsn>,
}

fn streamed_tail(path: &RecoveryPath, wal: &WalArchive) -> Option<StreamedTail> {
    let end = path.end.as_ref().filter(|_| path.missing.is_empty())?;
    let segment = end.segment + 1;
    let timeline = *wal.history(path.timeline).timelines_for_segment(segment, wal.segment_size).first()?;
    let (stored_at, end) = (wal.partial_stored_at(timeline, segment), wal.partial_end(timeline, segment));
    let name = format!("{}.partial", wal.segment_size.segment_name(timeline, segment));
    (stored_at.is_some() || end.is_some()).then_some(StreamedTail { name, stored_at, end })
}

/// Until when the path's WAL is archived: the last store of its streamed tail, else the
/// archiving of the last complete segment.
fn archived_until(path: &RecoveryPath, wal: &WalArchive) -> Option<chrono::DateTime<chrono::Utc>> {
    let streamed = streamed_tail(path, wal).and_then(|tail| tail.stored_at);
    streamed.or(path.end.as_ref()?.last_modified)
}

/// Where the path's WAL ends for an LSN target, described: the end of its streamed tail when
/// that was read, else the end of the last complete segment.
fn archived_lsn(path: &RecoveryPath, wal: &WalArchive, complete_end: Lsn) -> (Lsn, String) {
    match streamed_tail(path, wal).and_then(|tail| Some((tail.end?, tail.name))) {
        Some((end, name)) if end > complete_end => (end, format!("LSN {end}, where the streamed {name} ends")),
        _ => (complete_end, format!("LSN {complete_end}")),
    }
}

fn check_target(
    backup: &BackupInfo,
    wal: &WalArchive,
    path: &RecoveryPath,
    target: &RecoveryTarget,
) -> Result<(), TargetError> {
    let end_lsn = path.end_lsn(wal).unwrap_or(backup.finish_lsn);
    let gap = path.missing.first().map(|segment| format!("; segment {segment} is missing")).unwrap_or_default();
    let archive = wal.location.clone();
    let before_end =
        |end: String| TargetError::BeforeBackupEnd { target: target.to_string(), backup: backup.name.clone(), end };
    match target {
        RecoveryTarget::Time(time) => {
            if *time < backup.finish_time {
                return Err(before_end(backup.finish_time.to_rfc3339()));
            }
            let archived_at = archived_until(path, wal);
            if let Some(archived_at) = archived_at.filter(|archived_at| time > archived_at) {
                let end = format!("archived at {}", archived_at.to_rfc3339());
                return Err(TargetError::AfterArchiveEnd { target: target.to_string(), archive, end, gap });
            }
        }
        RecoveryTarget::Lsn(lsn) => {
            if *lsn < backup.finish_lsn {
                return Err(before_end(format!("LSN {}", backup.finish_lsn)));
            }
            let (archived, end) = archived_lsn(path, wal, end_lsn);
            if *lsn > archived {
                return Err(TargetError::AfterArchiveEnd { target: target.to_string(), archive, end, gap });
            }
        }
        RecoveryTarget::EndOfArchive => {
            if let Some(segment) = path.missing.first() {
                return Err(TargetError::GapInArchive { segment: segment.clone(), end: end_lsn });
            }
        }
        RecoveryTarget::Immediate | RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::catalog::TimelineHistory;
    use crate::recovery_window::TimelineChoice;
    use crate::storage::{ObjectKey, ObjectMeta};
    use crate::wal::SegmentSize;

    const SEGMENT: u64 = 16 * 1024 * 1024;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_000_000 + seconds, 0).single().expect("time")
    }

    /// Segment `n` of timeline 1 archived at `at(n * 100)`, for each listed n.
    fn wal(segments: &[u64]) -> WalArchive {
        let size = SegmentSize::default();
        let listing = segments
            .iter()
            .map(|&segment| ObjectMeta {
                key: ObjectKey::new(format!("wal/{}", size.segment_name(1, segment))).expect("key"),
                size: 1,
                last_modified: Some(at(segment as i64 * 100)),
            })
            .collect();
        WalArchive::from_listing(listing, "wal/", size)
    }

    /// A backup from segment `start` to `finish`, finishing at `at(finish * 100 - 50)`.
    fn backup(name: &str, start: u64, finish: u64) -> BackupInfo {
        let builder = BackupInfo::builder().named(name).segments(start, finish);
        builder.times(at(start as i64 * 100 - 90), at(finish as i64 * 100 - 50)).next_xid(start * 1000).build()
    }

    fn backups() -> Vec<BackupInfo> {
        vec![backup("b2", 2, 2), backup("b5", 5, 5)]
    }

    #[test]
    fn latest_with_a_time_target_picks_the_newest_backup_finished_before_it() {
        let wal = wal(&[2, 3, 4, 5, 6]);
        let plan = |target| {
            plan_restore(&backups(), &wal, "LATEST", &target, TimelineRequest::Latest).map(|plan| plan.backup.name)
        };
        assert_eq!(plan(RecoveryTarget::Time(at(400))), Ok("b2".to_string()));
        assert_eq!(plan(RecoveryTarget::Time(at(460))), Ok("b5".to_string()));
        assert_eq!(plan(RecoveryTarget::Lsn(Lsn(4 * SEGMENT))), Ok("b2".to_string()));
        assert_eq!(plan(RecoveryTarget::Xid(4_999)), Ok("b2".to_string()));
        assert_eq!(plan(RecoveryTarget::EndOfArchive), Ok("b5".to_string()));
        assert!(matches!(plan(RecoveryTarget::Time(at(0))), Err(TargetError::NoBackupBeforeTarget { .. })));
    }

    /// `wal` with the streamed `.partial` of segment `segment` (timeline 1) stored at `at(stored)`,
    /// its header read as ending `streamed` bytes into the segment.
    fn with_partial(wal: WalArchive, segment: u64, stored: i64, streamed: Option<u64>) -> WalArchive {
        let size = SegmentSize::default();
        let mut listing: Vec<ObjectMeta> =
            wal.segments.values().flat_map(|by_number| by_number.values().cloned()).collect();
        listing.push(ObjectMeta {
            key: ObjectKey::new(format!("wal/{}.partial", size.segment_name(1, segment))).expect("key"),
            size: 1,
            last_modified: Some(at(stored)),
        });
        let mut wal = WalArchive::from_listing(listing, "wal/", size);
        wal.location = "file:///archive/db".into();
        if let Some(streamed) = streamed {
            wal.streamed_ends.insert((1, segment), Lsn(size.start_of(segment).0 + streamed));
        }
        wal
    }

    #[test]
    fn a_time_target_in_the_streamed_partial_after_the_last_complete_segment_is_reachable() {
        let wal = with_partial(wal(&[2, 3, 4, 5, 6]), 7, 640, None);
        let plan = |seconds| {
            plan_restore(&backups(), &wal, "LATEST", &RecoveryTarget::Time(at(seconds)), TimelineRequest::Latest)
        };
        assert!(plan(630).is_ok(), "the stream stored WAL until 640");
        assert!(matches!(plan(641), Err(TargetError::AfterArchiveEnd { .. })), "{:?}", plan(641));
    }

    #[test]
    fn an_lsn_target_up_to_the_end_of_the_streamed_partial_is_reachable_and_one_past_it_is_refused() {
        let streamed = with_partial(wal(&[2, 3, 4, 5, 6]), 7, 640, Some(5000));
        let plan =
            |lsn| plan_restore(&backups(), &streamed, "LATEST", &RecoveryTarget::Lsn(lsn), TimelineRequest::Latest);
        assert!(plan(Lsn(7 * SEGMENT + 4000)).is_ok(), "inside the streamed tail");
        assert!(plan(Lsn(7 * SEGMENT + 5000)).is_ok(), "at the streamed end");
        let refused = plan(Lsn(7 * SEGMENT + 5001)).expect_err("past the streamed end");
        assert_eq!(
            refused.to_string(),
            "LSN 0/7001389 is after the last archived WAL in file:///archive/db (LSN 0/7001388, where the streamed \
             000000010000000000000007.partial ends): it cannot be reached from the archive; wait for archiving (or run \
             pg_switch_wal() on the source) and retry, or choose an earlier target"
        );
        let unread = with_partial(wal(&[2, 3, 4, 5, 6]), 7, 640, None);
        let refused = plan_restore(
            &backups(),
            &unread,
            "LATEST",
            &RecoveryTarget::Lsn(Lsn(7 * SEGMENT + 1)),
            TimelineRequest::Latest,
        );
        assert!(
            matches!(&refused, Err(TargetError::AfterArchiveEnd { end, .. }) if end == "LSN 0/7000000"),
            "a partial whose end was not read counts for nothing: {refused:?}"
        );
    }

    #[test]
    fn a_streamed_partial_in_a_gap_extends_no_target() {
        let wal = with_partial(wal(&[2, 3, 5, 6]), 4, 640, Some(5000));
        let plan = |target| plan_restore(&backups(), &wal, "b2", &target, TimelineRequest::Latest);
        let by_lsn = plan(RecoveryTarget::Lsn(Lsn(4 * SEGMENT + 100)));
        assert!(matches!(by_lsn, Err(TargetError::AfterArchiveEnd { .. })), "{by_lsn:?}");
        let by_time = plan(RecoveryTarget::Time(at(630)));
        assert!(matches!(by_time, Err(TargetError::AfterArchiveEnd { .. })), "{by_time:?}");
    }

    #[test]
    fn a_target_inside_the_backup_window_is_refused() {
        let wal = wal(&[2, 3, 4, 5, 6]);
        let refused = plan_restore(&backups(), &wal, "b5", &RecoveryTarget::Time(at(400)), TimelineRequest::Latest);
        assert!(matches!(refused, Err(TargetError::BeforeBackupEnd { .. })), "{refused:?}");
        let refused =
            plan_restore(&backups(), &wal, "b5", &RecoveryTarget::Lsn(Lsn(5 * SEGMENT)), TimelineRequest::Latest);
        assert!(matches!(refused, Err(TargetError::BeforeBackupEnd { .. })), "{refused:?}");
    }

    #[test]
    fn a_target_beyond_the_archive_is_refused() {
        let wal = wal(&[2, 3, 4, 5, 6]);
        let refused = plan_restore(&backups(), &wal, "LATEST", &RecoveryTarget::Time(at(601)), TimelineRequest::Latest);
        assert!(matches!(refused, Err(TargetError::AfterArchiveEnd { .. })), "{refused:?}");
        let refused = plan_restore(
            &backups(),
            &wal,
            "LATEST",
            &RecoveryTarget::Lsn(Lsn(7 * SEGMENT + 1)),
            TimelineRequest::Latest,
        );
        assert!(matches!(refused, Err(TargetError::AfterArchiveEnd { .. })), "{refused:?}");
        assert!(
            plan_restore(&backups(), &wal, "LATEST", &RecoveryTarget::Lsn(Lsn(7 * SEGMENT)), TimelineRequest::Latest)
                .is_ok()
        );
        assert!(
            plan_restore(&backups(), &wal, "LATEST", &RecoveryTarget::Time(at(600)), TimelineRequest::Latest).is_ok()
        );
    }

    #[test]
    fn a_gap_refuses_a_restore_to_the_end_but_not_to_a_target_before_it() {
        let wal = wal(&[2, 3, 5, 6]);
        let refused = plan_restore(&backups(), &wal, "b2", &RecoveryTarget::EndOfArchive, TimelineRequest::Latest);
        assert_eq!(
            refused,
            Err(TargetError::GapInArchive { segment: "000000010000000000000004".into(), end: Lsn(4 * SEGMENT) })
        );
        assert!(
            plan_restore(&backups(), &wal, "b2", &RecoveryTarget::Lsn(Lsn(4 * SEGMENT)), TimelineRequest::Latest)
                .is_ok()
        );
        let beyond =
            plan_restore(&backups(), &wal, "b2", &RecoveryTarget::Lsn(Lsn(5 * SEGMENT)), TimelineRequest::Latest);
        assert!(
            matches!(beyond, Err(TargetError::AfterArchiveEnd { ref gap, .. }) if gap.contains("000000010000000000000004"))
        );
    }

    #[test]
    fn a_damaged_history_file_refuses_only_the_restores_that_read_it() {
        let size = SegmentSize::default();
        let mut names: Vec<String> = (2..=8).map(|segment| size.segment_name(1, segment)).collect();
        names.extend((4..=8).map(|segment| size.segment_name(2, segment)));
        names.extend((6..=8).map(|segment| size.segment_name(3, segment)));
        names.extend(["00000002.history".to_string(), "00000003.history".to_string()]);
        let listing = names
            .iter()
            .map(|name| ObjectMeta {
                key: ObjectKey::new(format!("wal/{name}")).expect("key"),
                size: 1,
                last_modified: Some(at(900)),
            })
            .collect();
        let mut wal = WalArchive::from_listing(listing, "wal/", size);
        wal.set_history(TimelineHistory::parse(3, "1\t0/4000000\tx\n2\t0/6000000\ty\n").expect("history"));
        let damaged = super::super::Damaged {
            name: "00000002.history".into(),
            key: "wal/00000002.history".into(),
            reason: "checksum mismatch".into(),
        };
        wal.damaged_histories.insert(2, damaged);
        let on_third = BackupInfo { timeline: 3, ..backup("b7", 7, 7) };
        let plan = plan_restore(&[on_third], &wal, "b7", &RecoveryTarget::EndOfArchive, TimelineRequest::Latest)
            .expect("a restore along timeline 3 does not read 00000002.history");
        assert_eq!(plan.timeline, TimelineChoice { timeline: 3, latest_works: true });
        let around = plan_restore(&backups(), &wal, "b2", &RecoveryTarget::EndOfArchive, TimelineRequest::Latest)
            .expect("timeline 3's history names every ancestor");
        assert_eq!(around.timeline, TimelineChoice { timeline: 3, latest_works: false }, "latest would probe 2");
        let report = crate::recovery_window::verify_continuity(&backups(), &wal);
        assert!(!report.ok);
        assert_eq!(report.damaged_history_files[0].key, "wal/00000002.history");
        let refused = plan_restore(&backups(), &wal, "b2", &RecoveryTarget::EndOfArchive, TimelineRequest::Current)
            .expect_err("refused");
        assert!(
            matches!(&refused, TargetError::HistoryDamaged { key, .. } if key == "wal/00000002.history"),
            "{refused}"
        );
    }

    #[test]
    fn a_backup_whose_own_wal_is_missing_is_refused() {
        let wal = wal(&[2, 3, 4, 6]);
        let refused =
            plan_restore(&[backup("b4", 4, 5)], &wal, "LATEST", &RecoveryTarget::Immediate, TimelineRequest::Latest);
        assert_eq!(
            refused,
            Err(TargetError::BackupWalMissing { backup: "b4".into(), segment: "000000010000000000000005".into() })
        );
    }
}
