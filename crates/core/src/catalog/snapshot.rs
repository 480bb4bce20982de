//! The handshake of a snapshot backup between the agent on the host (which holds the backup
//! session open) and the operator (which alone may snapshot the host's volume), through three
//! create-only objects under `snapshot-requests/<backup>/` in the host's archive:
//!
//! ```text
//! agent:    pg_backup_start ─▶ request.json ·········· wait ··········▶ pg_backup_stop, labels,
//! operator:                         └─▶ snapshot (find by tags first) ─▶ taken.json
//! agent:    manifest ··· wait ···▶ complete.json (the commit, naming the snapshot)
//! operator:        snapshot completed ─▶ completed.json
//! ```
//!
//! Every step can be repeated after a crash of either side: the agent's session ending aborts
//! the backup in PostgreSQL and nothing is committed; the operator finds a snapshot it already
//! started by its tags before it starts one, and writes nothing it has written before. The
//! operator removes a handshake once its backup is committed or abandoned.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CatalogError, get_json, put_json, storage};
use crate::layout::Archive;
use crate::storage::PutMode;
use crate::wal::Lsn;

/// Object the agent writes once `pg_backup_start` returned.
pub const REQUEST: &str = "request.json";
/// Object the operator writes once the snapshot is started (its point in time is fixed).
pub const TAKEN: &str = "taken.json";
/// Object the operator writes once the snapshot is complete and durable.
pub const COMPLETED: &str = "completed.json";

/// The agent's request: the backup session is open, snapshot the volume now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub backup: String,
    pub start_lsn: Lsn,
    pub requested_at: DateTime<Utc>,
}

/// The operator's answers: the snapshot's id, and in `completed.json` that it is complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAnswer {
    pub snapshot_id: String,
}

/// Where a handshake stands, as read from the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub request: SnapshotRequest,
    pub taken: Option<SnapshotAnswer>,
    pub completed: Option<SnapshotAnswer>,
}

/// Writes one object of the handshake; a repeat with the same content is success.
pub async fn put<T: Serialize>(archive: &Archive, backup: &str, object: &str, value: &T) -> Result<(), CatalogError> {
    let key = archive.layout.snapshot_handshake(backup, object).map_err(storage("name", backup))?;
    put_json(archive, &key, value, PutMode::CreateNew).await
}

/// Reads one object of the handshake; `None` while it does not exist.
pub async fn get<T: serde::de::DeserializeOwned>(
    archive: &Archive,
    backup: &str,
    object: &str,
) -> Result<Option<T>, CatalogError> {
    let key = archive.layout.snapshot_handshake(backup, object).map_err(storage("name", backup))?;
    if archive.storage.head(&key).await.map_err(storage("check", key.as_str()))?.is_none() {
        return Ok(None);
    }
    get_json(archive, &key).await.map(Some)
}

/// Every handshake in the archive, oldest backup first.
pub async fn list(archive: &Archive) -> Result<Vec<Handshake>, CatalogError> {
    let prefix = archive.layout.snapshot_requests_prefix();
    let listing = archive.storage.list(&prefix).await.map_err(storage("list", &prefix))?;
    let mut backups: Vec<&str> = listing
        .iter()
        .filter_map(|meta| meta.key.as_str().strip_prefix(&prefix)?.strip_suffix(&format!("/{REQUEST}")))
        .collect();
    backups.sort_unstable();
    let mut handshakes = Vec::with_capacity(backups.len());
    for backup in backups {
        let Some(request) = get::<SnapshotRequest>(archive, backup, REQUEST).await? else { continue };
        let taken = get(archive, backup, TAKEN).await?;
        let completed = get(archive, backup, COMPLETED).await?;
        handshakes.push(Handshake { request, taken, completed });
    }
    Ok(handshakes)
}

/// Removes the handshake of `backup` (its backup committed or abandoned).
pub async fn remove(archive: &Archive, backup: &str) -> Result<(), CatalogError> {
    let mut keys = Vec::new();
    for object in [COMPLETED, TAKEN, REQUEST] {
        keys.push(archive.layout.snapshot_handshake(backup, object).map_err(storage("name", backup))?);
    }
    for key in keys {
        match archive.storage.delete(&key).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(storage("delete", key.as_str())(error)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::layout::ArchiveLayout;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn a_handshake_is_listed_with_its_answers_and_removed_whole() {
        let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::under("ns/db").expect("layout"));
        let request = SnapshotRequest { backup: "base_1".into(), start_lsn: Lsn(0x100), requested_at: Utc::now() };
        put(&archive, "base_1", REQUEST, &request).await.expect("request");
        put(&archive, "base_1", REQUEST, &request).await.expect("the same request again");
        let listed = list(&archive).await.expect("list");
        assert_eq!(listed, vec![Handshake { request: request.clone(), taken: None, completed: None }]);
        let answer = SnapshotAnswer { snapshot_id: "snap-1".into() };
        put(&archive, "base_1", TAKEN, &answer).await.expect("taken");
        assert_eq!(list(&archive).await.expect("list")[0].taken, Some(answer));
        remove(&archive, "base_1").await.expect("remove");
        remove(&archive, "base_1").await.expect("remove again");
        assert!(list(&archive).await.expect("list").is_empty());
    }
}
