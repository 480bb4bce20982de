//! `backup-verify` of an incremental backup, against a real PostgreSQL 15: it verifies every
//! backup of the chain, and checks each stored block against its own checksum, so that a
//! flipped byte in one stored block of the middle backup is reported naming that backup, the
//! relation file and the block number.

mod backup_support;
mod wal_common;

use backup_support::{Primary, assert_success, stderr};
use pgec2_testkit::Scratch;
use wal_common::Agent;

/// A primary whose agent stores parts uncompressed, so a byte of a stored block can be found
/// and flipped in place.
fn uncompressed_primary() -> Primary {
    let scratch = Scratch::new().expect("scratch");
    let archive = scratch.subdir("archive").expect("archive dir");
    let config = format!("[storage]\nurl = \"file://{}\"\n\n[compression]\nalgorithm = \"none\"\n", archive.display());
    Primary::start_with(Agent::with_config(scratch, &config, Vec::new()))
}

#[test]
fn backup_verify_checks_every_backup_of_a_chain_and_names_a_damaged_block() {
    let primary = uncompressed_primary();
    let full = primary.backup();
    primary.cluster.psql("UPDATE pgbench_accounts SET abalance = 1 WHERE aid <= 3000").expect("update");
    let middle = primary.incremental();
    primary.cluster.psql("UPDATE pgbench_accounts SET abalance = 2 WHERE aid <= 3000").expect("update");
    let newest = primary.incremental();
    let verified = primary.agent(&["backup-verify", "--json", &newest.name]);
    assert_success("backup-verify of an intact chain", &verified);
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("json");
    let ancestors: Vec<&str> =
        report["ancestors"].as_array().expect("ancestors").iter().filter_map(|a| a["backup"].as_str()).collect();
    assert_eq!(ancestors, [full.name.as_str(), middle.name.as_str()], "every backup of the chain is verified");

    // One byte of the middle backup's third stored block of a relation file flips on disk.
    let recorded = primary.manifest(&middle.name);
    let file = recorded
        .files
        .iter()
        .find(|file| file.blocks.as_ref().is_some_and(|delta| delta.block_count() >= 3))
        .expect("a relation file stored as three or more changed blocks");
    let block = file.blocks.as_ref().and_then(|delta| delta.blocks().nth(2)).expect("third block");
    let chunk = file.chunks[0];
    assert!(chunk.length >= 3 * 8192, "the file's first blocks lie in one part");
    let part = &recorded.parts[chunk.part as usize];
    let path = primary.agent.scratch.path().join(format!("archive/backups/{}/parts/{:06}", middle.name, part.index));
    let mut stored = std::fs::read(&path).expect("read part");
    let header = stored.len() - usize::try_from(part.content_bytes).expect("size");
    stored[header + usize::try_from(chunk.offset).expect("offset") + 2 * 8192 + 100] ^= 0x01;
    std::fs::write(&path, &stored).expect("write part");

    let verify = primary.agent(&["backup-verify", &newest.name]);
    assert!(!verify.status.success(), "backup-verify missed the flipped byte");
    let printed = String::from_utf8_lossy(&verify.stdout);
    eprintln!("{printed}");
    let named = format!("backup {}: file {} block {block} hashes to", middle.name, file.path);
    assert!(printed.contains(&named), "names the backup, file and block: {printed}");
    let first = stderr(&verify);
    assert!(first.lines().next().unwrap_or_default().contains(&middle.name), "{first}");
}
