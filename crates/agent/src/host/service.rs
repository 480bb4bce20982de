//! Running PostgreSQL: pgec2's own systemd unit in the ec2 profile (`pgec2-postgresql.service`,
//! the unit PostgreSQL's documentation gives: Type=notify, KillMode=mixed, SIGINT), `pg_ctl`
//! as the OS user in the local profile (log in `<mountPath>/postgresql.log`).
//!
//! A stopped server is started. A running one is reloaded when its configuration files
//! changed, then restarted only if a changed parameter needs it (`pg_settings.pending_restart`)
//! or its unit changed; the report says which parameters.

use std::path::Path;
use std::time::{Duration, Instant};

use pgec2_contract::output::tail;
use pgec2_core::host_spec::{HostSpec, Profile};

use super::command::Cmd;
use super::postgres::Server;
use super::{Done, StepError, files};

/// pgec2's systemd unit.
pub const UNIT_NAME: &str = "pgec2-postgresql.service";
const UNIT_DIRECTORY: &str = "/etc/systemd/system";
/// How long a start or restart may take before the step reports "still starting".
const START_WAIT: Duration = Duration::from_secs(600);

/// Renders the systemd unit for the spec.
pub fn render_unit(spec: &HostSpec) -> String {
    let version = spec.postgres_version;
    let data = spec.data_directory.display();
    let postgres = spec.bin_directory().join("postgres");
    let mut unit = format!(
        "# Managed by pgec2-agent host apply for {host}: edits are overwritten.\n\
         [Unit]\n\
         Description=PostgreSQL {version} for {host} (pgec2)\n\
         Documentation=https://www.postgresql.org/docs/{version}/server-start.html\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         RequiresMountsFor={data}\n\
         \n\
         [Service]\n\
         Type=notify\n\
         User={user}\n\
         ExecStart={postgres} -D {data}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         KillMode=mixed\n\
         KillSignal=SIGINT\n\
         TimeoutSec=infinity\n\
         OOMScoreAdjust=-900\n\
         Environment=PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj\n\
         Environment=PG_OOM_ADJUST_VALUE=0\n",
        host = spec.host,
        user = spec.os_user,
        postgres = postgres.display(),
    );
    let socket = spec.socket_directory();
    if let Ok(relative) = socket.strip_prefix("/run").or_else(|_| socket.strip_prefix("/var/run")) {
        unit.push_str(&format!(
            "RuntimeDirectory={}\nRuntimeDirectoryMode=2775\nRuntimeDirectoryPreserve=yes\n",
            relative.display()
        ));
    }
    unit.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    unit
}

/// What changed earlier in this run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Changes {
    /// postgresql.conf, conf.d, pg_hba.conf or the TLS files.
    pub config: bool,
}

/// Starts, reloads or restarts the server so it runs with the files on disk.
pub async fn converge(spec: &HostSpec, server: &Server, changes: Changes) -> Result<Done, StepError> {
    let manager = match spec.profile {
        Profile::Ec2 => Manager::Systemd,
        Profile::Local => Manager::PgCtl { log_file: spec.log_file() },
    };
    let unit_changed = match manager {
        Manager::Systemd => install_unit(spec).await?,
        Manager::PgCtl { .. } => false,
    };
    if !manager.running(server).await? {
        return manager.start(server).await;
    }
    if unit_changed {
        return manager.restart(server, "the service unit changed").await;
    }
    if changes.config {
        let before = server.conf_load_time().await?;
        manager.reload(server).await?;
        server.wait_for_reload(before).await?;
    }
    let pending = server.pending_restart().await?;
    if !pending.is_empty() {
        return manager.restart(server, &format!("{} need a restart", pending.join(", "))).await;
    }
    Ok(if changes.config { Done::changed("reloaded the configuration") } else { Done::unchanged("running") })
}

/// Writes and enables the unit; true when the unit file changed.
async fn install_unit(spec: &HostSpec) -> Result<bool, StepError> {
    let path = Path::new(UNIT_DIRECTORY).join(UNIT_NAME);
    let changed = files::write_file(&path, render_unit(spec).as_bytes(), 0o644, None)?;
    if changed {
        Cmd::new("systemctl").arg("daemon-reload").run().await?;
    }
    let enabled = Cmd::new("systemctl").args(["is-enabled", UNIT_NAME]).output().await?;
    if enabled.stdout.trim() != "enabled" {
        Cmd::new("systemctl").args(["enable", UNIT_NAME]).run().await?;
    }
    Ok(changed)
}

enum Manager {
    Systemd,
    PgCtl { log_file: std::path::PathBuf },
}

impl Manager {
    async fn running(&self, server: &Server) -> Result<bool, StepError> {
        match self {
            Manager::Systemd => {
                let state = Cmd::new("systemctl").args(["is-active", UNIT_NAME]).output().await?;
                Ok(matches!(state.stdout.trim(), "active" | "activating" | "reloading"))
            }
            Manager::PgCtl { .. } => {
                let status = server.tool("pg_ctl").arg("status").arg("-D").arg(&server.data_directory).output().await?;
                Ok(status.status.success())
            }
        }
    }

    async fn start(&self, server: &Server) -> Result<Done, StepError> {
        match self {
            Manager::Systemd => {
                Cmd::new("systemctl").args(["start", "--no-block", UNIT_NAME]).run().await?;
                self.wait_until_up(server, "started").await
            }
            Manager::PgCtl { log_file } => {
                let start = server
                    .tool("pg_ctl")
                    .args(["start", "-w", "-t", &START_WAIT.as_secs().to_string(), "-D"])
                    .arg(&server.data_directory)
                    .arg("-l")
                    .arg(log_file)
                    .timeout(START_WAIT + Duration::from_secs(30));
                match start.run().await {
                    Ok(_) => Ok(Done::changed("started")),
                    Err(error) if self.running(server).await? => {
                        Ok(Done::changed(format!("started, still starting up (recovery in progress?): {error}")))
                    }
                    Err(error) => Err(did_not_start(server, &format!(": {error}"), &self.log_tail().await)),
                }
            }
        }
    }

    async fn restart(&self, server: &Server, reason: &str) -> Result<Done, StepError> {
        match self {
            Manager::Systemd => {
                Cmd::new("systemctl").args(["restart", "--no-block", UNIT_NAME]).run().await?;
                self.wait_until_up(server, &format!("restarted: {reason}")).await
            }
            Manager::PgCtl { log_file } => {
                let restart = server
                    .tool("pg_ctl")
                    .args(["restart", "-w", "-m", "fast", "-t", &START_WAIT.as_secs().to_string(), "-D"])
                    .arg(&server.data_directory)
                    .arg("-l")
                    .arg(log_file)
                    .timeout(START_WAIT + Duration::from_secs(30));
                restart
                    .run()
                    .await
                    .map_err(|error| StepError::Postgres(format!("postgresql did not restart ({reason}): {error}")))?;
                Ok(Done::changed(format!("restarted: {reason}")))
            }
        }
    }

    async fn reload(&self, server: &Server) -> Result<(), StepError> {
        match self {
            Manager::Systemd => Cmd::new("systemctl").args(["reload", UNIT_NAME]).run().await?,
            Manager::PgCtl { .. } => {
                server.tool("pg_ctl").arg("reload").arg("-D").arg(&server.data_directory).run().await?
            }
        };
        Ok(())
    }

    /// Polls systemd until the unit is active (Type=notify: PostgreSQL accepts connections).
    async fn wait_until_up(&self, server: &Server, what: &str) -> Result<Done, StepError> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let state = Cmd::new("systemctl").args(["is-active", UNIT_NAME]).output().await?;
            match state.stdout.trim() {
                "active" => return Ok(Done::changed(what)),
                "failed" | "inactive" => {
                    return Err(did_not_start(server, "", &self.log_tail().await));
                }
                _ if Instant::now() >= deadline => {
                    let accepting = server.accepting().await;
                    return Ok(Done::changed(format!(
                        "{what}, still starting up (accepting connections: {accepting})"
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The end of the server log, for a failed start.
    async fn log_tail(&self) -> String {
        match self {
            Manager::Systemd => {
                let journal = Cmd::new("journalctl").args(["-u", UNIT_NAME, "-n", "20", "--no-pager", "-o", "cat"]);
                journal.output().await.map(|finished| tail(&finished.stdout)).unwrap_or_default()
            }
            Manager::PgCtl { log_file } => tail(&std::fs::read_to_string(log_file).unwrap_or_default()),
        }
    }
}

/// A failed start; when `wal-fetch` stopped archive recovery (a hole in the archive), its
/// message comes first: the log's end may not reach back to it.
fn did_not_start(server: &Server, detail: &str, log_tail: &str) -> StepError {
    let stopped = crate::wal::failure_note::read(&server.data_directory)
        .map(|message| format!(": archive recovery stopped: {message}"))
        .unwrap_or_default();
    StepError::Postgres(format!("postgresql did not start{stopped}{detail}\n{log_tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::test_support::spec;

    #[test]
    fn the_unit_runs_postgres_as_the_os_user_once_the_volume_is_mounted() {
        let mut spec = spec();
        spec.profile = Profile::Ec2;
        let unit = render_unit(&spec);
        assert!(unit.contains("ExecStart=/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main\n"));
        assert!(unit.contains("User=postgres\n"));
        assert!(
            unit.contains("Type=notify\n") && unit.contains("KillMode=mixed\n") && unit.contains("KillSignal=SIGINT\n")
        );
        assert!(unit.contains("RequiresMountsFor=/var/lib/postgresql/15/main\n"));
        assert!(
            unit.contains("RuntimeDirectory=postgresql\nRuntimeDirectoryMode=2775\nRuntimeDirectoryPreserve=yes\n")
        );
        assert!(unit.ends_with("WantedBy=multi-user.target\n"));
    }

    #[test]
    fn a_socket_outside_run_gets_no_runtime_directory() {
        let mut spec = spec();
        spec.socket_directory = Some("/var/lib/postgresql/run".into());
        assert!(!render_unit(&spec).contains("RuntimeDirectory"));
    }
}
