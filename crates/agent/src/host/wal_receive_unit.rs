//! Step `wal-receive`: WAL streaming as a service beside PostgreSQL (ec2 profile), when the
//! spec's archive asks for it (`archive.walReceive`). The unit runs `pgec2-agent wal-receive`
//! as the OS user with the host's own agent configuration, restarts it whenever it exits, and
//! keeps its spool in `/var/lib/pgec2-wal-receive` (systemd's StateDirectory). Turning streaming
//! off stops and disables the unit and drops its slot, so the slot holds no WAL.

use std::path::Path;

use pgec2_core::host_spec::{HostSpec, Profile};

use super::command::Cmd;
use super::postgres::Server;
use super::render_conf::agent_command;
use super::{Done, FileError, StepError, files};

/// The unit's name.
pub const UNIT_NAME: &str = "pgec2-wal-receive.service";
/// The slot the service streams from.
pub const SLOT: &str = "pgec2_wal_receive";
const UNIT_DIRECTORY: &str = "/etc/systemd/system";
pub(crate) const SPOOL: &str = "/var/lib/pgec2-wal-receive";

/// Renders the unit for the spec.
pub fn render_unit(spec: &HostSpec) -> String {
    let command = agent_command(
        &spec.agent_binary,
        &spec.agent_config_path,
        &format!("wal-receive --slot {SLOT} --spool {SPOOL} --partial-interval 2"),
    );
    format!(
        "# Managed by pgec2-agent host apply for {host}: edits are overwritten.\n\
         [Unit]\n\
         Description=pgec2 WAL streaming into the archive for {host}\n\
         After=pgec2-postgresql.service network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         User={user}\n\
         ExecStart={command}\n\
         Environment=PGHOST={socket} PGPORT={port} PGUSER={user} PGDATABASE=postgres PGDATA={data}\n\
         StateDirectory=pgec2-wal-receive\n\
         Restart=always\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        host = spec.host,
        user = spec.os_user,
        socket = spec.socket_directory().display(),
        port = spec.port,
        data = spec.data_directory.display(),
    )
}

/// Whether the spec asks for streaming: archiving on, streaming on, not a standby.
pub fn wanted(spec: &HostSpec) -> bool {
    spec.archive.as_ref().is_some_and(|archive| archive.wal_receive) && !spec.standby
}

/// Installs and runs the unit when wanted; stops it, disables it and drops its slot otherwise.
pub async fn converge(spec: &HostSpec, server: &Server) -> Result<Done, StepError> {
    if spec.profile == Profile::Local {
        return Ok(Done::skipped("local profile: run `pgec2-agent wal-receive` yourself to stream WAL"));
    }
    let path = Path::new(UNIT_DIRECTORY).join(UNIT_NAME);
    if !wanted(spec) {
        if !path.exists() {
            return Ok(Done::skipped("streaming is off"));
        }
        Cmd::new("systemctl").args(["disable", "--now", UNIT_NAME]).run().await?;
        std::fs::remove_file(&path).map_err(|source| FileError { action: "remove", path: path.clone(), source })?;
        Cmd::new("systemctl").arg("daemon-reload").run().await?;
        let drop =
            format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{SLOT}'");
        server.psql(&drop).await?;
        return Ok(Done::changed(format!("stopped {UNIT_NAME} and dropped slot {SLOT}")));
    }
    let changed = files::write_file(&path, render_unit(spec).as_bytes(), 0o644, None)?;
    if changed {
        Cmd::new("systemctl").arg("daemon-reload").run().await?;
    }
    Cmd::new("systemctl").args(["enable", UNIT_NAME]).run().await?;
    let verb = if changed { "restart" } else { "start" };
    Cmd::new("systemctl").args([verb, UNIT_NAME]).run().await?;
    Ok(if changed { Done::changed(format!("{UNIT_NAME} installed and started")) } else { Done::unchanged("running") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::test_support::spec;

    #[test]
    fn the_unit_streams_as_the_os_user_with_the_hosts_own_configuration() {
        let mut spec = spec();
        spec.profile = Profile::Ec2;
        let unit = render_unit(&spec);
        assert!(
            unit.contains(
                "ExecStart=/opt/pgec2/pgec2-agent --config /etc/pgec2/agent.toml wal-receive --slot pgec2_wal_receive \
             --spool /var/lib/pgec2-wal-receive --partial-interval 2\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("User=postgres\n") && unit.contains("Restart=always\n"), "{unit}");
        assert!(unit.contains("PGHOST=/var/run/postgresql PGPORT=5432 "), "{unit}");
        assert!(unit.contains("PGDATA=/var/lib/postgresql/15/main\n"), "{unit}");
    }

    #[test]
    fn streaming_runs_only_when_the_archive_asks_for_it_and_never_on_a_standby() {
        let mut spec = spec();
        assert!(!wanted(&spec), "off by default");
        spec.archive.as_mut().expect("archive").wal_receive = true;
        assert!(wanted(&spec));
        spec.standby = true;
        assert!(!wanted(&spec), "a standby archives nothing of its own");
        spec.standby = false;
        spec.archive = None;
        assert!(!wanted(&spec));
    }
}
