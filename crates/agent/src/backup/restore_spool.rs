//! The verified spool of a chain restore: the stored (compressed) bytes of the parts the
//! pre-verification checked ([`super::chain_verify`]), kept beside the restore directory so that
//! the restore reads them from local disk instead of downloading them a second time.
//!
//! The spool is a hidden directory next to the destination, never in it:
//! `<parent>/.<name>.pgec2-verified-<pid>`, mode 0700. It is removed when the restore ends,
//! whether it succeeded or failed; one left by a killed restore (its process gone) is removed by
//! the next backup-fetch into the same destination. It is only made when the destination's
//! file system has room for it besides the restored data; otherwise, or when it cannot be
//! created, the restore downloads the verified parts again (the pre-verification is the same).

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use pgec2_core::layout::Archive;
use pgec2_core::storage::Timeouts;
use pgec2_core::storage::local::LocalStorage;

use super::BackupError;

/// Free space the spool leaves on its file system besides the restored data.
const HEADROOM: u64 = 256 * 1024 * 1024;

/// A spool directory, removed when dropped.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    /// The spool read as an archive: the same keys, layout and keyring as the source archive.
    archive: Archive,
}

impl Spool {
    /// A new spool beside `dest` for `stored` bytes of parts, when the file system holding
    /// `dest`'s parent has room for them and for `restored` bytes of restored data (counted
    /// when `dest` is on that file system); `None` otherwise, saying why in the log.
    pub fn beside(dest: &Path, source: &Archive, stored: u64, restored: u64) -> Option<Spool> {
        let (parent, name) = (dest.parent()?, dest.file_name()?.to_string_lossy().into_owned());
        clear_stale(parent, &name);
        let free = match nix::sys::statvfs::statvfs(parent) {
            Ok(stat) => stat.blocks_available().saturating_mul(stat.fragment_size()),
            Err(error) => {
                tracing::info!(dir = %parent.display(), %error, "no restore spool: cannot read the free space");
                return None;
            }
        };
        let needed = stored + if same_file_system(parent, dest) { restored } else { 0 } + HEADROOM;
        if free < needed {
            tracing::info!(
                free,
                needed,
                "no restore spool: not enough free space; verified parts are downloaded again"
            );
            return None;
        }
        let root = parent.join(format!("{}{}", spool_prefix(&name), std::process::id()));
        let created = std::fs::DirBuilder::new().mode(0o700).create(&root);
        let storage = created
            .map_err(|error| error.to_string())
            .and_then(|()| LocalStorage::new(&root, Timeouts::default()).map_err(|error| error.to_string()));
        match storage {
            Ok(storage) => {
                let archive = Archive {
                    storage: std::sync::Arc::new(storage),
                    layout: source.layout.clone(),
                    keyring: source.keyring.clone(),
                };
                Some(Spool { root, archive })
            }
            Err(error) => {
                tracing::info!(dir = %root.display(), %error, "no restore spool: cannot create it");
                let _ = std::fs::remove_dir_all(&root);
                None
            }
        }
    }

    /// The directory holding the spooled objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The spool as an archive to read the verified parts from.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Stores the bytes of `key` (no fsync: a spool does not outlive its restore).
    pub fn keep(root: &Path, key: &str, stored: &[u8]) -> Result<(), BackupError> {
        let path = root.join(key);
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory).map_err(BackupError::io("create", directory))?;
        }
        std::fs::write(&path, stored).map_err(BackupError::io("write", &path))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), %error, "failed to remove the restore spool");
        }
    }
}

fn spool_prefix(name: &str) -> String {
    format!(".{name}.pgec2-verified-")
}

fn same_file_system(parent: &Path, dest: &Path) -> bool {
    match (std::fs::metadata(parent), std::fs::metadata(dest)) {
        (Ok(parent), Ok(dest)) => parent.dev() == dest.dev(),
        // An absent destination is created in its parent.
        _ => true,
    }
}

/// Removes the spools of restores into `<parent>/<name>` whose process is gone (killed).
fn clear_stale(parent: &Path, name: &str) {
    let prefix = spool_prefix(name);
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix).and_then(|pid| pid.parse::<u32>().ok()) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => eprintln!("note: removed the spool of an interrupted restore, {}", entry.path().display()),
            Err(error) => {
                tracing::warn!(dir = %entry.path().display(), %error, "failed to remove a stale restore spool")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pgec2_core::layout::ArchiveLayout;
    use pgec2_core::storage::memory::MemoryStorage;

    use super::*;

    fn source() -> Archive {
        Archive::new(Arc::new(MemoryStorage::default()), ArchiveLayout::root())
    }

    #[test]
    fn a_spool_lives_beside_the_destination_and_is_removed_with_a_killed_restores_spool() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dest = parent.path().join("data");
        // A spool left by a process that no longer runs (pid beyond pid_max).
        let stale = parent.path().join(".data.pgec2-verified-4294967");
        std::fs::create_dir(&stale).expect("stale spool");
        let spool = Spool::beside(&dest, &source(), 1024, 1024).expect("room for a small spool");
        assert!(!stale.exists(), "the killed restore's spool is removed");
        assert_eq!(spool.root().parent(), Some(parent.path()));
        assert!(!dest.exists(), "nothing is created in or as the destination");
        Spool::keep(spool.root(), "backups/b/parts/000000", b"stored").expect("keep");
        let root = spool.root().to_path_buf();
        drop(spool);
        assert!(!root.exists(), "the spool is removed when the restore ends");
        assert_eq!(std::fs::read_dir(parent.path()).expect("list").count(), 0);
    }

    #[test]
    fn no_spool_is_made_when_the_file_system_has_no_room_for_it() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dest = parent.path().join("data");
        assert!(Spool::beside(&dest, &source(), u64::MAX / 2, 0).is_none());
        assert_eq!(std::fs::read_dir(parent.path()).expect("list").count(), 0);
    }
}
