//! The background pusher of asynchronous archiving: the hidden `wal-push-ahead PG_WAL`, started
//! detached by `wal-push` (see [`super::ahead`]). One runs per `pg_wal`, under the lock
//! `pg_wal/.pgec2-archived/.pusher.lock`; it pushes every file PostgreSQL has marked ready that
//! has no marker yet, oldest first (history files first), `upload_concurrency` at a time with a
//! new push started as soon as a slot frees, and records each file the store durably accepted
//! with a marker (see [`super::spool`]). It exits once nothing was ready for [`IDLE`].
//!
//! A push ahead that fails leaves a failure note instead of a marker and stops the pusher from
//! starting new pushes: the `wal-push` that PostgreSQL runs for that file finds the note and
//! pushes the file itself, so PostgreSQL gets that push's own error. Killed at any moment, the
//! pusher leaves only markers of objects already stored (a marker is renamed into place after
//! the store's durable answer), and the kernel releases its lock.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pgec2_core::compression::Compression;
use pgec2_core::envelope::Header;
use pgec2_core::layout::Archive;

use super::error::WalError;
use super::push::push_file;
use super::spool::{SPOOL_DIR, Spool};
use crate::cli::WalPushAheadArgs;
use crate::config::AgentConfig;

/// How long the pusher stays without anything ready before it exits.
pub const IDLE: Duration = Duration::from_secs(3);
/// How often the pusher looks for newly ready files while a slot is free.
const POLL: Duration = Duration::from_millis(20);

/// `wal-push-ahead PG_WAL`: pushes ready files until idle; exit 0 also when another pusher runs.
pub async fn command(config_path: Option<&Path>, args: WalPushAheadArgs) -> Result<ExitCode, WalError> {
    let config = AgentConfig::load(config_path)?;
    let spool = Spool::new(&args.wal_dir);
    let Some(lock) = take_lock(&spool).await? else {
        tracing::debug!("another pusher runs for this pg_wal");
        return Ok(ExitCode::SUCCESS);
    };
    let timeout = config.transfer.command_timeout;
    let archive = super::with_deadline("open the archive for", "WAL pushed ahead", timeout, async {
        Ok(config.storage().await?)
    })
    .await?;
    spool.sweep();
    let pusher = Pusher {
        archive: &archive,
        compression: config.compression,
        spool: &spool,
        data_dir: args.wal_dir.parent(),
        identity: super::ahead::archive_identity(&config),
        timeout,
        lock: &lock,
    };
    let stored = pusher.run(config.transfer.upload_concurrency.max(1)).await;
    tracing::debug!(stored, "wal-push-ahead finished");
    Ok(ExitCode::SUCCESS)
}

/// The pusher's lock; `None` when another pusher holds it. A few tries: a `wal-push` checking
/// whether a pusher runs holds the lock shared for an instant.
async fn take_lock(spool: &Spool) -> Result<Option<std::fs::File>, WalError> {
    for _ in 0..5 {
        let lock = spool
            .try_lock_pusher()
            .map_err(|error| WalError::Write { path: spool.wal_dir().join(SPOOL_DIR), error })?;
        if lock.is_some() {
            return Ok(lock);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(None)
}

/// What every push ahead shares.
struct Pusher<'a> {
    archive: &'a Archive,
    compression: Compression,
    spool: &'a Spool,
    data_dir: Option<&'a Path>,
    identity: String,
    timeout: Duration,
    lock: &'a std::fs::File,
}

impl Pusher<'_> {
    /// Keeps `slots` pushes in flight while files are ready; returns how many were stored.
    async fn run(&self, slots: usize) -> usize {
        let mut in_flight = FuturesUnordered::new();
        let mut busy: HashSet<String> = HashSet::new();
        let (mut stored, mut failed) = (0, false);
        let mut idle_since = Instant::now();
        loop {
            // A pg_wal removed or replaced under the pusher (a restore, another cluster at the same
            // path) is not this pusher's any more: it finishes what it started and stops.
            failed = failed || !self.spool.still_locked_by(self.lock);
            if !failed && in_flight.len() < slots {
                for name in self.spool.pending(slots - in_flight.len(), |name| busy.contains(name)) {
                    tracing::debug!(file = name, in_flight = in_flight.len() + 1, "pushing ahead");
                    busy.insert(name.clone());
                    in_flight.push(self.push_one(name));
                }
            }
            if in_flight.is_empty() {
                if failed || idle_since.elapsed() >= IDLE {
                    return stored;
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            let next = if failed || in_flight.len() >= slots {
                in_flight.next().await
            } else {
                tokio::time::timeout(POLL, in_flight.next()).await.ok().flatten()
            };
            idle_since = Instant::now();
            let Some((name, result)) = next else { continue };
            busy.remove(&name);
            match result {
                Ok(header) => {
                    self.spool.record(&name, &self.identity, &header);
                    stored += 1;
                }
                Err(error) => {
                    tracing::warn!(file = %name, %error, "could not archive ahead; the wal-push for it will push it");
                    self.spool.note_failure(&name, &error.to_string());
                    failed = true;
                }
            }
        }
    }

    /// Pushes one ready file; the header of the content the archive now holds.
    async fn push_one(&self, name: String) -> (String, Result<Header, WalError>) {
        let path = self.spool.wal_dir().join(&name);
        let push = push_file(self.archive, self.compression, &path, self.data_dir);
        let result = super::with_deadline("archive", &name, self.timeout, push).await;
        (name, result.map(|(_, header)| header))
    }
}

/// Starts a detached `pgec2-agent wal-push-ahead` for `wal_dir`, in its own process group (a
/// signal to PostgreSQL's archiver does not reach it), stdin and stdout closed, logging to the
/// caller's stderr (PostgreSQL's log).
pub fn spawn(config_path: Option<&Path>, wal_dir: &Path) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut command = Command::new(std::env::current_exe()?);
    if let Some(path) = config_path {
        command.arg("--config").arg(std::path::absolute(path)?);
    }
    let wal_dir: PathBuf = std::path::absolute(wal_dir)?;
    command
        .arg("wal-push-ahead")
        .arg(&wal_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0);
    // A long-lived process sealing 16 MiB segments on pool threads: glibc's per-thread arenas and
    // its rising mmap threshold kept the freed buffers (peak RSS grew to 100 MB over a few hundred
    // segments); a fixed threshold returns them at once (about 30 MB with two pushes in flight).
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        command.env("MALLOC_MMAP_THRESHOLD_", "1048576");
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        command.env("MALLOC_ARENA_MAX", "2");
    }
    let child = command.spawn()?;
    tracing::debug!(pid = child.id(), "started the WAL pusher");
    Ok(child)
}
