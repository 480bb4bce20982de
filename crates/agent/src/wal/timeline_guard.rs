//! The timeline guard on the push path: an archive holds one history per timeline.
//!
//! Two clusters with the same system identifier (a cluster and a restored copy of it, or two
//! copies) may each create a timeline N of their own. The owner record cannot tell them apart,
//! so `wal-push` checks timelines against what the archive holds:
//!
//! - a history file `N.history` is refused when an ancestor timeline T it names has a
//!   `T.history` in the archive that disagrees with it (the archive's timeline T is another
//!   branch). Different content for `N.history` itself is refused by the create-only write;
//! - a segment (or `.partial`) of timeline N > 1 needs the archive's `N.history` to be this
//!   cluster's (`pg_wal/N.history`). When the archive has none it gets this cluster's first,
//!   unless it already holds WAL of timeline N (which then has no known history: refused).
//!   The answer is remembered in `pg_wal/.pgec2-archive-timeline` (history files never change),
//!   so a push costs an extra read only on the first segment of each timeline.
//!
//! Without the data directory (a push by hand from elsewhere) or without the local history
//! file, segments are checked only by the create-only write.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use pgec2_core::catalog::TimelineHistory;
use pgec2_core::compression::Compression;
use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::storage::{PutMode, StorageError};
use pgec2_core::wal::{TimelineId, WalFileName};
use serde::{Deserialize, Serialize};

use super::durable;
use super::error::WalError;

/// The cache file, inside `pg_wal`.
pub const TIMELINE_CACHE_FILE: &str = ".pgec2-archive-timeline";

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CheckedTimeline {
    archive: String,
    timeline: TimelineId,
    history_blake3: String,
}

/// Fails with [`WalError::TimelineConflict`] when archiving `name` (at `path`) would mix
/// another branch's timeline into the archive.
pub async fn ensure(
    archive: &Archive,
    name: &WalFileName,
    path: &Path,
    data_dir: Option<&Path>,
) -> Result<(), WalError> {
    match name {
        WalFileName::History { timeline } => {
            let text = std::fs::read(path).map_err(|error| WalError::Read { path: path.to_path_buf(), error })?;
            check_ancestry(archive, &name.file_name(), *timeline, &text).await
        }
        WalFileName::Segment { timeline, .. } | WalFileName::Partial { timeline, .. } if *timeline > 1 => {
            match data_dir {
                Some(data_dir) => check_segment_timeline(archive, &name.file_name(), *timeline, data_dir).await,
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Every ancestor of `timeline` whose history the archive holds must agree with `text`.
async fn check_ancestry(archive: &Archive, file: &str, timeline: TimelineId, text: &[u8]) -> Result<(), WalError> {
    let ours = parse(file, timeline, text)?;
    for (index, &(ancestor, _)) in ours.ancestors.iter().enumerate().filter(|(_, (ancestor, _))| *ancestor > 1) {
        let Some(theirs) = archived_history(archive, file, ancestor).await? else { continue };
        let theirs = parse(&history_name(ancestor), ancestor, &theirs)?;
        if theirs.ancestors != ours.ancestors[..index] {
            return Err(conflict(
                file,
                archive,
                format!(
                    "its ancestor timeline {ancestor} is another branch than the archive's {} (a different \
                     cluster with the same system identifier archived there)",
                    history_name(ancestor)
                ),
            ));
        }
    }
    Ok(())
}

/// The archive's history of `timeline` must be this cluster's (pushed first when absent).
async fn check_segment_timeline(
    archive: &Archive,
    file: &str,
    timeline: TimelineId,
    data_dir: &Path,
) -> Result<(), WalError> {
    let local_path = data_dir.join("pg_wal").join(history_name(timeline));
    let Ok(local) = std::fs::read(&local_path) else {
        tracing::debug!(file, "no local history file: the timeline is not checked");
        return Ok(());
    };
    let checked = CheckedTimeline {
        archive: archive.describe(),
        timeline,
        history_blake3: blake3::hash(&local).to_hex().to_string(),
    };
    let cache = data_dir.join("pg_wal").join(TIMELINE_CACHE_FILE);
    if read_cache(&cache).as_ref() == Some(&checked) {
        return Ok(());
    }
    match archived_history(archive, file, timeline).await? {
        Some(theirs) if theirs == local => {}
        Some(_) => {
            return Err(conflict(
                file,
                archive,
                format!(
                    "the archive's {} differs from this cluster's: its timeline {timeline} is another branch",
                    history_name(timeline)
                ),
            ));
        }
        None => push_history_first(archive, file, timeline, &local).await?,
    }
    remember(&cache, &checked);
    Ok(())
}

/// Stores this cluster's history of `timeline` before a segment of it, unless the archive
/// already holds WAL of that timeline (from a branch whose history it does not have).
async fn push_history_first(archive: &Archive, file: &str, timeline: TimelineId, local: &[u8]) -> Result<(), WalError> {
    let listing = archive.layout.wal_prefix() + &format!("{timeline:08X}");
    let found =
        archive.storage.list(&listing).await.map_err(|error| WalError::storage("list the archive for", file, error))?;
    if let Some(other) = found.first() {
        return Err(conflict(
            file,
            archive,
            format!(
                "the archive holds WAL of timeline {timeline} ({}) but no {}: it belongs to another branch",
                other.key,
                history_name(timeline)
            ),
        ));
    }
    let history = history_name(timeline);
    check_ancestry(archive, &history, timeline, local).await?;
    let (sealed, _) = envelope::seal(local, Compression::default())
        .map_err(|error| WalError::Seal { file: history.clone(), error })?;
    let key = archive.layout.wal_file(&history).map_err(|error| WalError::storage("archive", &history, error))?;
    match archive.storage.put(&key, Bytes::from(sealed), PutMode::CreateNew).await {
        Ok(()) => Ok(()),
        // Someone stored it meanwhile: it must be ours.
        Err(StorageError::AlreadyExists { .. }) => match archived_history(archive, file, timeline).await? {
            Some(theirs) if theirs == local => Ok(()),
            _ => Err(conflict(file, archive, format!("another cluster stored a different {history} meanwhile"))),
        },
        Err(error) => Err(WalError::storage("archive", &history, error)),
    }
}

/// The content of the archive's history of `timeline`, `None` when it has none.
async fn archived_history(archive: &Archive, file: &str, timeline: TimelineId) -> Result<Option<Vec<u8>>, WalError> {
    let history = history_name(timeline);
    let key = archive.layout.wal_file(&history).map_err(|error| WalError::storage("read", &history, error))?;
    let stored = match archive.storage.get(&key).await {
        Ok(stored) => stored,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(WalError::storage("read the archive's history for", file, error)),
    };
    let (content, _) = envelope::open(&stored).map_err(|error| WalError::StoredCopyCorrupt {
        file: history.clone(),
        key: key.to_string(),
        error,
    })?;
    Ok(Some(content))
}

fn parse(file: &str, timeline: TimelineId, text: &[u8]) -> Result<TimelineHistory, WalError> {
    TimelineHistory::parse(timeline, &String::from_utf8_lossy(text))
        .map_err(|error| WalError::NotASegment { path: PathBuf::from(file), reason: error.to_string() })
}

fn history_name(timeline: TimelineId) -> String {
    format!("{timeline:08X}.history")
}

fn conflict(file: &str, archive: &Archive, reason: String) -> WalError {
    WalError::TimelineConflict { file: file.to_string(), archive: archive.describe(), reason }
}

fn read_cache(path: &Path) -> Option<CheckedTimeline> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Best effort: a cache that cannot be written only costs one read per push.
fn remember(path: &Path, checked: &CheckedTimeline) {
    let written = serde_json::to_vec(checked)
        .map_err(std::io::Error::other)
        .and_then(|json| durable::write_atomically(path, &json));
    if let Err(error) = written {
        tracing::debug!(path = %path.display(), %error, "could not cache the checked timeline");
    }
}

#[cfg(test)]
mod tests;
