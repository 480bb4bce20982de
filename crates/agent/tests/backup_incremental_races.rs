//! An incremental backup-push racing retention, against a real PostgreSQL 15: the push leases
//! the chain it builds on, so a `delete` run on another host between the push's upload and its
//! commit keeps the parent, and the new incremental commits and restores exactly the rows; a
//! parent deleted behind the push's back (a deletion that ignored the lease) makes the push
//! refuse to commit, naming the missing backup, and the archive lists no broken backup.
//!
//! The push runs in the test's process through the fault-injecting store, whose hook runs the
//! interfering deletion when the push stores its manifest (after every part, before the commit
//! marker).
//!
//! A chain restore racing retention: a `delete` run while backup-fetch verifies the chain's parts
//! (before it writes anything) keeps the chain, which the restore's lease holds from before it
//! reads the first part, and the restore holds exactly the rows.

mod backup_support;
mod wal_common;

use std::sync::{Arc, Mutex};

use backup_support::in_process::{
    archive_dir, before_the_first_part_read, before_the_manifest, fetch, give_to_postgres, hooked_archive,
    push_incremental, run_into, use_agent_binary,
};
use backup_support::{Primary, agent_command, assert_success, start_restored, table_digests};
use chrono::Utc;
use pgec2_agent::backup::BackupError;
use pgec2_agent::backup::increment::IncrementalError;
use pgec2_core::catalog::{self, BackupInfo, BackupType};
use pgec2_core::leases::{self, LeaseKind};
use wal_common::runtime;

fn committed(primary: &Primary) -> Vec<String> {
    primary.backups().into_iter().map(|backup| backup.name).collect()
}

fn sql(primary: &Primary, statement: &str) {
    primary.cluster.psql(statement).unwrap_or_else(|error| panic!("{statement}: {error}"));
}

#[test]
fn retention_during_an_incremental_push_keeps_its_parent_and_the_new_chain_restores_every_row() {
    let primary = Primary::start();
    let older = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 1 WHERE aid <= 3000");
    let newer = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 2 WHERE aid <= 3000");

    // `delete retain 1` on another host, while the incremental on the older full uploads: it
    // would delete the older full, which nothing committed needs yet.
    let deletion = Arc::new(Mutex::new(None));
    let delete = agent_command(&primary.agent, &["delete", "retain", "1", "--confirm"], &[], false);
    let archive = hooked_archive(&primary, before_the_manifest(run_into(delete, deletion.clone())));
    let pushed = push_incremental(&primary, &archive, &older.name).expect("the incremental commits");
    give_to_postgres(&archive_dir(&primary));

    let deletion = deletion.lock().expect("output").take().expect("the deletion ran during the push");
    assert_success("delete retain 1 during the push", &deletion);
    let printed = String::from_utf8_lossy(&deletion.stdout);
    assert!(printed.contains("held by lease backup-"), "the push's lease held the parent: {printed}");
    assert_eq!((pushed.backup_type, pushed.parent.as_deref()), (BackupType::Incremental, Some(older.name.as_str())));
    assert_eq!(committed(&primary), vec![older.name.clone(), newer.name.clone(), pushed.name.clone()]);

    let rt = runtime();
    let stored = rt.block_on(leases::load(&archive)).expect("leases").leases;
    let lease = stored.iter().find(|lease| lease.kind == LeaseKind::Backup).expect("the push's lease");
    assert_eq!(lease.backup, older.name);
    assert!(!lease.is_live(Utc::now()) && !lease.backup_needed, "released at the end of the push: {lease:?}");

    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);
    let restored = primary.restore_and_start("raced", &pushed.name, &[]);
    assert_eq!(table_digests(&restored), expected, "the incremental restored on its surviving parent");
}

#[test]
fn an_incremental_push_whose_ancestor_vanished_refuses_to_commit_and_lists_no_broken_backup() {
    let primary = Primary::start();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 3 WHERE aid <= 3000");
    let data_dir = primary.cluster.data_dir.display().to_string();
    let first = primary.agent(&["backup-push", "--json", "--incremental", "--pgdata", &data_dir]);
    assert_success("first incremental", &first);
    let first: BackupInfo = serde_json::from_slice(&first.stdout).expect("commit record");
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 4 WHERE aid <= 3000");

    // A deletion that ignores the push's lease removes the full backup the chain starts with,
    // commit marker first, while the push uploads.
    let full_dir = archive_dir(&primary).join("backups").join(&full.name);
    let vanish = move || {
        std::fs::remove_file(full_dir.join("complete.json")).expect("remove the commit marker");
        std::fs::remove_dir_all(&full_dir).expect("remove the backup");
    };
    let archive = hooked_archive(&primary, before_the_manifest(vanish));
    let refused = push_incremental(&primary, &archive, &first.name).expect_err("a chain with a hole is not committed");
    give_to_postgres(&archive_dir(&primary));

    let message = refused.to_string();
    eprintln!("{message}");
    let gone = format!("backups/{}/complete.json", full.name);
    assert!(
        matches!(&refused, BackupError::Incremental(IncrementalError::AncestorGone { ancestor, object, .. })
            if *ancestor == full.name && *object == gone),
        "{refused:?}"
    );
    assert!(message.contains("take a full backup") && message.contains("nothing was committed"), "{message}");
    let rt = runtime();
    let backups = rt.block_on(catalog::scan_backups(&archive)).expect("scan");
    assert_eq!(committed(&primary), vec![first.name.clone()], "the refused incremental is not listed");
    assert!(backups.damaged.is_empty(), "{:?}", backups.damaged);
    assert_eq!(backups.uncommitted.len(), 1, "the refused backup's objects wait for delete garbage");

    // The next backup, a full one as the refusal says, commits and restores.
    let next = primary.backup();
    assert_eq!(next.backup_type, BackupType::Full);
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);
    let restored = primary.restore_and_start("after-refusal", &next.name, &[]);
    assert_eq!(table_digests(&restored), expected);
}

#[test]
fn retention_while_a_chain_restore_verifies_its_parts_keeps_the_chain_and_the_restore_holds_every_row() {
    let primary = Primary::start();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 7 WHERE aid <= 3000");
    let incremental = primary.incremental();
    assert_eq!(incremental.parent.as_deref(), Some(full.name.as_str()));
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 8 WHERE aid > 90000");
    let newer = primary.backup();
    primary.archive_current_wal();
    let expected_at_incremental_end = committed(&primary);
    assert_eq!(expected_at_incremental_end, vec![full.name.clone(), incremental.name.clone(), newer.name.clone()]);

    // `delete retain 1` on another host while the restore of the incremental reads its chain: it
    // would delete the full and the incremental, which only the newer full supersedes.
    let deletion = Arc::new(Mutex::new(None));
    let delete = agent_command(&primary.agent, &["delete", "retain", "1", "--confirm"], &[], false);
    let archive = hooked_archive(&primary, before_the_first_part_read(run_into(delete, deletion.clone())));
    let config = backup_support::agent_config(&primary.agent, &primary.cluster);
    let dest = primary.agent.scratch.subdir("raced-restore").expect("restore parent").join("data");
    let summary = fetch(&config, &archive, &incremental.name, &dest).expect("the chain restores under its lease");
    assert_eq!(summary.backup, incremental.name);

    let deletion = deletion.lock().expect("output").take().expect("the deletion ran while the chain was verified");
    assert_success("delete retain 1 during the restore", &deletion);
    let printed = String::from_utf8_lossy(&deletion.stdout);
    assert!(printed.contains("held by lease restore-"), "the restore's lease held the chain: {printed}");
    assert_eq!(committed(&primary), expected_at_incremental_end, "the leased chain was kept");

    give_to_postgres(&archive_dir(&primary));
    use_agent_binary(&primary.agent, &dest);
    let expected = table_digests(&primary.cluster);
    let restored = start_restored(&primary.agent, "raced-restore", &dest);
    assert_eq!(table_digests(&restored), expected, "the chain restored to the end of the archive holds every row");
}
