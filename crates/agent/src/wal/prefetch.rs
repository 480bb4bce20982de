//! WAL prefetch for recovery: after `wal-fetch` restores segment N, a detached
//! `pgec2-agent wal-prefetch` downloads N+1..N+k into `pg_wal/.pgec2-prefetch/`, so the next
//! `wal-fetch` calls are a local check and a rename.
//!
//! A prefetched segment is stored decompressed under `<segment>.<blake3 of content>`, written
//! to a temp name while it is decompressed and verified, fsynced and renamed; `take` re-hashes it before moving it into place, so a
//! damaged or half-written file is never handed to PostgreSQL. One prefetcher runs at a time
//! (an flock on `.lock`); it removes segments of other timelines and ones already replayed. A
//! copy it removes while a `wal-fetch` is taking it (PostgreSQL fetches the last segment again
//! at the end of recovery) is downloaded instead: never a failed fetch that stops recovery.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use pgec2_core::layout::Archive;
use pgec2_core::wal::{SegmentSize, TimelineId, WalFileName};

use super::durable;
use super::error::WalError;
use super::fetch;

/// Name of the prefetch directory inside `pg_wal`.
pub const PREFETCH_DIR: &str = ".pgec2-prefetch";
const LOCK_FILE: &str = ".lock";
const LOG_FILE: &str = ".prefetch.log";

/// The prefetch directory of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefetchDir {
    path: PathBuf,
}

impl PrefetchDir {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The prefetch directory for a restore into `dest`: `pg_wal/.pgec2-prefetch` when `dest` is in
    /// `pg_wal` (PostgreSQL passes `pg_wal/RECOVERYXLOG`), else under the configured data directory.
    pub fn for_destination(dest: &Path, pgdata: Option<&Path>) -> Option<Self> {
        let parent = dest.parent()?;
        if parent.file_name().is_some_and(|name| name == "pg_wal") {
            return Some(Self::new(parent.join(PREFETCH_DIR)));
        }
        pgdata.map(|pgdata| Self::new(pgdata.join("pg_wal").join(PREFETCH_DIR)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves a verified prefetched copy of `file` to `dest` and returns the start of its content
    /// (its first [`START_LEN`] bytes: the segment header); `None` when there is none (or it
    /// failed verification and was removed). The copy is hashed as it is read, never held whole.
    pub fn take(&self, file: &str, dest: &Path) -> Result<Option<Vec<u8>>, WalError> {
        for (path, hash) in self.copies_of(file) {
            let Ok((start, actual)) = hash_file(&path) else { continue };
            if actual.to_hex().as_str() != hash {
                tracing::warn!(path = %path.display(), "prefetched file failed verification; downloading again");
                let _ = fs::remove_file(&path);
                continue;
            }
            if move_verified(&path, dest, &actual)? {
                return Ok(Some(start));
            }
        }
        Ok(None)
    }

    /// Stores verified `content` of `file` (temp file, fsync, rename).
    pub fn store(&self, file: &str, content: &[u8]) -> io::Result<()> {
        let hash = blake3::hash(content).to_hex();
        durable::write_atomically(&self.path.join(format!("{file}.{hash}")), content)
    }

    /// True when some copy of `file` is present (verified only when taken).
    pub fn holds(&self, file: &str) -> bool {
        !self.copies_of(file).is_empty()
    }

    /// Removes temp files, other timelines' segments, and segments outside `(after, after + window]`.
    pub fn clean(&self, timeline: TimelineId, after: u64, window: u64, size: SegmentSize) {
        let Ok(entries) = fs::read_dir(&self.path) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == LOCK_FILE || name == LOG_FILE {
                continue;
            }
            let keep = name.split_once('.').is_some_and(|(segment, _)| match size.parse_segment(segment) {
                Ok((segment_timeline, number)) => {
                    segment_timeline == timeline && number > after && number <= after.saturating_add(window)
                }
                Err(_) => false,
            });
            if !keep {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// `(path, hash)` of every complete prefetched copy of `file`.
    fn copies_of(&self, file: &str) -> Vec<(PathBuf, String)> {
        let Ok(entries) = fs::read_dir(&self.path) else { return Vec::new() };
        let prefix = format!("{file}.");
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let hash = name.strip_prefix(&prefix)?;
                (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| (entry.path(), hash.to_string()))
            })
            .collect()
    }

    /// Takes the prefetcher lock; `None` when another prefetcher holds it.
    pub fn try_lock(&self) -> io::Result<Option<Flock<File>>> {
        fs::create_dir_all(&self.path)?;
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(self.path.join(LOCK_FILE))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }

    /// Where a background prefetcher writes its log (truncated at each start).
    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG_FILE)
    }
}

/// Bytes of a prefetched file that [`PrefetchDir::take`] returns: one WAL page.
pub const START_LEN: usize = 8192;

/// The first [`START_LEN`] bytes of a file and the BLAKE3 hash of all of it, read in pieces.
fn hash_file(path: &Path) -> io::Result<(Vec<u8>, blake3::Hash)> {
    use std::io::Read;
    let mut source = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut start = Vec::with_capacity(START_LEN);
    let mut piece = vec![0u8; 256 * 1024];
    loop {
        let read = match source.read(&mut piece) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        let wanted = START_LEN.saturating_sub(start.len()).min(read);
        start.extend_from_slice(&piece[..wanted]);
        hasher.update(&piece[..read]);
    }
    Ok((start, hasher.finalize()))
}

/// Downloads segments `after + 1 ..= after + count` of `timeline` that are not already here, at
/// most `concurrency` at a time; stops quietly at the end of the archive. Returns how many it stored.
pub async fn prefetch(
    archive: &Archive,
    dir: &PrefetchDir,
    timeline: TimelineId,
    after: u64,
    count: u64,
    size: SegmentSize,
    concurrency: usize,
) -> Result<usize, WalError> {
    dir.clean(timeline, after, count, size);
    let wanted: Vec<String> =
        (1..=count).map(|offset| size.segment_name(timeline, after + offset)).filter(|file| !dir.holds(file)).collect();
    let results: Vec<Result<bool, WalError>> = futures::stream::iter(wanted)
        .map(|file| fetch_into(archive, dir, file))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut stored = 0;
    for result in results {
        stored += usize::from(result?);
    }
    Ok(stored)
}

/// Downloads `file` into the directory as `<file>.<content hash>`, verified as it is written.
async fn fetch_into(archive: &Archive, dir: &PrefetchDir, file: String) -> Result<bool, WalError> {
    let name: WalFileName = file.parse().map_err(|_| WalError::InvalidName { name: file.clone() })?;
    let path = dir.path().to_path_buf();
    let stored =
        fetch::download_to(archive, &name, move |header| path.join(format!("{file}.{}", header.content_hash_hex())))
            .await?;
    Ok(stored.is_some())
}

/// Removes a data directory's prefetch directory once it is out of recovery: what recovery
/// prefetched but did not replay is of no further use.
pub fn remove_after_recovery(data_dir: &Path) {
    let dir = data_dir.join("pg_wal").join(PREFETCH_DIR);
    if dir.exists()
        && super::recovery_state(data_dir) == super::RecoveryState::None
        && let Err(error) = fs::remove_dir_all(&dir)
    {
        tracing::debug!(dir = %dir.display(), %error, "could not remove the prefetch directory");
    }
}

/// Starts a detached `pgec2-agent wal-prefetch` for the segments after `after`; never fails the
/// caller (prefetching is an optimisation), only logs.
pub fn spawn_prefetcher(config_path: Option<&Path>, dir: &PrefetchDir, after: &str, size: SegmentSize) {
    if let Err(error) = try_spawn(config_path, dir, after, size) {
        tracing::debug!(%error, "could not start the WAL prefetcher");
    }
}

fn try_spawn(config_path: Option<&Path>, dir: &PrefetchDir, after: &str, size: SegmentSize) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    fs::create_dir_all(dir.path())?;
    let log = File::create(dir.log_path())?;
    let mut command = Command::new(std::env::current_exe()?);
    if let Some(path) = config_path {
        command.arg("--config").arg(std::path::absolute(path)?);
    }
    command
        .arg("wal-prefetch")
        .arg(after)
        .arg("--dir")
        .arg(dir.path())
        .arg("--segment-size")
        .arg(size.bytes().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .process_group(0);
    // Detached on purpose: the prefetcher outlives this command and is reaped by init.
    let child = command.spawn()?;
    tracing::debug!(pid = child.id(), after, "started the WAL prefetcher");
    Ok(())
}

/// Moves the verified prefetched copy `path` (whose content hash is `hash`) to `dest`: true when
/// moved, false when the copy was removed before it could be (the prefetcher cleans copies it
/// no longer needs while a `wal-fetch` may be taking one: the caller downloads the file
/// instead). Any other failure is an error naming `dest`.
fn move_verified(path: &Path, dest: &Path, hash: &blake3::Hash) -> Result<bool, WalError> {
    // A rename fails across filesystems: copy then (re-checked, as one read), the rare path.
    let moved = durable::rename_durably(path, dest).or_else(|_| {
        let content = fs::read(path)?;
        if blake3::hash(&content) != *hash {
            return Err(io::Error::other("the prefetched file changed while it was being moved"));
        }
        durable::write_atomically(dest, &content)
    });
    match moved {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound && !path.exists() => {
            tracing::debug!(path = %path.display(), "prefetched copy removed before it was moved; downloading");
            Ok(false)
        }
        Err(error) => Err(WalError::Write { path: dest.to_path_buf(), error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, PrefetchDir) {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = PrefetchDir::new(temp.path().join(PREFETCH_DIR));
        fs::create_dir_all(dir.path()).expect("mkdir");
        (temp, dir)
    }

    #[test]
    fn a_prefetched_segment_is_moved_into_place_after_verification() {
        let (temp, dir) = dir();
        dir.store("000000010000000000000002", b"segment two").expect("store");
        let dest = temp.path().join("RECOVERYXLOG");
        assert_eq!(dir.take("000000010000000000000002", &dest).expect("take"), Some(b"segment two".to_vec()));
        assert_eq!(fs::read(&dest).expect("dest"), b"segment two");
        assert!(!dir.holds("000000010000000000000002"));
    }

    #[test]
    fn a_damaged_prefetched_segment_is_discarded_not_used() {
        let (temp, dir) = dir();
        dir.store("000000010000000000000002", b"segment two").expect("store");
        let (path, _) = dir.copies_of("000000010000000000000002").pop().expect("copy");
        fs::write(&path, b"segment twX").expect("damage");
        let dest = temp.path().join("RECOVERYXLOG");
        assert_eq!(dir.take("000000010000000000000002", &dest).expect("take"), None);
        assert!(!dest.exists());
        assert!(!path.exists());
    }

    /// A prefetch directory holding one copy of segment 2 ("segment two"), and that copy's path.
    fn dir_with_copy() -> (tempfile::TempDir, PrefetchDir, PathBuf) {
        let (temp, dir) = dir();
        dir.store("000000010000000000000002", b"segment two").expect("store");
        let (path, _) = dir.copies_of("000000010000000000000002").pop().expect("copy");
        (temp, dir, path)
    }

    #[test]
    fn a_copy_removed_between_its_verification_and_its_move_is_downloaded_instead_not_an_error() {
        let (temp, _dir, path) = dir_with_copy();
        let hash = blake3::hash(b"segment two");
        fs::remove_file(&path).expect("the prefetcher cleans the copy");
        let dest = temp.path().join("RECOVERYXLOG");
        assert!(!move_verified(&path, &dest, &hash).expect("a vanished copy is no error"));
        assert!(!dest.exists());
    }

    #[test]
    fn a_destination_that_cannot_be_written_is_an_error_naming_it() {
        let (temp, _dir, path) = dir_with_copy();
        let dest = temp.path().join("missing-directory").join("RECOVERYXLOG");
        let error = move_verified(&path, &dest, &blake3::hash(b"segment two")).expect_err("no directory to write to");
        assert!(error.to_string().contains("RECOVERYXLOG"), "{error}");
        assert!(path.exists(), "the copy is left for a later call");
    }

    #[test]
    fn cleaning_keeps_only_the_window_of_the_current_timeline() {
        let (_temp, dir) = dir();
        let size = SegmentSize::default();
        for name in ["000000010000000000000003", "000000010000000000000005", "000000020000000000000005"] {
            dir.store(name, name.as_bytes()).expect("store");
        }
        fs::write(dir.path().join(".000000010000000000000006.pgec2-1.tmp"), b"partial").expect("temp");
        dir.clean(1, 3, 8, size);
        assert!(!dir.holds("000000010000000000000003"), "already replayed");
        assert!(dir.holds("000000010000000000000005"));
        assert!(!dir.holds("000000020000000000000005"), "other timeline");
        assert!(!dir.path().join(".000000010000000000000006.pgec2-1.tmp").exists());
    }

    #[test]
    fn only_one_prefetcher_holds_the_lock() {
        let (_temp, dir) = dir();
        let first = dir.try_lock().expect("lock").expect("first holder");
        assert!(dir.try_lock().expect("lock").is_none());
        drop(first);
        assert!(dir.try_lock().expect("lock").is_some());
    }
}
