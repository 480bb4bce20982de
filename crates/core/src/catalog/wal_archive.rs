//! An index of the archive's `wal/` objects: segments by timeline and number, timeline
//! histories, partial segments and backup history files.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::timeline::TimelineHistory;
use crate::storage::ObjectMeta;
use crate::wal::{Lsn, SegmentSize, TimelineId, WalFileName};

/// One listing of the archive's WAL, parsed.
#[derive(Clone, Debug, Default)]
pub struct WalArchive {
    pub segment_size: SegmentSize,
    /// Complete segments: timeline → segment number → object.
    pub segments: BTreeMap<TimelineId, BTreeMap<u64, ObjectMeta>>,
    /// Timelines with a `.history` object in the archive.
    pub history_files: BTreeMap<TimelineId, ObjectMeta>,
    /// Parsed histories (filled by [`WalArchive::set_history`]; absent ones are roots).
    pub histories: BTreeMap<TimelineId, TimelineHistory>,
    /// `.partial` and `.backup` files with the segment number they belong to.
    pub other_files: Vec<(String, u64, ObjectMeta)>,
    /// Objects under `wal/` whose names are not WAL file names (reported, never deleted).
    pub foreign: Vec<ObjectMeta>,
    /// History files that could not be read or parsed (their timelines act as roots).
    pub damaged_histories: BTreeMap<TimelineId, super::Damaged>,
    /// Where the streamed `.partial` of (timeline, segment) ends: the segment's start plus the
    /// content length its envelope records (filled by [`super::load_wal_archive`] for the
    /// partials after each timeline's newest complete segment, see [`WalArchive::tail_partials`]).
    pub streamed_ends: BTreeMap<(TimelineId, u64), Lsn>,
    /// The archive the listing came from, for messages (empty when unknown).
    pub location: String,
}

/// A segment in the archive, as recovery would read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub timeline: TimelineId,
    pub segment: u64,
    pub name: String,
    pub last_modified: Option<DateTime<Utc>>,
}

/// WAL the archive holds beyond a missing segment: proof that the segment is a hole, not the
/// end of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaterWal {
    /// A segment, `.partial` or `.backup` file of the same timeline further on.
    File(String),
    /// A later timeline branched off this one after the segment began, so this timeline's WAL
    /// went on through the segment (its history file says where).
    Branch { history: String, switch_point: Lsn },
}

impl std::fmt::Display for LaterWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaterWal::File(name) => write!(f, "the archive holds {name}, which comes after it"),
            LaterWal::Branch { history, switch_point } => {
                write!(f, "{history} says the timeline went on to {switch_point}, past it")
            }
        }
    }
}

impl WalArchive {
    /// Indexes a listing of `wal_prefix` (keys include the prefix).
    pub fn from_listing(listing: Vec<ObjectMeta>, wal_prefix: &str, segment_size: SegmentSize) -> Self {
        let mut archive = Self { segment_size, ..Self::default() };
        for meta in listing {
            let name = meta.key.as_str().strip_prefix(wal_prefix).unwrap_or(meta.key.as_str()).to_string();
            match name.parse::<WalFileName>() {
                Ok(WalFileName::Segment { timeline, name }) => match segment_size.parse_segment(&name) {
                    Ok((_, segment)) => {
                        archive.segments.entry(timeline).or_default().insert(segment, meta);
                    }
                    Err(_) => archive.foreign.push(meta),
                },
                Ok(WalFileName::History { timeline }) => {
                    archive.history_files.insert(timeline, meta);
                }
                Ok(WalFileName::Partial { .. } | WalFileName::BackupHistory { .. }) => {
                    match segment_size.parse_segment(&name[..24.min(name.len())]) {
                        Ok((_, segment)) => archive.other_files.push((name, segment, meta)),
                        Err(_) => archive.foreign.push(meta),
                    }
                }
                Err(_) => archive.foreign.push(meta),
            }
        }
        archive
    }

    /// Records the parsed content of a history file.
    pub fn set_history(&mut self, history: TimelineHistory) {
        self.histories.insert(history.timeline, history);
    }

    /// The history of `timeline`: parsed when its file was loaded, a root otherwise.
    pub fn history(&self, timeline: TimelineId) -> TimelineHistory {
        self.histories.get(&timeline).cloned().unwrap_or_else(|| TimelineHistory::root(timeline))
    }

    /// The segment object, when archived.
    pub fn segment(&self, timeline: TimelineId, segment: u64) -> Option<ArchivedSegment> {
        let meta = self.segments.get(&timeline)?.get(&segment)?;
        Some(ArchivedSegment {
            timeline,
            segment,
            name: self.segment_size.segment_name(timeline, segment),
            last_modified: meta.last_modified,
        })
    }

    /// The newest timeline PostgreSQL picks for `recovery_target_timeline = 'latest'` starting
    /// from `timeline`: it probes `<n>.history` for n = timeline+1, timeline+2, … and stops at the
    /// first one missing.
    pub fn latest_timeline_from(&self, timeline: TimelineId) -> TimelineId {
        let mut newest = timeline;
        while self.history_files.contains_key(&(newest + 1)) {
            newest += 1;
        }
        newest
    }

    /// Every timeline with a segment or a history file in the archive.
    pub fn timelines(&self) -> BTreeSet<TimelineId> {
        self.segments.keys().chain(self.history_files.keys()).copied().collect()
    }

    /// The newest segment number on `timeline` within `first..=last`.
    pub fn newest_segment_within(&self, timeline: TimelineId, first: u64, last: u64) -> Option<u64> {
        if first > last {
            return None;
        }
        self.segments.get(&timeline)?.range(first..=last).next_back().map(|(&segment, _)| segment)
    }

    /// File names of segments, partial segments and backup history files whose segment number
    /// is below `segment`, on every timeline. History files are never included.
    pub fn files_before(&self, segment: u64) -> Vec<String> {
        let mut names: Vec<(u64, String)> = self
            .segments
            .iter()
            .flat_map(|(&timeline, by_number)| {
                by_number
                    .range(..segment)
                    .map(move |(&number, _)| (number, self.segment_size.segment_name(timeline, number)))
            })
            .collect();
        names.extend(
            self.other_files
                .iter()
                .filter(|(_, number, _)| *number < segment)
                .map(|(name, number, _)| (*number, name.clone())),
        );
        names.sort();
        names.into_iter().map(|(_, name)| name).collect()
    }

    /// What the archive holds beyond segment `segment` of `timeline` (which it lacks): a later
    /// file of that timeline, or a history (loaded with [`WalArchive::set_history`]) in which a
    /// later timeline branched off it after the segment began. `None`: the segment is the end
    /// of that timeline's archived WAL.
    pub fn wal_after(&self, timeline: TimelineId, segment: u64) -> Option<LaterWal> {
        let later_segment = self
            .segments
            .get(&timeline)
            .and_then(|by_number| by_number.range(segment + 1..).next())
            .map(|(&number, _)| self.segment_size.segment_name(timeline, number));
        let later_other = || {
            self.other_files
                .iter()
                .filter(|(name, number, _)| *number > segment && name.starts_with(&format!("{timeline:08X}")))
                .map(|(name, _, _)| name.clone())
                .min()
        };
        if let Some(name) = later_segment.or_else(later_other) {
            return Some(LaterWal::File(name));
        }
        let segment_start = self.segment_size.start_of(segment);
        self.histories.values().filter(|history| history.timeline > timeline).find_map(|history| {
            let switch_point = history.switch_point(timeline).filter(|&end| end > segment_start)?;
            Some(LaterWal::Branch { history: format!("{:08X}.history", history.timeline), switch_point })
        })
    }

    /// When the `.partial` copy of segment `segment` on `timeline` was last stored: the WAL
    /// streamed past the complete segments (`wal-receive` replaces it with longer copies).
    pub fn partial_stored_at(&self, timeline: TimelineId, segment: u64) -> Option<DateTime<Utc>> {
        let name = format!("{}.partial", self.segment_size.segment_name(timeline, segment));
        self.other_files.iter().find(|(file, _, _)| *file == name).and_then(|(_, _, meta)| meta.last_modified)
    }

    /// Where the streamed `.partial` of segment `segment` on `timeline` ends, when it was read.
    pub fn partial_end(&self, timeline: TimelineId, segment: u64) -> Option<Lsn> {
        self.streamed_ends.get(&(timeline, segment)).copied()
    }

    /// The `.partial` objects recovery may read as a streamed tail: those of segments after
    /// the newest complete segment of their timeline (older ones are superseded by the complete
    /// segment or lie in a hole), as (timeline, segment, object).
    pub fn tail_partials(&self) -> Vec<(TimelineId, u64, &ObjectMeta)> {
        self.other_files
            .iter()
            .filter_map(|(name, segment, meta)| match name.parse::<WalFileName>() {
                Ok(WalFileName::Partial { timeline, .. }) => Some((timeline, *segment, meta)),
                _ => None,
            })
            .filter(|(timeline, segment, _)| {
                let newest = self.segments.get(timeline).and_then(|by_number| by_number.keys().next_back());
                newest.is_none_or(|newest| segment > newest)
            })
            .collect()
    }

    /// Every WAL file name in the archive (for deleting everything).
    pub fn all_file_names(&self) -> Vec<String> {
        let mut names = self.files_before(u64::MAX);
        names.extend(self.history_files.keys().map(|timeline| format!("{timeline:08X}.history")));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectKey;

    pub(crate) fn listing(names: &[&str]) -> Vec<ObjectMeta> {
        names
            .iter()
            .map(|name| ObjectMeta {
                key: ObjectKey::new(format!("db/wal/{name}")).expect("key"),
                size: 1,
                last_modified: None,
            })
            .collect()
    }

    #[test]
    fn a_listing_is_sorted_into_segments_histories_and_other_files() {
        let names = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
            "00000002.history",
            "000000020000000000000003",
            "notes.txt",
        ];
        let archive = WalArchive::from_listing(listing(&names), "db/wal/", SegmentSize::default());
        assert_eq!(archive.segments[&1].keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert!(archive.segment(2, 3).is_some());
        assert_eq!(archive.history_files.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(archive.other_files.len(), 2);
        assert_eq!(archive.foreign.len(), 1);
        assert_eq!(archive.latest_timeline_from(1), 2);
        assert_eq!(
            archive.files_before(3),
            vec!["000000010000000000000001", "000000010000000000000002", "000000010000000000000002.00000028.backup"]
        );
        assert_eq!(archive.all_file_names().len(), 6);
    }

    #[test]
    fn a_later_segment_partial_or_backup_file_of_the_same_timeline_proves_a_hole() {
        let size = SegmentSize::default();
        let archive = |names: &[&str]| WalArchive::from_listing(listing(names), "db/wal/", size);
        let with_later = archive(&["000000010000000000000004", "000000010000000000000006"]);
        assert_eq!(with_later.wal_after(1, 5), Some(LaterWal::File("000000010000000000000006".into())));
        assert_eq!(with_later.wal_after(1, 7), None, "the end of the archive");
        assert_eq!(with_later.wal_after(2, 5), None, "another timeline's segments say nothing");
        let partial = archive(&["000000010000000000000004", "000000010000000000000007.partial"]);
        assert_eq!(partial.wal_after(1, 5), Some(LaterWal::File("000000010000000000000007.partial".into())));
        assert_eq!(partial.wal_after(1, 7), None, "a partial copy of the missing segment itself is its end");
        // Segment numbers compare across the 8-digit boundary of the name.
        let far = archive(&["000000010000000100000000"]);
        assert_eq!(far.wal_after(1, 0xFF), Some(LaterWal::File("000000010000000100000000".into())));
    }

    #[test]
    fn a_timeline_that_branched_after_the_segment_began_proves_a_hole() {
        let size = SegmentSize::default();
        let mut archive = WalArchive::from_listing(listing(&["00000002.history"]), "db/wal/", size);
        archive.set_history(TimelineHistory::parse(2, "1\t0/9000100\tx\n").expect("history"));
        let branched = archive.wal_after(1, 9);
        assert_eq!(
            branched,
            Some(LaterWal::Branch { history: "00000002.history".into(), switch_point: Lsn(0x9000100) })
        );
        assert!(archive.wal_after(1, 8).is_some());
        assert_eq!(archive.wal_after(1, 10), None, "timeline 1 ended inside segment 9");
        assert_eq!(archive.wal_after(2, 10), None, "a timeline's own history says nothing about its end");
        let mut at_boundary = WalArchive::from_listing(listing(&["00000002.history"]), "db/wal/", size);
        at_boundary.set_history(TimelineHistory::parse(2, "1\t0/9000000\tx\n").expect("history"));
        assert_eq!(at_boundary.wal_after(1, 9), None, "timeline 1 ended exactly where segment 9 begins");
    }

    #[test]
    fn the_latest_timeline_probe_stops_at_the_first_missing_history() {
        let archive = WalArchive::from_listing(
            listing(&["00000002.history", "00000004.history"]),
            "db/wal/",
            SegmentSize::default(),
        );
        assert_eq!(archive.latest_timeline_from(1), 2);
        assert_eq!(archive.latest_timeline_from(3), 4);
    }
}
