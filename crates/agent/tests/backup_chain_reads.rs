//! A restore of a chain reads only the parts it needs, against a real PostgreSQL 15: parts of
//! an ancestor that hold only files a newer backup of the chain supersedes (a table rewritten by
//! `VACUUM FULL` since, whole-file copies taken again, blocks changed again) are not
//! downloaded, and the restore still holds exactly the rows.

mod backup_support;
mod wal_common;

use backup_support::in_process::{archive_dir, faulty_archive, fetch, give_to_postgres, use_agent_binary};
use backup_support::{Primary, start_restored, table_digests};
use pgec2_core::manifest::BackupManifest;

#[test]
fn a_chain_restore_does_not_download_ancestor_parts_whose_files_are_all_superseded() {
    let primary = Primary::start();
    let full = primary.backup();
    primary.cluster.psql("UPDATE pgbench_accounts SET abalance = 1 WHERE aid <= 3000").expect("update");
    let churn =
        "CREATE TABLE churn AS SELECT n, md5(n::text) || md5((n + 1)::text) AS pad FROM generate_series(1, 60000) n";
    primary.cluster.psql(churn).expect("create churn");
    let middle = primary.incremental();
    primary.cluster.psql("UPDATE pgbench_accounts SET abalance = 2 WHERE aid <= 3000").expect("update");
    primary.cluster.psql("VACUUM FULL churn").expect("rewrite churn");
    let newest = primary.incremental();
    primary.archive_current_wal();

    let (archive, _) = faulty_archive(&primary, false);
    let dest = primary.agent.scratch.subdir("chain").expect("restore parent").join("data");
    let config = backup_support::agent_config(&primary.agent, &primary.cluster);
    let summary = fetch(&config, &archive, &newest.name, &dest).expect("restore the chain");

    let chain: Vec<BackupManifest> =
        [&full, &middle, &newest].iter().map(|backup| primary.manifest(&backup.name)).collect();
    let every_part: u64 = chain.iter().map(BackupManifest::stored_part_bytes).sum();
    let middle_bytes = chain[1].stored_part_bytes();
    eprintln!(
        "3-link chain restore: downloaded {} stored part bytes; every part of the chain holds {every_part} (full {}, \
         middle {middle_bytes}, newest {})",
        summary.downloaded_bytes,
        chain[0].stored_part_bytes(),
        chain[2].stored_part_bytes()
    );
    assert!(
        summary.downloaded_bytes + middle_bytes / 2 < every_part,
        "the middle backup's copy of the rewritten table is not downloaded: {} of {every_part} bytes",
        summary.downloaded_bytes
    );

    give_to_postgres(&archive_dir(&primary));
    use_agent_binary(&primary.agent, &dest);
    let expected = table_digests(&primary.cluster);
    let restored = start_restored(&primary.agent, "chain", &dest);
    assert_eq!(table_digests(&restored), expected, "the restore holds exactly the rows");
}
