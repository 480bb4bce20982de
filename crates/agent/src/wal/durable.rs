//! Writing files so that readers see either nothing or the whole file, and it survives a crash:
//! temp file in the same directory, fsync, rename, fsync the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `content` to `dest` atomically and durably. On failure nothing is left at `dest`
/// (an existing `dest` is kept) and the temp file is removed.
pub fn write_atomically(dest: &Path, content: &[u8]) -> io::Result<()> {
    write_atomically_with(dest, |file| file.write_all(content))
}

/// Like [`write_atomically`], with the content written into the temp file by `write` (which
/// may stream it, and fail, e.g. when the content does not verify). Only once `write` succeeded
/// and the temp file is fsynced is it renamed to `dest`.
pub fn write_atomically_with(dest: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let temp = temp_path(dest)?;
    let written = write_synced(&temp, write).and_then(|()| fs::rename(&temp, dest));
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    sync_parent(dest)
}

/// Moves `source` to `dest` (same filesystem) and makes the move durable.
pub fn rename_durably(source: &Path, dest: &Path) -> io::Result<()> {
    fs::rename(source, dest)?;
    sync_parent(dest)?;
    if source.parent() != dest.parent() {
        sync_parent(source)?;
    }
    Ok(())
}

/// A hidden temp file next to `dest`, unique to this process.
pub fn temp_path(dest: &Path) -> io::Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} has no file name", dest.display())))?;
    let temp_name = format!(".{}.pgec2-{}.tmp", name.to_string_lossy(), std::process::id());
    Ok(dest.with_file_name(temp_name))
}

/// Removes the temp files ([`temp_path`]) in `dir` that processes no longer running left (an
/// agent killed mid-write); returns how many. Best effort: a file that cannot be removed stays.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = temp_file_pid(&name.to_string_lossy()) else { continue };
        let probe = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
        let running = probe.is_ok() || probe == Err(nix::errno::Errno::EPERM);
        if !running && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The process id in a temp file name `.<name>.pgec2-<pid>.tmp`.
fn temp_file_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, pid) = rest.rsplit_once(".pgec2-")?;
    pid.parse().ok().filter(|pid| *pid > 0)
}

fn write_synced(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let mut file = File::create(path)?;
    write(&mut file)?;
    file.sync_all()
}

/// Fsyncs the directory holding `path`, so a rename or create in it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("RECOVERYXLOG");
        fs::write(&dest, b"old").expect("seed");
        write_atomically(&dest, b"new content").expect("write");
        assert_eq!(fs::read(&dest).expect("read"), b"new content");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("RECOVERYXLOG")]);
    }

    #[test]
    fn a_streamed_write_that_fails_leaves_neither_file_nor_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("RECOVERYXLOG");
        let failed = write_atomically_with(&dest, |file| {
            file.write_all(b"half of it")?;
            Err(io::Error::other("the content did not verify"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    fn temp_files_of_processes_that_are_gone_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = temp_path(&dir.path().join("RECOVERYXLOG")).expect("temp path");
        fs::write(&own, b"being written").expect("own temp");
        // No process has pid 2^22 + 1 (above Linux's pid_max ceiling).
        let gone = dir.path().join(".000000010000000000000003.pgec2-4194305.tmp");
        fs::write(&gone, b"left by a killed agent").expect("stale temp");
        fs::write(dir.path().join("000000010000000000000003"), b"segment").expect("segment");
        assert_eq!(remove_stale_temp_files(dir.path()), 1);
        assert!(own.exists() && !gone.exists());
        assert!(dir.path().join("000000010000000000000003").exists());
    }

    #[test]
    fn failed_atomic_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("missing-dir").join("file");
        assert!(write_atomically(&dest, b"content").is_err());
        assert!(!dest.exists());
    }
}
