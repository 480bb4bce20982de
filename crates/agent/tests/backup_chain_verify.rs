//! A chain restore verifies every part it will read before it writes anything, against a real
//! PostgreSQL 15 and the fault-injecting store with a fixed seed:
//! - a chain whose middle backup, or whose full backup, has a part with a changed byte (stored
//!   at the right size) fails naming the backup, the part, the checksum the manifest records,
//!   and what to do; the target is exactly as it was (absent stays absent, an empty directory
//!   stays empty and untouched) and nothing is left beside it;
//! - throttling (`503 SlowDown`) and lost answers while the parts are verified are retried, every
//!   part is read before the target is created, and the restore holds exactly the rows;
//! - with no room for the spool of verified parts beside the target (a target in a directory the
//!   agent cannot write to), a part changed on the store's disk still fails the restore before
//!   anything is written, and the repaired chain restores exactly, its parts downloaded again;
//! - in an encrypted archive, a changed ciphertext byte in a middle backup's part fails the
//!   restore before anything is written, and the repaired chain restores exactly.

mod backup_support;
mod wal_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backup_support::in_process::{archive_dir, faulty_archive, fetch, give_to_postgres, use_agent_binary};
use backup_support::{Primary, start_restored, table_digests};
use pgec2_core::catalog::BackupInfo;
use pgec2_core::manifest::BackupManifest;
use pgec2_core::storage::fault::{Chaos, Fault, Hook, Operation, Rule};
use pgec2_testkit::Scratch;
use wal_common::Agent;

const SEED: u64 = 0x5eed_0019_0002;

fn sql(primary: &Primary, statement: &str) {
    primary.cluster.psql(statement).unwrap_or_else(|error| panic!("{statement}: {error}"));
}

/// A full backup, an incremental after an update of the first rows, an incremental after an
/// update of the last rows; the WAL archived to the end.
fn three_backup_chain(primary: &Primary) -> [BackupInfo; 3] {
    let full = primary.backup();
    sql(primary, "UPDATE pgbench_accounts SET abalance = 5 WHERE aid <= 3000");
    let middle = primary.incremental();
    sql(primary, "UPDATE pgbench_accounts SET abalance = 6 WHERE aid > 90000");
    let newest = primary.incremental();
    assert_eq!(newest.parent.as_deref(), Some(middle.name.as_str()));
    primary.archive_current_wal();
    [full, middle, newest]
}

/// The part of `manifest` holding the middle of `pgbench_accounts`'s stored content, and the
/// checksum the manifest records for it.
fn accounts_part(primary: &Primary, manifest: &BackupManifest) -> (String, String) {
    let accounts = primary.cluster.psql("SELECT pg_relation_filepath('pgbench_accounts')").expect("file path");
    let file = manifest.files.iter().find(|file| file.path == accounts).expect("the accounts table");
    let index = file.chunks[file.chunks.len() / 2].part;
    let checksum = manifest.parts[index as usize].checksum.clone();
    (format!("backups/{}/parts/{index:06}", manifest.backup), checksum)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_chain_with_a_corrupt_part_in_its_middle_or_full_backup_fails_before_anything_is_written() {
    let primary = Primary::start();
    let [full, middle, newest] = three_backup_chain(&primary);
    let config = backup_support::agent_config(&primary.agent, &primary.cluster);
    let cases = [
        ("middle-empty", &middle, true),
        ("middle-absent", &middle, false),
        ("full-absent", &full, false),
        ("full-empty", &full, true),
    ];
    for (case, damaged, pre_created) in cases {
        let (part, checksum) = accounts_part(&primary, &primary.manifest(&damaged.name));
        let (archive, faults) = faulty_archive(&primary, true);
        let wanted = part.clone();
        faults.add(Rule::new(Fault::Corrupt).on(Operation::Get).matching(move |key| key == wanted));
        let parent = primary.agent.scratch.subdir(case).expect("restore parent");
        let dest = parent.join("data");
        let untouched = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        if pre_created {
            std::fs::create_dir(&dest).expect("create the empty target");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o750)).expect("chmod");
            std::fs::File::open(&dest).expect("open").set_modified(untouched).expect("set mtime");
        }
        let before = entries(&parent);

        let failed = fetch(&config, &archive, &newest.name, &dest).expect_err("the restore must fail");
        assert_eq!(entries(&parent), before, "{case}: nothing is left beside the target");
        if pre_created {
            assert!(entries(&dest).is_empty(), "{case}: the target stays empty");
            let metadata = std::fs::metadata(&dest).expect("the target is still there");
            assert_eq!(metadata.permissions().mode() & 0o7777, 0o750, "{case}: its mode is untouched");
            let modified = metadata.modified().expect("mtime");
            assert_eq!(
                modified,
                untouched,
                "{case}: no entry was ever created in the target (ctime {})",
                metadata.ctime()
            );
        } else {
            assert!(!dest.exists(), "{case}: the target is not created");
        }
        let message = failed.to_string();
        eprintln!("{case}: {message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        for wanted in [damaged.name.as_str(), part.as_str(), checksum.as_str(), "damaged", "nothing was written"] {
            assert!(message.contains(wanted), "{case}: the error names {wanted}: {message}");
        }
        assert!(message.contains("backup-verify") && message.contains("new full backup"), "what to do: {message}");
        assert!(faults.injected() >= 1, "the part was read");
    }
}

#[test]
fn throttling_and_lost_answers_while_the_chain_is_verified_are_retried_and_the_restore_holds_exactly_the_rows() {
    let primary = Primary::start();
    let [_, _, newest] = three_backup_chain(&primary);
    let config = backup_support::agent_config(&primary.agent, &primary.cluster);
    let dest = primary.agent.scratch.subdir("verified").expect("restore parent").join("data");

    let (archive, faults) = faulty_archive(&primary, true);
    let parts = |key: &str| key.contains("/parts/");
    // Answers lost (a read stalled past the store's timeout), 503 SlowDown, transient failures,
    // then one read in five faulty at random.
    faults.add(Rule::new(Fault::Stall(Duration::from_secs(2))).on(Operation::Get).matching(parts).times(2));
    faults.add(Rule::new(Fault::Throttle).on(Operation::Get).matching(parts).times(4));
    faults.add(Rule::new(Fault::Transient).on(Operation::Get).matching(parts).times(2));
    faults.set_chaos(Chaos::new(SEED, 0.2).with_hang(Duration::from_secs(1)));
    // Parts read once the target exists: none, every part is verified before the first write.
    let late = Arc::new(Mutex::new(Vec::new()));
    let hook: Hook = {
        let (late, dest) = (late.clone(), dest.clone());
        Arc::new(move |operation: Operation, key: &str| {
            if operation == Operation::Get && key.contains("/parts/") && dest.exists() {
                late.lock().expect("late reads").push(key.to_string());
            }
            None
        })
    };
    faults.set_hook(hook);

    let summary = fetch(&config, &archive, &newest.name, &dest).expect("the restore succeeds after retries");
    eprintln!(
        "faults injected: {} of {} store calls; {} stored bytes restored",
        faults.injected(),
        faults.total_calls(),
        summary.downloaded_bytes
    );
    assert!(faults.injected() >= 8, "the rules' faults were injected");
    assert_eq!(*late.lock().expect("late reads"), Vec::<String>::new(), "every part is read before the first write");
    assert_eq!(entries(dest.parent().expect("parent")), vec!["data".to_string()], "no spool is left beside it");

    give_to_postgres(&archive_dir(&primary));
    use_agent_binary(&primary.agent, &dest);
    let expected = table_digests(&primary.cluster);
    let restored = start_restored(&primary.agent, "verified", &dest);
    assert_eq!(table_digests(&restored), expected, "the restore holds exactly the rows");
}

/// Flips every bit of the byte in the middle of `path` (same size), as a disk or a copy would.
fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read the stored part");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).expect("write the stored part");
}

#[test]
fn without_room_for_a_spool_beside_the_target_the_chain_is_still_verified_before_anything_is_written() {
    let primary = Primary::start();
    let [_, middle, newest] = three_backup_chain(&primary);
    // The target is a directory of PostgreSQL's user in a directory it cannot write to (a
    // volume's mount point): no spool can be made beside it, the verified parts are downloaded
    // again.
    let parent = primary.agent.scratch.subdir("mount").expect("restore parent");
    let dest = parent.join("data");
    std::fs::create_dir(&dest).expect("create the target");
    let status = std::process::Command::new("chown").arg("postgres:postgres").arg(&dest).status();
    assert!(status.expect("chown").success());
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&parent, Some(0), Some(0)).expect("give the parent to root");
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let untouched = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::open(&dest).expect("open").set_modified(untouched).expect("set mtime");
    let dest_arg = dest.to_str().expect("utf-8 path");

    // A part of the middle backup changed on the store's disk, at the same size.
    let (part, checksum) = accounts_part(&primary, &primary.manifest(&middle.name));
    let stored = archive_dir(&primary).join(&part);
    let original = std::fs::read(&stored).expect("read the part");
    flip_middle_byte(&stored);
    let output = backup_support::run_agent(&primary.agent, &["backup-fetch", dest_arg, &newest.name], &[], true);
    assert!(!output.status.success(), "the restore of a damaged chain fails");
    let message = backup_support::stderr(&output);
    eprintln!("{message}");
    assert!(entries(&dest).is_empty(), "the target stays empty");
    assert_eq!(std::fs::metadata(&dest).expect("target").modified().expect("mtime"), untouched, "never written to");
    assert_eq!(entries(&parent), vec!["data".to_string()], "nothing beside it");
    for wanted in [middle.name.as_str(), part.as_str(), checksum.as_str(), "nothing was written", "backup-verify"] {
        assert!(message.contains(wanted), "the error names {wanted}: {message}");
    }

    // Repaired, the chain restores exactly, without a spool.
    std::fs::write(&stored, original).expect("repair the part");
    let log = [("PGEC2_LOG".to_string(), "info".to_string())];
    let output = backup_support::run_agent(&primary.agent, &["backup-fetch", dest_arg, &newest.name], &log, true);
    backup_support::assert_success("backup-fetch", &output);
    let stderr = backup_support::stderr(&output);
    assert!(stderr.contains("no restore spool"), "the restore says it made no spool: {stderr}");
    assert_eq!(entries(&parent), vec!["data".to_string()], "no spool was made beside it");
    let expected = table_digests(&primary.cluster);
    let restored = start_restored(&primary.agent, "mount", &dest);
    assert_eq!(table_digests(&restored), expected, "the restore holds exactly the rows");
}

#[test]
fn an_encrypted_chain_with_a_changed_ciphertext_byte_fails_before_anything_is_written_and_restores_once_repaired() {
    let scratch = Scratch::new().expect("scratch");
    let archive = scratch.subdir("archive").expect("archive dir");
    let key = scratch.path().join("archive.key");
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod key");
    let config = format!(
        "[storage]\nurl = \"file://{}\"\n\n[encryption]\nmode = \"aes-256-gcm\"\nkey_file = \"{}\"\n",
        archive.display(),
        key.display()
    );
    let primary = Primary::start_with(Agent::with_config(scratch, &config, Vec::new()));
    let [_, middle, newest] = three_backup_chain(&primary);
    let (part, checksum) = accounts_part(&primary, &primary.manifest(&middle.name));
    let stored = archive.join(&part);
    let original = std::fs::read(&stored).expect("read the part");
    flip_middle_byte(&stored);

    let (dest, output) = primary.restore("encrypted", &newest.name, &[]);
    assert!(!output.status.success(), "the restore of a damaged chain fails");
    let message = backup_support::stderr(&output);
    eprintln!("{message}");
    for wanted in [middle.name.as_str(), part.as_str(), checksum.as_str(), "nothing was written", "backup-verify"] {
        assert!(message.contains(wanted), "the error names {wanted}: {message}");
    }
    assert!(!dest.exists(), "the target is not created");
    assert!(entries(dest.parent().expect("parent")).is_empty(), "nothing is left beside it");

    std::fs::write(&stored, original).expect("repair the part");
    let restored = primary.restore_and_start("encrypted-repaired", &newest.name, &[]);
    assert_eq!(table_digests(&restored), table_digests(&primary.cluster), "the restore holds exactly the rows");
}
