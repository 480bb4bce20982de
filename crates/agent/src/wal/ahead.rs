//! Asynchronous archiving (`transfer.archive_async = true`): `wal-push X` answers from the spool
//! when X was already stored ahead (see [`super::spool`]); otherwise it stores X and, in
//! parallel, the next files PostgreSQL has marked ready, `upload_concurrency` at a time, and
//! records each one stored so that PostgreSQL's next calls return at once.
//!
//! Only X decides the exit status: a file pushed ahead that fails is logged and left for
//! PostgreSQL to ask for again (then pushed synchronously). The process waits for every push it
//! started before it exits, so nothing runs on after PostgreSQL got its answer, and a killed
//! `wal-push` leaves only markers of files that were durably stored; PostgreSQL retries X.

use std::path::Path;

use futures::StreamExt;
use pgec2_core::compression::Compression;
use pgec2_core::layout::Archive;

use super::error::WalError;
use super::push::{PushOutcome, push_file, wal_name_of};
use super::spool::Spool;

/// Files pushed per call, per upload slot: X and the next ready files, so that the calls after
/// this one are answered from the spool while each slot stays busy.
const FILES_PER_SLOT: usize = 2;

/// Archives the WAL file at `path` and the ready files after it; returns X's outcome.
pub async fn push_ahead(
    archive: &Archive,
    compression: Compression,
    concurrency: usize,
    path: &Path,
    data_dir: Option<&Path>,
    cap: Option<u64>,
) -> Result<PushOutcome, WalError> {
    let file = wal_name_of(path)?.file_name();
    let Some(wal_dir) = path.parent() else {
        return push_file(archive, compression, path, data_dir).await.map(|(outcome, _)| outcome);
    };
    let spool = Spool::new(wal_dir);
    let described = archive.describe();
    if spool.answer(&file, path, &described) {
        tracing::debug!(file, "already stored ahead with identical content");
        return Ok(PushOutcome::AlreadyArchived);
    }
    if let Some(data_dir) = data_dir
        && let Some(dropped) = super::drop_if_over_cap(path, data_dir, cap)?
    {
        return Ok(dropped);
    }
    spool.sweep();
    let concurrency = concurrency.max(1);
    let ahead = spool.ready_files(&file, FILES_PER_SLOT * concurrency - 1);
    let current = push_file(archive, compression, path, data_dir);
    let others = futures::stream::iter(ahead)
        .map(|name| {
            let (spool, described) = (&spool, &described);
            async move {
                match push_file(archive, compression, &wal_dir.join(&name), data_dir).await {
                    Ok((_, header)) => spool.record(&name, described, &header),
                    Err(error) => {
                        tracing::warn!(file = %name, %error, "could not archive ahead; PostgreSQL will ask again")
                    }
                }
            }
        })
        .buffer_unordered(concurrency.saturating_sub(1).max(1))
        .collect::<Vec<()>>();
    let (current, _) = tokio::join!(current, others);
    current.map(|(outcome, _)| outcome)
}
