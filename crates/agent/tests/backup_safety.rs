//! The failure paths of backups and restores with a real PostgreSQL 15: each leaves stored data
//! intact and refuses before it writes anything.

mod backup_support;
#[path = "../../core/tests/catalog_support/mod.rs"]
mod catalog_support;
mod wal_common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backup_support::in_process::{agent_runtime, archive_dir, faulty_archive};
use backup_support::{Primary, agent_command, assert_success, stderr};
use pgec2_agent::backup::push::{PushOptions, push_backup};
use pgec2_core::catalog;
use pgec2_core::storage::fault::{Chaos, Fault, FaultHandle, Operation, Rule};
use pgec2_core::storage::local::TEMP_PREFIX;
use wal_common::{runtime, switch_segment, wait_for, wait_until_archived};

const SEED: u64 = 0x5eed_0015;

/// The primary's file archive behind the seeded fault injector (one call in ten fails,
/// throttles, stalls or loses its answer), retried as the agent retries.
fn chaotic_archive(primary: &Primary) -> (pgec2_core::layout::Archive, FaultHandle) {
    let (archive, faults) = faulty_archive(primary, true);
    faults.set_chaos(Chaos::new(SEED, 0.10).with_hang(Duration::from_secs(1)));
    (archive, faults)
}

/// backup-push of `primary` in this process, through `archive`.
fn push_in_process(
    primary: &Primary,
    archive: &pgec2_core::layout::Archive,
) -> Result<catalog::BackupInfo, pgec2_agent::backup::BackupError> {
    let config = backup_support::agent_config(&primary.agent, &primary.cluster);
    let pgdata = primary.cluster.data_dir.clone();
    agent_runtime().block_on(push_backup(&config, archive, Some(&pgdata), PushOptions::default()))
}

/// The files named `name` anywhere under `directory`.
fn files_named(directory: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(directory).into_iter().flatten() {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if path.file_name().is_some_and(|file| file == name) {
            found.push(path);
        }
    }
    found
}

#[test]
fn backup_push_makes_its_parts_durable_in_one_sync_after_the_last_part_and_before_the_manifest() {
    let primary = Primary::start();
    let (archive, faults) = chaotic_archive(&primary);
    // Every store call in order; the sync holds for a moment before it reaches the store, so a
    // manifest written without waiting for it would come before `sync reached the store`.
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let synced = Arc::new(AtomicBool::new(false));
    let (record, reached) = (calls.clone(), synced.clone());
    faults.set_hook(Arc::new(move |operation, key| {
        let call = format!("{operation:?} {key} (synced: {})", reached.load(Ordering::SeqCst));
        record.lock().expect("calls").push(call);
        if operation != Operation::Sync {
            return None;
        }
        let reached = reached.clone();
        Some(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reached.store(true, Ordering::SeqCst);
        }))
    }));
    let backup = push_in_process(&primary, &archive).expect("the backup commits under store faults");
    let calls = calls.lock().expect("calls").clone();

    assert_eq!(faults.calls(Operation::Sync), 1, "one sync for the whole backup: {calls:#?}");
    let sync = calls.iter().position(|call| call.starts_with("Sync")).expect("a sync");
    let manifest = primary.manifest(&backup.name);
    assert!(manifest.parts.len() > 1, "a backup of several parts");
    for part in &manifest.parts {
        let key = format!("/parts/{:06} ", part.index);
        let last_put = calls.iter().rposition(|call| call.starts_with("Put") && call.contains(&key));
        assert!(last_put.is_some_and(|at| at < sync), "part {} stored after the sync: {calls:#?}", part.index);
    }
    for commit in ["/manifest.json", "/complete.json"] {
        let put = calls.iter().position(|call| call.starts_with("Put") && call.contains(commit));
        let put = put.unwrap_or_else(|| panic!("{commit} stored: {calls:#?}"));
        assert!(put > sync && calls[put].ends_with("(synced: true)"), "{commit} before the sync: {calls:#?}");
    }
    assert_eq!(primary.backups().into_iter().map(|info| info.name).collect::<Vec<_>>(), vec![backup.name.clone()]);
    let parts_dir = archive_dir(&primary).join("backups").join(&backup.name).join("parts");
    let left: Vec<_> = std::fs::read_dir(&parts_dir)
        .expect("parts")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(TEMP_PREFIX))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn a_backup_whose_parts_cannot_be_made_durable_fails_naming_the_repository_and_commits_nothing() {
    let primary = Primary::start();
    let (archive, faults) = chaotic_archive(&primary);
    faults.add(Rule::new(Fault::Permanent).on(Operation::Sync));
    let failed = push_in_process(&primary, &archive).expect_err("the sync fails");
    let message = failed.to_string();
    let repository = format!("file://{}", archive_dir(&primary).display());
    assert!(message.starts_with("failed to make the parts of backup base_"), "{message}");
    assert!(message.contains(&format!("durable in {repository}: ")), "names the repository: {message}");
    assert!(message.contains("the backup was not committed"), "{message}");
    assert!(message.contains("take a new backup"), "says what to do: {message}");

    let scanned = runtime().block_on(catalog::scan_backups(&archive)).expect("scan");
    assert!(scanned.committed.is_empty(), "a backup was committed: {:?}", scanned.committed);
    assert!(scanned.uncommitted.first().is_some_and(|backup| backup.objects > 1), "its parts were stored");
    let backups_dir = archive_dir(&primary).join("backups");
    for marker in ["manifest.json", "complete.json"] {
        assert_eq!(files_named(&backups_dir, marker), Vec::<std::path::PathBuf>::new(), "{marker} was written");
    }
    let listed = primary.agent(&["backup-list", "--json"]);
    assert_success("backup-list", &listed);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}

#[test]
fn backup_fetch_refuses_a_non_empty_directory_and_leaves_it_untouched() {
    let primary = Primary::start();
    primary.backup();
    let dest = primary.agent.scratch.subdir("occupied").expect("dest");
    std::fs::write(dest.join("precious"), b"keep me").expect("write");
    let output =
        backup_support::run_agent(&primary.agent, &["backup-fetch", dest.to_str().expect("path"), "LATEST"], &[], true);
    assert!(!output.status.success());
    assert!(stderr(&output).lines().next().unwrap_or_default().contains("is not empty"), "{}", stderr(&output));
    let entries: Vec<_> =
        std::fs::read_dir(&dest).expect("read dest").map(|entry| entry.expect("entry").file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("precious")]);
    assert_eq!(std::fs::read(dest.join("precious")).expect("read"), b"keep me");
}

#[test]
fn targets_inside_the_backup_or_beyond_the_archive_are_refused_before_anything_is_written() {
    let primary = Primary::start();
    let backup = primary.backup();
    primary.archive_current_wal();
    let inside = (backup.finish_time - chrono::Duration::milliseconds(1)).to_rfc3339();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let beyond_lsn = format!("{:X}/0", (backup.finish_lsn.0 >> 32) + 1);
    let start_lsn = backup.start_lsn.to_string();
    for (what, target) in [
        ("a time inside the backup", ["--target-time", inside.as_str()]),
        ("a time after the archive", ["--target-time", future.as_str()]),
        ("an LSN after the archive", ["--target-lsn", beyond_lsn.as_str()]),
        ("an LSN inside the backup", ["--target-lsn", start_lsn.as_str()]),
    ] {
        let (dest, output) = primary.restore("refused", &backup.name, &target);
        assert!(!output.status.success(), "{what} was accepted");
        assert!(stderr(&output).starts_with("error: refusing to restore"), "{what}: {}", stderr(&output));
        assert!(!dest.exists(), "{what}: {} was created", dest.display());
    }
}

#[test]
fn a_killed_backup_is_never_listed_and_garbage_removes_it() {
    let primary = Primary::start();
    // Archiving stalls, so the backup waits in pg_backup_stop after uploading its parts.
    primary.cluster.psql("ALTER SYSTEM SET archive_command = '/bin/false'").expect("stall archiving");
    primary.cluster.psql("SELECT pg_reload_conf()").expect("reload");
    let data_dir = primary.cluster.data_dir.display().to_string();
    let mut command =
        agent_command(&primary.agent, &["backup-push", "--pgdata", &data_dir], &primary.connection_env(), true);
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start backup-push");
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    wait_for("the backup to upload its parts", Duration::from_secs(60), || {
        let backups = rt.block_on(catalog::scan_backups(&archive)).expect("scan");
        backups.uncommitted.first().is_some_and(|backup| backup.objects > 0)
    });
    child.kill().expect("kill backup-push");
    child.wait().expect("reap backup-push");

    let after_kill = rt.block_on(catalog::scan_backups(&archive)).expect("scan");
    assert!(after_kill.committed.is_empty(), "a killed backup is listed");
    let listed = primary.agent(&["backup-list", "--json"]);
    assert_success("backup-list", &listed);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");

    let kept = primary.agent(&["delete", "garbage", "--confirm"]);
    assert_success("delete garbage with the default grace period", &kept);
    assert_eq!(
        rt.block_on(catalog::scan_backups(&archive)).expect("scan").uncommitted.len(),
        1,
        "a recent backup is kept"
    );
    let too_short = primary.agent(&["delete", "garbage", "--grace-period", "0", "--confirm"]);
    assert!(!too_short.status.success(), "a grace period of 0 was accepted");
    assert!(stderr(&too_short).contains("below the minimum of 5m"), "{}", stderr(&too_short));
    let backups_dir = primary.agent.scratch.path().join("archive/backups");
    catalog_support::age_files(&backups_dir, Duration::from_secs(7 * 3600));
    let removed = primary.agent(&["delete", "garbage", "--confirm"]);
    assert_success("delete garbage", &removed);
    let objects = rt.block_on(archive.storage.list(&archive.layout.backups_prefix())).expect("list");
    assert!(objects.is_empty(), "left behind: {objects:?}");
}

#[test]
fn a_missing_wal_segment_makes_wal_verify_fail_naming_it() {
    let primary = Primary::start();
    primary.backup();
    let mut segments = Vec::new();
    for _ in 0..3 {
        segments.push(switch_segment(&primary.cluster));
    }
    wait_until_archived(&primary.cluster, segments.last().expect("segment"));
    assert_success("wal-verify of a complete archive", &primary.agent(&["wal-verify"]));

    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    let victim = &segments[1];
    rt.block_on(archive.storage.delete(&archive.layout.wal_file(victim).expect("key"))).expect("delete segment");
    let output = primary.agent(&["wal-verify", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains(victim.as_str()), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["ok"], false);
    assert_eq!(report["timelines"][0]["missing_segments"], serde_json::json!([victim]));
}

#[test]
fn a_flipped_byte_in_a_part_fails_backup_verify_and_backup_fetch() {
    let primary = Primary::start();
    let backup = primary.backup();
    primary.archive_current_wal();
    assert_success("backup-verify of an intact backup", &primary.agent(&["backup-verify", "LATEST"]));

    let part = primary.agent.scratch.path().join("archive/backups").join(&backup.name).join("parts/000000");
    let mut stored = std::fs::read(&part).expect("read part");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    std::fs::write(&part, &stored).expect("write part");

    let verify = primary.agent(&["backup-verify", &backup.name]);
    assert!(!verify.status.success(), "backup-verify missed the flipped byte");
    assert!(stderr(&verify).contains("parts/000000"), "{}", stderr(&verify));
    let (dest, fetch) = primary.restore("from-damaged", &backup.name, &[]);
    assert!(!fetch.status.success(), "backup-fetch restored a damaged backup");
    assert!(stderr(&fetch).contains("parts/000000"), "{}", stderr(&fetch));
    assert!(!dest.exists(), "a failed restore left {} behind", dest.display());
}
