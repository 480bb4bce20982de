//! Files and directories of `host apply`: compared before writing, written atomically (temp
//! file, fsync, rename, fsync of the directory), with their mode and owner converged too.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, chown};

use super::command::{OsUser, running_as_root};

/// A file-system failure, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {}: {source}", path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError + use<> {
    let path = path.to_path_buf();
    move |source| FileError { action, path, source }
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError { action: "read", path: path.to_path_buf(), source }),
    }
}

/// Makes `path` hold exactly `contents` with `mode`, owned by `owner` when we are root.
/// Returns true when anything changed.
pub fn write_file(path: &Path, contents: &[u8], mode: u32, owner: Option<&OsUser>) -> Result<bool, FileError> {
    if read_optional(path)?.as_deref() == Some(contents) {
        return converge_attributes(path, mode, owner);
    }
    let directory = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = directory.join(format!(".{name}.pgec2-tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(error("create", &temporary))?;
    file.write_all(contents).map_err(error("write", &temporary))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode)).map_err(error("chmod", &temporary))?;
    give(&temporary, owner)?;
    file.sync_all().map_err(error("fsync", &temporary))?;
    fs::rename(&temporary, path).map_err(error("rename into place", path))?;
    sync_directory(directory)?;
    Ok(true)
}

/// Puts back what [`read_optional`] returned earlier: the old contents, or no file.
pub fn restore_file(path: &Path, previous: Option<&[u8]>, mode: u32, owner: Option<&OsUser>) -> Result<(), FileError> {
    match previous {
        Some(contents) => write_file(path, contents, mode, owner).map(|_| ()),
        None => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FileError { action: "remove", path: path.to_path_buf(), source }),
        },
    }
}

/// Creates `path` (and missing parents) with `mode`; each directory created, and `path`
/// itself, is owned by `owner` when we are root. Returns true when anything changed.
pub fn ensure_directory(path: &Path, mode: u32, owner: Option<&OsUser>) -> Result<bool, FileError> {
    if path.is_dir() {
        return converge_attributes(path, mode, owner);
    }
    let mut missing = Vec::new();
    let mut current = Some(path);
    while let Some(directory) = current.filter(|directory| !directory.exists()) {
        missing.push(directory.to_path_buf());
        current = directory.parent();
    }
    for directory in missing.iter().rev() {
        fs::create_dir(directory).map_err(error("create directory", directory))?;
        let this_mode = if directory == path { mode } else { 0o755 };
        fs::set_permissions(directory, fs::Permissions::from_mode(this_mode)).map_err(error("chmod", directory))?;
        give(directory, owner)?;
        if let Some(parent) = directory.parent() {
            sync_directory(parent)?;
        }
    }
    Ok(true)
}

/// Sets mode and owner of an existing path when they differ; true when changed.
fn converge_attributes(path: &Path, mode: u32, owner: Option<&OsUser>) -> Result<bool, FileError> {
    let metadata = fs::metadata(path).map_err(error("stat", path))?;
    let mut changed = false;
    if metadata.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(error("chmod", path))?;
        changed = true;
    }
    if let Some(owner) = owner.filter(|_| running_as_root())
        && (metadata.uid() != owner.uid || metadata.gid() != owner.gid)
    {
        give(path, Some(owner))?;
        changed = true;
    }
    Ok(changed)
}

/// Gives `path` to `owner` when we are root (otherwise it is ours already).
pub fn give(path: &Path, owner: Option<&OsUser>) -> Result<(), FileError> {
    if let Some(owner) = owner.filter(|_| running_as_root()) {
        chown(path, Some(Uid::from_raw(owner.uid)), Some(Gid::from_raw(owner.gid))).map_err(|errno| FileError {
            action: "chown",
            path: path.to_path_buf(),
            source: errno.into(),
        })?;
    }
    Ok(())
}

/// `text` with a blank line, `# comment` and `line` appended (for line-based files such as
/// /etc/fstab and postgresql.conf).
pub fn appended(text: &str, comment: &str, line: &str) -> String {
    let mut updated = text.to_string();
    if !updated.is_empty() && !updated.ends_with('\n') {
        updated.push('\n');
    }
    updated.push_str(&format!("\n# {comment}\n{line}\n"));
    updated
}

/// Makes a rename or creation in `directory` durable.
pub fn sync_directory(directory: &Path) -> Result<(), FileError> {
    File::open(directory).and_then(|handle| handle.sync_all()).map_err(error("fsync directory", directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_the_same_contents_twice_changes_nothing_the_second_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.conf");
        assert!(write_file(&path, b"x = 1\n", 0o600, None).expect("first write"));
        assert!(!write_file(&path, b"x = 1\n", 0o600, None).expect("second write"));
        assert!(write_file(&path, b"x = 2\n", 0o600, None).expect("changed write"));
        assert_eq!(fs::read(&path).expect("read"), b"x = 2\n");
        assert!(!dir.path().join(".a.conf.pgec2-tmp").exists(), "no temporary file is left behind");
    }

    #[test]
    fn a_wrong_mode_is_converged_without_rewriting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        write_file(&path, b"secret", 0o644, None).expect("write");
        assert!(write_file(&path, b"secret", 0o600, None).expect("rewrite"));
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn restoring_puts_back_the_old_contents_or_removes_a_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_file(&path, b"new", 0o600, None).expect("write");
        restore_file(&path, Some(b"old"), 0o600, None).expect("restore");
        assert_eq!(fs::read(&path).expect("read"), b"old");
        restore_file(&path, None, 0o600, None).expect("remove");
        assert!(!path.exists());
    }

    #[test]
    fn directories_are_created_with_their_parents_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/c");
        assert!(ensure_directory(&path, 0o700, None).expect("create"));
        assert!(!ensure_directory(&path, 0o700, None).expect("again"));
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(dir.path().join("a")).expect("stat").permissions().mode() & 0o777, 0o755);
    }
}
