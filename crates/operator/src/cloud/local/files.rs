//! Small filesystem helpers of the local cloud: atomic writes, directory listing, ownership.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use super::LocalError;

pub(super) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LocalError> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io_error(format!("create {}", temporary.display())))?;
    file.write_all(bytes).map_err(io_error(format!("write {}", temporary.display())))?;
    file.sync_all().map_err(io_error(format!("fsync {}", temporary.display())))?;
    std::fs::rename(&temporary, path).map_err(io_error(format!("rename {} into place", temporary.display())))
}

/// The subdirectories of `dir`, sorted; none when `dir` does not exist.
pub fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, LocalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LocalError::Io { what: format!("list {}", dir.display()), source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(format!("list {}", dir.display())))?;
        if entry.file_type().map_err(io_error(format!("stat {}", entry.path().display())))?.is_dir() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Creates `dir` and its parents with mode 0755 (so the PostgreSQL user can traverse them).
pub fn create_traversable(dir: &Path) -> Result<(), LocalError> {
    std::fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io_error(format!("chmod {}", dir.display())))
}

/// The OS user that runs PostgreSQL: `postgres` when we are root, ourselves otherwise.
#[derive(Clone, Debug)]
pub struct OsUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl OsUser {
    /// Resolves the PostgreSQL user for this process (`postgres` when running as root).
    pub fn detect() -> Result<Self, LocalError> {
        let user = if Uid::effective().is_root() {
            User::from_name("postgres")
                .map_err(|error| LocalError::Setup(format!("failed to look up the postgres user: {error}")))?
                .ok_or_else(|| {
                    LocalError::Setup(
                        "running as root but there is no `postgres` OS user; install PostgreSQL or run as another user"
                            .into(),
                    )
                })?
        } else {
            User::from_uid(Uid::effective())
                .map_err(|error| LocalError::Setup(format!("failed to look up the current user: {error}")))?
                .ok_or_else(|| LocalError::Setup("the current user has no passwd entry".into()))?
        };
        Ok(Self { name: user.name, uid: user.uid, gid: user.gid })
    }

    /// True when this user is not the one we run as (we must switch user to run PostgreSQL tools).
    pub fn is_other(&self) -> bool {
        self.uid != Uid::effective()
    }

    /// Gives `path` to this user (no-op when it is us).
    pub fn give(&self, path: &Path) -> Result<(), LocalError> {
        if self.is_other() {
            nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|error| {
                LocalError::Setup(format!("failed to chown {} to {}: {error}", path.display(), self.name))
            })?;
        }
        Ok(())
    }
}

/// Checks that `user` can enter every ancestor of `dir` (PostgreSQL runs the agent from there).
pub fn check_traversable(dir: &Path, user: &OsUser) -> Result<(), LocalError> {
    use std::os::unix::fs::MetadataExt;
    if !user.is_other() {
        return Ok(());
    }
    for ancestor in dir.ancestors() {
        let metadata = std::fs::metadata(ancestor).map_err(io_error(format!("stat {}", ancestor.display())))?;
        let mode = metadata.mode();
        let enterable = mode & 0o001 != 0
            || (metadata.uid() == user.uid.as_raw() && mode & 0o100 != 0)
            || (metadata.gid() == user.gid.as_raw() && mode & 0o010 != 0);
        if !enterable {
            return Err(LocalError::Setup(format!(
                "the OS user {} cannot enter {} (mode {:o}); choose a state directory it can reach, e.g. under /var/lib or /tmp",
                user.name,
                ancestor.display(),
                mode & 0o777
            )));
        }
    }
    Ok(())
}

/// Reads a file as text; empty when it does not exist.
pub fn read_text(path: &Path) -> Result<String, LocalError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(LocalError::Io { what: format!("read {}", path.display()), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.json");
        write_atomic(&path, b"first, longer").expect("write");
        write_atomic(&path, b"second").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
    }
}
