//! Block-level incremental backups of a real PostgreSQL 15: a chain (full, then incrementals
//! after pgbench and other writes) restored to the end of the archive holds exactly the rows,
//! passes pg_amcheck and pg_checksums, and stores a small fraction of a full backup; truncated,
//! emptied and dropped tables come back as they were; a damaged ancestor stops a restore before
//! anything is written; retention keeps the chain; a killed push commits nothing.

mod backup_support;
mod wal_common;

use std::process::Output;
use std::time::Duration;

use backup_support::{Primary, assert_success, stderr, table_digests};
use pgec2_core::catalog::{self, BackupInfo, BackupType};
use pgec2_core::manifest::BackupManifest;
use wal_common::{runtime, wait_for};

/// `backup-push --json --incremental` plus `extra`; returns the output.
fn push_incremental(primary: &Primary, extra: &[&str]) -> Output {
    let data_dir = primary.cluster.data_dir.display().to_string();
    let mut args = vec!["backup-push", "--json", "--incremental", "--pgdata", &data_dir];
    args.extend_from_slice(extra);
    primary.agent(&args)
}

fn incremental(primary: &Primary, extra: &[&str]) -> BackupInfo {
    let output = push_incremental(primary, extra);
    assert_success("backup-push --incremental", &output);
    serde_json::from_slice(&output.stdout).expect("backup-push --json prints the commit record")
}

fn manifest(primary: &Primary, name: &str) -> BackupManifest {
    let rt = runtime();
    let archive = rt.block_on(primary.agent.archive());
    rt.block_on(catalog::read_manifest(&archive, name)).expect("read manifest")
}

fn sql(primary: &Primary, statement: &str) -> String {
    primary.cluster.psql(statement).unwrap_or_else(|error| panic!("{statement}: {error}"))
}

#[test]
fn an_incremental_chain_restores_exactly_the_rows_and_is_a_fraction_of_a_full() {
    let primary = Primary::start();
    sql(&primary, "CREATE TABLE shrinking AS SELECT n, repeat('x', 200) AS pad FROM generate_series(1, 20000) n");
    sql(&primary, "CREATE TABLE emptied AS SELECT n FROM generate_series(1, 5000) n");
    sql(&primary, "CREATE TABLE dropped AS SELECT n FROM generate_series(1, 5000) n");
    sql(&primary, "CHECKPOINT");
    let full = primary.backup();
    assert_eq!(full.backup_type, BackupType::Full);

    // About 5% of pgbench_accounts (scale 1: 100 000 rows) changes, then an incremental.
    sql(&primary, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5000");
    let first = incremental(&primary, &[]);
    assert_eq!((first.backup_type, first.parent.as_deref()), (BackupType::Incremental, Some(full.name.as_str())));
    eprintln!(
        "full: {} bytes stored; incremental after a 5% update: {} bytes stored",
        full.stored_bytes, first.stored_bytes
    );
    assert!(
        first.stored_bytes * 10 < full.stored_bytes,
        "the incremental after a 5% update stores {} bytes, the full {}: it should be under a tenth",
        first.stored_bytes,
        full.stored_bytes
    );

    // More writes: pgbench, a table shrunk by VACUUM, one emptied by TRUNCATE, one dropped.
    let shrinking = sql(&primary, "SELECT pg_relation_filepath('shrinking')");
    let dropped = sql(&primary, "SELECT pg_relation_filepath('dropped')");
    primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-t", "300"]).expect("pgbench");
    sql(&primary, "DELETE FROM shrinking WHERE n > 1000");
    sql(&primary, "VACUUM shrinking");
    sql(&primary, "TRUNCATE emptied");
    sql(&primary, "INSERT INTO emptied SELECT generate_series(1, 10)");
    sql(&primary, "DROP TABLE dropped");
    sql(&primary, "CHECKPOINT");
    let second = incremental(&primary, &["--from", &first.name]);
    assert_eq!(second.parent.as_deref(), Some(first.name.as_str()));

    let recorded = manifest(&primary, &second.name);
    let of = recorded.incremental.as_ref().expect("an incremental manifest");
    assert_eq!(of.chain, vec![full.name.clone(), first.name.clone()]);
    assert!(of.deleted.contains(&dropped), "{dropped} is recorded as deleted: {:?}", of.deleted);
    let shrunk = recorded.files.iter().find(|file| file.path == shrinking).expect("the shrunk table's file");
    let before = manifest(&primary, &full.name).files.into_iter().find(|file| file.path == shrinking).expect("in full");
    let delta = shrunk.blocks.as_ref().expect("the shrunk table is stored as changed blocks");
    assert!(delta.length < before.size, "VACUUM truncated {shrinking}: {} < {}", delta.length, before.size);

    // Writes after the last backup, archived: the restore replays them.
    primary.cluster.run_tool("pgbench", &["-n", "-c", "1", "-t", "100"]).expect("pgbench");
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);
    let listed = primary.agent(&["backup-list"]);
    assert_success("backup-list", &listed);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("incremental") && text.contains(&first.name), "{text}");

    let mut restored = primary.restore_and_start("chain", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");
    restored.psql("CREATE EXTENSION IF NOT EXISTS amcheck").expect("amcheck");
    restored.run_tool("pg_amcheck", &["--heapallindexed", "--all"]).expect("pg_amcheck passes on the restored chain");
    restored.stop().expect("clean shutdown");
    let data_dir = restored.data_dir.display().to_string();
    restored.run_tool("pg_checksums", &["--check", "-D", &data_dir]).expect("pg_checksums --check passes");
}

#[test]
fn a_damaged_ancestor_fails_the_restore_before_anything_is_written() {
    let primary = Primary::start();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 1 WHERE aid <= 3000");
    let first = incremental(&primary, &[]);
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 2 WHERE aid <= 3000");
    let second = incremental(&primary, &[]);
    assert_eq!(second.parent.as_deref(), Some(first.name.as_str()));
    primary.archive_current_wal();
    let archive_dir = primary.agent.scratch.path().join("archive");

    // A part of the middle backup goes missing.
    let part = archive_dir.join(format!("backups/{}/parts/000000", first.name));
    let saved = std::fs::read(&part).expect("read part");
    std::fs::remove_file(&part).expect("remove part");
    let (dest, output) = primary.restore("missing-part", &second.name, &[]);
    assert!(!output.status.success(), "the restore must fail");
    let message = stderr(&output);
    eprintln!("{message}");
    assert!(message.contains(&first.name) && message.contains("parts/000000"), "names the backup and part: {message}");
    assert!(message.contains("nothing was written"), "{message}");
    assert!(!dest.exists() || std::fs::read_dir(&dest).expect("read dest").next().is_none(), "nothing written");
    std::fs::write(&part, saved).expect("put the part back");

    // The full backup's manifest is damaged.
    let manifest_path = archive_dir.join(format!("backups/{}/manifest.json", full.name));
    std::fs::write(&manifest_path, b"not a manifest").expect("damage manifest");
    let (dest, output) = primary.restore("bad-manifest", "LATEST", &[]);
    assert!(!output.status.success(), "the restore must fail");
    let message = stderr(&output);
    assert!(message.contains(&full.name) && message.contains("manifest.json"), "{message}");
    assert!(!dest.exists() || std::fs::read_dir(&dest).expect("read dest").next().is_none(), "nothing written");
}

#[test]
fn retention_keeps_every_ancestor_and_the_chain_still_restores() {
    let primary = Primary::start();
    let old_full = primary.backup();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 7 WHERE aid <= 2000");
    let first = incremental(&primary, &[]);
    let limited = incremental(&primary, &["--max-chain", "1"]);
    assert_eq!(limited.backup_type, BackupType::Full, "past the maximum chain length a full backup is taken");
    let after = incremental(&primary, &["--from", &first.name]);
    assert_eq!(after.parent.as_deref(), Some(first.name.as_str()));

    // Everything before the last incremental: only the first full goes, the chain stays.
    let deleted = primary.agent(&["delete", "before", &after.name, "--confirm", "--json"]);
    assert_success("delete before", &deleted);
    let kept: Vec<String> = primary.backups().into_iter().map(|backup| backup.name).collect();
    assert!(!kept.contains(&old_full.name), "{kept:?}");
    for needed in [&full.name, &first.name, &after.name] {
        assert!(kept.contains(needed), "{needed} is needed by the chain: {kept:?}");
    }
    let garbage = primary.agent(&["delete", "garbage", "--confirm"]);
    assert_success("delete garbage", &garbage);
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);
    let restored = primary.restore_and_start("after-retention", &after.name, &[]);
    assert_eq!(table_digests(&restored), expected);
}

#[test]
fn a_push_killed_before_its_commit_leaves_no_incremental_listed() {
    let primary = Primary::start();
    let full = primary.backup();
    sql(&primary, "UPDATE pgbench_accounts SET abalance = 3 WHERE aid <= 2000");
    // Archiving stalls, so the push waits for its end WAL after storing every part.
    sql(&primary, "ALTER SYSTEM SET archive_command = 'false'");
    sql(&primary, "SELECT pg_reload_conf()");
    let data_dir = primary.cluster.data_dir.display().to_string();
    let mut child = backup_support::agent_command(
        &primary.agent,
        &["backup-push", "--incremental", "--pgdata", &data_dir],
        &primary.connection_env(),
        true,
    )
    .spawn()
    .expect("start backup-push");
    let backups_dir = primary.agent.scratch.path().join("archive/backups");
    wait_for("the incremental's label to be stored", Duration::from_secs(60), || {
        std::fs::read_dir(&backups_dir)
            .map(|entries| {
                entries.flatten().any(|entry| {
                    entry.path().join("backup_label").exists() && entry.file_name().to_string_lossy() != full.name
                })
            })
            .unwrap_or(false)
    });
    child.kill().expect("kill backup-push");
    child.wait().expect("reap backup-push");
    sql(&primary, "ALTER SYSTEM RESET archive_command");
    sql(&primary, "SELECT pg_reload_conf()");

    let listed: Vec<String> = primary.backups().into_iter().map(|backup| backup.name).collect();
    assert_eq!(listed, vec![full.name.clone()], "the killed incremental is not committed");
    let next = incremental(&primary, &[]);
    assert_eq!(next.parent.as_deref(), Some(full.name.as_str()), "the next incremental builds on the full");
}
