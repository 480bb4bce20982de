//! Timeline history files (`<TLI>.history`): which timelines a timeline descends from and where
//! each ancestor ended. The rules here mirror PostgreSQL's `timeline.c` and
//! `XLogFileReadAnyTLI`, so that what we check is what recovery will do.

use crate::wal::{Lsn, SegmentSize, TimelineId};

/// The ancestry of one timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineHistory {
    pub timeline: TimelineId,
    /// Ancestors oldest first, each with the LSN where the next timeline branched off it.
    pub ancestors: Vec<(TimelineId, Lsn)>,
}

/// A stretch of WAL positions that belongs to one timeline of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSpan {
    pub timeline: TimelineId,
    pub begin: Lsn,
    /// `None` for the history's own timeline, which has no end yet.
    pub end: Option<Lsn>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimelineError {
    #[error("timeline history of {timeline} line {line}: {reason}")]
    Malformed { timeline: TimelineId, line: usize, reason: String },
}

impl TimelineHistory {
    /// A timeline without recorded ancestors (timeline 1, or one whose history file is absent).
    pub fn root(timeline: TimelineId) -> Self {
        Self { timeline, ancestors: Vec::new() }
    }

    /// Parses the text of `<timeline>.history`: `parentTLI <TAB> switchpoint <TAB> reason` lines,
    /// `#` comments and blank lines ignored.
    pub fn parse(timeline: TimelineId, text: &str) -> Result<Self, TimelineError> {
        let mut ancestors: Vec<(TimelineId, Lsn)> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let malformed =
                |reason: &str| TimelineError::Malformed { timeline, line: number + 1, reason: reason.into() };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let parent: TimelineId =
                fields.next().and_then(|field| field.parse().ok()).ok_or_else(|| malformed("bad timeline id"))?;
            let switch: Lsn =
                fields.next().and_then(|field| field.parse().ok()).ok_or_else(|| malformed("bad switch point"))?;
            // PostgreSQL checks only that timeline ids increase: a restore that stops before
            // its target timeline began writes a switch point lower than the previous one.
            if ancestors.last().is_some_and(|&(previous, _)| parent <= previous) {
                return Err(malformed("timeline ids must increase"));
            }
            if parent >= timeline {
                return Err(malformed("an ancestor must be older than the timeline"));
            }
            ancestors.push((parent, switch));
        }
        Ok(Self { timeline, ancestors })
    }

    /// The spans of WAL each timeline of this history covers, oldest first.
    pub fn spans(&self) -> Vec<TimelineSpan> {
        let mut spans = Vec::with_capacity(self.ancestors.len() + 1);
        let mut begin = Lsn(0);
        for &(timeline, end) in &self.ancestors {
            spans.push(TimelineSpan { timeline, begin, end: Some(end) });
            begin = end;
        }
        spans.push(TimelineSpan { timeline: self.timeline, begin, end: None });
        spans
    }

    /// True when `timeline` is this timeline or one of its ancestors.
    pub fn contains(&self, timeline: TimelineId) -> bool {
        timeline == self.timeline || self.ancestors.iter().any(|&(ancestor, _)| ancestor == timeline)
    }

    /// Where `timeline` ended in this history; `None` for the history's own timeline or a
    /// timeline that is not part of it.
    pub fn switch_point(&self, timeline: TimelineId) -> Option<Lsn> {
        self.ancestors.iter().find(|&&(ancestor, _)| ancestor == timeline).map(|&(_, end)| end)
    }

    /// True when a backup taken on `timeline` that is consistent at `consistent_at` can recover
    /// along this history: its timeline is in the history and branched off no earlier than that.
    pub fn is_reachable_from(&self, timeline: TimelineId, consistent_at: Lsn) -> bool {
        timeline == self.timeline || self.switch_point(timeline).is_some_and(|end| end >= consistent_at)
    }

    /// The timeline whose WAL holds `lsn` in this history (PostgreSQL's `tliOfPointInHistory`).
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.spans()
            .into_iter()
            .find(|span| span.begin <= lsn && span.end.is_none_or(|end| lsn < end))
            .map_or(self.timeline, |span| span.timeline)
    }

    /// The timelines recovery tries for segment `segment`, preferred first: the newest timeline
    /// that begins at or before the segment (so the copy of a switch segment on the new
    /// timeline), then older timelines whose stretch of WAL includes the segment (the parent's
    /// copy of a switch segment).
    pub fn timelines_for_segment(&self, segment: u64, size: SegmentSize) -> Vec<TimelineId> {
        let spans = self.spans();
        let Some(position) = spans.iter().rposition(|span| size.segment_of(span.begin) <= segment) else {
            return vec![self.timeline];
        };
        let mut candidates = vec![spans[position].timeline];
        candidates.extend(spans[..position].iter().rev().filter_map(|span| {
            let end = span.end.map_or(u64::MAX, |end| size.segment_of(end));
            (size.segment_of(span.begin) <= segment && segment <= end).then_some(span.timeline)
        }));
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THIRD: &str = "1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";

    #[test]
    fn a_history_file_written_by_postgres_parses() {
        let history = TimelineHistory::parse(3, THIRD).expect("parse");
        assert_eq!(history.ancestors, vec![(1, Lsn(0x3000060)), (2, Lsn(0x5000000))]);
        assert!(history.contains(1) && history.contains(3) && !history.contains(4));
        assert_eq!(history.switch_point(1), Some(Lsn(0x3000060)));
        assert_eq!(history.timeline_at(Lsn(0x3000059)), 1);
        assert_eq!(history.timeline_at(Lsn(0x3000060)), 2);
        assert_eq!(history.timeline_at(Lsn(0x9000000)), 3);
    }

    #[test]
    fn the_switch_segment_is_read_from_the_new_timeline_first() {
        let history = TimelineHistory::parse(3, THIRD).expect("parse");
        let size = SegmentSize::default();
        assert_eq!(history.timelines_for_segment(2, size), vec![1]);
        assert_eq!(history.timelines_for_segment(3, size), vec![2, 1]);
        assert_eq!(history.timelines_for_segment(4, size), vec![2]);
        assert_eq!(history.timelines_for_segment(5, size), vec![3, 2]);
        assert_eq!(history.timelines_for_segment(9, size), vec![3]);
    }

    #[test]
    fn a_backup_reaches_a_timeline_only_if_it_branched_after_the_backup_ended() {
        let history = TimelineHistory::parse(3, THIRD).expect("parse");
        assert!(history.is_reachable_from(1, Lsn(0x3000000)));
        assert!(!history.is_reachable_from(1, Lsn(0x4000000)));
        assert!(history.is_reachable_from(3, Lsn(0x9000000)));
        assert!(!history.is_reachable_from(4, Lsn(0)));
    }

    #[test]
    fn malformed_histories_are_refused() {
        for bad in ["x\t0/1\n", "1\tzz\n", "2\t0/5\n1\t0/6\n", "3\t0/5\n"] {
            assert!(TimelineHistory::parse(3, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_timeline_that_branched_before_its_parent_began_is_accepted() {
        // Restoring from timeline 2's archive to a point before timeline 2 began writes this.
        let history = TimelineHistory::parse(3, "1\t0/5000100\tx\n\n2\t0/5000000\ty\n").expect("parse");
        let size = SegmentSize::default();
        assert_eq!(history.timeline_at(Lsn(0x4000000)), 1);
        assert_eq!(history.timeline_at(Lsn(0x6000000)), 3);
        assert_eq!(history.timelines_for_segment(5, size), vec![3, 2, 1]);
        assert_eq!(history.timelines_for_segment(6, size), vec![3]);
        assert!(history.is_reachable_from(1, Lsn(0x4000000)));
    }
}
