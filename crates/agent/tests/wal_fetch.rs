//! `wal-fetch` against the file backend: missing files, corrupted objects, prefetch.

mod wal_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use pgec2_agent::wal::prefetch::PREFETCH_DIR;
use pgec2_core::compression::Compression;
use pgec2_core::envelope;
use pgec2_core::layout::Archive;
use pgec2_core::storage::PutMode;
use wal_common::{Agent, runtime, segment_name as name, synthetic_segment, wait_for};

const HISTORY: &[u8] = b"1\t0/2000000\tno recovery target specified\n";

fn segment(number: u64) -> Vec<u8> {
    synthetic_segment(7_000_000_000_000_000_001, number)
}

/// Stores `content` as archived WAL file `file` (as wal-push would).
async fn archive_file(archive: &Archive, file: &str, content: &[u8]) {
    let (stored, _) = envelope::seal(content, Compression::default()).expect("seal");
    let key = archive.layout.wal_file(file).expect("key");
    archive.storage.put(&key, Bytes::from(stored), PutMode::CreateNew).await.expect("put");
}

/// A fake data directory `<scratch>/<name>` with an empty `pg_wal`, as recovery sees it.
fn recovering_data_dir(agent: &Agent, name: &str) -> PathBuf {
    agent.scratch.subdir(&format!("{name}/pg_wal")).expect("pg_wal").parent().expect("data dir").to_path_buf()
}

fn fetch(agent: &Agent, data_dir: &Path, file: &str) -> std::process::Output {
    agent.run(&["wal-fetch", file, "pg_wal/RECOVERYXLOG"], data_dir)
}

#[test]
fn wal_fetch_of_a_missing_file_exits_1_quietly_and_writes_nothing() {
    let agent = Agent::with_file_archive();
    let data_dir = recovering_data_dir(&agent, "standby");
    for file in ["00000002.history".to_string(), name(3)] {
        let output = fetch(&agent, &data_dir, &file);
        assert_eq!(output.status.code(), Some(1), "{file}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(output.stdout.is_empty() && output.stderr.is_empty(), "quiet for {file}");
        assert!(!data_dir.join("pg_wal/RECOVERYXLOG").exists());
    }
}

#[test]
fn wal_fetch_restores_an_archived_file_byte_for_byte() {
    let agent = Agent::with_file_archive();
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    rt.block_on(archive_file(&archive, &name(2), &segment(2)));
    rt.block_on(archive_file(&archive, "00000002.history", HISTORY));
    let data_dir = recovering_data_dir(&agent, "standby");

    let output = fetch(&agent, &data_dir, &name(2));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read(data_dir.join("pg_wal/RECOVERYXLOG")).expect("restored"), segment(2));

    let output = agent.run(&["wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY"], &data_dir);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read(data_dir.join("pg_wal/RECOVERYHISTORY")).expect("restored"), HISTORY);
}

/// Flips one byte in the middle of the stored object (the file backend keeps `<root>/<key>`).
fn corrupt_stored_object(agent: &Agent, file: &str) {
    let path = agent.scratch.path().join("archive/wal").join(file);
    let mut stored = std::fs::read(&path).expect("stored object");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    std::fs::write(&path, stored).expect("corrupt");
}

#[test]
fn wal_fetch_refuses_a_corrupted_object_and_writes_nothing() {
    let agent = Agent::with_file_archive();
    let rt = runtime();
    rt.block_on(archive_file(&rt.block_on(agent.archive()), &name(2), &segment(2)));
    corrupt_stored_object(&agent, &name(2));
    let data_dir = recovering_data_dir(&agent, "standby");

    let output = fetch(&agent, &data_dir, &name(2));

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.lines().next().unwrap_or_default().contains("corrupt"), "{stderr}");
    assert!(!data_dir.join("pg_wal/RECOVERYXLOG").exists());
    let leftovers: Vec<_> = std::fs::read_dir(data_dir.join("pg_wal")).expect("pg_wal").collect();
    assert!(leftovers.is_empty(), "no temp files: {leftovers:?}");
}

#[test]
fn wal_fetch_stops_archive_recovery_instead_of_ending_it_early_on_errors() {
    let agent = Agent::with_file_archive();
    let rt = runtime();
    rt.block_on(archive_file(&rt.block_on(agent.archive()), &name(2), &segment(2)));
    corrupt_stored_object(&agent, &name(2));
    let data_dir = recovering_data_dir(&agent, "restored");
    std::fs::write(data_dir.join("recovery.signal"), b"").expect("recovery.signal");

    let output = fetch(&agent, &data_dir, &name(2));

    assert_eq!(output.status.code(), Some(255), "PostgreSQL aborts recovery on a status above 125");
    assert!(!data_dir.join("pg_wal/RECOVERYXLOG").exists());
    let missing = fetch(&agent, &data_dir, &name(9));
    assert_eq!(missing.status.code(), Some(1), "the end of the archive still ends recovery normally");
}

#[test]
fn wal_fetch_serves_the_next_segments_from_the_prefetch_directory() {
    let agent = Agent::with_file_archive();
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    for number in 2..=5 {
        rt.block_on(archive_file(&archive, &name(number), &segment(number)));
    }
    let data_dir = recovering_data_dir(&agent, "standby");
    let prefetch_dir = data_dir.join("pg_wal").join(PREFETCH_DIR);

    assert!(fetch(&agent, &data_dir, &name(2)).status.success());
    wait_for("segments 3 to 5 to be prefetched", Duration::from_secs(30), || {
        (3..=5).all(|number| holds(&prefetch_dir, &name(number)))
    });
    // Gone from the archive: only the verified prefetched copy can serve them now.
    for number in 3..=5 {
        std::fs::remove_file(agent.scratch.path().join("archive/wal").join(name(number))).expect("remove");
    }
    for number in 3..=5 {
        let output = fetch(&agent, &data_dir, &name(number));
        assert!(output.status.success(), "{}: {}", name(number), String::from_utf8_lossy(&output.stderr));
        assert_eq!(std::fs::read(data_dir.join("pg_wal/RECOVERYXLOG")).expect("restored"), segment(number));
        assert!(!holds(&prefetch_dir, &name(number)), "taken, not copied");
    }
}

#[test]
fn a_damaged_prefetched_segment_is_downloaded_again() {
    let agent = Agent::with_file_archive();
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    for number in 2..=3 {
        rt.block_on(archive_file(&archive, &name(number), &segment(number)));
    }
    let data_dir = recovering_data_dir(&agent, "standby");
    let prefetch_dir = data_dir.join("pg_wal").join(PREFETCH_DIR);
    assert!(fetch(&agent, &data_dir, &name(2)).status.success());
    wait_for("segment 3 to be prefetched", Duration::from_secs(30), || holds(&prefetch_dir, &name(3)));
    let copy = copy_of(&prefetch_dir, &name(3)).expect("prefetched copy");
    let mut damaged = std::fs::read(&copy).expect("read");
    damaged[1000] ^= 0x01;
    std::fs::write(&copy, damaged).expect("damage");

    assert!(fetch(&agent, &data_dir, &name(3)).status.success());

    assert_eq!(std::fs::read(data_dir.join("pg_wal/RECOVERYXLOG")).expect("restored"), segment(3));
}

fn copy_of(prefetch_dir: &Path, file: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(prefetch_dir).ok()?;
    entries
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&format!("{file}."))))
}

fn holds(prefetch_dir: &Path, file: &str) -> bool {
    copy_of(prefetch_dir, file).is_some()
}
