//! The agent's command line. This is a contract (archive_command, restore_command, cron lines
//! and the operator depend on it): add to it, never change what exists.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use pgec2_contract::annotation::Annotation;
use pgec2_contract::command::SqlCheck;
use pgec2_contract::recovery::RecoveryTarget;

/// pgec2-agent: backups, WAL archiving, restores and host setup for one PostgreSQL host.
///
/// Configuration comes from a TOML file (--config, $PGEC2_CONFIG, default /etc/pgec2/agent.toml)
/// and environment variables that override it: PGEC2_STORAGE_URL (s3://bucket/prefix or
/// file:///abs/dir), PGEC2_S3_ENDPOINT, PGEC2_COMPRESSION (zstd|lz4|none),
/// PGEC2_COMPRESSION_LEVEL, PGEC2_UPLOAD_CONCURRENCY, PGEC2_DOWNLOAD_CONCURRENCY, AWS_* and
/// libpq's PGHOST, PGPORT, PGUSER, PGDATABASE, and PGDATA.
///
/// Exit status is 0 only on success; errors are printed on stderr, the first line saying what
/// failed, on which object, and what to do.
#[derive(Debug, Parser)]
#[command(name = "pgec2-agent", version, about, long_about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "PGEC2_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive one WAL file: archive_command = 'pgec2-agent wal-push %p'.
    WalPush(WalPushArgs),
    /// Restore one WAL file: restore_command = 'pgec2-agent wal-fetch %f %p'.
    /// Exit 0 fetched, 1 not in the archive (its end), 255 during archive recovery for a missing
    /// segment that is not the end (a hole) or an error, so PostgreSQL stops; other = error.
    WalFetch(WalFetchArgs),
    /// Stream WAL from a physical replication slot into the archive (a long-running service):
    /// complete segments as wal-push stores them, the segment being filled as `<segment>.partial`
    /// every few seconds. `--status` prints the running receiver's state instead.
    WalReceive(WalReceiveArgs),
    /// Download the WAL segments after AFTER into a prefetch directory (started by wal-fetch).
    #[command(hide = true)]
    WalPrefetch(WalPrefetchArgs),
    /// Push every ready WAL file of a data directory ahead of PostgreSQL asking (started by
    /// wal-push with transfer.archive_async).
    #[command(hide = true)]
    WalPushAhead(WalPushAheadArgs),
    /// Take a base backup of the running cluster.
    BackupPush(BackupPushArgs),
    /// Restore a base backup into an empty directory, ready for `pg_ctl start`.
    BackupFetch(Box<BackupFetchArgs>),
    /// Prepare, in place, a data directory on a volume created from a snapshot backup's volume
    /// snapshot: backup_label, recovery settings and signal file, so `pg_ctl start` recovers.
    SnapshotRestore(Box<SnapshotRestoreArgs>),
    /// List committed backups, oldest first; damaged entries are named on stderr.
    BackupList(BackupListArgs),
    /// Pin a backup so retention keeps it (or unpin it with --undo).
    BackupMark(BackupMarkArgs),
    /// Delete old backups and the WAL only they need (dry run unless --confirm).
    Delete(DeleteArgs),
    /// Re-read every object of a backup and check its checksums.
    BackupVerify(BackupVerifyArgs),
    /// Check WAL continuity from the oldest kept backup to the newest archived segment.
    WalVerify(JsonArgs),
    /// Report the state of continuous archiving: pg_stat_archiver and the WAL files waiting.
    ArchiveStatus(JsonArgs),
    /// Report what a wal-g archive would let pgec2 restore: backups, WAL continuity, gaps.
    /// Exit 0 when the newest wal-g backup and all WAL after it are there, 2 otherwise.
    ImportCheck(ImportCheckArgs),
    /// On a restore drill's copy: wait until recovery has finished, then run pg_amcheck and SQL
    /// checks; prints what was found (exit 0 whenever the report could be made).
    DrillCheck(DrillCheckArgs),
    /// Converge this host to a HostSpec (idempotent); prints a JSON report.
    #[command(subcommand)]
    Host(HostCommand),
    /// Inspect the agent's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DrillCheckArgs {
    /// Print JSON (a DrillCheckReport) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Run pg_amcheck on every database (creating the amcheck extension where missing).
    #[arg(long)]
    pub amcheck: bool,
    /// With --amcheck: also check that every heap tuple has its index entries.
    #[arg(long, requires = "amcheck")]
    pub heapallindexed: bool,
    /// A SQL check (repeatable): passes when the first column of the first row it returns is
    /// true, e.g. `shop=SELECT count(*) > 0 FROM orders`.
    #[arg(long = "sql", value_name = "DATABASE=SQL", value_parser = SqlCheck::parse)]
    pub sql: Vec<SqlCheck>,
    /// Seconds to wait for the server to finish recovery before reporting that it did not.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub recovery_timeout: u64,
    /// Seconds each check may run.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub check_timeout: u64,
}

#[derive(Debug, Args)]
pub struct ImportCheckArgs {
    /// The wal-g archive (s3://bucket/path or file:///dir); default: storage.walg_prefix.
    #[arg(long, value_name = "URL")]
    pub prefix: Option<String>,
    /// The cluster's WAL segment size in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub segment_size: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupListArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List the damaged entries instead (a backup whose commit record cannot be read), with the
    /// object at fault and why.
    #[arg(long)]
    pub damaged: bool,
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// Path of the WAL file (PostgreSQL's %p, relative to the data directory or absolute).
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// Name of the WAL file (PostgreSQL's %f).
    pub name: String,
    /// Where to write it (PostgreSQL's %p).
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
pub struct WalReceiveArgs {
    /// The physical replication slot to stream from (created when missing).
    #[arg(long, default_value = "pgec2_wal_receive")]
    pub slot: String,
    /// The spool directory: the segment being received and `status.json`.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/pgec2/wal-receive")]
    pub spool: PathBuf,
    /// Seconds between uploads of the segment being filled (`<segment>.partial`): the recovery
    /// point lags the server by about this much.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub partial_interval: u64,
    /// Seconds without any message from the server (keepalives included) before the connection
    /// is taken for dead and made again.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub receive_timeout: u64,
    /// Print the state of the receiver using this spool directory, then exit.
    #[arg(long)]
    pub status: bool,
    /// With --status: print JSON (a `StreamStatus`) instead of text.
    #[arg(long, requires = "status")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WalPrefetchArgs {
    /// The segment just restored; the ones after it are prefetched.
    pub after: String,
    /// The prefetch directory (pg_wal/.pgec2-prefetch).
    #[arg(long)]
    pub dir: PathBuf,
    /// The cluster's WAL segment size in bytes.
    #[arg(long)]
    pub segment_size: u64,
}

#[derive(Debug, Args)]
pub struct WalPushAheadArgs {
    /// The data directory's `pg_wal`.
    pub wal_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackupPushArgs {
    /// Data directory of the running cluster (default: $PGDATA or the configuration's pgdata).
    #[arg(long, env = "PGDATA")]
    pub pgdata: Option<PathBuf>,
    /// Pin the backup: retention never deletes it.
    #[arg(long)]
    pub permanent: bool,
    /// A `key=value` note recorded in the backup's commit record (repeatable), e.g. why it was
    /// taken. Keys are letters, digits and `._/-`; values at most 1024 characters.
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub annotations: Vec<(String, String)>,
    /// Print a JSON summary instead of the backup's name.
    #[arg(long)]
    pub json: bool,
    /// How the data is copied: `object-store` (every file into the archive) or `snapshot`
    /// (the operator snapshots the data volume while this command holds the backup open).
    #[arg(long, value_enum, default_value = "object-store")]
    pub method: PushMethod,
    /// With `--method snapshot`: seconds to wait for the operator's snapshot to be taken, and
    /// again for it to complete, before giving up (nothing is committed then).
    #[arg(long, default_value_t = 3600)]
    pub snapshot_timeout: u64,
    /// Copy only the blocks changed since the parent backup started (and new files whole): a
    /// backup restored with its chain. Takes a full backup instead, and says so, when there is
    /// nothing to build on or the chain is at its maximum length.
    #[arg(long)]
    pub incremental: bool,
    /// With `--incremental`: the parent, a backup name or LATEST (the default: the newest).
    #[arg(long, value_name = "NAME|LATEST", requires = "incremental")]
    pub from: Option<String>,
    /// With `--incremental`: incrementals a chain may hold on its full backup (default:
    /// backup.max_incremental_chain, 6).
    #[arg(long, value_name = "N", requires = "incremental", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_chain: Option<u16>,
}

/// How `backup-push` copies the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PushMethod {
    ObjectStore,
    Snapshot,
}

/// Parses one `--annotation key=value` (the rules are `pgec2-contract`'s, shared with the
/// operator that sends them).
fn parse_annotation(text: &str) -> Result<(String, String), String> {
    Annotation::parse(text).map(Annotation::into_pair).map_err(|error| error.to_string())
}

#[derive(Debug, Args)]
pub struct BackupFetchArgs {
    /// Empty (or absent) directory to restore into.
    pub dest: PathBuf,
    /// Backup name, or LATEST (the newest backup that ends before the target, if one is given).
    pub name: String,
    #[command(flatten)]
    pub recovery: RecoveryArgs,
    /// Timeline to recover along: latest (default: the newest timeline in the archive that
    /// descends from the backup), current (the backup's own) or a timeline id.
    #[arg(long, value_name = "latest|current|N")]
    pub target_timeline: Option<String>,
    /// Restore the tablespace that was in OLDDIR into NEWDIR instead (repeatable).
    #[arg(long, value_name = "OLDDIR=NEWDIR")]
    pub tablespace_mapping: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotRestoreArgs {
    /// The data directory on the volume created from the snapshot.
    pub data_dir: PathBuf,
    /// The snapshot backup's name (the volume must be made from its snapshot).
    pub name: String,
    #[command(flatten)]
    pub recovery: RecoveryArgs,
}

/// How a restored cluster recovers and where it archives: the options `backup-fetch` and
/// `snapshot-restore` share.
#[derive(Debug, Args, Default, PartialEq, Eq)]
pub struct RecoveryArgs {
    #[command(flatten)]
    pub target: RecoveryTargetArgs,
    /// What to do when the target is reached.
    #[arg(long, value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: Option<String>,
    /// Restore as a standby that keeps following the archive (standby.signal).
    #[arg(long)]
    pub standby: bool,
    /// Where the restored cluster archives its WAL: off (default: archive_mode = off, the copy
    /// never writes into its source's archive), preserve (keep the restored archive settings:
    /// only for the original cluster recovering after a disaster), or a new, empty archive: a
    /// storage URL (s3://bucket/prefix, file:///dir) or a prefix inside the source's storage URL.
    #[arg(long, value_name = "off|preserve|URL|PREFIX", conflicts_with = "archive_config")]
    pub archive_mode: Option<String>,
    /// Archive with this agent configuration file (the cluster's own archive), as host apply does.
    #[arg(long, value_name = "FILE")]
    pub archive_config: Option<PathBuf>,
}

/// At most one recovery target; none recovers to the end of the archive.
#[derive(Debug, Args, Default, PartialEq, Eq)]
#[group(multiple = false)]
pub struct RecoveryTargetArgs {
    /// Recover up to this time, as recovery_target_time takes it: psql's output
    /// (2026-12-04 15:25:03.429792+00), RFC 3339 (2026-12-04T15:25:03Z), T or a space,
    /// offsets such as +00, +05:30, -0800, or UTC. A time zone is required.
    #[arg(long)]
    pub target_time: Option<String>,
    /// Recover up to this LSN (e.g. 0/3000060).
    #[arg(long)]
    pub target_lsn: Option<String>,
    /// Recover up to this transaction id.
    #[arg(long)]
    pub target_xid: Option<String>,
    /// Recover up to this named restore point (pg_create_restore_point).
    #[arg(long)]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long)]
    pub target_immediate: bool,
}

/// The options in the spelling the HostSpec and the CRD share; none is `None` (the end of the
/// archive). The restore planner reads it with [`pgec2_core::catalog::RecoveryTarget`]'s
/// `TryFrom`.
impl From<&RecoveryTargetArgs> for Option<RecoveryTarget> {
    fn from(args: &RecoveryTargetArgs) -> Self {
        let text = |text: &Option<String>, target: fn(String) -> RecoveryTarget| text.clone().map(target);
        text(&args.target_time, RecoveryTarget::Time)
            .or_else(|| text(&args.target_lsn, RecoveryTarget::Lsn))
            .or_else(|| text(&args.target_xid, RecoveryTarget::Xid))
            .or_else(|| text(&args.target_name, RecoveryTarget::Name))
            .or_else(|| args.target_immediate.then_some(RecoveryTarget::Immediate))
    }
}

#[derive(Debug, Args)]
pub struct BackupMarkArgs {
    /// Backup name.
    pub name: String,
    /// Unpin instead of pin.
    #[arg(long)]
    pub undo: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(subcommand)]
    pub what: DeleteTarget,
    /// Really delete; without it, print what would be deleted.
    #[arg(long, global = true)]
    pub confirm: bool,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long an uncommitted backup must have been idle before `garbage` removes it
    /// (e.g. 30m, 6h, 2d; default 6h, at least 5m, so a running backup is never removed).
    #[arg(long, global = true, value_name = "DURATION")]
    pub grace_period: Option<String>,
    /// `everything` even while a restore or standby holds a live lease on the archive (that
    /// restore or standby then fails).
    #[arg(long, global = true)]
    pub ignore_leases: bool,
    /// Also delete wal-g's backups over the window (sentinel first) and wal-g's WAL older than
    /// the oldest kept backup, under storage.walg_prefix (retain and before only).
    #[arg(long = "include-wal-g", global = true)]
    pub include_walg: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeleteTarget {
    /// Keep the newest N full backups (plus pinned ones).
    Retain {
        /// How many unpinned backups to keep.
        count: usize,
    },
    /// Delete backups older than a backup name or an RFC 3339 time.
    Before {
        /// Backup name or RFC 3339 time.
        boundary: String,
    },
    /// Delete uncommitted backups, expired leases and WAL older than the oldest kept backup.
    Garbage {
        /// Damaged backups to delete too, each named exactly as backup-list names it.
        damaged: Vec<String>,
    },
    /// Delete every backup and all WAL (pinned backups too).
    Everything,
}

#[derive(Debug, Args)]
pub struct BackupVerifyArgs {
    /// Backup name or LATEST.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Converge the host to the HostSpec in SPEC (JSON); prints a JSON report of each step.
    Apply {
        /// HostSpec file written by the bootstrap.
        spec: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets masked) and validate it.
    Check(JsonArgs),
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn backup_fetch_and_snapshot_restore_read_the_recovery_options_alike() {
        let options =
            ["--target-lsn", "0/3000060", "--target-action", "promote", "--standby", "--archive-mode", "default/copy"];
        let parse = |command: [&str; 4]| Cli::try_parse_from(command.into_iter().chain(options)).expect(command[1]);
        let fetch = parse(["pgec2-agent", "backup-fetch", "/d", "LATEST"]).command;
        let snapshot = parse(["pgec2-agent", "snapshot-restore", "/d", "base_1"]).command;
        let (Command::BackupFetch(fetch), Command::SnapshotRestore(snapshot)) = (fetch, snapshot) else {
            panic!("the subcommands were not recognised");
        };
        let expected = RecoveryArgs {
            target: RecoveryTargetArgs { target_lsn: Some("0/3000060".into()), ..Default::default() },
            target_action: Some("promote".into()),
            standby: true,
            archive_mode: Some("default/copy".into()),
            archive_config: None,
        };
        assert_eq!(fetch.recovery, expected);
        assert_eq!(snapshot.recovery, expected);
        let both = ["pgec2-agent", "snapshot-restore", "/d", "b", "--archive-mode", "off", "--archive-config", "/c"];
        assert!(Cli::try_parse_from(both).is_err(), "--archive-mode and --archive-config exclude each other");
    }

    #[test]
    fn an_annotation_flag_parses_into_its_key_and_value_or_names_the_rule_it_breaks() {
        assert_eq!(parse_annotation("a.b/c-d_e=x=y"), Ok(("a.b/c-d_e".to_string(), "x=y".to_string())));
        let refused = parse_annotation("sp ace=1").expect_err("a space in the key");
        assert!(refused.contains("letters, digits and ._/-"), "{refused}");
    }

    #[test]
    fn each_target_option_becomes_the_target_the_host_spec_spells() {
        let spelled = |arguments: &[&str]| {
            let parsed = Cli::try_parse_from([&["pgec2-agent", "backup-fetch", "/d", "LATEST"], arguments].concat());
            let Command::BackupFetch(args) = parsed.expect("parses").command else { panic!("backup-fetch") };
            Option::<RecoveryTarget>::from(&args.recovery.target)
        };
        assert_eq!(spelled(&[]), None);
        assert_eq!(
            spelled(&["--target-time", "2026-01-31 12:00:00+01"]),
            Some(RecoveryTarget::Time("2026-01-31 12:00:00+01".into()))
        );
        assert_eq!(spelled(&["--target-lsn", "0/3000060"]), Some(RecoveryTarget::Lsn("0/3000060".into())));
        assert_eq!(spelled(&["--target-xid", "7415"]), Some(RecoveryTarget::Xid("7415".into())));
        assert_eq!(spelled(&["--target-name", "before"]), Some(RecoveryTarget::Name("before".into())));
        assert_eq!(spelled(&["--target-immediate"]), Some(RecoveryTarget::Immediate));
    }
}
