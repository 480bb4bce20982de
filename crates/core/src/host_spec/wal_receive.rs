//! WAL streaming beside PostgreSQL (`archive.walReceive`): the one definition of the
//! `pgec2-agent wal-receive` process a host runs, whoever runs it: `host apply` writes it into
//! the systemd unit `pgec2-wal-receive.service` in the ec2 profile, the operator's local cloud
//! runs it as a process beside the host's PostgreSQL in the local profile.

use std::path::PathBuf;

use pgec2_contract::command::{AgentCommand, WalReceive};

use super::{HostSpec, Profile};

/// The physical replication slot the receiver streams from.
pub const WAL_RECEIVE_SLOT: &str = "pgec2_wal_receive";
/// Seconds between uploads of the segment being received: about the recovery point's lag.
pub const WAL_RECEIVE_PARTIAL_INTERVAL_SECONDS: u64 = 2;
/// The spool in the ec2 profile (the unit's `StateDirectory`).
pub const EC2_WAL_RECEIVE_SPOOL: &str = "/var/lib/pgec2-wal-receive";
/// The spool's directory name beside the agent configuration in the local profile.
const LOCAL_WAL_RECEIVE_SPOOL: &str = "wal-receive";

impl HostSpec {
    /// Whether the host streams WAL: archiving on with `walReceive`, and not a standby (a
    /// standby archives nothing of its own).
    pub fn streams_wal(&self) -> bool {
        self.archive.as_ref().is_some_and(|archive| archive.wal_receive) && !self.standby
    }

    /// The receiver's spool (the segment being received and `status.json`), outside the data
    /// volume: `/var/lib/pgec2-wal-receive` (ec2), `<agent configuration directory>/wal-receive`
    /// (local).
    pub fn wal_receive_spool(&self) -> PathBuf {
        match self.profile {
            Profile::Ec2 => PathBuf::from(EC2_WAL_RECEIVE_SPOOL),
            Profile::Local => self.config_directory().join(LOCAL_WAL_RECEIVE_SPOOL),
        }
    }

    /// The receiver's command line: `<agentBinary> --config <agentConfigPath> wal-receive …`.
    pub fn wal_receive_argv(&self) -> Vec<String> {
        let command = AgentCommand::from(WalReceive {
            slot: WAL_RECEIVE_SLOT.to_string(),
            spool: self.wal_receive_spool().to_string_lossy().into_owned(),
            partial_interval_seconds: WAL_RECEIVE_PARTIAL_INTERVAL_SECONDS,
        });
        let mut argv = vec![
            self.agent_binary.to_string_lossy().into_owned(),
            "--config".to_string(),
            self.agent_config_path.to_string_lossy().into_owned(),
        ];
        argv.extend(command.argv());
        argv
    }

    /// The receiver's environment: libpq's variables for the server over its Unix socket as the
    /// OS user, and `PGDATA`.
    pub fn wal_receive_environment(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".to_string(), self.socket_directory().to_string_lossy().into_owned()),
            ("PGPORT".to_string(), self.port.to_string()),
            ("PGUSER".to_string(), self.os_user.clone()),
            ("PGDATABASE".to_string(), "postgres".to_string()),
            ("PGDATA".to_string(), self.data_directory.to_string_lossy().into_owned()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_spec::tests::local_spec;

    #[test]
    fn the_local_receiver_spools_beside_its_configuration_and_streams_from_the_pgec2_slot() {
        let mut spec = local_spec();
        spec.archive.as_mut().expect("archive").wal_receive = true;
        let config = spec.config_directory();
        assert_eq!(spec.wal_receive_spool(), config.join("wal-receive"));
        let argv = spec.wal_receive_argv();
        assert_eq!(argv[1..3], ["--config".to_string(), spec.agent_config_path.to_string_lossy().into_owned()]);
        assert_eq!(
            argv[3..],
            [
                "wal-receive",
                "--slot",
                WAL_RECEIVE_SLOT,
                "--spool",
                &config.join("wal-receive").to_string_lossy(),
                "--partial-interval",
                "2"
            ]
        );
        let environment = spec.wal_receive_environment();
        assert!(environment.contains(&("PGPORT".to_string(), spec.port.to_string())), "{environment:?}");
    }

    #[test]
    fn streaming_runs_only_when_the_archive_asks_for_it_and_never_on_a_standby() {
        let mut spec = local_spec();
        assert!(!spec.streams_wal(), "off by default");
        spec.archive.as_mut().expect("archive").wal_receive = true;
        assert!(spec.streams_wal());
        spec.standby = true;
        assert!(!spec.streams_wal(), "a standby archives nothing of its own");
        spec.standby = false;
        spec.archive = None;
        assert!(!spec.streams_wal());
    }
}
