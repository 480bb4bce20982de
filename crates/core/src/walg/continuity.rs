//! What a wal-g archive lets a restore reach: for each backup, whether the WAL from its start to
//! its end is there, and the gaps in the WAL after the oldest backup.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::WalgBackup;
use crate::wal::{Lsn, SegmentSize, TimelineId};

/// The report of `import-check`.
#[derive(Clone, Debug, Serialize)]
pub struct Continuity {
    pub backups: Vec<BackupReach>,
    /// The newest segment archived (on the newest timeline).
    pub newest_segment: Option<String>,
    /// Segments archived in all.
    pub segments: usize,
    /// Missing runs of segments after the oldest backup's start.
    pub gaps: Vec<Gap>,
    /// True when the newest backup is restorable and no gap follows it: recovery from it can
    /// replay to `newest_segment`.
    pub restorable_to_newest: bool,
}

/// One backup and what its WAL allows.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReach {
    pub name: String,
    pub finish_time: Option<chrono::DateTime<chrono::Utc>>,
    pub start_segment: String,
    pub end_segment: String,
    /// The WAL from the backup's start to its end is all archived: it can be restored.
    pub restorable: bool,
    /// Segments between its start and its end that are missing.
    pub missing: Vec<String>,
}

/// A run of missing segments, `first` to `last` inclusive, on one timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub first: String,
    pub last: String,
    pub count: u64,
}

/// Checks `backups` against the archived WAL file names `wal` (suffix removed).
pub fn check(backups: &[WalgBackup], wal: &[String], size: SegmentSize) -> Continuity {
    let mut by_timeline: BTreeMap<TimelineId, BTreeSet<u64>> = BTreeMap::new();
    for name in wal {
        if let Ok((timeline, segment)) = size.parse_segment(name) {
            by_timeline.entry(timeline).or_default().insert(segment);
        }
    }
    let segments = by_timeline.values().map(BTreeSet::len).sum();
    let newest_segment = by_timeline
        .iter()
        .next_back()
        .and_then(|(timeline, set)| set.iter().next_back().map(|segment| size.segment_name(*timeline, *segment)));
    let reaches: Vec<BackupReach> = backups.iter().map(|backup| reach(backup, &by_timeline, size)).collect();
    let oldest = backups.first().map(|backup| (backup.timeline(), size.segment_of(Lsn(backup.sentinel.start_lsn))));
    let gaps = oldest.map(|start| gaps_after(start, &by_timeline, size)).unwrap_or_default();
    let newest_start =
        backups.last().map(|backup| (backup.timeline(), size.segment_of(Lsn(backup.sentinel.start_lsn))));
    let restorable_to_newest = reaches.last().is_some_and(|reach| reach.restorable)
        && newest_start.is_some_and(|start| gaps_after(start, &by_timeline, size).is_empty());
    Continuity { backups: reaches, newest_segment, segments, gaps, restorable_to_newest }
}

fn reach(backup: &WalgBackup, wal: &BTreeMap<TimelineId, BTreeSet<u64>>, size: SegmentSize) -> BackupReach {
    let timeline = backup.timeline();
    let start = size.segment_of(Lsn(backup.sentinel.start_lsn));
    let end = size.segment_of(Lsn(backup.sentinel.finish_lsn.unwrap_or(backup.sentinel.start_lsn)));
    let present = wal.get(&timeline);
    let missing: Vec<String> = (start..=end)
        .filter(|segment| !present.is_some_and(|set| set.contains(segment)))
        .map(|segment| size.segment_name(timeline, segment))
        .collect();
    BackupReach {
        name: backup.name.clone(),
        finish_time: backup.sentinel.finish_time,
        start_segment: size.segment_name(timeline, start),
        end_segment: size.segment_name(timeline, end),
        restorable: missing.is_empty(),
        missing,
    }
}

/// Missing runs from `(timeline, segment)` to the newest segment of each timeline from it on.
/// A later timeline is checked from its first archived segment (it begins at its switch point).
fn gaps_after(
    (first_timeline, first_segment): (TimelineId, u64),
    wal: &BTreeMap<TimelineId, BTreeSet<u64>>,
    size: SegmentSize,
) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for (timeline, set) in wal.range(first_timeline..) {
        let from = if *timeline == first_timeline { first_segment } else { set.iter().next().copied().unwrap_or(0) };
        let Some(&to) = set.iter().next_back() else { continue };
        let mut run: Option<(u64, u64)> = None;
        for segment in from..=to {
            if set.contains(&segment) {
                if let Some((first, last)) = run.take() {
                    gaps.push(gap(*timeline, first, last, size));
                }
            } else {
                run = Some(run.map_or((segment, segment), |(first, _)| (first, segment)));
            }
        }
    }
    gaps
}

fn gap(timeline: TimelineId, first: u64, last: u64, size: SegmentSize) -> Gap {
    Gap { first: size.segment_name(timeline, first), last: size.segment_name(timeline, last), count: last - first + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walg::Sentinel;

    fn backup(name: &str, start: u64, finish: u64) -> WalgBackup {
        let json = format!(r#"{{"LSN":{start},"FinishLSN":{finish},"PgVersion":150000}}"#);
        WalgBackup { name: name.to_string(), sentinel: Sentinel::parse(json.as_bytes()).expect("sentinel") }
    }

    #[test]
    fn a_missing_segment_after_the_backup_is_reported_as_a_gap() {
        let size = SegmentSize::new(16 * 1024 * 1024).expect("size");
        let seg = |n: u64| size.segment_name(1, n);
        let wal: Vec<String> = [2, 3, 4, 6, 7].into_iter().map(seg).collect();
        let backups = [backup("base_000000010000000000000003", 3 << 24, (3 << 24) + 200)];
        let report = check(&backups, &wal, size);
        assert!(report.backups[0].restorable);
        assert_eq!(report.gaps, vec![Gap { first: seg(5), last: seg(5), count: 1 }]);
        assert!(!report.restorable_to_newest);
        assert_eq!(report.newest_segment, Some(seg(7)));
    }

    #[test]
    fn a_backup_whose_own_wal_is_missing_is_not_restorable() {
        let size = SegmentSize::new(16 * 1024 * 1024).expect("size");
        let wal = vec![size.segment_name(1, 3)];
        let backups = [backup("base_000000010000000000000003", 3 << 24, 4 << 24)];
        let report = check(&backups, &wal, size);
        assert!(!report.backups[0].restorable);
        assert_eq!(report.backups[0].missing, vec![size.segment_name(1, 4)]);
    }
}
