//! Retention with a real PostgreSQL 15: deleting old backups keeps every backup it should, the
//! WAL they need, and point-in-time recovery from the oldest kept backup.

mod backup_support;
mod wal_common;

use backup_support::{Primary, assert_success, batches_present, commit_batch};
use pgec2_core::catalog;
use wal_common::runtime;

fn names(primary: &Primary) -> Vec<String> {
    primary.backups().into_iter().map(|backup| backup.name).collect()
}

#[test]
fn keeping_two_of_three_backups_leaves_pitr_from_the_oldest_kept_working() {
    let primary = Primary::start();
    primary.cluster.psql("CREATE TABLE batches (id serial PRIMARY KEY, batch int NOT NULL)").expect("create table");
    let first = primary.backup();
    commit_batch(&primary.cluster, 1);
    primary.archive_current_wal();
    let second = primary.backup();
    let after_second_batch = commit_batch(&primary.cluster, 2);
    commit_batch(&primary.cluster, 3);
    primary.archive_current_wal();
    let third = primary.backup();
    commit_batch(&primary.cluster, 4);
    primary.archive_current_wal();

    let dry_run = primary.agent(&["delete", "retain", "2"]);
    assert_success("delete retain 2", &dry_run);
    let printed = String::from_utf8_lossy(&dry_run.stdout);
    assert!(printed.contains(&format!("would delete backup {}", first.name)), "{printed}");
    assert_eq!(names(&primary).len(), 3, "a dry run deletes nothing");

    assert_success("delete retain 2 --confirm", &primary.agent(&["delete", "retain", "2", "--confirm"]));
    assert_eq!(names(&primary), vec![second.name.clone(), third.name.clone()]);
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    let wal = rt.block_on(catalog::list_wal_archive(&archive, second.segment_size())).expect("wal");
    let oldest_segment = wal.segments.values().flat_map(|segments| segments.keys()).min().copied();
    assert_eq!(oldest_segment, Some(second.start_segment()), "WAL before the oldest kept backup goes, the rest stays");
    assert_success("wal-verify after retention", &primary.agent(&["wal-verify"]));

    let target = ["--target-time", after_second_batch.time.as_str(), "--target-action", "promote"];
    let mut copy = primary.restore_copy("from-oldest-kept", &second.name, &target);
    assert_eq!(batches_present(&copy), vec![1, 2]);
    copy.stop().expect("stop");
}

#[test]
fn a_pinned_backup_survives_retention_until_it_is_unpinned() {
    let primary = Primary::start();
    let first = primary.backup();
    primary.archive_current_wal();
    primary.backup();
    primary.archive_current_wal();
    let third = primary.backup();

    assert_success("backup-mark", &primary.agent(&["backup-mark", &first.name]));
    assert!(primary.backups()[0].permanent, "backup-list shows the pin");
    assert_success("delete retain 1 --confirm", &primary.agent(&["delete", "retain", "1", "--confirm"]));
    assert_eq!(names(&primary), vec![first.name.clone(), third.name.clone()]);
    assert_success("wal-verify keeps the pinned backup's WAL", &primary.agent(&["wal-verify"]));

    assert_success("backup-mark --undo", &primary.agent(&["backup-mark", &first.name, "--undo"]));
    assert_success("delete retain 1 --confirm", &primary.agent(&["delete", "retain", "1", "--confirm"]));
    assert_eq!(names(&primary), vec![third.name.clone()]);
}
