//! What the backup commands refuse to do. A refusal is a precondition that is not met: nothing
//! was written (or what was written is not committed), and the message says what is wrong, on
//! which object, and what to do.

use std::path::PathBuf;
use std::time::Duration;

use pgec2_core::target_time::TargetTimeError;

use super::destination::RESTORE_MARKER;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A command-line option's value cannot be used.
    #[error("invalid {option} {value:?}: expected {expected}")]
    InvalidOption { option: &'static str, value: String, expected: String },
    /// `--target-time` is not a time PostgreSQL takes.
    #[error("invalid --target-time: {0}")]
    TargetTime(#[from] TargetTimeError),
    /// `delete garbage --grace-period` shorter than a backup may take to write.
    #[error(
        "--grace-period {given} is below the minimum of 5m: a backup still being written could be deleted; use at \
         least 5m (the default is 6h)"
    )]
    GraceTooShort { given: String },
    /// An option that restoring a wal-g backup does not support.
    #[error(
        "{option} is not supported for wal-g backup {backup}: restore it without {option}, or take a backup with \
         backup-push and restore that; nothing was written"
    )]
    UnsupportedForWalg { option: &'static str, backup: String },
    /// `delete --include-wal-g` where it cannot apply.
    #[error("--include-wal-g {0}")]
    IncludeWalg(&'static str),

    /// A restore directory (the data directory or a tablespace's) holds files.
    #[error("{what} {} is not empty: {remedy}", path.display())]
    DirectoryNotEmpty { what: String, path: PathBuf, remedy: String },
    /// A restore directory does not exist and neither does its parent.
    #[error("the parent of {what} {} does not exist: create {} first", path.display(), parent.display())]
    MissingParent { what: String, path: PathBuf, parent: PathBuf },
    /// A tablespace would be restored to a relative path.
    #[error(
        "tablespace directory {} must be an absolute path: map it to one with --tablespace-mapping {}=NEWDIR",
        path.display(),
        path.display()
    )]
    RelativeTablespace { path: PathBuf },
    /// Another `backup-fetch` holds the restore marker of this data directory.
    #[error("another backup-fetch is restoring into {}: wait for it to finish", data_dir.display())]
    RestoreInProgress { data_dir: PathBuf },
    /// The marker an interrupted restore left cannot be read, so its files cannot be told apart.
    #[error(
        "{} holds an interrupted restore whose {RESTORE_MARKER} cannot be read ({reason}): remove the directory's \
         contents and retry",
        data_dir.display()
    )]
    UnreadableRestoreMarker { data_dir: PathBuf, reason: String },

    /// `--archive-mode` names an archive a cluster already archives into.
    #[error(
        "--archive-mode: the archive {archive} is already used by a cluster ({key} exists): a restored copy needs an \
         empty archive of its own; choose another prefix"
    )]
    ArchiveInUse { archive: String, key: String },
    /// `--archive-mode` names the archive the backup is restored from.
    #[error(
        "--archive-mode {location} is the archive this backup is restored from: a restored copy must not archive \
         into its source; choose another prefix, or --archive-mode preserve to recover the original cluster itself"
    )]
    ArchiveIsSource { location: String },

    /// `backup-push` against a standby.
    #[error("the server is a standby (in recovery): run backup-push on the primary")]
    Standby,
    /// `backup-push` against a server that does not archive its WAL.
    #[error(
        "archive_mode is off: a backup is only restorable with its WAL; set archive_mode = on and archive_command = \
         'pgec2-agent wal-push %p', restart PostgreSQL, and retry"
    )]
    ArchivingOff,
    /// `--pgdata` is not the data directory of the server the agent connects to.
    #[error(
        "{} is not the data directory of the server the agent connects to ({}): fix --pgdata/PGDATA or PGHOST/PGPORT",
        given.display(),
        server.display()
    )]
    WrongDataDirectory { given: PathBuf, server: PathBuf },
    /// The archive queue cap dropped a WAL segment the backup needs.
    #[error(
        "WAL segment {segment} the backup needs was dropped by the archive queue cap (transfer.archive_queue_max_mb): \
         the backup was not committed; fix archiving, then retry"
    )]
    WalDropped { segment: String },
    /// A WAL segment the backup needs did not reach the archive in time.
    #[error(
        "WAL segment {segment} the backup needs is not in the archive {archive} after {waited:?}: check \
         archive_command and pg_stat_archiver; the backup was not committed"
    )]
    WalMissing { segment: String, archive: String, waited: Duration },
    /// An object of the backup vanished before its commit marker was written.
    #[error(
        "{key} disappeared before the backup was committed (was `delete garbage` run with a short grace period?): the \
         backup was not committed; run backup-push again"
    )]
    ObjectVanished { key: String },

    /// The operator reported another snapshot complete than the one taken.
    #[error(
        "the operator reported snapshot {reported} complete for backup {backup}, but {taken} was taken: the backup \
         was not committed; run it again"
    )]
    SnapshotMismatch { backup: String, reported: String, taken: String },
    /// The operator did not answer a step of the snapshot handshake in time.
    #[error(
        "no {answer} for the snapshot of backup {backup} in {archive} after {waited:?}: is the operator running and \
         does the BackupPolicy say `method: snapshot`? the backup was not committed"
    )]
    NoSnapshotAnswer { backup: String, answer: String, archive: String, waited: Duration },
    /// `backup-fetch` of a snapshot backup, whose files are in a volume snapshot.
    #[error(
        "backup {backup} is a volume snapshot ({snapshot_id}), its files are not in the archive: restore it by \
         creating a volume from the snapshot (the operator's bootstrap.restore does), or name another backup \
         (backup-list)"
    )]
    SnapshotNotInArchive { backup: String, snapshot_id: String },
    /// `snapshot-restore` of a backup the archive has not committed.
    #[error(
        "backup {backup} is not a committed backup in {archive}: the data directory was left as it is; run backup-list"
    )]
    NotCommitted { backup: String, archive: String },
    /// `snapshot-restore` of an object-store backup.
    #[error(
        "backup {backup} is an object-store backup, not a volume snapshot: restore it with backup-fetch into an empty \
         directory; the data directory was left as it is"
    )]
    NotASnapshot { backup: String },
    /// `snapshot-restore` into a data directory a live server runs in.
    #[error(
        "PostgreSQL (pid {pid}) runs in {}: a live cluster is never prepared for recovery; stop it, or restore into \
         a volume created from the snapshot",
        data_dir.display()
    )]
    ServerRunning { pid: u32, data_dir: PathBuf },
    /// `snapshot-restore` into a data directory of another cluster than the backup's.
    #[error(
        "{} belongs to cluster {} but backup {backup} was taken of cluster {expected}: the volume was not created \
         from this backup's snapshot; nothing was changed",
        control_file.display(),
        found.map_or_else(|| "unknown".to_string(), |found| found.to_string())
    )]
    OtherCluster { control_file: PathBuf, found: Option<u64>, backup: String, expected: u64 },
}
