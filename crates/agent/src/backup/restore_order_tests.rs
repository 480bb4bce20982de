//! The order that makes a restore durable, observed through the destination's [`Journal`], and
//! the cleanup of a restore that was killed half-way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::manifest::{BackupManifest, DirectoryEntry, FileEntry};
use pgec2_core::storage::memory::MemoryStorage;

use super::BackupError;
use super::destination::{CONTROL_FILE_PENDING, Destination, Durability, Journal, RESTORE_MARKER, clear_interrupted};
use super::extract::extract;
use super::walk::CONTROL_FILE;

fn manifest() -> BackupManifest {
    let mut manifest = BackupManifest::new("base_1");
    for path in ["base", "base/1", "global"] {
        manifest.directories.push(DirectoryEntry { path: path.into(), mode: 0o700 });
    }
    for path in ["PG_VERSION", "base/1/1259", "global/1262", CONTROL_FILE] {
        manifest.files.push(FileEntry {
            path: path.into(),
            size: 0,
            mode: 0o600,
            mtime: 0,
            checksum: blake3::hash(b"").to_hex().to_string(),
            chunks: Vec::new(),
        });
    }
    manifest
}

fn archive() -> Archive {
    Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::root())
}

fn position(events: &[Durability], wanted: &Durability) -> usize {
    events.iter().position(|event| event == wanted).unwrap_or_else(|| panic!("{wanted:?} not in {events:#?}"))
}

#[tokio::test]
async fn every_file_and_directory_is_durable_before_pg_control_is_moved_into_place() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let manifest = Arc::new(manifest());
    let mut destination = Destination::check(&data, &manifest, &BTreeMap::new()).expect("check");
    destination.journal = Journal::recording();
    let destination = Arc::new(destination);
    destination.create_roots().expect("roots");
    let marker = destination.mark_in_progress("base_1").expect("marker");
    extract(&archive(), manifest.clone(), destination.clone(), 2).await.expect("extract");
    // What fetch writes after the files: backup_label, the settings, the signal file.
    for name in ["backup_label", "postgresql.auto.conf", "recovery.signal"] {
        destination.write_new(&data.join(name), b"x").expect("write");
    }
    destination.complete(marker).expect("complete");

    let events = destination.journal.events();
    let moved =
        position(&events, &Durability::Rename { from: data.join(CONTROL_FILE_PENDING), to: data.join(CONTROL_FILE) });
    let files: Vec<PathBuf> = ["PG_VERSION", "base/1/1259", "global/1262", CONTROL_FILE_PENDING]
        .iter()
        .chain(&["backup_label", "postgresql.auto.conf", "recovery.signal", RESTORE_MARKER])
        .map(|name| data.join(name))
        .collect();
    for file in &files {
        assert!(position(&events, &Durability::SyncFile(file.clone())) < moved, "{} synced after", file.display());
    }
    let last_file = files.iter().map(|file| position(&events, &Durability::SyncFile(file.clone()))).max();
    let directories = [data.join("base/1"), data.join("base"), data.join("global"), root.path().to_path_buf()];
    for directory in &directories {
        let synced = position(&events, &Durability::SyncDirectory(directory.clone()));
        assert!(synced < moved, "{} synced after pg_control moved", directory.display());
    }
    // The data directory's entries (backup_label, the signal file) are durable before the move.
    let data_synced = events[..moved].iter().rposition(|event| *event == Durability::SyncDirectory(data.clone()));
    assert!(data_synced > last_file, "the data directory was not synced after its last file: {events:#?}");
    // And the move itself is made durable.
    assert!(events[moved..].contains(&Durability::SyncDirectory(data.join("global"))));
    assert!(data.join(CONTROL_FILE).exists() && !data.join(CONTROL_FILE_PENDING).exists());
    assert!(!data.join(RESTORE_MARKER).exists(), "the marker is removed once the restore is complete");
}

fn is_refused<T>(result: Result<T, BackupError>, expected: &str) -> bool {
    matches!(&result, Err(BackupError::Refused(message)) if message.contains(expected))
}

#[test]
fn a_killed_restore_is_cleared_by_the_next_one_and_a_running_one_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let manifest = manifest();
    let destination = Destination::check(&data, &manifest, &BTreeMap::new()).expect("check");
    destination.create_roots().expect("roots");
    let marker = destination.mark_in_progress("base_1").expect("marker");
    std::fs::create_dir(data.join("base")).expect("mkdir");
    std::fs::write(data.join("base/half-written"), b"partial").expect("write");

    // Still running: neither cleared nor restored into by a second run.
    assert!(is_refused(clear_interrupted(&data), "another backup-fetch is restoring"));
    assert!(is_refused(destination.mark_in_progress("base_2"), "another backup-fetch is restoring"));

    // Killed: its lock is gone, its files stay.
    drop(marker);
    assert!(Destination::check(&data, &manifest, &BTreeMap::new()).is_err(), "the leftovers are not empty");
    let removed = clear_interrupted(&data).expect("cleared").expect("an interrupted restore");
    assert!(removed.contains("base_1"), "{removed}");
    assert!(Destination::check(&data, &manifest, &BTreeMap::new()).is_ok(), "a new restore can start");
    assert_eq!(clear_interrupted(&data).expect("nothing left"), None);
}

#[test]
fn a_complete_restore_and_a_foreign_directory_are_left_alone() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir_all(data.join("global")).expect("mkdir");
    std::fs::write(data.join("important.csv"), b"1,2,3").expect("write");
    assert_eq!(clear_interrupted(&data).expect("no marker"), None);
    // A marker whose restore completed (pg_control in place) only lost its removal.
    std::fs::write(data.join(RESTORE_MARKER), b"{}").expect("marker");
    std::fs::write(data.join(CONTROL_FILE), b"control").expect("control");
    assert_eq!(clear_interrupted(&data).expect("complete"), None);
    assert!(Path::new(&data.join("important.csv")).exists());
}
