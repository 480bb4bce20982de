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

/// A cluster with `segments` ready segments, its `pg_wal`, and the first and last ready files.
fn backlog(agent: &Agent, segments: usize) -> (PgCluster, std::path::PathBuf, String, String) {
    let (cluster, ready) = cluster_with_ready_segments(agent, segments);
    let wal_dir = cluster.data_dir.join("pg_wal");
    let first = ready_files(&wal_dir).first().expect("a ready segment").clone();
    (cluster, wal_dir, first, ready[ready.len() - 1].clone())
}

/// A cluster that piled up `segments` ready segments, then archived them all.
fn cluster_archived_after_a_backlog(agent: &Agent, segments: usize) -> PgCluster {
    let (cluster, ready) = cluster_with_ready_segments(agent, segments);
    start_archiving(&cluster, agent);
    wait_until_archived(&cluster, &ready[ready.len() - 1]);
    cluster
}

#[test]
fn segments_pushed_ahead_are_answered_from_the_spool_and_archived_byte_for_byte() {
    let agent = async_agent();
    let cluster = cluster_archived_after_a_backlog(&agent, 6);

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
    let (cluster, wal_dir, first, last) = backlog(&agent, 6);
    let archive = runtime().block_on(agent.archive());
    // Kill pushes at different points: before, during and after their stores.
    for delay_ms in [5u64, 40, 120, 400] {
        let mut child = push_spawn(agent_command(&agent, &["wal-push", &format!("pg_wal/{first}")], &cluster.data_dir));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert_markers_have_their_objects(&wal_dir, &archive);
    }
    assert!(done_files(&cluster).is_empty(), "nothing is done before PostgreSQL archives");

    start_archiving(&cluster, &agent);
    wait_until_archived(&cluster, &last);
    let compared = assert_done_files_archived_intact(&cluster, &archive);
    assert!(compared >= 6, "only {compared} archived segments compared");
}

/// `args` run as the postgres user in `cwd`, logging at debug, as PostgreSQL runs the agent.
fn agent_command(agent: &Agent, args: &[&str], cwd: &Path) -> std::process::Command {
    let mut command = as_postgres(&agent.binary);
    command.env_clear().env("PATH", "/usr/bin:/bin").env("PGEC2_LOG", "debug").arg("--config").arg(&agent.config);
    command.args(args).current_dir(cwd);
    command
}

/// The files marked ready in `pg_wal`, oldest first.
fn ready_files(wal_dir: &Path) -> Vec<String> {
    let mut ready: Vec<String> = std::fs::read_dir(wal_dir.join("archive_status"))
        .expect("archive_status")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .collect();
    ready.sort();
    ready
}

/// Every marker names an object the archive holds with exactly the local file's bytes.
fn assert_markers_have_their_objects(wal_dir: &Path, archive: &Archive) {
    let rt = runtime();
    for marker in markers(wal_dir).into_iter().filter(|name| !name.starts_with('.')) {
        let local = std::fs::read(wal_dir.join(&marker)).expect("marked segment");
        let archived = rt.block_on(archived_content(archive, &marker));
        assert!(archived.as_deref() == Some(local.as_slice()), "{marker} is marked archived but is not");
    }
}

/// Waits until no pusher holds the lock of `wal_dir` (it exits once idle).
fn wait_for_pusher_exit(wal_dir: &Path) {
    let spool = pgec2_agent::wal::spool::Spool::new(wal_dir);
    wal_common::wait_for("the pusher to exit", Duration::from_secs(60), || !spool.pusher_running());
}

/// `log` without its terminal colour sequences (`ESC [ ... m`).
fn without_colours(log: &str) -> String {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn the_pusher_keeps_both_slots_busy_and_postgres_calls_are_answered_from_its_markers() {
    let agent = async_agent();
    let cluster = cluster_archived_after_a_backlog(&agent, 10);
    let archive = runtime().block_on(agent.archive());
    assert!(assert_done_files_archived_intact(&cluster, &archive) >= 10);

    let log = without_colours(&std::fs::read_to_string(&cluster.log_file).expect("server log"));
    assert!(log.contains("pushing ahead") && log.contains("in_flight=2"), "never two pushes in flight at once");
    let answered = log.matches("already stored ahead with identical content").count();
    assert!(answered >= 8, "only {answered} of 10 calls were answered from a marker");
}

#[test]
fn only_one_pusher_runs_per_pg_wal_and_it_pushes_every_ready_file() {
    let agent = async_agent();
    let (cluster, _) = cluster_with_ready_segments(&agent, 6);
    let wal_dir = cluster.data_dir.join("pg_wal");
    let ready = ready_files(&wal_dir);
    let start = || {
        let mut command = agent_command(&agent, &["wal-push-ahead", "pg_wal"], &cluster.data_dir);
        command.stderr(std::process::Stdio::piped()).spawn().expect("spawn wal-push-ahead")
    };
    let (first, second) = (start(), start());
    let logs: Vec<String> = [first, second]
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("wait");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8_lossy(&output.stderr).into_owned()
        })
        .collect();
    let stood_aside = logs.iter().filter(|log| log.contains("another pusher runs for this pg_wal")).count();
    assert_eq!(stood_aside, 1, "exactly one of two pushers must run: {logs:?}");
    let archive = runtime().block_on(agent.archive());
    let marked = markers(&wal_dir);
    for file in &ready {
        assert!(marked.contains(file), "{file} was ready but not pushed ahead");
    }
    assert_markers_have_their_objects(&wal_dir, &archive);
}

#[test]
fn a_wal_push_whose_pusher_is_killed_mid_push_pushes_the_file_itself_and_leaves_no_false_marker() {
    let agent = async_agent();
    let (cluster, wal_dir, first, last) = backlog(&agent, 6);
    let spool = pgec2_agent::wal::spool::Spool::new(&wal_dir);
    let archive = runtime().block_on(agent.archive());
    for delay_ms in [0u64, 20, 60, 150] {
        wait_for_pusher_exit(&wal_dir);
        let _ = std::fs::remove_dir_all(wal_dir.join(SPOOL_DIR));
        let push = agent_command(&agent, &["wal-push", &format!("pg_wal/{first}")], &cluster.data_dir);
        let mut push = push_spawn(push);
        wal_common::wait_for("the pusher to start", Duration::from_secs(30), || spool.pusher_pid().is_some());
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = spool.pusher_pid().expect("the pusher's pid");
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        let status = push.wait().expect("wait for wal-push");
        assert!(status.success(), "wal-push failed after its pusher was killed at {delay_ms} ms");
        let archived = runtime().block_on(archived_content(&archive, &first));
        let local = std::fs::read(wal_dir.join(&first)).expect("segment");
        assert!(archived.as_deref() == Some(local.as_slice()), "{first} answered 0 but is not archived intact");
        assert_markers_have_their_objects(&wal_dir, &archive);
    }
    start_archiving(&cluster, &agent);
    wait_until_archived(&cluster, &last);
    assert!(assert_done_files_archived_intact(&cluster, &archive) >= 6);
}

fn push_spawn(mut command: std::process::Command) -> std::process::Child {
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    command.spawn().expect("spawn wal-push")
}

#[test]
fn a_pusher_that_finds_the_store_failing_fails_the_wal_push_with_the_stores_error() {
    use std::os::unix::fs::PermissionsExt;
    let agent = async_agent();
    let (cluster, _) = cluster_with_ready_segments(&agent, 3);
    let wal_dir = cluster.data_dir.join("pg_wal");
    let first = ready_files(&wal_dir).first().expect("a ready segment").clone();
    let archive_dir = agent.scratch.path().join("archive");
    std::fs::set_permissions(&archive_dir, std::fs::Permissions::from_mode(0o555)).expect("chmod archive");

    let output = agent_command(&agent, &["wal-push", &format!("pg_wal/{first}")], &cluster.data_dir)
        .output()
        .expect("run wal-push");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "wal-push answered 0 while the store refuses every write");
    let error = stderr.lines().find(|line| line.starts_with("error: ")).unwrap_or_default();
    assert!(error.contains(&first) && error.contains("ermission denied"), "not the store's error: {stderr}");
    assert!(!markers(&wal_dir).contains(&first), "a marker for a file the store refused");

    std::fs::set_permissions(&archive_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod archive");
    let output = agent_command(&agent, &["wal-push", &format!("pg_wal/{first}")], &cluster.data_dir)
        .output()
        .expect("run wal-push");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    wait_for_pusher_exit(&wal_dir);
}
