//! The agent commands the operator sends, as values. Each renders the argv that follows
//! `pgec2-agent --config FILE`; [`crate::shell`] quotes it once for the host's `sh`. The agent's
//! clap definition (`crates/agent/src/cli.rs`) is checked against these types: a test parses
//! every variant with the agent's real parser and compares the values it gets.
//!
//! | command | stdout (one JSON document, see [`crate::output`]) |
//! |---|---|
//! | `host apply SPEC` | `HostReport` (`pgec2_core::host_spec`) |
//! | `backup-push --json [--permanent] [--incremental] [--annotation K=V]…` | `BackupInfo` (`pgec2_core::catalog`) |
//! | `archive-status --json` | `ArchiverStatus` (`pgec2_core::archiver`) |
//! | `wal-receive --slot S --spool DIR --partial-interval N` | none: a long-running service |
//! | `wal-receive --status --json --spool DIR` | `StreamStatus` (`pgec2_core::stream_status`) |

use crate::annotation::Annotation;

/// A command the operator runs with the agent on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCommand {
    HostApply(HostApply),
    BackupPush(BackupPush),
    ArchiveStatus(ArchiveStatus),
    WalReceive(WalReceive),
    WalReceiveStatus(WalReceiveStatus),
}

/// `host apply SPEC`: converge the host to the HostSpec in SPEC; prints a `HostReport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostApply {
    /// Path of the HostSpec JSON on the host.
    pub spec: String,
}

/// `backup-push --json`: take a base backup; prints the backup's `BackupInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupPush {
    /// Pin the backup (retention never deletes it).
    pub permanent: bool,
    /// Notes recorded in the backup's commit record, in order.
    pub annotations: Vec<Annotation>,
    /// A snapshot backup (`--method snapshot`): the operator snapshots the data volume while
    /// the agent holds the backup open.
    pub snapshot: bool,
    /// An incremental backup (`--incremental`) on the newest backup: only the blocks changed
    /// since it started; the agent takes a full backup when the chain is at its maximum length.
    pub incremental: bool,
}

/// `archive-status --json`: the state of continuous archiving; prints an `ArchiverStatus`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStatus;

/// `wal-receive`: stream WAL from a physical replication slot into the archive; runs until
/// stopped (the host's service manager starts it, as `ExecStart`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalReceive {
    /// The physical replication slot (created when missing).
    pub slot: String,
    /// The spool directory (the segment being received and `status.json`).
    pub spool: String,
    /// Seconds between uploads of the segment being filled: about the recovery point's lag.
    pub partial_interval_seconds: u64,
}

/// `wal-receive --status --json`: the running receiver's state; prints a `StreamStatus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalReceiveStatus {
    /// The spool directory of the receiver asked about.
    pub spool: String,
}

impl AgentCommand {
    /// The arguments after `pgec2-agent --config FILE`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            AgentCommand::HostApply(HostApply { spec }) => vec!["host".into(), "apply".into(), spec.clone()],
            AgentCommand::BackupPush(BackupPush { permanent, annotations, snapshot, incremental }) => {
                let mut argv = vec!["backup-push".to_string(), "--json".to_string()];
                if *permanent {
                    argv.push("--permanent".into());
                }
                if *snapshot {
                    argv.extend(["--method".to_string(), "snapshot".to_string()]);
                }
                if *incremental {
                    argv.push("--incremental".into());
                }
                for annotation in annotations {
                    argv.extend(["--annotation".to_string(), annotation.to_string()]);
                }
                argv
            }
            AgentCommand::ArchiveStatus(ArchiveStatus) => vec!["archive-status".into(), "--json".into()],
            AgentCommand::WalReceive(WalReceive { slot, spool, partial_interval_seconds }) => vec![
                "wal-receive".into(),
                "--slot".into(),
                slot.clone(),
                "--spool".into(),
                spool.clone(),
                "--partial-interval".into(),
                partial_interval_seconds.to_string(),
            ],
            AgentCommand::WalReceiveStatus(WalReceiveStatus { spool }) => {
                vec!["wal-receive".into(), "--status".into(), "--json".into(), "--spool".into(), spool.clone()]
            }
        }
    }

    /// The command's name as its first words say it, for messages (`backup-push`, `host apply`).
    pub fn name(&self) -> &'static str {
        match self {
            AgentCommand::HostApply(_) => "host apply",
            AgentCommand::BackupPush(_) => "backup-push",
            AgentCommand::ArchiveStatus(_) => "archive-status",
            AgentCommand::WalReceive(_) => "wal-receive",
            AgentCommand::WalReceiveStatus(_) => "wal-receive --status",
        }
    }
}

impl From<HostApply> for AgentCommand {
    fn from(command: HostApply) -> Self {
        AgentCommand::HostApply(command)
    }
}

impl From<BackupPush> for AgentCommand {
    fn from(command: BackupPush) -> Self {
        AgentCommand::BackupPush(command)
    }
}

impl From<ArchiveStatus> for AgentCommand {
    fn from(command: ArchiveStatus) -> Self {
        AgentCommand::ArchiveStatus(command)
    }
}

impl From<WalReceive> for AgentCommand {
    fn from(command: WalReceive) -> Self {
        AgentCommand::WalReceive(command)
    }
}

impl From<WalReceiveStatus> for AgentCommand {
    fn from(command: WalReceiveStatus) -> Self {
        AgentCommand::WalReceiveStatus(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_push_asks_for_json_and_repeats_the_annotation_flag() {
        let annotations = vec![
            Annotation::new("pgec2.io/schedule-tick", "2026-01-01T03:00:00Z").expect("annotation"),
            Annotation::new("pgec2.io/backup-request", "a=b c").expect("annotation"),
        ];
        let command =
            AgentCommand::from(BackupPush { permanent: true, annotations, snapshot: false, incremental: false });
        assert_eq!(
            command.argv(),
            [
                "backup-push",
                "--json",
                "--permanent",
                "--annotation",
                "pgec2.io/schedule-tick=2026-01-01T03:00:00Z",
                "--annotation",
                "pgec2.io/backup-request=a=b c"
            ]
        );
        let incremental = AgentCommand::from(BackupPush { incremental: true, ..BackupPush::default() });
        assert_eq!(incremental.argv(), ["backup-push", "--json", "--incremental"]);
    }
}
