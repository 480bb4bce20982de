//! A segment the archive lacks during archive recovery: the end of the archive, or a hole?
//!
//! PostgreSQL takes any `restore_command` failure with a status of 125 or less for the end of
//! the archive: it ends recovery there and promotes. That is right at the end, and silently
//! wrong at a hole (a segment deleted, lost or not yet copied while later WAL exists): the
//! server would come up writable without everything after the hole. So a miss during archive
//! recovery (`recovery.signal`) is judged, only then, never on the normal path:
//!
//! 1. a `recovery_target_lsn` before the segment's start: the miss is PostgreSQL reading ahead
//!    of replay past its target: the end (recovery stops before it);
//! 2. one listing of the archive's `wal/` (plus the history files of later timelines) says
//!    whether later WAL of the segment's timeline exists, or a later timeline branched off it
//!    after the segment began ([`WalArchive::wal_after`]): hole;
//! 3. a `recovery_target_lsn` at or beyond the segment's start: the end when the segment's
//!    streamed `.partial` reaches the target (its envelope records how far,
//!    [`catalog::partial_end`]), so `wal-fetch` restores that; a hole otherwise;
//!    a `recovery_target_time` later than the newest archived segment of the timeline (or the
//!    segment's `.partial` last stored): hole;
//! 4. else: the end of the archive (exit 1, quiet, as before). An xid or restore-point target
//!    that was not reached makes PostgreSQL (14 and later) stop with FATAL by itself.
//!
//! History, `.partial` and `.backup` files are never judged: PostgreSQL probes for histories of
//! timelines that do not exist. A standby (`standby.signal`) waits for more WAL instead.

use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use pgec2_core::catalog::{self, TimelineHistory, WalArchive};
use pgec2_core::layout::Archive;
use pgec2_core::target_time::parse_target_time;
use pgec2_core::wal::{Lsn, SegmentSize, TimelineId, WalFileName};

use super::error::WalError;
use crate::config::AgentConfig;

/// Histories read at once while judging a miss.
const HISTORY_CONCURRENCY: usize = 8;

/// What a missing segment is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Nothing later exists and no target lies beyond: recovery ends here.
    EndOfArchive,
    /// Recovery must stop: `why` says what proves the segment is not the end.
    Hole { why: String },
}

/// Judges a file `wal-fetch` did not find while `data_dir` is in archive recovery: `Some` with
/// the message when it is a hole, `None` when it is the end of the archive (or not a segment).
pub async fn check_miss(config_path: Option<&Path>, name: &str, data_dir: &Path) -> Result<Option<String>, WalError> {
    let Ok(WalFileName::Segment { timeline, name }) = name.parse::<WalFileName>() else { return Ok(None) };
    let config = AgentConfig::load(config_path)?;
    let (miss, archive) = super::with_deadline("hole check", &name, config.transfer.command_timeout, async {
        let archive = config.storage().await?;
        Ok((judge(&archive, &name, timeline, data_dir).await?, archive.describe()))
    })
    .await?;
    Ok(match miss {
        Miss::EndOfArchive => None,
        Miss::Hole { why } => Some(hole_message(&name, &archive, &why)),
    })
}

/// Judges the missing segment `file` (of `timeline`) for the cluster in `data_dir`.
pub async fn judge(archive: &Archive, file: &str, timeline: TimelineId, data_dir: &Path) -> Result<Miss, WalError> {
    let size = segment_size(archive, data_dir).await;
    let (_, segment) = size.parse_segment(file).map_err(|_| WalError::InvalidName { name: file.to_string() })?;
    let target = recovery_target(data_dir);
    let lsn_target = target
        .as_ref()
        .filter(|(name, _)| name == "recovery_target_lsn")
        .and_then(|(_, value)| value.parse::<Lsn>().ok());
    // PostgreSQL reads ahead of replay: a miss just past an LSN target is read-ahead, not need.
    if lsn_target.is_some_and(|lsn| lsn < size.start_of(segment)) {
        return Ok(Miss::EndOfArchive);
    }
    let wal = later_wal_index(archive, timeline, size).await?;
    if let Some(later) = wal.wal_after(timeline, segment) {
        return Ok(Miss::Hole { why: later.to_string() });
    }
    if let (Some(lsn), Some(target)) = (lsn_target, &target) {
        let streamed_end = catalog::partial_end(archive, size, timeline, segment).await.map_err(listing_failed)?;
        return Ok(judge_lsn_target(lsn, target, file, streamed_end));
    }
    // A time later than the newest archived segment (or the streamed `.partial` of this one)
    // cannot be reached: every commit in the archive was archived after it happened
    // (backup-fetch refuses such targets the same way).
    let archived = newest_archive_time(&wal, timeline).max(wal.partial_stored_at(timeline, segment));
    if let Some(target @ (name, value)) = &target
        && name == "recovery_target_time"
        && let Ok(time) = parse_target_time(value)
        && archived.is_some_and(|archived| archived < time)
    {
        return Ok(beyond(target, "after the newest archived segment"));
    }
    // xid and restore-point targets cannot be placed; PostgreSQL (14 and later) stops with
    // FATAL by itself when recovery ends before it reached them.
    Ok(Miss::EndOfArchive)
}

/// An LSN target at or beyond the start of the missing segment `file`, with nothing archived
/// after it: reachable when the segment's streamed `.partial` holds WAL up to the target
/// (`streamed_end`; wal-fetch then restores that), else a hole.
fn judge_lsn_target(lsn: Lsn, target: &(String, String), file: &str, streamed_end: Option<Lsn>) -> Miss {
    match streamed_end {
        Some(end) if lsn <= end => Miss::EndOfArchive,
        Some(end) => beyond(target, &format!("beyond the end of the streamed {file}.partial ({end})")),
        None => beyond(target, "at or beyond it"),
    }
}

fn beyond((name, value): &(String, String), place: &str) -> Miss {
    Miss::Hole { why: format!("the recovery target {name} = '{value}' lies {place}") }
}

fn listing_failed(error: catalog::CatalogError) -> WalError {
    WalError::HoleCheck { reason: error.to_string() }
}

/// When the newest segment of `timeline` was archived, if the store says.
fn newest_archive_time(wal: &WalArchive, timeline: TimelineId) -> Option<chrono::DateTime<chrono::Utc>> {
    wal.segments.get(&timeline)?.values().filter_map(|meta| meta.last_modified).max()
}

/// Lists `wal/` and loads the histories of timelines after `timeline` (a descendant's history
/// may prove that `timeline` went on). An unreadable history is an error: without it the
/// answer could be wrong, and a wrong "end of the archive" loses data.
async fn later_wal_index(archive: &Archive, timeline: TimelineId, size: SegmentSize) -> Result<WalArchive, WalError> {
    let mut wal = catalog::list_wal_archive(archive, size).await.map_err(listing_failed)?;
    let later: Vec<_> =
        wal.history_files.iter().filter(|(id, _)| **id > timeline).map(|(&id, meta)| (id, meta.key.clone())).collect();
    let histories: Vec<TimelineHistory> = futures::stream::iter(later)
        .map(|(id, key)| async move {
            let content = catalog::get_content(archive, &key).await.map_err(listing_failed)?;
            TimelineHistory::parse(id, &String::from_utf8_lossy(&content))
                .map_err(|error| WalError::HoleCheck { reason: format!("{key}: {error}") })
        })
        .buffer_unordered(HISTORY_CONCURRENCY)
        .try_collect()
        .await?;
    for history in histories {
        wal.set_history(history);
    }
    Ok(wal)
}

/// The cluster's segment size: the length of a segment PostgreSQL kept in `pg_wal` (it keeps
/// what it restored), else what the archive's owner record says, else the default.
async fn segment_size(archive: &Archive, data_dir: &Path) -> SegmentSize {
    let local = std::fs::read_dir(data_dir.join("pg_wal")).ok().and_then(|entries| {
        entries.flatten().find_map(|entry| {
            let name = entry.file_name();
            let is_segment = name.len() == 24 && name.to_string_lossy().bytes().all(|b| b.is_ascii_hexdigit());
            let length = entry.metadata().ok().filter(|meta| meta.is_file())?.len();
            if is_segment { SegmentSize::new(length).ok() } else { None }
        })
    });
    if let Some(size) = local {
        return size;
    }
    let owner = pgec2_core::identity::read_owner(archive).await.ok().flatten();
    owner.and_then(|owner| SegmentSize::new(owner.wal_segment_size?).ok()).unwrap_or_default()
}

/// The recovery target the data directory's configuration sets, as `(parameter, value)`:
/// `postgresql.auto.conf` (where `backup-fetch` writes it) overrides `postgresql.conf`, and the
/// last setting of a file wins, as in PostgreSQL. `recovery_target = 'immediate'` is not a
/// target beyond anything: recovery asks for no WAL after consistency.
pub fn recovery_target(data_dir: &Path) -> Option<(String, String)> {
    let mut settings = std::collections::BTreeMap::new();
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let Ok(text) = std::fs::read_to_string(data_dir.join(file)) else { continue };
        settings.extend(text.lines().filter_map(parameter).filter(|(name, _)| TARGETS.contains(&name.as_str())));
    }
    settings.into_iter().find(|(_, value)| !value.is_empty())
}

const TARGETS: [&str; 4] =
    ["recovery_target_time", "recovery_target_lsn", "recovery_target_xid", "recovery_target_name"];

/// `name = 'value'` (or `name value`, or unquoted) from one configuration line; the name
/// lowercased, the value unquoted.
fn parameter(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c == '=' || c.is_whitespace())?;
    let name = line[..end].to_ascii_lowercase();
    let rest = line[end..].trim_start().strip_prefix('=').unwrap_or(&line[end..]).trim_start();
    let value = match rest.strip_prefix('\'') {
        Some(quoted) => unquote(quoted)?,
        None => rest.split(['#', ' ', '\t']).next().unwrap_or_default().to_string(),
    };
    Some((name, value))
}

/// The rest of a single-quoted value (after the opening quote), `''` read as one quote.
fn unquote(quoted: &str) -> Option<String> {
    let mut value = String::new();
    let mut chars = quoted.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                value.push('\'');
            }
            '\'' => return Some(value),
            c => value.push(c),
        }
    }
    None
}

/// The message for a hole: what is missing, why it is not the end, what to do.
pub fn hole_message(file: &str, archive: &str, why: &str) -> String {
    format!(
        "WAL segment {file} is missing from the archive {archive} but is not its end: {why}. Recovery stops here \
         instead of promoting a server that lacks the rest of the archive's history. Put {file} back into the \
         archive (from the source's pg_wal or another copy of the archive) and start the server again; or, to \
         give up what comes after it, restore again with a recovery target before it (run wal-verify to see what \
         is missing)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_lines_give_their_parameter_and_unquoted_value() {
        assert_eq!(
            parameter("recovery_target_time = '2026-01-01 00:00:00+00'"),
            Some(("recovery_target_time".into(), "2026-01-01 00:00:00+00".into()))
        );
        assert_eq!(
            parameter("Recovery_Target_Name='it''s'  # note"),
            Some(("recovery_target_name".into(), "it's".into()))
        );
        assert_eq!(parameter("recovery_target_xid 7415"), Some(("recovery_target_xid".into(), "7415".into())));
        assert_eq!(parameter("# recovery_target_xid = 1"), None);
        assert_eq!(parameter("recovery_target_name = 'unterminated"), None);
    }

    #[test]
    fn the_target_of_the_auto_conf_wins_and_immediate_is_no_target_beyond() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(recovery_target(dir.path()), None);
        std::fs::write(dir.path().join("postgresql.conf"), "recovery_target_xid = '12'\n").expect("write");
        std::fs::write(
            dir.path().join("postgresql.auto.conf"),
            "recovery_target_time = '2020-01-01'\nrecovery_target_lsn = '0/5000000'\nrecovery_target = 'immediate'\n",
        )
        .expect("write");
        assert_eq!(recovery_target(dir.path()).map(|(name, _)| name), Some("recovery_target_lsn".into()));
        std::fs::write(dir.path().join("postgresql.auto.conf"), "recovery_target_xid = ''\n").expect("write");
        assert_eq!(recovery_target(dir.path()), None, "the auto.conf's empty value unsets the xid");
        std::fs::write(dir.path().join("postgresql.auto.conf"), "recovery_target = 'immediate'\n").expect("write");
        assert_eq!(recovery_target(dir.path()), Some(("recovery_target_xid".into(), "12".into())));
        std::fs::remove_file(dir.path().join("postgresql.conf")).expect("remove");
        assert_eq!(recovery_target(dir.path()), None);
    }

    #[test]
    fn an_emptied_target_is_no_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "recovery_target_time = '2020-01-01'\nrecovery_target_time = ''\nrecovery_target_lsn = ''\n";
        std::fs::write(dir.path().join("postgresql.auto.conf"), text).expect("write");
        assert_eq!(recovery_target(dir.path()), None);
        let text = "recovery_target_time = '2020-01-01'\nrecovery_target_lsn = ''\n";
        std::fs::write(dir.path().join("postgresql.auto.conf"), text).expect("write");
        assert_eq!(recovery_target(dir.path()), Some(("recovery_target_time".into(), "2020-01-01".into())));
    }

    #[test]
    fn an_lsn_target_up_to_the_streamed_end_is_the_end_and_one_past_it_a_hole_naming_the_end() {
        let target = ("recovery_target_lsn".to_string(), "0/7001389".to_string());
        let file = "000000010000000000000007";
        assert_eq!(judge_lsn_target(Lsn(0x7001000), &target, file, Some(Lsn(0x7001388))), Miss::EndOfArchive);
        assert_eq!(judge_lsn_target(Lsn(0x7001388), &target, file, Some(Lsn(0x7001388))), Miss::EndOfArchive);
        let Miss::Hole { why } = judge_lsn_target(Lsn(0x7001389), &target, file, Some(Lsn(0x7001388))) else {
            panic!("one byte past the streamed end is a hole")
        };
        assert_eq!(
            why,
            "the recovery target recovery_target_lsn = '0/7001389' lies beyond the end of the streamed \
             000000010000000000000007.partial (0/7001388)"
        );
        assert!(matches!(judge_lsn_target(Lsn(0x7000000), &target, file, None), Miss::Hole { .. }), "no partial");
    }

    /// An archive with segments 2 to 6 and the first 5000 bytes of segment 7 streamed, and a
    /// data directory recovering to `lsn`.
    async fn streamed_archive(lsn: &str) -> (Archive, tempfile::TempDir) {
        use pgec2_core::compression::Compression;
        use pgec2_core::storage::PutMode;
        let storage = std::sync::Arc::new(pgec2_core::storage::memory::MemoryStorage::new());
        let archive = Archive::new(storage, pgec2_core::layout::ArchiveLayout::under("db").expect("layout"));
        let size = SegmentSize::default();
        let files = (2..=6).map(|segment| (size.segment_name(1, segment), 100));
        for (file, len) in files.chain([(format!("{}.partial", size.segment_name(1, 7)), 5000)]) {
            let (sealed, _) = pgec2_core::envelope::seal(&vec![1u8; len], Compression::default()).expect("seal");
            let key = archive.layout.wal_file(&file).expect("key");
            archive.storage.put(&key, sealed.into(), PutMode::CreateNew).await.expect("store");
        }
        let data_dir = tempfile::tempdir().expect("tempdir");
        let conf = format!("recovery_target_lsn = '{lsn}'\n");
        std::fs::write(data_dir.path().join("postgresql.auto.conf"), conf).expect("write");
        (archive, data_dir)
    }

    #[tokio::test]
    async fn a_missing_segment_whose_streamed_partial_reaches_the_lsn_target_is_the_end() {
        let segment = "000000010000000000000007";
        let (archive, data_dir) = streamed_archive("0/7001388").await;
        assert_eq!(judge(&archive, segment, 1, data_dir.path()).await.expect("judged"), Miss::EndOfArchive);
        let (archive, data_dir) = streamed_archive("0/7001389").await;
        let beyond = judge(&archive, segment, 1, data_dir.path()).await.expect("judged");
        assert!(matches!(&beyond, Miss::Hole { why } if why.contains("(0/7001388)")), "{beyond:?}");
        let (archive, data_dir) = streamed_archive("0/7000100").await;
        let (sealed, _) = pgec2_core::envelope::seal(b"later", Default::default()).expect("seal");
        let later = archive.layout.wal_file("000000010000000000000008").expect("key");
        archive.storage.put(&later, sealed.into(), pgec2_core::storage::PutMode::CreateNew).await.expect("store");
        let hole = judge(&archive, segment, 1, data_dir.path()).await.expect("judged");
        assert!(matches!(&hole, Miss::Hole { why } if why.contains("000000010000000000000008")), "{hole:?}");
    }

    #[test]
    fn the_hole_message_names_the_segment_and_what_to_do() {
        let message =
            hole_message("000000010000000000000005", "file:///a", "the archive holds 000000010000000000000006");
        assert!(message.starts_with("WAL segment 000000010000000000000005 is missing from the archive file:///a"));
        assert!(message.contains("start the server again") && message.contains("recovery target before it"));
    }
}
