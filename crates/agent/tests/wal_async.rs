//! Asynchronous archiving (`transfer.archive_async = true`) with a real PostgreSQL 15: files
//! pushed ahead are answered from the spool and archived byte for byte, and a `wal-push` killed
//! in the middle of its pushes leaves nothing marked archived that is not.

mod wal_common;

use std::path::Path;
use std::time::Duration;

use pgec2_agent::wal::SPOOL_DIR;
use pgec2_core::layout::Archive;
use pgec2_testkit::{PgCluster, Scratch, as_postgres};
use wal_common::{
    Agent, archived_content, cluster_with_ready_segments, done_files, runtime, start_archiving, wait_until_archived,
};

/// An agent archiving asynchronously to a file archive, logging its decisions.
fn async_agent() -> Agent {
    let scratch = Scratch::new().expect("scratch");
    let archive = scratch.subdir("archive").expect("archive dir");
    let config = format!(
        "[storage]\nurl = \"file://{}\"\n\n[compression]\nalgorithm = \"zstd\"\nlevel = 3\n\n\
         [transfer]\narchive_async = true\nupload_concurrency = 2\n",
        archive.display()
    );
    Agent::with_config(scratch, &config, vec![("PGEC2_LOG".into(), "debug".into())])
}

/// Every file PostgreSQL marked done is in the archive with exactly its local bytes.
fn assert_done_files_archived_intact(cluster: &PgCluster, archive: &Archive) -> usize {
    let rt = runtime();
    let mut compared = 0;
    for file in done_files(cluster) {
        let Ok(local) = std::fs::read(cluster.data_dir.join("pg_wal").join(&file)) else { continue };
        let archived = rt.block_on(archived_content(archive, &file));
        assert!(archived.as_deref() == Some(local.as_slice()), "{file} is marked done but not archived intact");
        compared += 1;
    }
    compared
}

fn markers(wal_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(wal_dir.join(SPOOL_DIR)) else { return Vec::new() };
    entries.map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn segments_pushed_ahead_are_answered_from_the_spool_and_archived_byte_for_byte() {
    let agent = async_agent();
    let (cluster, ready) = cluster_with_ready_segments(&agent, 6);
    let last = ready[ready.len() - 1].clone();
    start_archiving(&cluster, &agent);
    wait_until_archived(&cluster, &last);

    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    let compared = assert_done_files_archived_intact(&cluster, &archive);
    assert!(compared >= 6, "only {compared} archived segments compared");
    let log = std::fs::read_to_string(&cluster.log_file).expect("server log");
    assert!(log.contains("already stored ahead with identical content"), "no push was answered from the spool");
    let left: Vec<String> = markers(&cluster.data_dir.join("pg_wal"))
        .into_iter()
        .filter(|name| !name.starts_with('.') && !done_files(&cluster).contains(name))
        .collect();
    assert!(left.is_empty(), "markers of files PostgreSQL never asked for: {left:?}");
}

#[test]
fn a_killed_async_push_leaves_no_marker_without_its_object_and_postgres_archives_everything_after() {
    let agent = async_agent();
    let (cluster, ready) = cluster_with_ready_segments(&agent, 6);
    let last = ready[ready.len() - 1].clone();
    let wal_dir = cluster.data_dir.join("pg_wal");
    let mut ready: Vec<String> = std::fs::read_dir(wal_dir.join("archive_status"))
        .expect("archive_status")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .collect();
    ready.sort();
    let first = ready.first().expect("a ready segment").clone();
    let rt = runtime();
    let archive = rt.block_on(agent.archive());
    // Kill pushes at different points: before, during and after their stores.
    for delay_ms in [5u64, 40, 120, 400] {
        let mut command = as_postgres(&agent.binary);
        command.env_clear().env("PATH", "/usr/bin:/bin").arg("--config").arg(&agent.config);
        command.args(["wal-push", &format!("pg_wal/{first}")]).current_dir(&cluster.data_dir);
        let mut child = command.spawn().expect("spawn wal-push");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        for marker in markers(&wal_dir).into_iter().filter(|name| !name.starts_with('.')) {
            let local = std::fs::read(wal_dir.join(&marker)).expect("marked segment");
            let archived = rt.block_on(archived_content(&archive, &marker));
            assert!(archived.as_deref() == Some(local.as_slice()), "{marker} is marked archived but is not");
        }
    }
    assert!(done_files(&cluster).is_empty(), "nothing is done before PostgreSQL archives");

    start_archiving(&cluster, &agent);
    wait_until_archived(&cluster, &last);
    let compared = assert_done_files_archived_intact(&cluster, &archive);
    assert!(compared >= 6, "only {compared} archived segments compared");
}
