//! A base backup of a real PostgreSQL 15 taken under pgbench write load, restored to the end of
//! the archive: nothing committed is lost, and the copy passes pg_amcheck and pg_checksums.

mod backup_support;
mod wal_common;

use backup_support::{Primary, assert_success, table_digests};

#[test]
fn a_backup_taken_under_load_restores_every_committed_row() {
    let primary = Primary::start();
    let backup = std::thread::scope(|scope| {
        let load = scope.spawn(|| primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-T", "6"]));
        std::thread::sleep(std::time::Duration::from_secs(1));
        let backup = primary.backup();
        load.join().expect("pgbench thread").expect("pgbench under backup");
        backup
    });
    assert_eq!(primary.backups().iter().map(|info| info.name.clone()).collect::<Vec<_>>(), vec![backup.name.clone()]);
    primary
        .cluster
        .psql("CREATE TABLE after_backup AS SELECT generate_series(1, 5000) AS n")
        .expect("write after the backup");
    primary.cluster.run_tool("pgbench", &["-n", "-c", "1", "-t", "200"]).expect("more pgbench");
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let mut restored = primary.restore_and_start("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");
    restored
        .run_tool("pg_amcheck", &["--install-missing", "--heapallindexed", "--all"])
        .expect("pg_amcheck passes on the restored copy");
    restored.stop().expect("clean shutdown");
    let data_dir = restored.data_dir.display().to_string();
    restored.run_tool("pg_checksums", &["--check", "-D", &data_dir]).expect("pg_checksums --check passes");
}

#[test]
fn backup_push_prints_the_name_of_a_listed_backup() {
    let primary = Primary::start();
    let data_dir = primary.cluster.data_dir.display().to_string();
    let bad = primary.agent(&["backup-push", "--pgdata", &data_dir, "--annotation", "no value"]);
    assert!(!bad.status.success(), "an annotation without '=' is refused before any backup starts");
    let output = primary.agent(&[
        "backup-push",
        "--pgdata",
        &data_dir,
        "--annotation",
        "pgec2.io/schedule=2026-01-01T03:00:00Z",
        "--annotation",
        "ticket=OPS-1",
    ]);
    assert_success("backup-push", &output);
    let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let listed = primary.agent(&["backup-list", "--json"]);
    assert_success("backup-list", &listed);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let entry = &listed[0];
    assert_eq!(entry["name"], name.as_str());
    for field in [
        "start_time",
        "finish_time",
        "start_lsn",
        "finish_lsn",
        "timeline",
        "pg_version",
        "system_identifier",
        "data_bytes",
        "stored_bytes",
        "permanent",
    ] {
        assert!(!entry[field].is_null(), "backup-list --json lacks {field}: {entry}");
    }
    assert_eq!(entry["permanent"], false);
    assert_eq!(entry["annotations"]["pgec2.io/schedule"], "2026-01-01T03:00:00Z", "{entry}");
    assert_eq!(entry["annotations"]["ticket"], "OPS-1", "{entry}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "the refused push left nothing behind: {listed}");
    assert!(entry["stored_bytes"].as_u64() < entry["data_bytes"].as_u64(), "the backup is compressed: {entry}");
}

#[test]
fn a_tablespace_is_restored_into_its_mapped_directory_and_linked() {
    let primary = Primary::start();
    let location = primary.agent.scratch.subdir("tablespace").expect("tablespace dir");
    primary.cluster.psql(&format!("CREATE TABLESPACE extra LOCATION '{}'", location.display())).expect("tablespace");
    primary
        .cluster
        .psql("CREATE TABLE in_extra TABLESPACE extra AS SELECT generate_series(1, 10000) AS n")
        .expect("table");
    primary.backup();
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let (_, refused) = primary.restore("unmapped", "LATEST", &[]);
    assert!(backup_support::stderr(&refused).contains("is not empty"), "the live tablespace is never overwritten");
    let moved = primary.agent.scratch.subdir("moved").expect("parent").join("extra");
    let mapping = format!("{}={}", location.display(), moved.display());
    let restored = primary.restore_copy("mapped", "LATEST", &["--tablespace-mapping", &mapping]);
    assert_eq!(table_digests(&restored), expected);
    let oid = restored.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'").expect("oid");
    assert_eq!(std::fs::read_link(restored.data_dir.join("pg_tblspc").join(&oid)).expect("link"), moved);
    assert_eq!(
        restored.psql(&format!("SELECT pg_tablespace_location({oid})")).expect("location"),
        moved.display().to_string()
    );
}

#[test]
fn every_restored_file_belongs_to_the_owner_of_the_destination_s_parent() {
    use std::os::unix::fs::MetadataExt;
    let primary = Primary::start();
    primary.backup();
    primary.archive_current_wal();
    let parent = primary.agent.scratch.subdir("owned").expect("parent");
    let dest = parent.join("data");
    // Run as the test's own user (root in CI): files must still go to the parent's owner.
    let output = backup_support::run_agent(
        &primary.agent,
        &["backup-fetch", dest.to_str().expect("path"), "LATEST"],
        &[],
        false,
    );
    assert_success("backup-fetch", &output);
    let owner = std::fs::metadata(&parent).expect("parent").uid();
    let mut checked = 0;
    for entry in walkdir::WalkDir::new(&dest) {
        let entry = entry.expect("entry");
        let metadata = std::fs::symlink_metadata(entry.path()).expect("metadata");
        assert_eq!(metadata.uid(), owner, "{} has the wrong owner", entry.path().display());
        checked += 1;
    }
    assert!(checked > 100, "only {checked} entries restored");
    let restored = backup_support::start_restored(&primary.agent, "owned", &dest);
    assert_eq!(restored.psql("SELECT count(*) FROM pgbench_accounts").expect("count"), "100000");
}

#[test]
fn a_backup_with_the_largest_parts_restores_every_row() {
    let mut agent = wal_common::Agent::with_file_archive();
    agent.env.push(("PGEC2_PART_SIZE_MIB".to_string(), "4".to_string()));
    let primary = Primary::start_with(agent);
    let backup = primary.backup();
    primary.cluster.run_tool("pgbench", &["-n", "-c", "1", "-t", "200"]).expect("pgbench after the backup");
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let manifest = primary.manifest(&backup.name);
    let largest = manifest.parts.iter().map(|part| part.content_bytes).max().unwrap_or(0);
    assert_eq!(largest, 4 << 20, "parts hold backup.part_size_mib of content");
    assert_success("backup-verify", &primary.agent(&["backup-verify", &backup.name]));
    let restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");
}
