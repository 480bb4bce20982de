//! Continuous archiving with a real PostgreSQL 15: archive_command under write load, a foreign
//! cluster refused, and a standby replaying the archive through restore_command.

mod wal_common;

use std::time::Duration;

use pgec2_core::identity;
use pgec2_testkit::PgCluster;
use wal_common::{
    Agent, archived_content, archiver_stats, done_files, runtime, switch_segment, wait_for, wait_until_archived,
};

fn system_identifier(cluster: &PgCluster) -> u64 {
    cluster.psql("SELECT system_identifier FROM pg_control_system()").expect("system identifier").parse().expect("u64")
}

#[test]
fn archive_command_stores_every_completed_segment_with_a_matching_checksum() {
    let agent = Agent::with_file_archive();
    let mut primary = agent.archiving_cluster("primary", &[]);
    primary.start().expect("start");
    primary.run_tool("pgbench", &["-i", "-q", "-s", "1"]).expect("pgbench -i");
    primary.run_tool("pgbench", &["-n", "-c", "2", "-t", "200"]).expect("pgbench");
    let mut last = String::new();
    for _ in 0..3 {
        last = switch_segment(&primary);
    }
    wait_until_archived(&primary, &last);

    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    let mut compared = 0;
    for file in done_files(&primary) {
        // A segment may be recycled after its .done was listed; it was archived all the same.
        let Ok(local) = std::fs::read(primary.data_dir.join("pg_wal").join(&file)) else { continue };
        let archived = rt.block_on(archived_content(&archive, &file));
        assert!(archived.as_deref() == Some(local.as_slice()), "{file} is marked done but not archived intact");
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} archived segments compared");
    let (archived_count, failed_count, _) = archiver_stats(&primary);
    assert!(archived_count >= 3);
    assert_eq!(failed_count, 0, "{}", primary.log_tail());
    let owner = rt.block_on(identity::read_owner(&archive)).expect("read owner").expect("claimed");
    assert_eq!(owner.system_identifier, system_identifier(&primary));
    assert_eq!(owner.pg_version, Some(15));
}

#[test]
fn a_foreign_cluster_is_refused_by_an_archive_it_does_not_own() {
    let agent = Agent::with_file_archive();
    let mut primary = agent.archiving_cluster("primary", &[]);
    primary.start().expect("start primary");
    wait_until_archived(&primary, &switch_segment(&primary));

    let mut intruder = agent.archiving_cluster("intruder", &[]);
    intruder.start().expect("start intruder");
    let segment = switch_segment(&intruder);
    wait_for("the intruder's archive_command to fail", Duration::from_secs(60), || archiver_stats(&intruder).1 >= 1);

    let (archived_count, _, _) = archiver_stats(&intruder);
    assert_eq!(archived_count, 0);
    let log = std::fs::read_to_string(&intruder.log_file).expect("server log");
    assert!(log.contains("point this cluster at its own storage prefix"), "{}", intruder.log_tail());
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    let owner = rt.block_on(identity::read_owner(&archive)).expect("read owner").expect("claimed");
    assert_eq!(owner.system_identifier, system_identifier(&primary));
    let local = std::fs::read(intruder.data_dir.join("pg_wal").join(&segment)).expect("intruder segment");
    assert_ne!(rt.block_on(archived_content(&archive, &segment)), Some(local), "the intruder's WAL is not archived");
}

#[test]
fn a_standby_replays_the_archive_and_reaches_the_primarys_lsn() {
    let agent = Agent::with_file_archive();
    let mut primary = agent.archiving_cluster("primary", &[]);
    primary.start().expect("start primary");
    primary.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n").expect("create");
    let standby_dir = agent.scratch.subdir("standby").expect("standby dir").join("data");
    let standby_path = standby_dir.to_str().expect("utf-8 path");
    // No WAL in the backup: everything the standby replays comes from the archive.
    primary.run_tool("pg_basebackup", &["-D", standby_path, "-X", "none", "-c", "fast"]).expect("pg_basebackup");
    std::fs::write(standby_dir.join("standby.signal"), b"").expect("standby.signal");
    let mut standby = PgCluster::existing(&agent.scratch, "standby", &standby_dir).expect("standby");
    standby.append_config(&format!("\n{}\n", agent.restore_command())).expect("restore_command");
    standby.start().expect("start standby");

    primary.psql("INSERT INTO t SELECT generate_series(1001, 2000)").expect("insert");
    let switch_lsn = primary.psql("SELECT pg_switch_wal()").expect("switch");
    let segment = primary.psql(&format!("SELECT pg_walfile_name('{switch_lsn}')")).expect("segment name");
    wait_until_archived(&primary, &segment);

    wait_for("the standby to replay up to the primary's switch LSN", Duration::from_secs(90), || {
        standby
            .psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{switch_lsn}'::pg_lsn"))
            .is_ok_and(|reached| reached == "t")
    });
    assert_eq!(standby.psql("SELECT count(*) FROM t").expect("count on standby"), "2000");
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()").expect("recovery"), "t");
}
