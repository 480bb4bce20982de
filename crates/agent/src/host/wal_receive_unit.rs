//! Step `wal-receive`: WAL streaming as a service beside PostgreSQL (ec2 profile), when the
//! spec's archive asks for it (`archive.walReceive`). The unit runs `pgec2-agent wal-receive`
//! ([`HostSpec::wal_receive_argv`], the one definition of its command line) as the OS user with
//! the host's own agent configuration, restarts it whenever it exits, and keeps its spool in
//! `/var/lib/pgec2-wal-receive` (systemd's StateDirectory). Turning streaming off stops and
//! disables the unit and drops its slot, so the slot holds no WAL. In the local profile the
//! operator's local cloud runs the same command line as a process.

use std::path::Path;

use pgec2_contract::shell;
use pgec2_core::host_spec::{HostSpec, Profile, WAL_RECEIVE_SLOT};

use super::command::Cmd;
use super::postgres::Server;
use super::{Done, FileError, StepError, files};

/// The unit's name.
pub const UNIT_NAME: &str = "pgec2-wal-receive.service";
/// The slot the service streams from.
pub const SLOT: &str = WAL_RECEIVE_SLOT;
const UNIT_DIRECTORY: &str = "/etc/systemd/system";

/// Renders the unit for the spec.
pub fn render_unit(spec: &HostSpec) -> String {
    let command = spec.wal_receive_argv().iter().map(|word| shell::word(word).unwrap_or_default()).collect::<Vec<_>>();
    let environment =
        spec.wal_receive_environment().iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>();
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
         Environment={environment}\n\
         StateDirectory=pgec2-wal-receive\n\
         Restart=always\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        host = spec.host,
        user = spec.os_user,
        command = command.join(" "),
        environment = environment.join(" "),
    )
}

/// Installs and runs the unit when wanted; stops it, disables it and drops its slot otherwise.
pub async fn converge(spec: &HostSpec, server: &Server) -> Result<Done, StepError> {
    if spec.profile == Profile::Local {
        return Ok(Done::skipped("local profile: the local cloud runs wal-receive beside PostgreSQL"));
    }
    let path = Path::new(UNIT_DIRECTORY).join(UNIT_NAME);
    if !spec.streams_wal() {
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
}
