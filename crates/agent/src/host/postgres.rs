//! Talking to the host's PostgreSQL: psql over the Unix socket as the OS user (peer
//! authentication), `postgres -C` to check configuration files before a server reads them,
//! and the facts the operator puts in status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgec2_core::host_spec::{HostSpec, PostgresFacts};

use super::StepError;
use super::command::{Cmd, CommandError, OsUser};

/// How long a reload may take to reach the postmaster.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// The host's server: where its programs, data and socket are.
#[derive(Clone, Debug)]
pub struct Server {
    pub bin_directory: PathBuf,
    pub data_directory: PathBuf,
    pub socket_directory: PathBuf,
    pub port: u16,
    pub user: OsUser,
}

impl Server {
    pub fn new(spec: &HostSpec, user: OsUser) -> Self {
        Self {
            bin_directory: spec.bin_directory(),
            data_directory: spec.data_directory.clone(),
            socket_directory: spec.socket_directory(),
            port: spec.port,
            user,
        }
    }

    /// A PostgreSQL program, run as the OS user.
    pub fn tool(&self, name: &str) -> Cmd {
        Cmd::new(self.bin_directory.join(name)).run_as(&self.user)
    }

    /// Runs SQL and returns the unaligned, tab-separated rows.
    pub async fn psql(&self, sql: &str) -> Result<String, CommandError> {
        self.tool("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\t", "-d", "postgres", "-U"])
            .arg(&self.user.name)
            .arg("-h")
            .arg(&self.socket_directory)
            .args(["-p", &self.port.to_string(), "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .run()
            .await
    }

    /// True when the server accepts connections.
    pub async fn accepting(&self) -> bool {
        self.psql("SELECT 1").await.is_ok()
    }

    /// Checks the configuration files the way the server will read them (`postgres -C`, which
    /// fails on an unknown parameter or an invalid value, naming it). Works on a running server.
    pub async fn check_config(&self) -> Result<(), CommandError> {
        self.tool("postgres").args(["-C", "data_directory", "-D"]).arg(&self.data_directory).run().await.map(|_| ())
    }

    /// Errors PostgreSQL finds in pg_hba.conf as it is on disk now (running server only).
    pub async fn hba_errors(&self) -> Result<Vec<String>, CommandError> {
        let rows = self
            .psql("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL ORDER BY line_number")
            .await?;
        Ok(rows.lines().map(|row| row.replacen('\t', ": ", 1)).collect())
    }

    /// When the server last loaded its configuration, in microseconds since the epoch.
    pub async fn conf_load_time(&self) -> Result<i64, StepError> {
        let text = self.psql("SELECT (extract(epoch FROM pg_conf_load_time()) * 1000000)::bigint").await?;
        text.trim().parse().map_err(|_| StepError::Postgres(format!("unexpected pg_conf_load_time {text:?}")))
    }

    /// Waits until new sessions see a configuration loaded after `before` (a reload is
    /// asynchronous: the postmaster handles SIGHUP, then forks sessions with the new values).
    pub async fn wait_for_reload(&self, before: i64) -> Result<(), StepError> {
        let deadline = Instant::now() + RELOAD_WAIT;
        while self.conf_load_time().await? <= before {
            if Instant::now() >= deadline {
                return Err(StepError::Postgres(format!(
                    "the server did not reload its configuration within {} s",
                    RELOAD_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Parameters changed in the files that only a restart applies. Recovery targets are left
    /// out: they act only during archive recovery, so resetting them on a primary (the promote
    /// step does) is no reason to restart it.
    pub async fn pending_restart(&self) -> Result<Vec<String>, CommandError> {
        let rows = self
            .psql("SELECT name FROM pg_settings WHERE pending_restart AND name NOT LIKE 'recovery\\_target%' ORDER BY name")
            .await?;
        Ok(rows.lines().map(str::to_string).filter(|name| !name.is_empty()).collect())
    }

    /// Version, system identifier, timeline and recovery state of the running server.
    pub async fn facts(&self) -> Result<PostgresFacts, StepError> {
        let row = self.psql(FACTS_QUERY).await?;
        parse_facts(&row, self)
            .ok_or_else(|| StepError::Postgres(format!("unexpected answer to the facts query: {row:?}")))
    }
}

/// One row: version, version number, in recovery, system identifier, timeline. A primary's
/// timeline is its current WAL file's; a server in recovery reports its last checkpoint's.
const FACTS_QUERY: &str = "SELECT current_setting('server_version'), current_setting('server_version_num'), \
     pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system()), \
     CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";

fn parse_facts(row: &str, server: &Server) -> Option<PostgresFacts> {
    let fields: Vec<&str> = row.trim_end_matches('\n').split('\t').collect();
    let [version, version_num, in_recovery, system_identifier, timeline] = fields.as_slice() else { return None };
    Some(PostgresFacts {
        version: version.to_string(),
        version_num: version_num.parse().ok()?,
        system_identifier: system_identifier.parse::<u64>().ok()?.to_string(),
        timeline: timeline.parse().ok()?,
        port: server.port,
        data_directory: server.data_directory.clone(),
        socket_directory: server.socket_directory.clone(),
        in_recovery: match *in_recovery {
            "t" => true,
            "f" => false,
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        Server {
            bin_directory: "/usr/lib/postgresql/15/bin".into(),
            data_directory: "/var/lib/postgresql/15/main".into(),
            socket_directory: "/var/run/postgresql".into(),
            port: 5432,
            user: OsUser { name: "postgres".into(), uid: 0, gid: 0, home: "/".into() },
        }
    }

    #[test]
    fn the_facts_row_becomes_the_status_facts() {
        let row = "15.8 (Debian 15.8-0+deb12u1)\t150008\tf\t7423925014283857944\t2\n";
        let facts = parse_facts(row, &server()).expect("parsed");
        assert_eq!(facts.version, "15.8 (Debian 15.8-0+deb12u1)");
        assert_eq!(facts.version_num, 150008);
        assert_eq!(facts.system_identifier, "7423925014283857944");
        assert_eq!(facts.timeline, 2);
        assert!(!facts.in_recovery);
        assert_eq!(facts.port, 5432);
    }

    #[test]
    fn a_malformed_facts_row_is_rejected() {
        assert!(parse_facts("15.8\t150008\tmaybe\t1\t1", &server()).is_none());
        assert!(parse_facts("15.8\t150008", &server()).is_none());
    }
}
