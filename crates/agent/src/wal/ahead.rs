//! Asynchronous archiving (`transfer.archive_async = true`), the `wal-push X` PostgreSQL runs:
//! answered from X's marker when X was already stored ahead (see [`super::spool`]), before any
//! store client is built; otherwise it makes sure the background pusher runs for this `pg_wal`
//! (see [`super::pusher`]) and waits, bounded, for X's marker. When the pusher is gone, noted a
//! failure for X, or takes too long, X is pushed here, synchronously, with every guard, so
//! PostgreSQL always gets X's own exit status: 0 only when X is archived with identical content.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use super::error::WalError;
use super::push::{PushOutcome, wal_name_of};
use super::spool::Spool;
use crate::config::AgentConfig;

/// How often the waiting `wal-push` looks for X's marker.
const POLL: Duration = Duration::from_millis(2);
/// The longest a `wal-push` waits for the pusher before pushing X itself.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The archive a marker names: the storage settings that select it, so that a marker is checked
/// without building a store client.
pub fn archive_identity(config: &AgentConfig) -> String {
    let storage = &config.storage;
    format!("{} prefix={} endpoint={}", storage.url, storage.prefix, storage.endpoint.as_deref().unwrap_or("-"))
}

/// Archives `path` (a file of `data_dir`'s `pg_wal`) in asynchronous mode; X's outcome.
pub async fn push_async(
    config_path: Option<&Path>,
    config: &AgentConfig,
    path: &Path,
    data_dir: &Path,
) -> Result<PushOutcome, WalError> {
    let file = wal_name_of(path)?.file_name();
    let spool = Spool::new(&data_dir.join("pg_wal"));
    let identity = archive_identity(config);
    if answer(&spool, &file, path, &identity) {
        return Ok(PushOutcome::AlreadyArchived);
    }
    if let Some(dropped) = super::drop_if_over_cap(path, data_dir, config.transfer.archive_queue_max_mb)? {
        return Ok(dropped);
    }
    let noted = spool.take_failure(&file);
    if noted.is_none() && spool.is_ready(&file) {
        let bound = (config.transfer.command_timeout / 4).min(MAX_WAIT);
        if wait_for_pusher(config_path, &spool, &file, path, &identity, bound).await {
            return Ok(PushOutcome::AlreadyArchived);
        }
    }
    tracing::debug!(file, failed_ahead = noted.as_deref(), "pushing the file itself");
    super::push_now(config, path, Some(data_dir), true).await
}

/// True when X's marker answers for X's current content (the marker is then removed).
fn answer(spool: &Spool, file: &str, path: &Path, identity: &str) -> bool {
    let answered = spool.answer(file, path, identity);
    if answered {
        tracing::debug!(file, "already stored ahead with identical content");
    }
    answered
}

/// Starts the pusher unless one runs, then waits until X's marker answers (true), or the pusher
/// noted a failure for X, is gone, or `bound` passed (false: push X here).
async fn wait_for_pusher(
    config_path: Option<&Path>,
    spool: &Spool,
    file: &str,
    path: &Path,
    identity: &str,
    bound: Duration,
) -> bool {
    let mut started: Option<Child> = None;
    if !spool.pusher_running() {
        match super::pusher::spawn(config_path, spool.wal_dir()) {
            Ok(child) => started = Some(child),
            Err(error) => {
                tracing::warn!(%error, "could not start the WAL pusher; pushing the file itself");
                return false;
            }
        }
    }
    let waiting = Instant::now();
    loop {
        if spool.has_marker(file) {
            return answer(spool, file, path, identity);
        }
        if let Some(note) = spool.take_failure(file) {
            tracing::debug!(file, note, "the pusher could not store the file");
            return false;
        }
        let child_running = started.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        if !child_running && !spool.pusher_running() {
            return spool.has_marker(file) && answer(spool, file, path, identity);
        }
        if waiting.elapsed() >= bound {
            tracing::warn!(
                file,
                waited_ms = waiting.elapsed().as_millis(),
                "the WAL pusher is slow; pushing the file itself"
            );
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
