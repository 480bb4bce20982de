//! What only the directory backend does: files in place, temporary files never visible,
//! empty directories cleaned up, and paths that could escape or alias refused.

use std::path::Path;

use bytes::Bytes;
use pgec2_core::storage::local::{LocalStorage, TEMP_PREFIX};
use pgec2_core::storage::{ObjectKey, PutMode, Storage, StorageError, Timeouts};

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("valid key")
}

fn open(root: &Path) -> LocalStorage {
    LocalStorage::new(root, Timeouts::default()).expect("open local store")
}

/// Every file below `directory`, relative paths, sorted.
fn files_below(directory: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(directory).expect("below").display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn objects_are_plain_files_and_puts_leave_no_temporary_files() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = open(directory.path());
    storage
        .put(&key("wal/000000010000000000000001"), Bytes::from_static(b"one"), PutMode::CreateNew)
        .await
        .expect("put");
    storage.put(&key("backups/b1/permanent"), Bytes::from_static(b""), PutMode::Overwrite).await.expect("put");
    storage.put(&key("backups/b1/permanent"), Bytes::from_static(b"x"), PutMode::Overwrite).await.expect("overwrite");
    let refused =
        storage.put(&key("wal/000000010000000000000001"), Bytes::from_static(b"two"), PutMode::CreateNew).await;
    assert!(matches!(refused, Err(StorageError::AlreadyExists { .. })), "got {refused:?}");

    assert_eq!(files_below(directory.path()), ["backups/b1/permanent", "wal/000000010000000000000001"]);
    let stored = std::fs::read(directory.path().join("wal/000000010000000000000001")).expect("read file");
    assert_eq!(stored, b"one");
}

#[tokio::test]
async fn temporary_files_of_interrupted_puts_are_never_listed() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = open(directory.path());
    storage
        .put(&key("wal/000000010000000000000001"), Bytes::from_static(b"one"), PutMode::CreateNew)
        .await
        .expect("put");
    std::fs::write(directory.path().join(format!("wal/{TEMP_PREFIX}0123456789abcdef")), b"half").expect("write");
    let listed: Vec<String> =
        storage.list("").await.expect("list").into_iter().map(|meta| meta.key.to_string()).collect();
    assert_eq!(listed, ["wal/000000010000000000000001"]);
    let reserved = storage.get(&key(&format!("wal/{TEMP_PREFIX}0123456789abcdef"))).await;
    assert!(matches!(reserved, Err(StorageError::InvalidKey { .. })), "got {reserved:?}");
}

#[tokio::test]
async fn deleting_the_last_object_of_a_directory_removes_the_empty_directories_but_not_the_root() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let root = directory.path().join("archive");
    let storage = open(&root);
    storage.put(&key("backups/b1/parts/000001"), Bytes::from_static(b"part"), PutMode::CreateNew).await.expect("put");
    storage.put(&key("backups/b2/manifest.json"), Bytes::from_static(b"{}"), PutMode::CreateNew).await.expect("put");
    storage.delete(&key("backups/b1/parts/000001")).await.expect("delete");
    assert!(!root.join("backups/b1").exists(), "empty directories of b1 remain");
    assert!(root.join("backups/b2/manifest.json").is_file());
    storage.delete(&key("backups/b2/manifest.json")).await.expect("delete");
    assert!(root.is_dir(), "the store's root must stay");
    assert_eq!(std::fs::read_dir(&root).expect("read root").count(), 0);
}

#[tokio::test]
async fn a_key_that_names_a_directory_of_other_objects_cannot_be_written() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = open(directory.path());
    storage.put(&key("backups/b1/manifest.json"), Bytes::from_static(b"{}"), PutMode::CreateNew).await.expect("put");
    for mode in [PutMode::CreateNew, PutMode::Overwrite] {
        let error = storage.put(&key("backups/b1"), Bytes::from_static(b"x"), mode).await.expect_err("a directory");
        assert!(matches!(error, StorageError::Permanent { .. }), "{mode:?}: {error:?}");
    }
    assert_eq!(storage.list("backups/").await.expect("list").len(), 1);
}

#[tokio::test]
async fn a_list_prefix_cannot_leave_the_store() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = open(&directory.path().join("archive"));
    for prefix in ["../", "wal/../../", "/etc/", "a//b"] {
        let error = storage.list(prefix).await.expect_err(prefix);
        assert!(matches!(error, StorageError::InvalidKey { .. }), "{prefix}: {error:?}");
    }
}

#[test]
fn a_relative_or_escaping_root_is_refused() {
    for root in ["relative/dir", "/var/../etc"] {
        let error = LocalStorage::new(root, Timeouts::default()).expect_err(root);
        assert!(matches!(error, StorageError::InvalidUrl { .. }), "{root}: {error:?}");
    }
}

#[test]
fn keys_that_are_empty_absolute_or_escaping_are_refused() {
    for text in ["", "/wal/1", "wal/../1", "wal//1", "wal/1/", "./wal", "wal/\0"] {
        assert!(matches!(ObjectKey::new(text), Err(StorageError::InvalidKey { .. })), "{text:?} was accepted");
    }
}
