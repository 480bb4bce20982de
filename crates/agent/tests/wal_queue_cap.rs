//! The archive queue cap (`transfer.archive_queue_max_mb`) with a real PostgreSQL 15: above the
//! cap, wal-push drops segments so PostgreSQL recycles them (the primary's disk is protected),
//! and says so loudly: an error in PostgreSQL's log, and `archive_holes` in `archive-status`
//! until a base backup taken after the hole is committed. Below the cap nothing is dropped.

mod wal_common;

use std::path::Path;
use std::process::Output;

use pgec2_agent::wal::queue_cap::HOLES_FILE;
use pgec2_testkit::{PgCluster, Scratch, as_postgres};
use wal_common::{
    Agent, archived_content, cluster_with_ready_segments, done_files, run_with_deadline, runtime, start_archiving,
    switch_segment, wait_until_archived,
};

/// An agent archiving to a file archive with a queue cap of 32 MiB (two segments).
fn capped_agent(archive_async: bool) -> Agent {
    let scratch = Scratch::new().expect("scratch");
    let archive = scratch.subdir("archive").expect("archive dir");
    let config = format!(
        "[storage]\nurl = \"file://{}\"\n\n[compression]\nalgorithm = \"zstd\"\nlevel = 3\n\n\
         [transfer]\narchive_queue_max_mb = 32\narchive_async = {archive_async}\nupload_concurrency = 2\n",
        archive.display()
    );
    Agent::with_config(scratch, &config, Vec::new())
}

/// Runs the agent as the postgres user against `cluster` (libpq variables and PGDATA set).
fn agent_for(agent: &Agent, cluster: &PgCluster, args: &[&str]) -> Output {
    let mut command = as_postgres(&agent.binary);
    command.env_clear().env("PATH", "/usr/bin:/bin").arg("--config").arg(&agent.config).args(args);
    command.env("PGHOST", &cluster.socket_dir).env("PGPORT", cluster.port.to_string()).env("PGUSER", "postgres");
    command.env("PGDATABASE", "postgres").env("PGDATA", &cluster.data_dir).current_dir(&cluster.data_dir);
    run_with_deadline(command, std::time::Duration::from_secs(120))
}

fn archive_holes(agent: &Agent, cluster: &PgCluster) -> serde_json::Value {
    let output = agent_for(agent, cluster, &["archive-status", "--json"]);
    assert!(output.status.success(), "archive-status: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("archive-status JSON");
    report["archive_holes"].clone()
}

fn exists(wal_dir: &Path, file: &str) -> bool {
    wal_dir.join(file).exists()
}

#[test]
fn above_the_queue_cap_segments_are_dropped_recycled_and_reported_until_a_new_backup() {
    for archive_async in [false, true] {
        let agent = capped_agent(archive_async);
        let (cluster, ready) = cluster_with_ready_segments(&agent, 5);
        let (first, last) = (ready[0].clone(), ready[ready.len() - 1].clone());
        assert_eq!(archive_holes(&agent, &cluster), serde_json::Value::Null, "no hole before archiving");
        start_archiving(&cluster, &agent);
        wait_until_archived(&cluster, &last);

        // The oldest segments were dropped: marked done, not in the archive, recorded, logged.
        let rt = runtime();
        let archive = rt.block_on(agent.archive());
        assert!(done_files(&cluster).contains(&first), "async={archive_async}: PostgreSQL got its answer");
        assert_eq!(rt.block_on(archived_content(&archive, &first)), None, "async={archive_async}: {first} dropped");
        let wal_dir = cluster.data_dir.join("pg_wal");
        assert!(exists(&wal_dir, HOLES_FILE), "async={archive_async}: the hole is recorded");
        let log = std::fs::read_to_string(&cluster.log_file).expect("server log");
        assert!(log.contains(&format!("ARCHIVE HOLE: dropped WAL segment {first}")), "async={archive_async}: {log}");
        let holes = archive_holes(&agent, &cluster);
        assert_eq!(holes["first"]["file"], first.as_str(), "async={archive_async}: {holes}");
        assert!(holes["dropped_segments"].as_u64().is_some_and(|count| count >= 1), "{holes}");
        let text = agent_for(&agent, &cluster, &["archive-status"]);
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(text.starts_with("archiving: HOLE: the archive has a hole"), "async={archive_async}: {text}");

        // The disk is protected: once a checkpoint passes, PostgreSQL recycles the dropped files.
        cluster.psql("CHECKPOINT").expect("checkpoint");
        cluster.psql("CHECKPOINT").expect("checkpoint");
        assert!(!exists(&wal_dir, &first), "async={archive_async}: {first} was not recycled");

        // Below the cap, archiving goes on as before; a new base backup clears the report.
        let next = switch_segment(&cluster);
        wait_until_archived(&cluster, &next);
        assert!(rt.block_on(archived_content(&archive, &next)).is_some(), "async={archive_async}: {next} archived");
        let backup = agent_for(&agent, &cluster, &["backup-push"]);
        assert!(backup.status.success(), "backup-push: {}", String::from_utf8_lossy(&backup.stderr));
        assert_eq!(archive_holes(&agent, &cluster), serde_json::Value::Null, "async={archive_async}: cleared");
    }
}
