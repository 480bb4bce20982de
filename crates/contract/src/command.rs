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
//! | `drill-check --json [--amcheck [--heapallindexed]] [--sql DB=SQL]… --recovery-timeout N` | `DrillCheckReport` (`pgec2_core::drill_check`) |

use crate::annotation::Annotation;

/// A command the operator runs with the agent on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCommand {
    HostApply(HostApply),
    BackupPush(BackupPush),
    ArchiveStatus(ArchiveStatus),
    WalReceive(WalReceive),
    WalReceiveStatus(WalReceiveStatus),
    DrillCheck(DrillCheck),
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

/// `drill-check --json`: on a restore drill's copy, wait until recovery has finished, then run
/// the checks; prints a `DrillCheckReport`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrillCheck {
    /// Run `pg_amcheck` on every database (creating the amcheck extension where missing).
    pub amcheck: bool,
    /// With `amcheck`: also check that every heap tuple has its index entries.
    pub heapallindexed: bool,
    /// SQL checks, in order: each passes when the first column of its first row is true.
    pub sql: Vec<SqlCheck>,
    /// Seconds to wait for recovery to finish before reporting that it did not.
    pub recovery_timeout_seconds: u64,
}

/// One SQL check of [`DrillCheck`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlCheck {
    /// The database it runs in (no `=`: the API's pattern allows none).
    pub database: String,
    pub sql: String,
}

impl SqlCheck {
    /// `DATABASE=SQL` as the `--sql` option carries it.
    pub fn to_argument(&self) -> String {
        format!("{}={}", self.database, self.sql)
    }

    /// Reads `DATABASE=SQL` (split at the first `=`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some((database, sql)) if !database.is_empty() && !sql.trim().is_empty() => {
                Ok(Self { database: database.to_string(), sql: sql.to_string() })
            }
            _ => Err(format!("{text:?} is not DATABASE=SQL with a database name and a query")),
        }
    }
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
            AgentCommand::DrillCheck(DrillCheck { amcheck, heapallindexed, sql, recovery_timeout_seconds }) => {
                let mut argv = vec!["drill-check".to_string(), "--json".to_string()];
                if *amcheck {
                    argv.push("--amcheck".into());
                }
                if *heapallindexed {
                    argv.push("--heapallindexed".into());
                }
                for check in sql {
                    argv.extend(["--sql".to_string(), check.to_argument()]);
                }
                argv.extend(["--recovery-timeout".to_string(), recovery_timeout_seconds.to_string()]);
                argv
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
            AgentCommand::DrillCheck(_) => "drill-check",
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

impl From<DrillCheck> for AgentCommand {
    fn from(command: DrillCheck) -> Self {
        AgentCommand::DrillCheck(command)
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

    #[test]
    fn a_sql_check_round_trips_through_its_argument_and_splits_at_the_first_equals_sign() {
        let check = SqlCheck { database: "shop".into(), sql: "SELECT 'a=b' = 'a=b'".into() };
        assert_eq!(SqlCheck::parse(&check.to_argument()), Ok(check));
        assert!(SqlCheck::parse("=SELECT true").is_err());
        assert!(SqlCheck::parse("shop=  ").is_err());
        assert!(SqlCheck::parse("SELECT true").is_err());
    }
}
