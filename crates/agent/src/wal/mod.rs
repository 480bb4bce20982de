//! WAL archiving: `wal-push` (archive_command) and `wal-fetch` (restore_command), plus the
//! hidden `wal-prefetch` that `wal-fetch` starts in the background.
//!
//! ```text
//! archive_command = 'pgec2-agent wal-push %p'      %p = pg_wal/<file>, cwd = PGDATA
//!   read → identity guard (cluster.json) → seal (compress + BLAKE3) → put CreateNew
//!   AlreadyExists: identical content → 0, different → error (never overwritten)
//!   archive_async: answered from pg_wal/.pgec2-archived when stored ahead (spool.rs), else a
//!   detached `wal-push-ahead` pushes every ready file (pusher.rs) while wal-push waits for the
//!   file's marker, pushing the file itself when the pusher fails or is gone (ahead.rs)
//! restore_command = 'pgec2-agent wal-fetch %f %p'  %p = pg_wal/RECOVERYXLOG
//!   pg_wal/.pgec2-prefetch/<f>.<hash> verified → rename, else get → decompress into a temp file
//!   while verifying → fsync → rename
//!   then start `wal-prefetch` for the next segments
//!   missing during archive recovery: end of the archive (exit 1) or a hole (exit 255, see hole.rs)
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pgec2_core::wal::{SegmentHeader, SegmentSize, WalFileName};

use crate::cli::{WalFetchArgs, WalPrefetchArgs, WalPushArgs};
use crate::config::AgentConfig;

mod ahead;
pub mod durable;
mod error;
pub mod failure_note;
pub mod fetch;
pub mod hole;
pub(crate) mod owner;
pub mod prefetch;
pub mod push;
pub mod pusher;
pub mod queue_cap;
mod seal_threads;
pub mod spool;
pub(crate) mod timeline_guard;

pub use error::WalError;
pub use owner::OWNER_CACHE_FILE;
pub use prefetch::PrefetchDir;
pub use push::{PushOutcome, push};
pub use spool::SPOOL_DIR;
pub use timeline_guard::TIMELINE_CACHE_FILE;

/// wal-fetch's exit status when the archive does not have the file (PostgreSQL probes for files
/// that do not exist, so this is quiet).
pub const EXIT_NOT_IN_ARCHIVE: u8 = 1;
/// wal-fetch's exit status for errors during archive recovery: PostgreSQL aborts recovery on a
/// status above 125 instead of taking the failure for the end of the archive and ending recovery
/// early (which would silently lose the rest of the archive's history).
pub const EXIT_ABORT_RECOVERY: u8 = 255;

/// `wal-push PATH`: archives one WAL file; success only once it is durably stored.
pub async fn push_command(config_path: Option<&Path>, args: WalPushArgs) -> Result<ExitCode, WalError> {
    let started = Instant::now();
    let config = AgentConfig::load(config_path)?;
    let path = resolve_wal_path(&args.path, config.pgdata());
    let in_pg_wal = data_dir_of(&path).is_some();
    let data_dir = data_dir_of(&path).or_else(|| config.pgdata().map(Path::to_path_buf));
    let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let outcome = match &data_dir {
        // Answered from the spool before any store client is built (see ahead.rs).
        Some(data_dir) if config.transfer.archive_async && in_pg_wal => {
            ahead::push_async(config_path, &config, &path, data_dir).await
        }
        _ => push_sync(&config, &path, data_dir.as_deref(), in_pg_wal).await,
    }?;
    if let Some(data_dir) = &data_dir {
        prefetch::remove_after_recovery(data_dir);
    }
    tracing::debug!(file, ?outcome, elapsed_ms = started.elapsed().as_millis(), "wal-push finished");
    Ok(ExitCode::SUCCESS)
}

/// The synchronous push of one file, with the queue cap when set.
async fn push_sync(
    config: &AgentConfig,
    path: &Path,
    data_dir: Option<&Path>,
    in_pg_wal: bool,
) -> Result<PushOutcome, WalError> {
    let cap = config.transfer.archive_queue_max_mb;
    if let Some(data_dir) = data_dir.filter(|_| cap.is_some())
        && let Some(dropped) = drop_if_over_cap(path, data_dir, cap)?
    {
        return Ok(dropped);
    }
    push_now(config, path, data_dir, in_pg_wal).await
}

/// Pushes one file on this process, within the command's deadline: the store client, then
/// [`push::push_inline`] sealing on [`push::compression_workers`] threads.
pub(crate) async fn push_now(
    config: &AgentConfig,
    path: &Path,
    data_dir: Option<&Path>,
    in_pg_wal: bool,
) -> Result<PushOutcome, WalError> {
    let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    with_deadline("archive", &file, config.transfer.command_timeout, async {
        let archive = config.storage().await?;
        let workers = push::compression_workers(config.transfer.upload_concurrency, in_pg_wal);
        push::push_inline(&archive, config.compression, path, data_dir, workers).await
    })
    .await
}

/// The queue cap (see [`queue_cap`]): `Some` when the file was dropped (recorded and logged).
pub(crate) fn drop_if_over_cap(
    path: &Path,
    data_dir: &Path,
    cap: Option<u64>,
) -> Result<Option<PushOutcome>, WalError> {
    let name = push::wal_name_of(path)?;
    let wal_dir = data_dir.join("pg_wal");
    let dropped = queue_cap::drop_if_over(&wal_dir, &name, cap)
        .map_err(|error| WalError::Write { path: wal_dir.join(queue_cap::HOLES_FILE), error })?;
    let Some(dropped) = dropped else { return Ok(None) };
    tracing::error!(
        file = dropped.file,
        queue_mb = dropped.queue_bytes / (1024 * 1024),
        cap_mb = dropped.cap_bytes / (1024 * 1024),
        "ARCHIVE HOLE: dropped WAL segment {} without archiving it: {} MiB wait to be archived, above \
         transfer.archive_queue_max_mb = {}; point-in-time recovery cannot cross it: fix archiving, then take a new \
         base backup (recorded in pg_wal/{})",
        dropped.file,
        dropped.queue_bytes / (1024 * 1024),
        dropped.cap_bytes / (1024 * 1024),
        queue_cap::HOLES_FILE
    );
    Ok(Some(PushOutcome::Dropped))
}

/// `wal-fetch NAME DEST`: restores one WAL file; exit 1 quietly when the archive does not have
/// it and it is the end of the archive. During archive recovery a missing segment that is not
/// the end (see [`hole`]) and any error stop recovery (exit [`EXIT_ABORT_RECOVERY`]).
pub async fn fetch_command(config_path: Option<&Path>, args: WalFetchArgs) -> Result<ExitCode, WalError> {
    let started = Instant::now();
    let dest = std::path::absolute(&args.dest).map_err(|error| WalError::Write { path: args.dest.clone(), error })?;
    let recovering = data_dir_of(&dest).filter(|dir| recovery_state(dir) == RecoveryState::Archive);
    dest.parent().map(durable::remove_stale_temp_files);
    let judged = match fetch_file(config_path, &args.name, &dest).await {
        Ok(true) => {
            recovering.as_deref().inspect(|dir| failure_note::clear(dir));
            tracing::debug!(file = args.name, elapsed_ms = started.elapsed().as_millis(), "wal-fetch finished");
            return Ok(ExitCode::SUCCESS);
        }
        Ok(false) => match &recovering {
            Some(data_dir) => hole::check_miss(config_path, &args.name, data_dir).await,
            None => Ok(None),
        },
        Err(error) => Err(error),
    };
    // At the end of the archive, the tail wal-receive streamed (never over a hole).
    let judged = match judged {
        Ok(None) if recovering.is_some() => {
            match crate::wal_receive::tail::restore(config_path, &args.name, &dest).await {
                Ok(true) => return Ok(ExitCode::SUCCESS),
                Ok(false) => Ok(None),
                Err(error) => Err(error),
            }
        }
        judged => judged,
    };
    match (judged, recovering) {
        (Ok(None), _) => Ok(ExitCode::from(EXIT_NOT_IN_ARCHIVE)),
        (Ok(Some(hole)), Some(data_dir)) => Ok(failure_note::stop_recovery(&data_dir, &hole)),
        (Err(error), Some(data_dir)) => Ok(failure_note::stop_recovery(&data_dir, &error.to_string())),
        (Ok(Some(_)), None) => Ok(ExitCode::from(EXIT_NOT_IN_ARCHIVE)),
        (Err(error), None) => Err(error),
    }
}

/// Restores `name` to `dest`; `false` when the archive does not have it.
async fn fetch_file(config_path: Option<&Path>, name: &str, dest: &Path) -> Result<bool, WalError> {
    let config = AgentConfig::load(config_path)?;
    crate::lease::renew_if_due(&config, dest).await;
    let name: WalFileName = name.parse().map_err(|_| WalError::InvalidName { name: name.to_string() })?;
    let file = name.file_name();
    let prefetch_dir = (name.is_segment() && config.transfer.prefetch > 0)
        .then(|| PrefetchDir::for_destination(dest, config.pgdata()))
        .flatten();
    let mut content = None;
    if let Some(dir) = &prefetch_dir {
        // In place, not on the blocking pool: wal-fetch runs on a one-thread runtime with
        // nothing else to do meanwhile, and a thread handoff costs more than it saves.
        content = dir.take(&file, dest)?;
    }
    if content.is_none() {
        let target = dest.to_path_buf();
        let downloaded = with_deadline("fetch", &file, config.transfer.command_timeout, async {
            let archive = config.storage().await?;
            fetch::download_to(&archive, &name, move |_| target).await
        })
        .await?;
        let start = match downloaded {
            Some(start) => start,
            None => match fetch_from_walg(&config, &file, dest).await? {
                Some(start) => start,
                None => return Ok(false),
            },
        };
        content = Some(start);
    }
    if let (Some(dir), Some(content)) = (&prefetch_dir, &content)
        && let Ok(header) = SegmentHeader::parse(content)
    {
        prefetch::spawn_prefetcher(config_path, dir, &file, header.segment_size);
    }
    Ok(true)
}

/// wal-g's copy of `file` (WAL pushed by wal-g before the switch), when `storage.walg_prefix`
/// is set; `None` otherwise or when wal-g did not archive it either.
async fn fetch_from_walg(config: &AgentConfig, file: &str, dest: &Path) -> Result<Option<Vec<u8>>, WalError> {
    with_deadline("fetch", file, config.transfer.command_timeout, async {
        match crate::walg::open(config).await? {
            Some(walg) => crate::walg::wal::fetch(&walg, file, dest).await,
            None => Ok(None),
        }
    })
    .await
}

/// Hidden `wal-prefetch AFTER --dir DIR --segment-size BYTES`: run by `wal-fetch` in the background.
pub async fn prefetch_command(config_path: Option<&Path>, args: WalPrefetchArgs) -> Result<ExitCode, WalError> {
    let config = AgentConfig::load(config_path)?;
    let invalid = || WalError::InvalidName { name: args.after.clone() };
    let size = SegmentSize::new(args.segment_size).map_err(|_| invalid())?;
    let (timeline, after) = size.parse_segment(&args.after).map_err(|_| invalid())?;
    let dir = PrefetchDir::new(args.dir.clone());
    let lock = dir.try_lock().map_err(|error| WalError::Write { path: args.dir.clone(), error })?;
    let Some(_lock) = lock else { return Ok(ExitCode::SUCCESS) };
    let count = config.transfer.prefetch as u64;
    let concurrency = config.transfer.download_concurrency;
    let stored = with_deadline("prefetch", &args.after, config.transfer.command_timeout, async {
        let archive = config.storage().await?;
        prefetch::prefetch(&archive, &dir, timeline, after, count, size, concurrency).await
    })
    .await?;
    tracing::debug!(after = args.after, stored, "wal-prefetch finished");
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` under the command's overall deadline.
async fn with_deadline<T>(
    action: &'static str,
    file: &str,
    after: Duration,
    work: impl Future<Output = Result<T, WalError>>,
) -> Result<T, WalError> {
    tokio::time::timeout(after, work).await.map_err(|_| WalError::Timeout { action, file: file.to_string(), after })?
}

/// `%p` is relative to the data directory, which is PostgreSQL's working directory when it runs
/// archive_command; by hand, a relative path is tried in the current directory, then in PGDATA.
fn resolve_wal_path(path: &Path, pgdata: Option<&Path>) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let from_cwd = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match pgdata {
        Some(pgdata) if !from_cwd.exists() => pgdata.join(path),
        _ => from_cwd,
    }
}

/// The data directory of a file in `<data>/pg_wal/`.
fn data_dir_of(path: &Path) -> Option<PathBuf> {
    let wal_dir = path.parent()?;
    if wal_dir.file_name()? == "pg_wal" { wal_dir.parent().map(Path::to_path_buf) } else { None }
}

/// What kind of recovery a data directory is set up for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryState {
    /// `standby.signal`: keeps following the archive; a failed fetch is retried later.
    Standby,
    /// `recovery.signal`: archive recovery to a target or the archive's end.
    Archive,
    /// Neither: a running primary (or not a data directory).
    None,
}

/// Reads the signal files of `data_dir`.
pub fn recovery_state(data_dir: &Path) -> RecoveryState {
    if data_dir.join("standby.signal").exists() {
        RecoveryState::Standby
    } else if data_dir.join("recovery.signal").exists() {
        RecoveryState::Archive
    } else {
        RecoveryState::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_pg_wal_know_their_data_directory() {
        assert_eq!(data_dir_of(Path::new("/data/pg_wal/RECOVERYXLOG")), Some(PathBuf::from("/data")));
        assert_eq!(data_dir_of(Path::new("/tmp/000000010000000000000001")), None);
    }

    #[test]
    fn relative_wal_paths_fall_back_to_the_configured_data_directory() {
        let missing = Path::new("pg_wal/000000010000000000000001-not-here");
        assert_eq!(resolve_wal_path(missing, Some(Path::new("/data"))), Path::new("/data").join(missing));
        assert_eq!(resolve_wal_path(Path::new("/abs/file"), Some(Path::new("/data"))), Path::new("/abs/file"));
    }
}
