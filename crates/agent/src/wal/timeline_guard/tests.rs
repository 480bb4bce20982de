use std::sync::Arc;

use pgec2_core::layout::ArchiveLayout;
use pgec2_core::storage::memory::MemoryStorage;

use super::*;

const TIMELINE_2: &str = "1\t0/5000000\tno recovery target specified\n";
const OTHER_TIMELINE_2: &str = "1\t0/6000000\tno recovery target specified\n";

fn archive() -> Archive {
    Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::under("default/db").expect("layout"))
}

async fn store(archive: &Archive, file: &str, content: &[u8]) {
    let (sealed, _) = envelope::seal(content, Compression::default()).expect("seal");
    let key = archive.layout.wal_file(file).expect("key");
    archive.storage.put(&key, Bytes::from(sealed), PutMode::CreateNew).await.expect("put");
}

/// A data directory whose pg_wal holds `00000002.history` with `history`.
fn data_dir(history: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("pg_wal")).expect("pg_wal");
    std::fs::write(dir.path().join("pg_wal/00000002.history"), history).expect("history");
    dir
}

fn segment(timeline: TimelineId) -> WalFileName {
    let name = format!("{timeline:08X}0000000000000007");
    WalFileName::Segment { timeline, name }
}

fn assert_conflict(result: Result<(), WalError>, expected: &str) {
    match result {
        Err(error @ WalError::TimelineConflict { .. }) => {
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("--archive-mode"), "{message}");
        }
        other => panic!("expected a timeline conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_segment_of_a_timeline_the_archive_knows_from_another_branch_is_refused() {
    let archive = archive();
    store(&archive, "00000002.history", OTHER_TIMELINE_2.as_bytes()).await;
    let dir = data_dir(TIMELINE_2);
    let refused = ensure(&archive, &segment(2), Path::new("unused"), Some(dir.path())).await;
    assert_conflict(refused, "the archive's 00000002.history differs from this cluster's");
    assert!(!dir.path().join("pg_wal").join(TIMELINE_CACHE_FILE).exists(), "a refusal is not cached");
}

#[tokio::test]
async fn a_segment_of_this_cluster_s_timeline_is_accepted_and_remembered() {
    let archive = archive();
    store(&archive, "00000002.history", TIMELINE_2.as_bytes()).await;
    let dir = data_dir(TIMELINE_2);
    ensure(&archive, &segment(2), Path::new("unused"), Some(dir.path())).await.expect("same history");
    assert!(dir.path().join("pg_wal").join(TIMELINE_CACHE_FILE).exists());
    // Timeline 1 and pushes without a data directory are not checked here.
    ensure(&archive, &segment(1), Path::new("unused"), Some(dir.path())).await.expect("timeline 1");
    ensure(&archive, &segment(2), Path::new("unused"), None).await.expect("no data directory");
}

#[tokio::test]
async fn a_timeline_s_history_goes_into_the_archive_before_its_first_segment() {
    let archive = archive();
    let dir = data_dir(TIMELINE_2);
    ensure(&archive, &segment(2), Path::new("unused"), Some(dir.path())).await.expect("pushed first");
    let stored = archived_history(&archive, "x", 2).await.expect("read");
    assert_eq!(stored.as_deref(), Some(TIMELINE_2.as_bytes()));
}

#[tokio::test]
async fn a_timeline_with_wal_but_no_history_in_the_archive_is_refused() {
    let archive = archive();
    store(&archive, "000000020000000000000006", b"another branch's segment").await;
    let dir = data_dir(TIMELINE_2);
    let refused = ensure(&archive, &segment(2), Path::new("unused"), Some(dir.path())).await;
    assert_conflict(refused, "holds WAL of timeline 2");
    assert_eq!(archived_history(&archive, "x", 2).await.expect("read"), None, "nothing was added");
}

#[tokio::test]
async fn a_history_whose_ancestor_is_another_branch_is_refused() {
    let archive = archive();
    store(&archive, "00000002.history", OTHER_TIMELINE_2.as_bytes()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("00000003.history");
    std::fs::write(&path, format!("{TIMELINE_2}2\t0/7000000\tno recovery target specified\n")).expect("write");
    let refused = ensure(&archive, &WalFileName::History { timeline: 3 }, &path, None).await;
    assert_conflict(refused, "ancestor timeline 2 is another branch");

    std::fs::write(&path, format!("{OTHER_TIMELINE_2}2\t0/7000000\tno recovery target specified\n")).expect("write");
    ensure(&archive, &WalFileName::History { timeline: 3 }, &path, None).await.expect("same ancestry");
}
