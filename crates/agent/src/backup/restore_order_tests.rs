//! The order that makes a restore durable, observed through the destination's [`Journal`]: every
//! file, directory and link the restore writes is covered by a sync (of itself, or of its whole
//! file system) before `global/pg_control` moves into place, with either sync method; a failed
//! sync fails the restore and names what was not made durable; and the cleanup of a restore that
//! was killed half-way.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use pgec2_core::compression::Compression;
use pgec2_core::envelope;
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::manifest::{BackupManifest, Chunk, DirectoryEntry, FileEntry, PartInfo, SymlinkEntry};
use pgec2_core::storage::PutMode;
use pgec2_core::storage::memory::MemoryStorage;

use super::destination::{CONTROL_FILE_PENDING, Destination, Durability, Journal, RESTORE_MARKER, clear_interrupted};
use super::extract::extract;
use super::restore_sync::SyncMethod;
use super::walk::CONTROL_FILE;
use super::{BackupError, Refusal};

/// Bytes of content per part in these tests: small, so files span parts.
const PART: usize = 1000;

/// A backup of a few directories, files (empty, small, spanning parts) and a symlink, stored
/// in memory; returns the archive and its manifest.
async fn stored_backup() -> (Archive, BackupManifest) {
    let mut manifest = BackupManifest::new("base_1");
    for path in ["base", "base/1", "global", "pg_wal"] {
        manifest.directories.push(DirectoryEntry { path: path.into(), mode: 0o700 });
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("PG_VERSION", b"15\n".to_vec()),
        ("base/1/1259", (0..2500u32).map(|n| (n % 251) as u8).collect()),
        ("base/1/2608", Vec::new()),
        ("global/1262", vec![7u8; 1700]),
        (CONTROL_FILE, vec![1u8; 300]),
    ];
    let mut content = Vec::new();
    for (path, bytes) in &files {
        let mut chunks = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let part = content.len() / PART;
            let length = (PART - content.len() % PART).min(bytes.len() - offset);
            chunks.push(Chunk { part: part as u32, offset: (content.len() % PART) as u64, length: length as u64 });
            content.extend_from_slice(&bytes[offset..offset + length]);
            offset += length;
        }
        let checksum = blake3::hash(bytes).to_hex().to_string();
        manifest.files.push(FileEntry {
            path: path.to_string(),
            size: bytes.len() as u64,
            mode: 0o600,
            mtime: 0,
            checksum,
            chunks,
            blocks: None,
        });
    }
    manifest.symlinks.push(SymlinkEntry { path: "pg_wal/link".into(), target: "/nowhere".into() });
    let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::root());
    for (index, piece) in content.chunks(PART).enumerate() {
        let (stored, header) = envelope::seal(piece, Compression::default()).expect("seal");
        let key = archive.layout.backup_part("base_1", index as u32).expect("key");
        manifest.parts.push(PartInfo {
            index: index as u32,
            content_bytes: piece.len() as u64,
            stored_bytes: stored.len() as u64,
            checksum: header.content_hash_hex(),
        });
        archive.storage.put(&key, Bytes::from(stored), PutMode::CreateNew).await.expect("put");
    }
    (archive, manifest)
}

/// A checked destination `root/data` with `journal` and `method`, its roots created.
fn destination(root: &Path, manifest: &BackupManifest, journal: Journal, method: SyncMethod) -> Arc<Destination> {
    let mut destination = Destination::check(&root.join("data"), manifest, &BTreeMap::new()).expect("check");
    destination.journal = journal;
    destination.sync_method = Some(method);
    destination.create_roots().expect("roots");
    Arc::new(destination)
}

/// Restores `base_1` as backup-fetch does, up to and including `complete`.
async fn restore(
    archive: &Archive,
    manifest: BackupManifest,
    destination: &Arc<Destination>,
) -> Result<(), BackupError> {
    let marker = destination.mark_in_progress("base_1")?;
    extract(archive, Arc::new(manifest), destination.clone(), 2).await?;
    // What fetch writes after the files: backup_label, the settings, the signal file.
    for name in ["backup_label", "postgresql.auto.conf", "recovery.signal"] {
        destination.write_new(&destination.data_dir.join(name), b"x")?;
    }
    destination.complete(marker)
}

fn position(events: &[Durability], wanted: &Durability) -> usize {
    events.iter().position(|event| event == wanted).unwrap_or_else(|| panic!("{wanted:?} not in {events:#?}"))
}

/// True when a sync after `events[from]` covers `path` on `device` itself (its content), or its
/// name in `parent`.
fn synced_after(events: &[Durability], from: usize, path: &Path, device: u64) -> (bool, bool) {
    let later = &events[from + 1..];
    let whole = later.iter().any(|event| matches!(event, Durability::SyncFileSystem { device: d, .. } if *d == device));
    let itself =
        later.iter().any(|event| matches!(event, Durability::SyncFile(p) | Durability::SyncDirectory(p) if p == path));
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = later.iter().any(|event| *event == Durability::SyncDirectory(parent.clone()));
    (whole || itself, whole || name)
}

/// Every entry under `dir`, depth first.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(entries(&path));
        }
        found.push(path);
    }
    found
}

#[tokio::test]
async fn every_restored_file_directory_and_link_is_durable_before_pg_control_is_moved_into_place() {
    for method in [SyncMethod::FileSystem, SyncMethod::EachFile] {
        let root = tempfile::tempdir().expect("tempdir");
        let (archive, manifest) = stored_backup().await;
        let destination = destination(root.path(), &manifest, Journal::recording(), method);
        restore(&archive, manifest, &destination).await.expect("restore");
        let data = &destination.data_dir;
        let events = destination.journal.events();
        let moved = position(
            &events,
            &Durability::Rename { from: data.join(CONTROL_FILE_PENDING), to: data.join(CONTROL_FILE) },
        );
        let before = &events[..moved];

        // Every entry on disk (pg_control under its pending name) was written by the restore.
        for path in entries(data) {
            let metadata = std::fs::symlink_metadata(&path).expect("stat");
            let device = metadata.dev();
            let path = if path == data.join(CONTROL_FILE) { data.join(CONTROL_FILE_PENDING) } else { path };
            let written = before
                .iter()
                .rposition(|event| matches!(event, Durability::Written(p) | Durability::SyncFile(p) if *p == path));
            let Some(written) = written else { panic!("{method:?}: {} was never recorded", path.display()) };
            let (content, name) = synced_after(before, written, &path, device);
            // A symlink has no content apart from its entry (made durable with its directory).
            let content = content || before[written] == Durability::SyncFile(path.clone()) || metadata.is_symlink();
            assert!(content, "{method:?}: {} is not durable before pg_control moves: {before:#?}", path.display());
            assert!(name, "{method:?}: the entry of {} is not durable before pg_control moves", path.display());
        }
        // The data directory's own entry, and the move itself, are durable.
        let (_, root_entry) = synced_after(before, 0, data, u64::MAX);
        assert!(root_entry, "{method:?}: the data directory's entry in its parent is not durable");
        assert!(events[moved..].contains(&Durability::SyncDirectory(data.join("global"))));
        let whole_syncs = events.iter().filter(|event| matches!(event, Durability::SyncFileSystem { .. })).count();
        assert_eq!(whole_syncs, usize::from(method == SyncMethod::FileSystem), "{method:?}: one syncfs or none");
        assert!(data.join(CONTROL_FILE).exists() && !data.join(CONTROL_FILE_PENDING).exists());
        assert!(!data.join(RESTORE_MARKER).exists(), "the marker is removed once the restore is complete");
        assert_eq!(std::fs::read(data.join("global/1262")).expect("restored"), vec![7u8; 1700]);
    }
}

#[tokio::test]
async fn a_failed_sync_fails_the_restore_naming_what_was_not_made_durable() {
    type Fail = fn(&Durability) -> bool;
    let cases: [(SyncMethod, Fail, &str); 3] = [
        (SyncMethod::FileSystem, |event| matches!(event, Durability::SyncFileSystem { .. }), "the file system holding"),
        (
            SyncMethod::EachFile,
            |event| matches!(event, Durability::SyncFile(p) if p.ends_with("base/1/1259")),
            "base/1/1259",
        ),
        (
            SyncMethod::EachFile,
            |event| matches!(event, Durability::SyncDirectory(p) if p.ends_with("base/1")),
            "directory",
        ),
    ];
    for (method, fail, named) in cases {
        let root = tempfile::tempdir().expect("tempdir");
        let (archive, manifest) = stored_backup().await;
        let destination = destination(root.path(), &manifest, Journal::failing(fail), method);
        let error = restore(&archive, manifest, &destination).await.expect_err("the sync failed");
        let message = error.to_string();
        assert!(matches!(error, BackupError::Durability { .. }), "{method:?}: {error:?}");
        assert!(message.starts_with("failed to make the restore durable: syncing "), "{message}");
        assert!(message.contains(named) && message.contains("Input/output error"), "{method:?}: {message}");
        assert!(!destination.data_dir.join(CONTROL_FILE).exists(), "{method:?}: pg_control must not be in place");
    }
}

fn is_refused_as_running<T>(result: Result<T, BackupError>, data: &Path) -> bool {
    let refused =
        matches!(&result, Err(BackupError::Refused(Refusal::RestoreInProgress { data_dir })) if data_dir == data);
    refused && result.is_err_and(|error| error.to_string().starts_with("another backup-fetch is restoring into"))
}

fn empty_manifest() -> BackupManifest {
    let mut manifest = BackupManifest::new("base_1");
    manifest.directories.push(DirectoryEntry { path: "global".into(), mode: 0o700 });
    manifest
}

#[test]
fn a_killed_restore_is_cleared_by_the_next_one_and_a_running_one_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let manifest = empty_manifest();
    let destination = Destination::check(&data, &manifest, &BTreeMap::new()).expect("check");
    destination.create_roots().expect("roots");
    let marker = destination.mark_in_progress("base_1").expect("marker");
    std::fs::create_dir(data.join("base")).expect("mkdir");
    std::fs::write(data.join("base/half-written"), b"partial").expect("write");

    // Still running: neither cleared nor restored into by a second run.
    assert!(is_refused_as_running(clear_interrupted(&data), &data));
    assert!(is_refused_as_running(destination.mark_in_progress("base_2"), &data));

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
