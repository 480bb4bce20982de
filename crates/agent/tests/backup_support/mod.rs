//! Fixtures for the backup, restore and retention tests, on top of `wal_common`: an archiving
//! primary with pgbench tables, running backup commands as PostgreSQL's user with the
//! connection in the environment, restoring, starting the restored copy, and comparing table
//! contents.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pgec2_core::catalog::{self, BackupInfo};
use pgec2_testkit::{PgCluster, as_postgres};

pub mod in_process;

use crate::wal_common::{
    Agent, COMMAND_DEADLINE, run_with_deadline, runtime, switch_segment, wait_for, wait_until_archived,
};

/// An archiving primary (PostgreSQL 15, data checksums, file archive by default) with
/// pgbench tables at scale 1.
pub struct Primary {
    pub agent: Agent,
    pub cluster: PgCluster,
}

impl Primary {
    pub fn start() -> Self {
        Self::start_with(Agent::with_file_archive())
    }

    pub fn start_with(agent: Agent) -> Self {
        let mut cluster = agent.archiving_cluster("primary", &["checkpoint_timeout = 30min", "max_wal_size = 1GB"]);
        cluster.server_env = agent.env.clone();
        cluster.start().expect("start primary");
        cluster.run_tool("pgbench", &["-i", "-q", "-s", "1"]).expect("pgbench -i");
        Self { agent, cluster }
    }

    /// The environment that points the agent at this cluster.
    pub fn connection_env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".to_string(), self.cluster.socket_dir.display().to_string()),
            ("PGPORT".to_string(), self.cluster.port.to_string()),
            ("PGUSER".to_string(), "postgres".to_string()),
            ("PGDATABASE".to_string(), "postgres".to_string()),
        ]
    }

    /// Runs the agent as the postgres user with this cluster's connection settings.
    pub fn agent(&self, args: &[&str]) -> Output {
        run_agent(&self.agent, args, &self.connection_env(), true)
    }

    /// `backup-push --json`; returns the commit record.
    pub fn backup(&self) -> BackupInfo {
        let data_dir = self.cluster.data_dir.display().to_string();
        let output = self.agent(&["backup-push", "--json", "--pgdata", &data_dir]);
        assert_success("backup-push", &output);
        serde_json::from_slice(&output.stdout).expect("backup-push --json prints the commit record")
    }

    /// `backup-push --json --incremental` (on the latest backup); returns the commit record.
    pub fn incremental(&self) -> BackupInfo {
        let data_dir = self.cluster.data_dir.display().to_string();
        let output = self.agent(&["backup-push", "--json", "--incremental", "--pgdata", &data_dir]);
        assert_success("backup-push --incremental", &output);
        serde_json::from_slice(&output.stdout).expect("backup-push --json prints the commit record")
    }

    /// The stored manifest of backup `name`.
    pub fn manifest(&self, name: &str) -> pgec2_core::manifest::BackupManifest {
        let rt = runtime();
        let archive = rt.block_on(self.agent.archive());
        rt.block_on(catalog::read_manifest(&archive, name)).expect("read manifest")
    }

    /// Switches to a new segment and waits until the completed one is archived.
    pub fn archive_current_wal(&self) {
        wait_until_archived(&self.cluster, &switch_segment(&self.cluster));
    }

    /// Commits batch `batch` and waits until the segment holding it is archived.
    pub fn commit_and_archive(&self, batch: i32) -> Mark {
        let mark = commit_batch(&self.cluster, batch);
        self.archive_current_wal();
        mark
    }

    /// `backup-fetch` into `<scratch>/<name>/data` as the postgres user.
    pub fn restore(&self, name: &str, backup: &str, target: &[&str]) -> (PathBuf, Output) {
        let dest = self.agent.scratch.subdir(name).expect("restore parent").join("data");
        let mut args = vec!["backup-fetch", dest.to_str().expect("utf-8 path"), backup];
        args.extend_from_slice(target);
        let output = run_agent(&self.agent, &args, &[], true);
        (dest, output)
    }

    /// Restores `backup` with `target`, starts the copy and waits until it has left recovery.
    pub fn restore_and_start(&self, name: &str, backup: &str, target: &[&str]) -> PgCluster {
        let (dest, output) = self.restore(name, backup, target);
        assert_success("backup-fetch", &output);
        start_restored(&self.agent, name, &dest)
    }

    /// Like [`Primary::restore_and_start`] for a copy that only looks at the data (backup-fetch's
    /// default `--archive-mode off`: it adds nothing to the primary's archive).
    pub fn restore_copy(&self, name: &str, backup: &str, target: &[&str]) -> PgCluster {
        self.restore_and_start(name, backup, target)
    }

    /// The archive's committed backups.
    pub fn backups(&self) -> Vec<BackupInfo> {
        let rt = runtime();
        let archive = rt.block_on(self.agent.archive());
        rt.block_on(catalog::scan_backups(&archive)).expect("scan backups").committed
    }
}

/// The agent's configuration connecting to `cluster`, for commands run in the test's process.
pub fn agent_config(agent: &Agent, cluster: &PgCluster) -> pgec2_agent::config::AgentConfig {
    let socket = cluster.socket_dir.display().to_string();
    let port = cluster.port.to_string();
    pgec2_agent::config::AgentConfig::load_with(Some(&agent.config), Path::new("/nonexistent"), &|name| match name {
        "PGHOST" => Some(socket.clone()),
        "PGPORT" => Some(port.clone()),
        "PGUSER" => Some("postgres".to_string()),
        "PGDATABASE" => Some("postgres".to_string()),
        _ => None,
    })
    .expect("load config")
}

/// Runs the agent with `env` (as postgres when `as_postgres_user`, else as the test's user).
pub fn run_agent(agent: &Agent, args: &[&str], env: &[(String, String)], as_postgres_user: bool) -> Output {
    run_with_deadline(agent_command(agent, args, env, as_postgres_user), COMMAND_DEADLINE * 2)
}

/// The agent's command line with a clean environment plus `env`, not started.
pub fn agent_command(agent: &Agent, args: &[&str], env: &[(String, String)], as_postgres_user: bool) -> Command {
    let mut command = if as_postgres_user { as_postgres(&agent.binary) } else { Command::new(&agent.binary) };
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--config")
        .arg(&agent.config)
        .args(args)
        .current_dir(agent.scratch.path());
    for (name, value) in agent.env.iter().chain(env) {
        command.env(name, value);
    }
    command
}

pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Starts a restored data directory and waits until recovery ended (promotion). The server
/// gets the agent's environment (credentials for the store), as when started from the shell
/// that ran backup-fetch: restore_command names no credentials.
pub fn start_restored(agent: &Agent, name: &str, dest: &Path) -> PgCluster {
    let mut cluster = PgCluster::existing(&agent.scratch, &format!("{name}-run"), dest).expect("restored cluster");
    cluster.server_env = agent.env.clone();
    cluster.start().expect("start the restored cluster");
    wait_for(&format!("{name} to finish recovery"), Duration::from_secs(120), || {
        cluster.psql("SELECT pg_is_in_recovery()").map(|answer| answer == "f").unwrap_or(false)
    });
    cluster
}

/// Every user table's rows, hashed in a stable order: equal maps mean equal contents.
pub fn table_digests(cluster: &PgCluster) -> BTreeMap<String, String> {
    let tables = cluster
        .psql("SELECT string_agg(quote_ident(relname), ' ' ORDER BY relname) FROM pg_stat_user_tables")
        .expect("list tables");
    tables
        .split_whitespace()
        .map(|table| {
            let sql = format!(
                "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"
            );
            (table.to_string(), cluster.psql(&sql).expect("digest table"))
        })
        .collect()
}

/// Where the primary was right after a batch committed.
pub struct Mark {
    pub time: String,
    pub lsn: String,
    pub xid: String,
    pub restore_point: String,
}

/// Commits batch `batch` (100 rows in one transaction) and records where it ended.
pub fn commit_batch(cluster: &PgCluster, batch: i32) -> Mark {
    let xid = cluster
        .psql(&format!("BEGIN; INSERT INTO batches (batch) SELECT {batch} FROM generate_series(1, 100); SELECT txid_current(); COMMIT;"))
        .expect("commit batch");
    let restore_point = format!("after-batch-{batch}");
    let row = cluster
        .psql(&format!(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    pg_current_wal_insert_lsn(), pg_create_restore_point('{restore_point}')"
        ))
        .expect("mark");
    let fields: Vec<&str> = row.split('|').collect();
    Mark {
        time: fields[0].to_string(),
        lsn: fields[1].to_string(),
        xid: xid.lines().find(|line| line.parse::<u64>().is_ok()).expect("txid_current() in the output").to_string(),
        restore_point,
    }
}

/// The rows of `batches` (id, batch) as a sorted list of batch numbers present.
pub fn batches_present(cluster: &PgCluster) -> Vec<i32> {
    let text = cluster
        .psql("SELECT coalesce(string_agg(DISTINCT batch::text, ',' ORDER BY batch::text), '') FROM batches")
        .expect("batches");
    let mut batches: Vec<i32> =
        text.split(',').filter(|item| !item.is_empty()).map(|item| item.parse().expect("batch")).collect();
    batches.sort_unstable();
    batches
}
