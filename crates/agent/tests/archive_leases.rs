//! Deletion never races a reader, and one damaged object damages one entry, with a real
//! PostgreSQL 15 and the agent's commands:
//! - `backup-fetch` takes a lease that `delete` honours until it expires, the restored
//!   cluster's `wal-fetch` renews it, and `delete everything` refuses while it is live;
//! - a corrupt `complete.json` leaves the other backups listable and restorable and is listed
//!   as damaged with its key; a corrupt history file is named by `wal-verify`.

mod backup_support;
mod wal_common;

use backup_support::{Primary, assert_success, batches_present, start_restored, stderr};
use chrono::Utc;
use pgec2_core::leases::{self, Lease};
use pgec2_testkit::PgCluster;
use wal_common::runtime;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A primary with two backups, batch 1 committed between them and batch 2 after the second.
fn primary_with_two_backups() -> (Primary, String, String) {
    let primary = Primary::start();
    primary.cluster.psql("CREATE TABLE batches (id serial PRIMARY KEY, batch int NOT NULL)").expect("create table");
    let first = primary.backup().name;
    primary.commit_and_archive(1);
    let second = primary.backup().name;
    primary.commit_and_archive(2);
    (primary, first, second)
}

fn stored_leases(primary: &Primary) -> Vec<Lease> {
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    rt.block_on(leases::load(&archive)).expect("load leases").leases
}

fn names(primary: &Primary) -> Vec<String> {
    primary.backups().into_iter().map(|backup| backup.name).collect()
}

#[test]
fn retention_during_a_running_restore_keeps_its_backup_and_wal_until_the_lease_expires() {
    let (primary, first, second) = primary_with_two_backups();
    let (dest, fetched) = primary.restore("copy", &first, &["--target-action", "promote"]);
    assert_success("backup-fetch", &fetched);
    assert!(dest.join(pgec2_agent::lease::LEASE_FILE).exists(), "the data directory records its lease");
    let taken = stored_leases(&primary);
    assert_eq!(taken.len(), 1);
    assert!(taken[0].backup_needed && taken[0].backup == first, "{taken:?}");

    let held = primary.agent(&["delete", "retain", "1", "--confirm"]);
    assert_success("delete retain 1 under a lease", &held);
    assert!(stdout(&held).contains(&format!("held by lease {}", taken[0].id)), "{}", stdout(&held));
    assert_eq!(names(&primary), vec![first.clone(), second.clone()], "the restore's backup stays");
    let everything = primary.agent(&["delete", "everything"]);
    assert!(!everything.status.success(), "delete everything ignored a live lease");
    assert!(stderr(&everything).contains("--ignore-leases"), "{}", stderr(&everything));

    // The restore recovers through every segment since its backup: retention deleted none.
    let copy = PgCluster::existing(&primary.agent.scratch, "copy-run", &dest).expect("restored cluster");
    copy.append_config("\narchive_mode = off\n").expect("switch archiving off");
    let mut copy = start_restored(&primary.agent, "copy", &dest);
    assert_eq!(batches_present(&copy), vec![1, 2]);
    copy.stop().expect("stop");
    let renewed = stored_leases(&primary);
    assert!(!renewed[0].backup_needed, "wal-fetch renewed the lease: the backup is no longer read");
    assert!(renewed[0].renewed_at > taken[0].renewed_at);

    // Expired, the lease protects nothing, and garbage removes it.
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    let mut expired = renewed[0].clone();
    expired.expires_at = Utc::now() - chrono::Duration::seconds(1);
    rt.block_on(leases::write(&archive, &expired)).expect("expire the lease");
    assert_success("delete retain 1", &primary.agent(&["delete", "retain", "1", "--confirm"]));
    assert_eq!(names(&primary), vec![second]);
    assert_success("delete garbage", &primary.agent(&["delete", "garbage", "--confirm"]));
    assert!(stored_leases(&primary).is_empty(), "the expired lease was removed");
}

#[test]
fn a_corrupt_commit_marker_leaves_the_other_backups_listable_and_restorable() {
    let (primary, first, second) = primary_with_two_backups();
    let marker = primary.agent.scratch.path().join("archive/backups").join(&second).join("complete.json");
    let mut stored = std::fs::read(&marker).expect("read marker");
    let middle = stored.len() / 2;
    stored[middle] ^= 0x20;
    std::fs::write(&marker, stored).expect("corrupt marker");
    let key = format!("backups/{second}/complete.json");

    let listed = primary.agent(&["backup-list", "--json"]);
    assert_success("backup-list", &listed);
    let array: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).expect("a JSON array");
    assert_eq!(array.iter().map(|backup| backup["name"].as_str().unwrap_or_default()).collect::<Vec<_>>(), [&first]);
    assert!(stderr(&listed).contains(&key), "{}", stderr(&listed));
    let damaged = primary.agent(&["backup-list", "--damaged", "--json"]);
    let damaged: serde_json::Value = serde_json::from_slice(&damaged.stdout).expect("json");
    assert_eq!(damaged[0]["name"], second.as_str());
    assert_eq!(damaged[0]["key"], key.as_str());

    let verify = primary.agent(&["backup-verify", &second]);
    assert!(!verify.status.success(), "backup-verify of a damaged backup succeeded");
    assert!(stderr(&verify).lines().next().unwrap_or_default().contains(&key), "{}", stderr(&verify));

    let mut copy = primary.restore_copy("other", "LATEST", &["--target-action", "promote"]);
    assert_eq!(batches_present(&copy), vec![1, 2], "the other backup restores to the archive's end");
    copy.stop().expect("stop");

    assert_success("delete garbage", &primary.agent(&["delete", "garbage", "--confirm"]));
    assert!(marker.exists(), "garbage leaves a damaged backup alone unless it is named");
    let named = primary.agent(&["delete", "garbage", &second, "--confirm"]);
    assert_success("delete garbage NAME", &named);
    assert!(!marker.exists(), "named, the damaged backup goes");

    std::fs::write(primary.agent.scratch.path().join("archive/wal/00000002.history"), b"garbage").expect("history");
    let verify = primary.agent(&["wal-verify", "--json"]);
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
    assert!(stderr(&verify).contains("wal/00000002.history"), "{}", stderr(&verify));
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("json");
    assert_eq!(report["damaged_history_files"][0]["key"], "wal/00000002.history");
    assert_success("backup-list with a damaged history file", &primary.agent(&["backup-list"]));
}
