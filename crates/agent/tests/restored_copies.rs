//! Restored copies and their archives, on real PostgreSQL 15: a copy restored by hand never
//! writes into its source's archive (default `--archive-mode off`), a copy given a new archive
//! archives there, `wal-push` refuses another branch's timeline, and nothing the restore writes
//! holds a credential.

mod backup_support;
mod wal_common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use backup_support::{Primary, agent_command, assert_success, run_agent, start_restored, stderr, table_digests};
use pgec2_core::catalog::BackupInfo;
use pgec2_core::layout::Archive;
use pgec2_testkit::{PgCluster, as_postgres};
use wal_common::{
    Agent, COMMAND_DEADLINE, archive_at, run_with_deadline, runtime, switch_segment, wait_until_archived,
};

/// Every key of an archive, sorted, except leases: a restore holds a lease in the archive it
/// reads (`leases/<id>.json`, so retention keeps what it needs) by design; nothing else of a
/// copy may appear in its source's archive.
fn keys(archive: &Archive) -> Vec<String> {
    let mut keys: Vec<String> = runtime()
        .block_on(archive.storage.list(""))
        .expect("list the archive")
        .into_iter()
        .map(|meta| meta.key.to_string())
        .filter(|key| !key.starts_with("leases/"))
        .collect();
    keys.sort();
    keys
}

/// Runs the agent as postgres with `config` instead of the agent's own file.
fn agent_with_config(agent: &Agent, config: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = as_postgres(&agent.binary);
    command.env_clear().env("PATH", "/usr/bin:/bin").arg("--config").arg(config).args(args);
    command.current_dir(agent.scratch.path()).envs(agent.env.iter().chain(env).cloned());
    run_with_deadline(command, COMMAND_DEADLINE * 2)
}

/// The name of the newest backup of the primary's archive, quoted as JSON.
fn latest_backup(primary: &Primary) -> String {
    let output = run_agent(&primary.agent, &["backup-list", "--json"], &[], true);
    assert_success("backup-list", &output);
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    listed.as_array().and_then(|all| all.last()).map(|last| last["name"].to_string()).unwrap_or_default()
}

/// Writes on the copy, switches segments and gives an archiver time to act.
fn write_on(copy: &PgCluster) -> String {
    copy.psql("CREATE TABLE written_on_the_copy AS SELECT generate_series(1, 1000) AS n").expect("write on the copy");
    let segment = switch_segment(copy);
    copy.psql("CHECKPOINT").expect("checkpoint");
    segment
}

/// A primary with one backup and its WAL archived; its archive and the keys it holds.
fn primary_with_a_backup() -> (Primary, BackupInfo, Archive, Vec<String>) {
    let primary = Primary::start();
    let backup = primary.backup();
    primary.archive_current_wal();
    let source = runtime().block_on(primary.agent.archive());
    let before = keys(&source);
    (primary, backup, source, before)
}

#[test]
fn a_promoted_copy_restored_by_hand_adds_nothing_to_its_source_s_archive() {
    let (primary, backup, source, before) = primary_with_a_backup();

    let (dest, output) = primary.restore("by-hand", "LATEST", &[]);
    assert_success("backup-fetch", &output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("archiving off"), "the summary says archiving is off");
    let copy = start_restored(&primary.agent, "by-hand", &dest);
    assert_eq!(copy.psql("SHOW archive_mode").expect("archive_mode"), "off");
    assert_eq!(copy.psql("SELECT timeline_id FROM pg_control_checkpoint()").expect("timeline"), "2");
    write_on(&copy);
    std::thread::sleep(Duration::from_secs(3));

    let added: Vec<String> = keys(&source).into_iter().filter(|key| !before.contains(key)).collect();
    assert!(added.is_empty(), "the copy wrote into its source's archive: {added:?}");
    assert_eq!(latest_backup(&primary), format!("\"{}\"", backup.name));
}

#[test]
fn a_copy_with_a_new_archive_archives_there_and_its_source_s_stays_as_it_was() {
    let (primary, backup, source, before) = primary_with_a_backup();
    let new_archive = primary.agent.scratch.subdir("copy-archive").expect("new archive");
    let url = format!("file://{}", new_archive.display());

    let (dest, output) = primary.restore("new-archive", "LATEST", &["--archive-mode", &url]);
    assert_success("backup-fetch", &output);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains(&format!("archiving into the new archive {url}")), "{summary}");
    let copy = start_restored(&primary.agent, "new-archive", &dest);
    assert_eq!(copy.psql("SHOW archive_mode").expect("archive_mode"), "on");
    let segment = write_on(&copy);
    wait_until_archived(&copy, &segment);
    let copy_env = vec![
        ("PGHOST".to_string(), copy.socket_dir.display().to_string()),
        ("PGPORT".to_string(), copy.port.to_string()),
        ("PGUSER".to_string(), "postgres".to_string()),
        ("PGDATABASE".to_string(), "postgres".to_string()),
    ];
    let data_dir = copy.data_dir.display().to_string();
    let config = copy.data_dir.join("pgec2-agent-archive.toml");
    let pushed = agent_with_config(&primary.agent, &config, &["backup-push", "--pgdata", &data_dir], &copy_env);
    assert_success("backup-push of the copy into its own archive", &pushed);

    let added: Vec<String> = keys(&source).into_iter().filter(|key| !before.contains(key)).collect();
    assert!(added.is_empty(), "the copy wrote into its source's archive: {added:?}");
    assert_eq!(latest_backup(&primary), format!("\"{}\"", backup.name), "the source's LATEST moved");
    let theirs = keys(&runtime().block_on(archive_at(&url)));
    for expected in ["cluster.json", "wal/00000002.history", &format!("wal/{segment}")] {
        assert!(theirs.iter().any(|key| key == expected), "{expected} is not in the new archive: {theirs:?}");
    }
    assert!(theirs.iter().any(|key| key.ends_with("/complete.json")), "the copy's backup is in its own archive");
    let refused = primary.restore("same-archive", "LATEST", &["--archive-mode", &url]).1;
    assert!(stderr(&refused).contains("already used by a cluster"), "{}", stderr(&refused));
}

#[test]
fn wal_push_refuses_a_timeline_of_another_branch() {
    let primary = Primary::start();
    primary.backup();
    primary.archive_current_wal();
    let start = primary.cluster.psql("SELECT pg_current_wal_lsn()").expect("lsn");
    primary.cluster.run_tool("pgbench", &["-n", "-c", "1", "-t", "200"]).expect("pgbench");
    primary.archive_current_wal();
    let new_archive = primary.agent.scratch.subdir("shared-archive").expect("new archive");
    let url = format!("file://{}", new_archive.display());
    // Copy A: to the end of the archive, archiving its timeline 2 into the new archive.
    let first = primary.restore_copy("first", "LATEST", &["--archive-mode", &url]);
    wait_until_archived(&first, &write_on(&first));
    // Copy B: to an earlier point, promoted; its own timeline 2 branches elsewhere.
    let second = primary.restore_copy("second", "LATEST", &["--target-lsn", &start, "--target-action", "promote"]);
    second.psql("CREATE TABLE on_the_second_copy AS SELECT 1 AS n").expect("write");
    let segment = switch_segment(&second);
    let config = primary.agent.scratch.path().join("shared-archive.toml");
    std::fs::write(&config, format!("[storage]\nurl = \"{url}\"\n")).expect("point a config at the new archive");
    let push = |file: &str| {
        let path = second.data_dir.join("pg_wal").join(file);
        agent_with_config(&primary.agent, &config, &["wal-push", &path.display().to_string()], &[])
    };
    let history = push("00000002.history");
    assert!(!history.status.success(), "a different 00000002.history was accepted");
    assert!(stderr(&history).contains("refusing to overwrite"), "{}", stderr(&history));
    let refused = push(&segment);
    assert!(!refused.status.success(), "a segment of another branch's timeline 2 was accepted");
    assert!(
        stderr(&refused).contains("the archive's 00000002.history differs from this cluster's"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_restore_holds_no_credentials_and_recovers_with_those_of_its_environment() {
    let moto = pgec2_testkit::MotoServer::start().expect("moto server");
    // The primary's own archive_command names no credentials either: its server has them.
    runtime().block_on(moto.create_bucket("pgec2-backups")).expect("create bucket");
    let mut agent = wal_common::s3_agent(&moto, "pgec2-backups", "default/copies", &moto.endpoint(), "");
    agent.env_in_commands = false;
    let primary = Primary::start_with(agent);
    primary.backup();
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    // Storage settings and credentials only in the environment, no configuration file.
    let session_token = "FwoGZXIvYXdzEPj//////////session-token-for-the-test";
    let secret = primary.agent.env.iter().find(|(name, _)| name == "AWS_SECRET_ACCESS_KEY").expect("secret").1.clone();
    let dest = primary.agent.scratch.subdir("no-credentials").expect("parent").join("data");
    let mut env = primary.agent.env.clone();
    env.extend([
        ("AWS_SESSION_TOKEN".to_string(), session_token.to_string()),
        ("PGEC2_STORAGE_URL".to_string(), "s3://pgec2-backups/pgec2".to_string()),
        ("PGEC2_S3_ENDPOINT".to_string(), moto.endpoint()),
        ("PGEC2_STORAGE_PREFIX".to_string(), "default/copies".to_string()),
    ]);
    let mut command = as_postgres(&primary.agent.binary);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().cloned())
        .current_dir(primary.agent.scratch.path());
    command.args(["backup-fetch", &dest.display().to_string(), "LATEST"]);
    let output = run_with_deadline(command, COMMAND_DEADLINE * 2);
    assert_success("backup-fetch with settings in the environment", &output);

    for entry in walkdir::WalkDir::new(&dest) {
        let entry = entry.expect("entry");
        if !entry.file_type().is_file() {
            continue;
        }
        let content = std::fs::read(entry.path()).expect("read");
        let text = String::from_utf8_lossy(&content);
        assert!(!text.contains(&secret), "{} holds AWS_SECRET_ACCESS_KEY", entry.path().display());
        assert!(!text.contains(session_token), "{} holds AWS_SESSION_TOKEN", entry.path().display());
    }
    let auto_conf = std::fs::read_to_string(dest.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(auto_conf.contains("--config pgec2-agent-source.toml wal-fetch %f %p"), "{auto_conf}");
    let written = std::fs::read_to_string(dest.join("pgec2-agent-source.toml")).expect("source config");
    assert!(written.contains("s3://pgec2-backups/pgec2") && written.contains(&moto.endpoint()), "{written}");

    // The server gets the credentials in its environment only; the storage settings come from
    // the written configuration file.
    let credentials: Vec<(String, String)> = env.iter().filter(|(name, _)| name.starts_with("AWS_")).cloned().collect();
    let mut started = PgCluster::existing(&primary.agent.scratch, "no-credentials-run", &dest).expect("cluster");
    started.server_env = credentials;
    started.start().expect("start the restored copy");
    wal_common::wait_for("recovery to end", Duration::from_secs(120), || {
        started.psql("SELECT pg_is_in_recovery()").map(|answer| answer == "f").unwrap_or(false)
    });
    assert_eq!(table_digests(&started), expected, "the copy recovered every row through restore_command");
}

#[test]
fn a_killed_restore_is_cleaned_up_by_the_next_one() {
    use std::os::unix::fs::FileTypeExt;
    let primary = Primary::start();
    let backup = primary.backup();
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);
    // The last part becomes a pipe nobody writes: the restore blocks there, half done.
    let parts = primary.agent.scratch.path().join("archive/backups").join(&backup.name).join("parts");
    let mut names: Vec<_> =
        std::fs::read_dir(&parts).expect("parts").map(|entry| entry.expect("part").path()).collect();
    names.sort();
    let last = names.last().expect("a part").clone();
    let saved = std::fs::read(&last).expect("read part");
    std::fs::remove_file(&last).expect("remove part");
    nix::unistd::mkfifo(&last, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");

    let dest = primary.agent.scratch.subdir("killed").expect("parent").join("data");
    let mut child = agent_command(&primary.agent, &["backup-fetch", &dest.display().to_string(), "LATEST"], &[], true)
        .spawn()
        .expect("start backup-fetch");
    wal_common::wait_for("the restore to start writing", Duration::from_secs(60), || {
        dest.join("pgec2-restore-incomplete").exists() && dest.join("PG_VERSION").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("kill backup-fetch");
    child.wait().expect("reap");
    assert!(dest.join("pgec2-restore-incomplete").exists() && !dest.join("global/pg_control").exists());

    assert!(std::fs::symlink_metadata(&last).expect("fifo").file_type().is_fifo());
    std::fs::remove_file(&last).expect("remove fifo");
    std::fs::write(&last, saved).expect("put the part back");
    let (_, output) = primary.restore("killed", "LATEST", &[]);
    assert_success("backup-fetch after a killed one", &output);
    assert!(stderr(&output).contains("removed an interrupted restore"), "{}", stderr(&output));
    let restored = start_restored(&primary.agent, "killed", &dest);
    assert_eq!(table_digests(&restored), expected);
    assert!(!Path::new(&dest.join("pgec2-restore-incomplete")).exists());
}
