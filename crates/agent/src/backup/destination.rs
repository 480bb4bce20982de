//! Where a restore writes: the checks made before anything is written (an empty or absent data
//! directory, empty or absent tablespace directories), who will own the files, how manifest
//! paths map to disk, the cleanup of a restore that failed half-way, and the order that makes a
//! finished restore durable.
//!
//! Interrupted restores: the first file a restore writes is [`RESTORE_MARKER`], locked while the
//! restore runs and listing the directories it created or emptied; the last step removes it.
//! A restore killed half-way (no cleanup ran) leaves the marker and no `global/pg_control`; the
//! next backup-fetch into that directory removes what the killed one wrote, as its own cleanup
//! would have, and starts again. A marker another backup-fetch still holds is refused.
//!
//! Completion order, as pg_basebackup does (everything synced, then the one step that makes
//! the directory startable): every file is fsynced as it completes and every directory once its
//! entries are written; the data directory is fsynced after `backup_label`, the recovery
//! settings and the signal file are in it; only then is `global/pg_control` renamed into place
//! (PostgreSQL cannot start a data directory without it, and with it but without
//! `backup_label` it would run crash recovery from the wrong checkpoint), and `global/` fsynced.
//!
//! Ownership: when the agent runs as root, every restored file and directory is given to the
//! owner of the destination directory (or of its parent when it does not exist yet), which is
//! the user PostgreSQL will run as. Otherwise files belong to the user running the agent.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid};
use pgec2_core::manifest::BackupManifest;
use serde::{Deserialize, Serialize};

use super::restore_sync::SyncMethod;
use super::walk::CONTROL_FILE;
use super::{BackupError, Refusal};

/// The name `global/pg_control` is written under until everything else is durable.
pub const CONTROL_FILE_PENDING: &str = "global/pg_control.pgec2-restoring";

/// Present in the data directory while a restore runs (see the module's documentation).
pub const RESTORE_MARKER: &str = "pgec2-restore-incomplete";

/// What makes a restore durable, in order (recorded in tests, see [`Journal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A file, directory or link was written completely (not yet durable).
    Written(PathBuf),
    /// A file's data and metadata were fsynced.
    SyncFile(PathBuf),
    /// A directory was fsynced (its entries are durable).
    SyncDirectory(PathBuf),
    /// A whole file system was synced (`syncfs`): everything on device `device` written before
    /// is durable.
    SyncFileSystem { root: PathBuf, device: u64 },
    /// A file was renamed.
    Rename { from: PathBuf, to: PathBuf },
}

/// Records [`Durability`] events when enabled (tests), and can make one sync fail as the disk
/// would (tests of the failure path); does nothing otherwise.
#[derive(Clone, Debug, Default)]
pub struct Journal(Option<Arc<JournalState>>);

#[derive(Debug, Default)]
pub struct JournalState {
    events: Mutex<Vec<Durability>>,
    fail: Option<fn(&Durability) -> bool>,
}

impl Journal {
    /// A journal that records.
    pub fn recording() -> Self {
        Self(Some(Arc::new(JournalState::default())))
    }

    /// A journal that records, and fails every sync `fail` picks with an I/O error (EIO).
    pub fn failing(fail: fn(&Durability) -> bool) -> Self {
        Self(Some(Arc::new(JournalState { events: Mutex::default(), fail: Some(fail) })))
    }

    pub fn record(&self, event: impl FnOnce() -> Durability) {
        if let Some(state) = &self.0 {
            state.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(event());
        }
    }

    /// The injected failure of the sync `event` is about to do, if any.
    pub fn injected_failure(&self, event: Durability) -> Option<std::io::Error> {
        let fail = self.0.as_ref()?.fail?;
        fail(&event).then(|| std::io::Error::from(Errno::EIO))
    }

    /// What was recorded, in order.
    pub fn events(&self) -> Vec<Durability> {
        self.0
            .as_ref()
            .map(|state| state.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
            .unwrap_or_default()
    }
}

/// The content of [`RESTORE_MARKER`]: what the restore's cleanup would remove.
#[derive(Debug, Serialize, Deserialize)]
struct MarkerContent {
    backup: String,
    started_at: chrono::DateTime<chrono::Utc>,
    created: Vec<PathBuf>,
    emptied: Vec<PathBuf>,
}

/// The lock on [`RESTORE_MARKER`], held while the restore runs.
pub struct RestoreMarker {
    _lock: Flock<File>,
    path: PathBuf,
}

/// A checked restore destination.
#[derive(Clone, Debug)]
pub struct Destination {
    pub data_dir: PathBuf,
    /// Tablespace oid → directory it is restored to.
    pub tablespaces: BTreeMap<u32, PathBuf>,
    /// Owner to give files to (root only).
    pub owner: Option<(Uid, Gid)>,
    /// Directories that did not exist before the restore (removed on failure); the others
    /// were empty and are emptied again.
    created: Vec<PathBuf>,
    emptied: Vec<PathBuf>,
    /// Durability events, recorded in tests.
    pub journal: Journal,
    /// How the restored files are made durable; chosen from the file systems when `None`.
    pub sync_method: Option<SyncMethod>,
}

impl Destination {
    /// Checks `data_dir` and the tablespace directories (after `mapping`, old → new location)
    /// without writing anything.
    pub fn check(
        data_dir: &Path,
        manifest: &BackupManifest,
        mapping: &BTreeMap<String, PathBuf>,
    ) -> Result<Self, BackupError> {
        let data_dir = absolute(data_dir)?;
        let mut destination = Self {
            data_dir: data_dir.clone(),
            tablespaces: BTreeMap::new(),
            owner: None,
            created: Vec::new(),
            emptied: Vec::new(),
            journal: Journal::default(),
            sync_method: None,
        };
        destination.check_empty(&data_dir, "the restore directory", "choose an empty or new directory")?;
        for tablespace in &manifest.tablespaces {
            let location =
                mapping.get(&tablespace.location).cloned().unwrap_or_else(|| PathBuf::from(&tablespace.location));
            if !location.is_absolute() {
                return Err(Refusal::RelativeTablespace { path: location }.into());
            }
            let hint = format!("map it elsewhere with --tablespace-mapping {}=NEWDIR", tablespace.location);
            destination.check_empty(&location, &format!("tablespace {} directory", tablespace.oid), &hint)?;
            destination.tablespaces.insert(tablespace.oid, location);
        }
        destination.owner = owner_for(&data_dir)?;
        Ok(destination)
    }

    /// A data directory that exists already and is prepared in place (`snapshot-restore`):
    /// files written into it go to its owner; nothing is created or removed on failure.
    pub fn existing(data_dir: &Path) -> Result<Self, BackupError> {
        let data_dir = absolute(data_dir)?;
        let owner = owner_for(&data_dir)?;
        Ok(Self {
            data_dir,
            tablespaces: BTreeMap::new(),
            owner,
            created: Vec::new(),
            emptied: Vec::new(),
            journal: Journal::default(),
            sync_method: None,
        })
    }

    /// Refuses a non-empty directory; remembers whether it exists.
    fn check_empty(&mut self, dir: &Path, what: &str, hint: &str) -> Result<(), BackupError> {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    let (what, path, remedy) = (what.to_string(), dir.to_path_buf(), hint.to_string());
                    return Err(Refusal::DirectoryNotEmpty { what, path, remedy }.into());
                }
                self.emptied.push(dir.to_path_buf());
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let parent = dir.parent().unwrap_or(Path::new("/"));
                if !parent.is_dir() {
                    let (what, path, parent) = (what.to_string(), dir.to_path_buf(), parent.to_path_buf());
                    return Err(Refusal::MissingParent { what, path, parent }.into());
                }
                self.created.push(dir.to_path_buf());
            }
            Err(source) => return Err(BackupError::Io { action: "read", path: dir.to_path_buf(), source }),
        }
        Ok(())
    }

    /// Creates the data directory and tablespace directories (mode 0700).
    pub fn create_roots(&self) -> Result<(), BackupError> {
        for dir in &self.created {
            std::fs::DirBuilder::new().mode(0o700).create(dir).map_err(BackupError::io("create", dir))?;
            self.give(dir)?;
        }
        for dir in &self.emptied {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(BackupError::io("chmod", dir))?;
        }
        Ok(())
    }

    /// The path on disk of a manifest path (`global/pg_control` goes to its pending name).
    pub fn resolve(&self, manifest: &BackupManifest, relative: &str) -> PathBuf {
        if relative == CONTROL_FILE {
            return self.data_dir.join(CONTROL_FILE_PENDING);
        }
        match manifest.tablespace_of(relative) {
            Some((tablespace, inside)) => match self.tablespaces.get(&tablespace.oid) {
                Some(location) => location.join(inside),
                None => self.data_dir.join(relative),
            },
            None => self.data_dir.join(relative),
        }
    }

    /// Gives `path` (not following symlinks) to the destination's owner, when running as root.
    pub fn give(&self, path: &Path) -> Result<(), BackupError> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(BackupError::io("chown", path))?;
        }
        Ok(())
    }

    /// Removes what a failed restore wrote: created directories entirely, the contents of the
    /// directories that were empty before.
    pub fn clean_up(&self) {
        for dir in &self.created {
            if let Err(error) = std::fs::remove_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), %error, "failed to remove a partially restored directory");
            }
        }
        for dir in &self.emptied {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(error) = removed {
                    tracing::warn!(path = %path.display(), %error, "failed to remove a partially restored file");
                }
            }
        }
    }

    /// Creates `path` with `content` (mode 0600), fsyncs it, and gives it to the owner. The
    /// directory holding it is fsynced later ([`Destination::complete`]).
    pub fn write_new(&self, path: &Path, content: &[u8]) -> Result<(), BackupError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(BackupError::io("create", path))?;
        file.write_all(content).and_then(|()| file.sync_all()).map_err(BackupError::io("write", path))?;
        self.journal.record(|| Durability::SyncFile(path.to_path_buf()));
        self.give(path)
    }

    /// fsyncs a directory, making the entries in it durable.
    pub fn sync_directory(&self, path: &Path) -> Result<(), BackupError> {
        super::restore_sync::sync_directory(path, &self.journal)
    }

    /// Renames within the restore (the caller fsyncs the directories).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), BackupError> {
        std::fs::rename(from, to).map_err(BackupError::io("move into place", to))?;
        self.journal.record(|| Durability::Rename { from: from.to_path_buf(), to: to.to_path_buf() });
        Ok(())
    }

    /// Writes [`RESTORE_MARKER`] (the first file of the restore) and locks it until the restore
    /// ends. The roots exist.
    pub fn mark_in_progress(&self, backup: &str) -> Result<RestoreMarker, BackupError> {
        let path = self.data_dir.join(RESTORE_MARKER);
        let content = MarkerContent {
            backup: backup.to_string(),
            started_at: chrono::Utc::now(),
            created: self.created.clone(),
            emptied: self.emptied.clone(),
        };
        let json = serde_json::to_vec_pretty(&content).map_err(|error| BackupError::Task(error.to_string()))?;
        self.write_new(&path, &json).map_err(|error| match error {
            BackupError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                another_restore(&self.data_dir)
            }
            error => error,
        })?;
        let file = File::open(&path).map_err(BackupError::io("open", &path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
            Errno::EWOULDBLOCK => another_restore(&self.data_dir),
            errno => BackupError::Io { action: "lock", path: path.clone(), source: errno.into() },
        })?;
        self.sync_directory(&self.data_dir)?;
        Ok(RestoreMarker { _lock: lock, path })
    }

    /// The last steps of a restore whose files are all written and fsynced: makes the data
    /// directory's entries durable, moves `global/pg_control` into place, makes that durable,
    /// and removes the marker.
    pub fn complete(&self, marker: RestoreMarker) -> Result<(), BackupError> {
        self.sync_directory(&self.data_dir)?;
        let pending = self.data_dir.join(CONTROL_FILE_PENDING);
        let control = self.data_dir.join(CONTROL_FILE);
        self.rename(&pending, &control)?;
        self.sync_directory(&self.data_dir.join("global"))?;
        std::fs::remove_file(&marker.path).map_err(BackupError::io("remove", &marker.path))?;
        self.sync_directory(&self.data_dir)
    }

    /// The directories the restore writes under: the data directory and the tablespaces'.
    pub fn roots(&self) -> Vec<PathBuf> {
        std::iter::once(&self.data_dir).chain(self.tablespaces.values()).cloned().collect()
    }

    /// Directories whose entries must be made durable: the roots and their parents.
    pub fn roots_and_parents(&self) -> Vec<PathBuf> {
        let roots = std::iter::once(&self.data_dir).chain(self.tablespaces.values());
        roots.flat_map(|root| [root.clone(), root.parent().unwrap_or(Path::new("/")).to_path_buf()]).collect()
    }
}

fn another_restore(data_dir: &Path) -> BackupError {
    Refusal::RestoreInProgress { data_dir: data_dir.to_path_buf() }.into()
}

/// When `data_dir` holds what a killed restore left ([`RESTORE_MARKER`] and no
/// `global/pg_control`), removes it as that restore's cleanup would have and says what it
/// removed. `None` when there is no interrupted restore.
pub fn clear_interrupted(data_dir: &Path) -> Result<Option<String>, BackupError> {
    let data_dir = absolute(data_dir)?;
    let path = data_dir.join(RESTORE_MARKER);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BackupError::Io { action: "open", path, source }),
    };
    if data_dir.join(CONTROL_FILE).exists() {
        // It completed; only the marker's removal was lost. Not ours to remove.
        return Ok(None);
    }
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => another_restore(&data_dir),
        errno => BackupError::Io { action: "lock", path: path.clone(), source: errno.into() },
    })?;
    let text = std::fs::read(&path).map_err(BackupError::io("read", &path))?;
    let content: MarkerContent = serde_json::from_slice(&text).map_err(|error| {
        BackupError::from(Refusal::UnreadableRestoreMarker { data_dir: data_dir.clone(), reason: error.to_string() })
    })?;
    let interrupted = Destination {
        data_dir: data_dir.clone(),
        tablespaces: BTreeMap::new(),
        owner: None,
        created: content.created,
        emptied: content.emptied,
        journal: Journal::default(),
        sync_method: None,
    };
    interrupted.clean_up();
    drop(lock);
    let touched = interrupted.created.iter().chain(&interrupted.emptied);
    for dir in touched.flat_map(|dir| [dir.clone(), dir.parent().unwrap_or(Path::new("/")).to_path_buf()]) {
        if dir.is_dir() {
            interrupted.sync_directory(&dir)?;
        }
    }
    Ok(Some(format!(
        "removed an interrupted restore of backup {} (started {}) from {}",
        content.backup,
        content.started_at.to_rfc3339(),
        data_dir.display()
    )))
}

/// The owner restored files get: `None` unless running as root.
fn owner_for(data_dir: &Path) -> Result<Option<(Uid, Gid)>, BackupError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let reference = if data_dir.exists() { data_dir } else { data_dir.parent().unwrap_or(Path::new("/")) };
    let metadata = std::fs::metadata(reference).map_err(BackupError::io("read", reference))?;
    Ok(Some((Uid::from_raw(metadata.uid()), Gid::from_raw(metadata.gid()))))
}

fn absolute(path: &Path) -> Result<PathBuf, BackupError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let current = std::env::current_dir().map_err(BackupError::io("read the current directory", "."))?;
    Ok(current.join(path))
}

/// Parses `--tablespace-mapping OLDDIR=NEWDIR` values.
pub fn parse_tablespace_mapping(values: &[String]) -> Result<BTreeMap<String, PathBuf>, BackupError> {
    values
        .iter()
        .map(|value| match value.split_once('=') {
            Some((old, new)) if !old.is_empty() && new.starts_with('/') => Ok((old.to_string(), PathBuf::from(new))),
            _ => Err(BackupError::from(Refusal::InvalidOption {
                option: "--tablespace-mapping",
                value: value.clone(),
                expected: "OLDDIR=NEWDIR with an absolute NEWDIR".into(),
            })),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pgec2_core::manifest::Tablespace;

    use super::*;

    #[test]
    fn a_non_empty_directory_is_refused_and_an_absent_one_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = BackupManifest::new("b");
        std::fs::write(dir.path().join("file"), b"x").expect("write");
        let refused = Destination::check(dir.path(), &manifest, &BTreeMap::new());
        assert!(
            matches!(&refused, Err(BackupError::Refused(Refusal::DirectoryNotEmpty { path, .. })) if path == dir.path()),
            "{refused:?}"
        );
        assert!(refused.expect_err("refused").to_string().contains("is not empty"));
        assert!(Destination::check(&dir.path().join("new"), &manifest, &BTreeMap::new()).is_ok());
        let orphan = Destination::check(&dir.path().join("no/such/dir"), &manifest, &BTreeMap::new());
        assert!(
            matches!(&orphan, Err(BackupError::Refused(Refusal::MissingParent { parent, .. })) if parent == &dir.path().join("no/such")),
            "{orphan:?}"
        );
        assert!(orphan.expect_err("refused").to_string().contains("does not exist"));
    }

    #[test]
    fn tablespace_files_resolve_to_the_mapped_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut manifest = BackupManifest::new("b");
        manifest.tablespaces.push(Tablespace { oid: 16400, location: "/srv/old".into() });
        let mapping =
            parse_tablespace_mapping(&[format!("/srv/old={}", dir.path().join("ts").display())]).expect("mapping");
        let destination = Destination::check(&dir.path().join("data"), &manifest, &mapping).expect("check");
        assert_eq!(destination.resolve(&manifest, "pg_tblspc/16400/PG_15/5/1"), dir.path().join("ts/PG_15/5/1"));
        assert_eq!(destination.resolve(&manifest, "base/5/1"), dir.path().join("data/base/5/1"));
        assert_eq!(destination.resolve(&manifest, CONTROL_FILE), dir.path().join("data").join(CONTROL_FILE_PENDING));
        assert!(parse_tablespace_mapping(&["relative=dir".into()]).is_err());
    }
}
