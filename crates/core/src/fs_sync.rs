//! Making many newly written files durable at once, where the file system allows it.
//!
//! An fsync per file costs a journal commit per file. Where one `syncfs(2)` on the file system is
//! a full barrier (it writes and flushes every dirty file, directory and link, and reports any
//! writeback error the file system recorded since the handle it is called on was opened), one
//! call replaces all of them: [`SyncMethod::FileSystem`]. Elsewhere each file and directory is
//! fsynced: [`SyncMethod::EachFile`]. Both backup-fetch (the restored files) and the local
//! store's deferred writes (a backup's parts, [`crate::storage::Storage::put_deferred`]) choose
//! with [`SyncMethod::choose`].

use std::fs::File;
use std::io;
use std::path::PathBuf;

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC, fstatfs};

/// How a set of new files is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMethod {
    /// One `syncfs` per file system at the end, on a handle opened before the first file.
    FileSystem,
    /// One fsync per file, one per directory holding new entries.
    EachFile,
}

impl SyncMethod {
    /// [`SyncMethod::FileSystem`] when every root (an existing directory) is on ext4, xfs, btrfs
    /// or tmpfs, whose `syncfs` is known to write and flush everything, on a kernel that reports
    /// writeback errors through it (Linux 5.8 and later); otherwise [`SyncMethod::EachFile`].
    pub fn choose(roots: &[PathBuf]) -> Self {
        if !kernel_reports_syncfs_errors() {
            return SyncMethod::EachFile;
        }
        let trusted = |root: &PathBuf| {
            let Ok(handle) = File::open(root) else { return false };
            let Ok(stats) = fstatfs(&handle) else { return false };
            [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, TMPFS_MAGIC].contains(&stats.filesystem_type())
        };
        if roots.iter().all(trusted) { SyncMethod::FileSystem } else { SyncMethod::EachFile }
    }
}

/// `syncfs(2)` returns the file system's writeback errors since Linux 5.8.
fn kernel_reports_syncfs_errors() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else { return false };
    let mut numbers = release.trim().split(['.', '-']).map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (5, 8)
}

/// Writes and flushes everything dirty on the file system holding `handle`; fails with any
/// writeback error recorded on it since `handle` was opened.
pub fn sync_file_system(handle: &File) -> io::Result<()> {
    nix::unistd::syncfs(handle).map_err(io::Error::from)
}

/// Starts writing `file`'s dirty pages back without waiting (`POSIX_FADV_DONTNEED`), so the disk
/// works while more is written and a later sync has little left. Advice only: a file system that
/// ignores it writes the pages back at the sync instead.
pub fn start_writeback(file: &File) {
    let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_journaling_file_system_is_synced_as_a_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kind = fstatfs(File::open(dir.path()).expect("open")).expect("statfs").filesystem_type();
        let expected = if kernel_reports_syncfs_errors()
            && [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, TMPFS_MAGIC].contains(&kind)
        {
            SyncMethod::FileSystem
        } else {
            SyncMethod::EachFile
        };
        assert_eq!(SyncMethod::choose(&[dir.path().to_path_buf()]), expected);
        assert_eq!(SyncMethod::choose(&[dir.path().join("missing")]), SyncMethod::EachFile, "unknown: each file");
    }
}
