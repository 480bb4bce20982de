//! Fixtures shared by the WAL tests: the agent installed where PostgreSQL can run it, a
//! configuration file the postgres user can read, archiving clusters, and polling helpers.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pgec2_agent::config::AgentConfig;
use pgec2_core::envelope;
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_storage_s3::{S3Settings, S3Storage};
use pgec2_testkit::{MotoServer, PgCluster, PgOptions, Scratch, as_postgres};

/// How long one agent invocation may take in a test before it counts as hung.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// The agent binary installed into a scratch directory, with its configuration file.
pub struct Agent {
    pub scratch: Scratch,
    pub binary: PathBuf,
    pub config: PathBuf,
    /// Environment the agent needs besides the file (e.g. AWS credentials for moto).
    pub env: Vec<(String, String)>,
    /// Whether archive_command and restore_command repeat `env` (else the server must have it).
    pub env_in_commands: bool,
}

impl Agent {
    /// An agent archiving to `<scratch>/archive` (file backend) with zstd.
    pub fn with_file_archive() -> Self {
        let scratch = Scratch::new().expect("scratch");
        let archive = scratch.subdir("archive").expect("archive dir");
        let config = format!(
            "[storage]\nurl = \"file://{}\"\n\n[compression]\nalgorithm = \"zstd\"\nlevel = 3\n",
            archive.display()
        );
        Self::with_config(scratch, &config, Vec::new())
    }

    /// An agent with the given TOML configuration and extra environment.
    pub fn with_config(scratch: Scratch, toml: &str, env: Vec<(String, String)>) -> Self {
        let binary = scratch.install_binary(Path::new(env!("CARGO_BIN_EXE_pgec2-agent"))).expect("install agent");
        let config = scratch.path().join("agent.toml");
        std::fs::write(&config, toml).expect("write config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod config");
        Self { scratch, binary, config, env, env_in_commands: true }
    }

    /// The agent's command line as PostgreSQL runs it, `env` assignments first.
    fn command_line(&self, args: &str) -> String {
        let repeated = if self.env_in_commands { self.env.as_slice() } else { &[] };
        let env: String = repeated.iter().map(|(name, value)| format!("{name}={value} ")).collect();
        let prefix = if env.is_empty() { String::new() } else { format!("env {env}") };
        format!("{prefix}{} --config {} {args}", self.binary.display(), self.config.display())
    }

    /// `archive_command` for postgresql.conf.
    pub fn archive_command(&self) -> String {
        format!("archive_command = '{}'", self.command_line("wal-push %p"))
    }

    /// `restore_command` for postgresql.conf.
    pub fn restore_command(&self) -> String {
        format!("restore_command = '{}'", self.command_line("wal-fetch %f %p"))
    }

    /// Runs the agent as the postgres user in `cwd` with a clean environment.
    pub fn run(&self, args: &[&str], cwd: &Path) -> Output {
        let mut command = as_postgres(&self.binary);
        command.env_clear().env("PATH", "/usr/bin:/bin").arg("--config").arg(&self.config).args(args).current_dir(cwd);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        run_with_deadline(command, COMMAND_DEADLINE)
    }

    /// The archive, opened in-process through the same configuration.
    pub async fn archive(&self) -> Archive {
        let config = AgentConfig::load_with(Some(&self.config), Path::new("/nonexistent"), &|name| {
            self.env.iter().find(|(env, _)| env == name).map(|(_, value)| value.clone())
        })
        .expect("load config");
        config.storage().await.expect("open archive")
    }

    /// A cluster (initdb'd, not started) whose archive_command is this agent.
    pub fn archiving_cluster(&self, name: &str, extra: &[&str]) -> PgCluster {
        let mut config =
            vec!["wal_level = replica".to_string(), "archive_mode = on".to_string(), self.archive_command()];
        config.extend(extra.iter().map(|line| line.to_string()));
        PgCluster::init(&self.scratch, name, &PgOptions { data_checksums: true, config }).expect("initdb")
    }
}

/// An agent storing in `s3://<bucket>/pgec2`, archive `prefix`, through `endpoint` (moto itself
/// or a proxy in front of it); `extra` is appended to the `[storage]` section (and may open
/// further sections).
pub fn s3_agent(moto: &MotoServer, bucket: &str, prefix: &str, endpoint: &str, extra: &str) -> Agent {
    let config = format!(
        "[storage]\nurl = \"s3://{bucket}/pgec2\"\nprefix = \"{prefix}\"\nendpoint = \"{endpoint}\"\n\
         region = \"us-east-1\"\n{extra}"
    );
    let env =
        moto.env().into_iter().filter(|(name, _)| name.starts_with("AWS_")).map(|(n, v)| (n.to_string(), v)).collect();
    Agent::with_config(Scratch::new().expect("scratch"), &config, env)
}

/// The archive an [`s3_agent`] writes, read straight from moto (past any proxy).
pub async fn direct_s3_archive(moto: &MotoServer, bucket: &str, prefix: &str) -> Archive {
    let settings = S3Settings { endpoint: Some(moto.endpoint()), ..S3Settings::new(bucket, "pgec2") };
    let storage = S3Storage::from_sdk_config(&moto.sdk_config().await, settings).expect("s3 store");
    Archive::new(std::sync::Arc::new(storage), ArchiveLayout::under(prefix).expect("layout"))
}

/// The archive at a storage URL (no prefix), opened in-process.
pub async fn archive_at(url: &str) -> Archive {
    let text = format!("[storage]\nurl = \"{url}\"\n");
    let config = AgentConfig::from_file_text(Path::new("archive.toml"), &text).expect("storage url");
    config.storage().await.expect("open archive")
}

/// Runs `command`, killing it and failing the test when it outlives `deadline`.
pub fn run_with_deadline(mut command: Command, deadline: Duration) -> Output {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("spawn agent");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(deadline) {
        Ok(output) => output.expect("wait for agent"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{command:?} did not finish within {deadline:?}");
        }
    }
}

/// Polls `done` until it is true, failing the test after `timeout` with `what`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The content of an archived WAL file (envelope opened and verified), `None` when absent.
pub async fn archived_content(archive: &Archive, file: &str) -> Option<Vec<u8>> {
    let key = archive.layout.wal_file(file).expect("key");
    match archive.storage.get(&key).await {
        Ok(stored) => Some(envelope::open(&stored).expect("archived object verifies").0),
        Err(error) if error.is_not_found() => None,
        Err(error) => panic!("reading {file}: {error}"),
    }
}

/// The raw stored bytes of an archived WAL file.
pub async fn stored_bytes(archive: &Archive, file: &str) -> Vec<u8> {
    let key = archive.layout.wal_file(file).expect("key");
    archive.storage.get(&key).await.expect("stored object").to_vec()
}

/// Names of WAL files PostgreSQL has marked archived (`archive_status/*.done`).
pub fn done_files(cluster: &PgCluster) -> Vec<String> {
    let status = cluster.data_dir.join("pg_wal").join("archive_status");
    let mut names: Vec<String> = std::fs::read_dir(&status)
        .expect("archive_status")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".done").map(str::to_string))
        .collect();
    names.sort();
    names
}

/// `pg_stat_archiver`'s (archived_count, failed_count, last_archived_wal).
pub fn archiver_stats(cluster: &PgCluster) -> (u64, u64, String) {
    let row = cluster
        .psql("SELECT archived_count, failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        .expect("pg_stat_archiver");
    let mut fields = row.split('|');
    let mut number = || fields.next().expect("field").parse::<u64>().expect("count");
    let (archived, failed) = (number(), number());
    (archived, failed, row.rsplit('|').next().unwrap_or_default().to_string())
}

/// Forces a segment switch (after writing something, so there is a segment to switch from) and
/// returns the name of the segment that was completed.
pub fn switch_segment(cluster: &PgCluster) -> String {
    cluster
        .psql("CREATE TABLE IF NOT EXISTS switch_marker (n int); INSERT INTO switch_marker VALUES (1)")
        .expect("write before switch");
    cluster.psql("SELECT pg_walfile_name(pg_switch_wal())").expect("pg_switch_wal")
}

/// Waits until PostgreSQL reports `segment` archived.
pub fn wait_until_archived(cluster: &PgCluster, segment: &str) {
    wait_for(&format!("{segment} to be archived"), Duration::from_secs(60), || {
        let (_, _, last) = archiver_stats(cluster);
        !last.is_empty() && last.as_str() >= segment
    });
}

/// A blocking runtime for the async archive helpers in synchronous tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A small segment-shaped file of cluster `system_identifier`: a valid long page header for
/// segment `number` (16 MiB segments, timeline 1), then filler that differs per segment.
pub fn synthetic_segment(system_identifier: u64, number: u64) -> Vec<u8> {
    let mut page = vec![0u8; 64 * 1024];
    page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    page[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    page[4..8].copy_from_slice(&1u32.to_le_bytes());
    page[8..16].copy_from_slice(&(number << 24).to_le_bytes());
    page[24..32].copy_from_slice(&system_identifier.to_le_bytes());
    page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    page[36..40].copy_from_slice(&8192u32.to_le_bytes());
    for (index, byte) in page.iter_mut().enumerate().skip(40) {
        *byte = (index as u64 * 31 + number) as u8;
    }
    page
}

/// The name of segment `number` on timeline 1 (16 MiB segments).
pub fn segment_name(number: u64) -> String {
    format!("00000001000000000000{number:04X}")
}

/// A started cluster with archive_mode on and no archive_command yet (WAL piles up as ready),
/// holding `segments` completed segments; returns the cluster and their names, oldest first.
pub fn cluster_with_ready_segments(agent: &Agent, segments: usize) -> (PgCluster, Vec<String>) {
    let mut cluster = PgCluster::init(
        &agent.scratch,
        "primary",
        &PgOptions {
            data_checksums: true,
            config: vec!["wal_level = replica".into(), "archive_mode = on".into(), "archive_command = ''".into()],
        },
    )
    .expect("initdb");
    cluster.start().expect("start");
    let ready = (0..segments).map(|_| switch_segment(&cluster)).collect();
    (cluster, ready)
}

/// Sets the running cluster's archive_command to this agent's.
pub fn start_archiving(cluster: &PgCluster, agent: &Agent) {
    let line = agent.archive_command();
    let command = line.trim_start_matches("archive_command = '").trim_end_matches('\'').replace('\'', "''");
    cluster.psql(&format!("ALTER SYSTEM SET archive_command = '{command}'")).expect("set archive_command");
    cluster.psql("SELECT pg_reload_conf()").expect("reload");
}
