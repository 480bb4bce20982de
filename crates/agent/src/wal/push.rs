//! Archiving one WAL file: identify its cluster, seal it, store it with a conditional create,
//! and treat an existing object as success only when its content is identical.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgec2_core::compression::Compression;
use pgec2_core::encryption::Keyring;
use pgec2_core::envelope::{self, Header};
use pgec2_core::identity::ClusterIdentity;
use pgec2_core::layout::Archive;
use pgec2_core::storage::{ObjectKey, PutMode, StorageError};
use pgec2_core::wal::{SegmentHeader, WalFileName, control_file_system_identifier};

use super::error::{WalError, blocking};
use super::{owner, seal_threads, timeline_guard};

/// What `push` did with the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file is now in the archive (`stored_bytes` after compression and envelope).
    Stored { stored_bytes: u64 },
    /// The archive already held exactly this content.
    AlreadyArchived,
    /// Not archived: the queue cap dropped it (a hole, recorded; see [`super::queue_cap`]).
    Dropped,
}

/// Archives the WAL file at `path`. `data_dir` is the cluster's data directory (for the owner
/// cache and, for history and backup files, `pg_control`'s system identifier). Returns only once
/// the store has durably accepted the object.
pub async fn push(
    archive: &Archive,
    compression: Compression,
    path: &Path,
    data_dir: Option<&Path>,
) -> Result<PushOutcome, WalError> {
    push_file(archive, compression, path, data_dir).await.map(|(outcome, _)| outcome)
}

/// Like [`push`], for the one-file `wal-push` command on its one-thread runtime: the file is
/// sealed on the calling thread, helped by `workers - 1` more (see [`envelope::frames`]), after
/// the guards. No hand-off to the blocking pool and back: on busy cores every hand-off waits
/// for a time slice, which cost more than the guards' overlap with sealing saved (they read
/// their local caches; a store round trip only every few minutes).
pub async fn push_inline(
    archive: &Archive,
    compression: Compression,
    path: &Path,
    data_dir: Option<&Path>,
    workers: usize,
) -> Result<PushOutcome, WalError> {
    push_with(archive, compression, path, data_dir, Sealing::Inline { workers }).await.map(|(outcome, _)| outcome)
}

/// Compression threads for one synchronous push of a file, `in_pg_wal` when the file is in a data
/// directory's `pg_wal` (PostgreSQL's archiver calling): two while a core is idle, one while the
/// cores are busy (see [`seal_threads`]); the load it was chosen from is logged at debug level.
pub fn compression_workers(upload_concurrency: usize, in_pg_wal: bool) -> usize {
    let (workers, load) = seal_threads::for_push(upload_concurrency, in_pg_wal);
    if let Some(load) = load {
        let (runnable, waiting_percent) = (load.runnable, load.waiting_percent);
        tracing::debug!(?runnable, ?waiting_percent, workers, "wal-push seal threads");
    }
    workers
}

/// Like [`push`], also returning the header (length and hash) of the content archived: sealing
/// on the blocking pool, one thread, so that many pushes run at once on one runtime.
pub async fn push_file(
    archive: &Archive,
    compression: Compression,
    path: &Path,
    data_dir: Option<&Path>,
) -> Result<(PushOutcome, Header), WalError> {
    push_with(archive, compression, path, data_dir, Sealing::BlockingPool).await
}

/// Where the file is sealed.
#[derive(Clone, Copy, Debug)]
enum Sealing {
    /// On the blocking pool (one thread), while the guards run.
    BlockingPool,
    /// On the calling thread and `workers - 1` more, after the guards.
    Inline { workers: usize },
}

/// The push, each stage's duration logged at `debug`.
async fn push_with(
    archive: &Archive,
    compression: Compression,
    path: &Path,
    data_dir: Option<&Path>,
    sealing: Sealing,
) -> Result<(PushOutcome, Header), WalError> {
    let started = Instant::now();
    let name = wal_name_of(path)?;
    let file = name.file_name();
    let first_page = read_first_page(path).await?;
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let claimant = claimant_for(&name, path, &first_page, data_dir).await?;
    let identify_ms = started.elapsed().as_secs_f64() * 1e3 - read_ms;
    let keyring = keyring_for(archive, &name);
    // On the blocking pool, compress while the archive's owner is checked (a store round trip
    // when not cached).
    let pooled = match sealing {
        Sealing::BlockingPool => {
            let (path, file, keyring) = (path.to_path_buf(), file.clone(), keyring.clone());
            Some(tokio::task::spawn_blocking(move || seal_timed(&path, &file, compression, &keyring, 1)))
        }
        Sealing::Inline { .. } => None,
    };
    let owner_started = Instant::now();
    owner::ensure(archive, &claimant, data_dir, &file).await?;
    timeline_guard::ensure(archive, &name, path, data_dir).await?;
    let guards_ms = owner_started.elapsed().as_secs_f64() * 1e3;
    let (sealed, seal_time) = match (pooled, sealing) {
        (Some(pooled), _) => pooled.await.map_err(|error| WalError::Task(error.to_string()))??,
        (None, Sealing::Inline { workers }) => seal_timed(path, &file, compression, &keyring, workers)?,
        (None, Sealing::BlockingPool) => seal_timed(path, &file, compression, &keyring, 1)?,
    };
    let header = sealed.1;
    let store_started = Instant::now();
    let outcome = store(archive, &file, sealed).await?;
    tracing::debug!(
        file,
        read_ms = %format!("{read_ms:.1}"),
        identify_ms = %format!("{identify_ms:.1}"),
        seal_ms = %format!("{:.1}", seal_time.as_secs_f64() * 1e3),
        guards_ms = %format!("{guards_ms:.1}"),
        store_ms = %format!("{:.1}", store_started.elapsed().as_secs_f64() * 1e3),
        "wal-push stages"
    );
    Ok((outcome, header))
}

/// The start of the file: enough for the segment header (a WAL page). One small read from the
/// page cache, done in place: handing it to the blocking pool would cost more than the read.
async fn read_first_page(path: &Path) -> Result<Vec<u8>, WalError> {
    use std::io::Read;
    let read_error = |error| WalError::Read { path: path.to_path_buf(), error };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut page = Vec::with_capacity(FIRST_PAGE);
    file.take(FIRST_PAGE as u64).read_to_end(&mut page).map_err(read_error)?;
    Ok(page)
}

/// Bytes of a WAL file read to identify it (one WAL page; the long header is its first 40).
const FIRST_PAGE: usize = 8192;

/// The keys a WAL file is sealed with: segments and `.partial` files (the data) are encrypted
/// when the archive encrypts; `.history` and `.backup` files (timeline switch points and backup
/// positions, read without the key by the operator's recovery window) stay in the clear.
fn keyring_for(archive: &Archive, name: &WalFileName) -> Keyring {
    match name {
        WalFileName::Segment { .. } | WalFileName::Partial { .. } => archive.keyring.clone(),
        WalFileName::History { .. } | WalFileName::BackupHistory { .. } => Keyring::none(),
    }
}

/// [`seal_file`], and how long it took.
fn seal_timed(
    path: &Path,
    file: &str,
    compression: Compression,
    keyring: &Keyring,
    workers: usize,
) -> Result<((Vec<u8>, Header), Duration), WalError> {
    let started = Instant::now();
    seal_file(path, file, compression, keyring, workers).map(|sealed| (sealed, started.elapsed()))
}

/// Reads, checksums, compresses (and encrypts) the file a piece at a time on `workers` threads
/// (never the whole content in memory).
fn seal_file(
    path: &Path,
    file: &str,
    compression: Compression,
    keyring: &Keyring,
    workers: usize,
) -> Result<(Vec<u8>, Header), WalError> {
    let read_error = |error| WalError::Read { path: path.to_path_buf(), error };
    let source = std::fs::File::open(path).map_err(read_error)?;
    let size = source.metadata().map_err(read_error)?.len();
    let size_hint = usize::try_from(size).unwrap_or(usize::MAX);
    let (stored, header) =
        envelope::seal_at(&source, size_hint, compression, keyring, workers).map_err(|error| match error {
            envelope::EnvelopeError::Read(error) => read_error(error),
            error => WalError::Seal { file: file.to_string(), error },
        })?;
    same_length(size, header.content_len).map_err(read_error)?;
    Ok((stored, header))
}

/// Refuses a file whose length at opening (`opened`) differs from what was read: it changed
/// while being read, and what was sealed is not the file PostgreSQL asked for.
fn same_length(opened: u64, read: u64) -> Result<(), std::io::Error> {
    if opened == read {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "it changed length while it was being read ({opened} bytes when opened, {read} read); a WAL file must not \
         change while it is archived"
    )))
}

/// The WAL file name of `path`, refusing anything PostgreSQL would not archive.
pub fn wal_name_of(path: &Path) -> Result<WalFileName, WalError> {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    name.parse().map_err(|_| WalError::InvalidName { name })
}

/// Who the file says its cluster is: the segment header for segments, `pg_control` otherwise.
pub(crate) async fn claimant_for(
    name: &WalFileName,
    path: &Path,
    content: &[u8],
    data_dir: Option<&Path>,
) -> Result<ClusterIdentity, WalError> {
    let segment_name = match name {
        WalFileName::Segment { name, .. } => name,
        WalFileName::Partial { segment_name, .. } => segment_name,
        WalFileName::History { .. } | WalFileName::BackupHistory { .. } => {
            return claimant_from_data_dir(&name.file_name(), data_dir).await;
        }
    };
    let not_a_segment = |reason: String| WalError::NotASegment { path: path.to_path_buf(), reason };
    let header = SegmentHeader::parse(content).map_err(|error| not_a_segment(error.to_string()))?;
    let (_, number) =
        header.segment_size.parse_segment(segment_name).map_err(|error| not_a_segment(error.to_string()))?;
    if number != header.segment_number() {
        return Err(not_a_segment(format!(
            "its first page is at LSN {}, which is segment {} and not {segment_name}",
            header.page_address,
            header.segment_size.segment_name(name.timeline(), header.segment_number())
        )));
    }
    Ok(ClusterIdentity::new(header.system_identifier, header.pg_version(), Some(header.segment_size.bytes())))
}

/// The identity of the cluster in `data_dir`, read from `global/pg_control` and `PG_VERSION`.
async fn claimant_from_data_dir(file: &str, data_dir: Option<&Path>) -> Result<ClusterIdentity, WalError> {
    let data_dir = data_dir.ok_or_else(|| WalError::NoDataDirectory { file: file.to_string() })?;
    let control_path = data_dir.join("global").join("pg_control");
    let control =
        tokio::fs::read(&control_path).await.map_err(|error| WalError::Read { path: control_path.clone(), error })?;
    let system_identifier = control_file_system_identifier(&control)
        .map_err(|error| WalError::Read { path: control_path, error: std::io::Error::other(error) })?;
    let pg_version =
        tokio::fs::read_to_string(data_dir.join("PG_VERSION")).await.ok().and_then(|text| text.trim().parse().ok());
    Ok(ClusterIdentity::new(system_identifier, pg_version, None))
}

/// Stores the sealed file under its key, never replacing an existing object.
async fn store(archive: &Archive, file: &str, (stored, header): (Vec<u8>, Header)) -> Result<PushOutcome, WalError> {
    let storage_error = |error: StorageError| WalError::storage("archive", file, error);
    let key = archive.layout.wal_file(file).map_err(storage_error)?;
    let stored_bytes = stored.len() as u64;
    match archive.storage.put(&key, Bytes::from(stored), PutMode::CreateNew).await {
        Ok(()) => Ok(PushOutcome::Stored { stored_bytes }),
        Err(error) if error.is_already_exists() => compare_with_archived(archive, &key, file, &header).await,
        Err(error) => Err(storage_error(error)),
    }
}

/// The object exists: success when it holds the same content, an error otherwise.
async fn compare_with_archived(
    archive: &Archive,
    key: &ObjectKey,
    file: &str,
    local: &Header,
) -> Result<PushOutcome, WalError> {
    let stored = archive.storage.get(key).await.map_err(|error| WalError::storage("archive", file, error))?;
    let (owned_file, owned_key, keyring) = (file.to_string(), key.to_string(), archive.keyring.clone());
    let archived = blocking(move || {
        envelope::open_with(&stored, &keyring)
            .map(|(_, header)| header)
            .map_err(|error| WalError::stored_copy_unreadable(owned_file, owned_key, error))
    })
    .await?;
    if archived.content_hash == local.content_hash && archived.content_len == local.content_len {
        tracing::debug!(file, "already archived with identical content");
        return Ok(PushOutcome::AlreadyArchived);
    }
    Err(WalError::DifferentContent {
        file: file.to_string(),
        key: key.to_string(),
        stored: archived.content_hash_hex(),
        local: local.content_hash_hex(),
    })
}

#[cfg(test)]
mod tests {
    use super::same_length;

    #[test]
    fn a_file_read_at_another_length_than_it_had_when_opened_is_refused() {
        assert!(same_length(16 << 20, 16 << 20).is_ok());
        let error = same_length(16 << 20, 8 << 20).expect_err("a file that shrank while read");
        assert!(error.to_string().contains("changed length"), "{error}");
        assert!(same_length(16 << 20, 17 << 20).is_err(), "a file that grew while read");
    }
}
