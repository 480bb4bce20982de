//! Where a restore writes: the checks made before anything is written (an empty or absent data
//! directory, empty or absent tablespace directories), who will own the files, how manifest
//! paths map to disk, and the cleanup of a restore that failed half-way.
//!
//! Ownership: when the agent runs as root, every restored file and directory is given to the
//! owner of the destination directory (or of its parent when it does not exist yet), which is
//! the user PostgreSQL will run as. Otherwise files belong to the user running the agent.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use pgec2_core::manifest::BackupManifest;

use super::BackupError;
use super::walk::CONTROL_FILE;

/// The name `global/pg_control` is written under until everything else is durable.
pub const CONTROL_FILE_PENDING: &str = "global/pg_control.pgec2-restoring";

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
        };
        destination.check_empty(&data_dir, "the restore directory", "choose an empty or new directory")?;
        for tablespace in &manifest.tablespaces {
            let location =
                mapping.get(&tablespace.location).cloned().unwrap_or_else(|| PathBuf::from(&tablespace.location));
            if !location.is_absolute() {
                return Err(BackupError::Refused(format!(
                    "tablespace directory {} must be an absolute path",
                    location.display()
                )));
            }
            let hint = format!("map it elsewhere with --tablespace-mapping {}=NEWDIR", tablespace.location);
            destination.check_empty(&location, &format!("tablespace {} directory", tablespace.oid), &hint)?;
            destination.tablespaces.insert(tablespace.oid, location);
        }
        destination.owner = owner_for(&data_dir)?;
        Ok(destination)
    }

    /// Refuses a non-empty directory; remembers whether it exists.
    fn check_empty(&mut self, dir: &Path, what: &str, hint: &str) -> Result<(), BackupError> {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(BackupError::Refused(format!("{what} {} is not empty: {hint}", dir.display())));
                }
                self.emptied.push(dir.to_path_buf());
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let parent = dir.parent().unwrap_or(Path::new("/"));
                if !parent.is_dir() {
                    return Err(BackupError::Refused(format!(
                        "the parent of {what} {} does not exist: create {} first",
                        dir.display(),
                        parent.display()
                    )));
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

    /// Directories whose entries must be made durable: the roots and their parents.
    pub fn roots_and_parents(&self) -> Vec<PathBuf> {
        let roots = std::iter::once(&self.data_dir).chain(self.tablespaces.values());
        roots.flat_map(|root| [root.clone(), root.parent().unwrap_or(Path::new("/")).to_path_buf()]).collect()
    }
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
            _ => Err(BackupError::Refused(format!(
                "invalid --tablespace-mapping {value:?}: expected OLDDIR=NEWDIR with an absolute NEWDIR"
            ))),
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
        assert!(matches!(refused, Err(BackupError::Refused(message)) if message.contains("is not empty")));
        assert!(Destination::check(&dir.path().join("new"), &manifest, &BTreeMap::new()).is_ok());
        let orphan = Destination::check(&dir.path().join("no/such/dir"), &manifest, &BTreeMap::new());
        assert!(matches!(orphan, Err(BackupError::Refused(message)) if message.contains("does not exist")));
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
