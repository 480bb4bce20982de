//! The failure paths of backups and restores with a real PostgreSQL 15: each leaves stored data
//! intact and refuses before it writes anything.

mod backup_support;
#[path = "../../core/tests/catalog_support/mod.rs"]
mod catalog_support;
mod wal_common;

use std::process::Stdio;
use std::time::Duration;

use backup_support::{Primary, agent_command, assert_success, stderr};
use pgec2_core::catalog;
use wal_common::{runtime, switch_segment, wait_for, wait_until_archived};

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
