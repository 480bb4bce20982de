//! Volume snapshots of the local cloud: a copy of a host's volume directory.
//!
//! ```text
//! <state>/volume-snapshots/<id>/snapshot.json   what it is a snapshot of (the "tags")
//!                               volume/         the copy
//! <state>/volume-snapshots/<id>.partial/        a copy in progress (removed and redone)
//! ```
//!
//! The id is derived from the host's uid and the backup's name, so a second request for the
//! same backup finds the first snapshot. The copy is made file by file while PostgreSQL runs
//! (between `pg_backup_start` and `pg_backup_stop`, as any file-level base backup): files that
//! vanish during the copy are skipped, as PostgreSQL's docs allow; `std::fs::copy` clones
//! extents where the file system can (copy_file_range). A snapshot appears under its id only
//! once complete (rename), so it is completed as soon as it exists.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::LocalError;
use super::files::{self, io_error};
use crate::cloud::{HostRef, SnapshotRequest, SnapshotState, VolumeSnapshot};

const RECORD: &str = "snapshot.json";

/// What a local snapshot records about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    pub host: String,
    pub uid: String,
    pub policy: String,
    pub backup: String,
}

/// The snapshot id of `backup` of the host with `uid`.
pub fn snapshot_id(uid: &str, backup: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{uid}\n{backup}").as_bytes());
    let hex: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("snap-local-{hex}")
}

/// The directory holding the snapshot `id`; refuses ids that are not ours.
pub fn snapshot_dir(root: &Path, id: &str) -> Result<PathBuf, LocalError> {
    let valid = id.starts_with("snap-local-") && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
    if !valid {
        return Err(LocalError::Setup(format!("{id:?} is not a local snapshot id")));
    }
    Ok(root.join(id))
}

fn completed(record: &SnapshotRecord) -> VolumeSnapshot {
    VolumeSnapshot {
        snapshot_id: record.snapshot_id.clone(),
        backup: Some(record.backup.clone()),
        state: SnapshotState::Completed,
    }
}

fn load(dir: &Path) -> Result<Option<SnapshotRecord>, LocalError> {
    let path = dir.join(RECORD);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| LocalError::Corrupt { path, source }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LocalError::Io { what: format!("read {}", path.display()), source }),
    }
}

/// Copies `volume` into a new snapshot for `request`, or returns the existing one.
pub async fn create(root: &Path, volume: &Path, request: &SnapshotRequest) -> Result<VolumeSnapshot, LocalError> {
    let id = snapshot_id(&request.host.uid, &request.backup);
    let dir = snapshot_dir(root, &id)?;
    if let Some(record) = load(&dir)? {
        return Ok(completed(&record));
    }
    let partial = root.join(format!("{id}.partial"));
    super::host_os::remove_tree(&partial).await?;
    files::create_traversable(root)?;
    let record = SnapshotRecord {
        snapshot_id: id.clone(),
        host: request.host.key(),
        uid: request.host.uid.clone(),
        policy: request.policy.clone(),
        backup: request.backup.clone(),
    };
    let (source, target) = (volume.to_path_buf(), partial.join("volume"));
    tokio::task::spawn_blocking(move || copy_tree(&source, &target))
        .await
        .map_err(|error| LocalError::Setup(format!("the copy of {} did not finish: {error}", volume.display())))??;
    let json = serde_json::to_vec_pretty(&record).map_err(|error| LocalError::Setup(error.to_string()))?;
    files::write_atomic(&partial.join(RECORD), &json)?;
    std::fs::rename(&partial, &dir).map_err(io_error(format!("rename {} into place", partial.display())))?;
    Ok(completed(&record))
}

/// The snapshot `id`, if it exists.
pub fn describe(root: &Path, id: &str) -> Result<Option<VolumeSnapshot>, LocalError> {
    Ok(load(&snapshot_dir(root, id)?)?.as_ref().map(completed))
}

/// The snapshots of the host with `host.uid`.
pub fn of_host(root: &Path, host: &HostRef) -> Result<Vec<VolumeSnapshot>, LocalError> {
    let mut found = Vec::new();
    for dir in files::subdirectories(root)? {
        if let Some(record) = load(&dir)?
            && record.uid == host.uid
        {
            found.push(completed(&record));
        }
    }
    Ok(found)
}

/// Deletes the snapshot `id`; a missing one is already deleted, a locked one is refused.
pub async fn delete(root: &Path, id: &str) -> Result<(), LocalError> {
    super::snapshot_lock::refuse_if_locked(root, id, chrono::Utc::now())?;
    super::host_os::remove_tree(&snapshot_dir(root, id)?).await?;
    super::snapshot_lock::forget(root, id)
}

/// The volume directory of snapshot `id`, to create a volume from.
pub fn volume_of(root: &Path, id: &str) -> Result<PathBuf, LocalError> {
    let dir = snapshot_dir(root, id)?;
    if load(&dir)?.is_none() {
        return Err(LocalError::Setup(format!("there is no local snapshot {id} under {}", root.display())));
    }
    Ok(dir.join("volume"))
}

/// Creates the volume directory `volume` from snapshot `id` (a copy, `cp -a`, which clones
/// extents where the file system can), unless it exists: a volume appears whole under its
/// name (rename of the finished copy), so an existing one is the finished copy of an earlier,
/// interrupted launch.
pub async fn restore_volume(root: &Path, id: &str, volume: &Path) -> Result<(), LocalError> {
    if volume.exists() {
        return Ok(());
    }
    let source = volume_of(root, id)?;
    let partial = volume.with_file_name("volume.from-snapshot");
    super::host_os::remove_tree(&partial).await?;
    super::host_os::copy_tree(&source, &partial).await?;
    std::fs::rename(&partial, volume).map_err(io_error(format!("rename {} into place", partial.display())))?;
    tracing::info!(snapshot = id, volume = %volume.display(), "volume created from a snapshot");
    Ok(())
}

/// Copies a directory tree keeping modes and owners; entries that vanish meanwhile are skipped.
pub fn copy_tree(source: &Path, target: &Path) -> Result<(), LocalError> {
    let metadata = match std::fs::symlink_metadata(source) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(format!("stat {}", source.display()))(error)),
    };
    let copied = if metadata.is_dir() {
        std::fs::create_dir_all(target).and_then(|()| copy_children(source, target))
    } else if metadata.file_type().is_symlink() {
        std::fs::read_link(source).and_then(|link| std::os::unix::fs::symlink(link, target))
    } else if metadata.is_file() {
        std::fs::copy(source, target).map(|_| ())
    } else {
        return Ok(());
    };
    match copied {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(format!("copy {} to {}", source.display(), target.display()))(error)),
    }
    std::os::unix::fs::lchown(target, Some(metadata.uid()), Some(metadata.gid()))
        .map_err(io_error(format!("chown {}", target.display())))?;
    if !metadata.file_type().is_symlink() {
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(metadata.mode() & 0o7777))
            .map_err(io_error(format!("chmod {}", target.display())))?;
    }
    Ok(())
}

fn copy_children(source: &Path, target: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(source)? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        copy_tree(&entry.path(), &target.join(entry.file_name())).map_err(std::io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_snapshot_is_a_copy_found_again_by_host_and_backup_and_deleted_whole() {
        let scratch = tempfile::tempdir().expect("scratch");
        let volume = scratch.path().join("volume");
        std::fs::create_dir_all(volume.join("data/base")).expect("volume");
        std::fs::write(volume.join("data/base/1"), b"rows").expect("file");
        std::os::unix::fs::symlink("base", volume.join("data/link")).expect("symlink");
        let root = scratch.path().join("volume-snapshots");
        let host = HostRef { namespace: "default".into(), name: "db".into(), uid: "uid-1".into() };
        let request = SnapshotRequest { host: host.clone(), policy: "default/nightly".into(), backup: "base_1".into() };
        let first = create(&root, &volume, &request).await.expect("snapshot");
        std::fs::write(volume.join("data/base/1"), b"changed").expect("write after the snapshot");
        let again = create(&root, &volume, &request).await.expect("the same snapshot");
        assert_eq!(first, again);
        assert_eq!(first.state, SnapshotState::Completed);
        let copy = volume_of(&root, &first.snapshot_id).expect("volume");
        assert_eq!(std::fs::read(copy.join("data/base/1")).expect("copied"), b"rows");
        assert_eq!(std::fs::read_link(copy.join("data/link")).expect("link"), PathBuf::from("base"));
        assert_eq!(of_host(&root, &host).expect("list"), vec![first.clone()]);
        let other = HostRef { uid: "uid-2".into(), ..host.clone() };
        assert!(of_host(&root, &other).expect("list").is_empty());
        delete(&root, &first.snapshot_id).await.expect("delete");
        delete(&root, &first.snapshot_id).await.expect("delete again");
        assert_eq!(describe(&root, &first.snapshot_id).expect("describe"), None);
        assert!(snapshot_dir(&root, "../etc").is_err());
    }
}
