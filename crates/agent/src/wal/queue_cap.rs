//! The archive queue cap (`transfer.archive_queue_max_mb`, off unless set): when the WAL waiting
//! to be archived (the files PostgreSQL marked `.ready` in `pg_wal/archive_status`) exceeds the
//! cap, `wal-push` of a segment reports success without archiving it, so PostgreSQL recycles it
//! and the primary's disk does not fill up while the archive is unreachable.
//!
//! That makes a hole in the archive: point-in-time recovery cannot cross it, and only a base
//! backup taken after it restores to a time after it. So a dropped segment is never silent: it is
//! recorded in `pg_wal/.pgec2-archive-holes` (one line per segment: time, file, queue bytes, cap;
//! fsynced before wal-push answers), logged as an error on wal-push's stderr (PostgreSQL's log),
//! reported by `archive-status` (text and JSON) until a base backup taken after the last hole is
//! committed, which removes the record. History files are never dropped (they are tiny, and
//! recovery needs every one).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgec2_core::wal::WalFileName;

/// The record of dropped segments, inside `pg_wal` (never part of a base backup).
pub const HOLES_FILE: &str = ".pgec2-archive-holes";

/// One segment the cap dropped, and what `archive-status` reports about holes.
pub use pgec2_core::archiver::{ArchiveHoles as Holes, DroppedSegment};

/// Bytes of the WAL files waiting to be archived in `wal_dir` (`.ready` status files).
pub fn queue_bytes(wal_dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(wal_dir.join("archive_status")) else { return 0 };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .filter_map(|name| fs::metadata(wal_dir.join(name)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// When the cap is set, `file` is a segment and the queue is above the cap: records the drop
/// (durably) and returns the record; PostgreSQL is then told the file is archived. `None`: push.
pub fn drop_if_over(
    wal_dir: &Path,
    file: &WalFileName,
    cap_mb: Option<u64>,
) -> Result<Option<DroppedSegment>, std::io::Error> {
    let Some(cap_mb) = cap_mb else { return Ok(None) };
    if !matches!(file, WalFileName::Segment { .. } | WalFileName::Partial { .. }) {
        return Ok(None);
    }
    let cap_bytes = cap_mb.saturating_mul(1024 * 1024);
    let queue_bytes = queue_bytes(wal_dir);
    if queue_bytes <= cap_bytes {
        return Ok(None);
    }
    let dropped = DroppedSegment { file: file.file_name(), dropped_at: Utc::now(), queue_bytes, cap_bytes };
    let line = format!("{} {} {} {}\n", dropped.dropped_at.to_rfc3339(), dropped.file, queue_bytes, cap_bytes);
    let path = wal_dir.join(HOLES_FILE);
    let mut record = OpenOptions::new().create(true).append(true).open(&path)?;
    record.write_all(line.as_bytes())?;
    record.sync_all()?;
    fs::File::open(wal_dir)?.sync_all()?;
    Ok(Some(dropped))
}

/// The holes recorded in `wal_dir`, if any.
pub fn holes(wal_dir: &Path) -> Option<Holes> {
    let dropped = read(&wal_dir.join(HOLES_FILE));
    Some(Holes { dropped_segments: dropped.len(), first: dropped.first()?.clone(), last: dropped.last()?.clone() })
}

/// True when the cap dropped `file` (recorded in `wal_dir`).
pub fn was_dropped(wal_dir: &Path, file: &str) -> bool {
    read(&wal_dir.join(HOLES_FILE)).iter().any(|dropped| dropped.file == file)
}

/// After a base backup starting at WAL segment `start` is committed: forgets the holes before it
/// (that backup restores past them). Best effort: a record left behind only keeps the warning.
pub fn forget_before(wal_dir: &Path, start: &str) {
    let path = wal_dir.join(HOLES_FILE);
    let dropped = read(&path);
    if dropped.is_empty() {
        return;
    }
    // Segment names of one timeline sort by position; the timeline prefix sorts newer ones last.
    let kept: Vec<&DroppedSegment> = dropped.iter().filter(|segment| segment.file.as_str() >= start).collect();
    let outcome = if kept.is_empty() {
        fs::remove_file(&path)
    } else {
        let text: String = kept
            .iter()
            .map(|s| format!("{} {} {} {}\n", s.dropped_at.to_rfc3339(), s.file, s.queue_bytes, s.cap_bytes))
            .collect();
        super::durable::write_atomically(&path, text.as_bytes())
    };
    if let Err(error) = outcome {
        tracing::warn!(path = %path.display(), %error, "could not update the record of archive holes");
    }
}

fn read(path: &PathBuf) -> Vec<DroppedSegment> {
    let Ok(text) = fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let dropped_at = DateTime::parse_from_rfc3339(fields.next()?).ok()?.with_timezone(&Utc);
            let file = fields.next()?.to_string();
            let queue_bytes = fields.next()?.parse().ok()?;
            let cap_bytes = fields.next()?.parse().ok()?;
            Some(DroppedSegment { file, dropped_at, queue_bytes, cap_bytes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000000010000000000000003";
    const B: &str = "000000010000000000000004";

    fn wal_dir_with_ready(files: &[(&str, usize)]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("pg_wal");
        fs::create_dir_all(wal.join("archive_status")).expect("mkdir");
        for (name, size) in files {
            fs::write(wal.join(name), vec![0u8; *size]).expect("segment");
            fs::write(wal.join("archive_status").join(format!("{name}.ready")), b"").expect("ready");
        }
        (dir, wal)
    }

    #[test]
    fn a_segment_is_dropped_only_above_the_cap_and_the_hole_is_recorded_until_a_later_backup() {
        let (_dir, wal) = wal_dir_with_ready(&[(A, 1024 * 1024), (B, 1024 * 1024)]);
        let segment: WalFileName = A.parse().expect("name");
        assert_eq!(queue_bytes(&wal), 2 * 1024 * 1024);
        assert_eq!(drop_if_over(&wal, &segment, None).expect("no cap"), None, "off unless set");
        assert_eq!(drop_if_over(&wal, &segment, Some(2)).expect("at the cap"), None, "at the cap: push");
        let history: WalFileName = "00000002.history".parse().expect("name");
        assert_eq!(drop_if_over(&wal, &history, Some(1)).expect("history"), None, "history files are never dropped");
        assert!(holes(&wal).is_none());

        let dropped = drop_if_over(&wal, &segment, Some(1)).expect("over").expect("dropped");
        assert_eq!((dropped.queue_bytes, dropped.cap_bytes), (2 * 1024 * 1024, 1024 * 1024));
        drop_if_over(&wal, &B.parse().expect("name"), Some(1)).expect("over").expect("dropped");
        assert!(was_dropped(&wal, A) && !was_dropped(&wal, "000000010000000000000005"));
        let found = holes(&wal).expect("recorded");
        assert_eq!((found.dropped_segments, found.first.file.as_str(), found.last.file.as_str()), (2, A, B));
        assert!(found.describe().starts_with("the archive has a hole: 2 WAL segment(s)"), "{}", found.describe());

        forget_before(&wal, B);
        assert_eq!(holes(&wal).map(|holes| holes.dropped_segments), Some(1), "B is not before a backup starting at B");
        forget_before(&wal, "000000010000000000000005");
        assert!(holes(&wal).is_none() && !wal.join(HOLES_FILE).exists());
    }
}
