//! A synthetic archive for catalog and retention tests: committed backups with a manifest,
//! uncommitted ones, WAL segments and leases, written through the real storage trait, and file
//! ages set back on the file store.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod scenarios;

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use pgec2_core::catalog::{self, BackupInfo, fixtures};
use pgec2_core::layout::Archive;
use pgec2_core::leases::{self, Lease, LeaseKind};
use pgec2_core::storage::PutMode;
use pgec2_core::wal::{Lsn, SegmentSize};

pub const SEGMENT: u64 = fixtures::SEGMENT;

/// The commit record of a backup starting in segment `start` (on timeline 1).
pub fn backup_info(start: u64) -> BackupInfo {
    let start_time = fixtures::at(start as i64 * 100);
    let builder = BackupInfo::builder().times(start_time, start_time + chrono::Duration::seconds(50));
    let builder = builder.lsns(Lsn(start * SEGMENT + 0x28), Lsn(start * SEGMENT + 0x1000));
    builder.system_identifier(42).bytes(1, 1).build()
}

/// Writes a backup's part and manifest (uncommitted so far).
pub async fn write_uncommitted(archive: &Archive, info: &BackupInfo) {
    let layout = &archive.layout;
    let part = layout.backup_part(&info.name, 0).expect("key");
    archive.storage.put(&part, Bytes::from_static(b"part"), PutMode::CreateNew).await.expect("part");
    let manifest = layout.backup_manifest(&info.name).expect("key");
    archive.storage.put(&manifest, Bytes::from_static(b"manifest"), PutMode::CreateNew).await.expect("manifest");
}

/// Writes a backup's commit marker.
pub async fn commit(archive: &Archive, info: &BackupInfo) {
    let complete = archive.layout.backup_complete(&info.name).expect("key");
    catalog::put_json(archive, &complete, info, PutMode::CreateNew).await.expect("complete");
}

/// Writes committed backups starting in each of `starts`.
pub async fn write_committed(archive: &Archive, starts: &[u64]) -> Vec<BackupInfo> {
    let mut infos = Vec::new();
    for &start in starts {
        let info = backup_info(start);
        write_uncommitted(archive, &info).await;
        commit(archive, &info).await;
        infos.push(info);
    }
    infos
}

/// Writes WAL segments `segments` of timeline 1.
pub async fn write_wal(archive: &Archive, segments: std::ops::Range<u64>) {
    for segment in segments {
        let key = archive.layout.wal_file(&SegmentSize::default().segment_name(1, segment)).expect("key");
        archive.storage.put(&key, Bytes::from_static(b"wal"), PutMode::CreateNew).await.expect("wal");
    }
}

/// Segment numbers of timeline 1 in the archive.
pub async fn wal_segments(archive: &Archive) -> Vec<u64> {
    let wal = catalog::list_wal_archive(archive, SegmentSize::default()).await.expect("wal");
    wal.segments.get(&1).map(|segments| segments.keys().copied().collect()).unwrap_or_default()
}

/// Names of the committed backups.
pub async fn committed_names(archive: &Archive) -> Vec<String> {
    catalog::scan_backups(archive).await.expect("scan").committed.into_iter().map(|backup| backup.name).collect()
}

/// A restore's lease on `backup`, needing WAL from segment `wal_from`, stored in the archive.
pub async fn take_lease(archive: &Archive, backup: &BackupInfo, wal_from: u64, now: DateTime<Utc>) -> Lease {
    let name = SegmentSize::default().segment_name(1, wal_from);
    let lease = Lease::new(LeaseKind::Restore, "restorer", "/srv/copy", &backup.name, name, SEGMENT, now);
    leases::write(archive, &lease).await.expect("write lease");
    lease
}

/// Sets the modification time of every file under `dir` back by `age`.
pub fn age_files(dir: &Path, age: Duration) {
    let then = SystemTime::now() - age;
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            age_files(&path, age);
        } else {
            std::fs::File::options().write(true).open(&path).expect("open").set_modified(then).expect("set mtime");
        }
    }
}
