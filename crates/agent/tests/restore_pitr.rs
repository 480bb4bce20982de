//! Point-in-time recovery with a real PostgreSQL 15: rows committed in batches after a backup,
//! with each batch's commit time, LSN, transaction id and a named restore point recorded;
//! restoring to each kind of target brings back exactly the batches committed up to it. A
//! restore starts a new timeline, and a later point-in-time restore along that timeline works.

mod backup_support;
mod wal_common;

use backup_support::{Mark, Primary, batches_present, commit_batch};
use pgec2_testkit::PgCluster;
use wal_common::{switch_segment, wait_until_archived};

fn primary_with_batches() -> (Primary, Vec<Mark>) {
    let primary = Primary::start();
    primary.cluster.psql("CREATE TABLE batches (id serial PRIMARY KEY, batch int NOT NULL)").expect("create table");
    primary.backup();
    let marks = (1..=4).map(|batch| commit_batch(&primary.cluster, batch)).collect();
    primary.archive_current_wal();
    (primary, marks)
}

/// A copy restored to a target for inspection (it does not archive).
fn restore_to(primary: &Primary, name: &str, option: &str, value: &str) -> PgCluster {
    primary.restore_copy(name, "LATEST", &[option, value, "--target-action", "promote"])
}

#[test]
fn each_kind_of_recovery_target_brings_back_exactly_the_rows_committed_up_to_it() {
    let (primary, marks) = primary_with_batches();
    let second = &marks[1];
    for (name, option, value) in [
        ("by-time", "--target-time", second.time.as_str()),
        ("by-lsn", "--target-lsn", second.lsn.as_str()),
        ("by-xid", "--target-xid", second.xid.as_str()),
        ("by-name", "--target-name", second.restore_point.as_str()),
    ] {
        let mut restored = restore_to(&primary, name, option, value);
        assert_eq!(batches_present(&restored), vec![1, 2], "restore {option} {value}");
        restored.stop().expect("stop");
    }
    let mut third = restore_to(&primary, "third-by-time", "--target-time", &marks[2].time);
    assert_eq!(batches_present(&third), vec![1, 2, 3]);
    third.stop().expect("stop");
}

#[test]
fn a_restore_starts_a_new_timeline_and_a_later_restore_follows_it() {
    let (primary, marks) = primary_with_batches();
    // The branch replaces the primary from batch 2 on: it archives its new timeline into the
    // same archive (--archive-mode preserve, as the original cluster's recovery would).
    let branch_target =
        ["--target-time", marks[1].time.as_str(), "--target-action", "promote", "--archive-mode", "preserve"];
    let branch = primary.restore_and_start("branch", "LATEST", &branch_target);
    assert_eq!(branch.psql("SELECT timeline_id FROM pg_control_checkpoint()").expect("timeline"), "2");
    let on_branch = commit_batch(&branch, 10);
    wait_until_archived(&branch, &switch_segment(&branch));
    // Meanwhile the old primary goes on writing on timeline 1.
    commit_batch(&primary.cluster, 5);
    primary.archive_current_wal();

    let mut replay = restore_to(&primary, "replay-branch", "--target-time", &on_branch.time);
    assert_eq!(batches_present(&replay), vec![1, 2, 10], "the restore followed timeline 2");
    replay.stop().expect("stop");
    let (dest, output) = primary.restore("to-the-end", "LATEST", &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("timeline 1 continued"), "the divergence is pointed out");
    std::fs::remove_dir_all(&dest).expect("drop the copy");
    let mut main_line = primary.restore_copy("to-the-end", "LATEST", &[]);
    assert_eq!(batches_present(&main_line), vec![1, 2, 10], "recovery to the end follows the newest timeline");
    main_line.stop().expect("stop");
    let mut old_line = primary.restore_copy("old-line", "LATEST", &["--target-timeline", "1"]);
    assert_eq!(batches_present(&old_line), vec![1, 2, 3, 4, 5], "--target-timeline 1 stays on the first timeline");
    old_line.stop().expect("stop");
}
