//! `snapshot-restore`: prepare, in place, a data directory whose volume was created from the
//! volume snapshot of a snapshot backup, so that starting PostgreSQL recovers it.
//!
//! The snapshot holds the data directory as the running server had it between
//! `pg_backup_start` and `pg_backup_stop`: like any file-level copy it is only usable with the
//! backup's `backup_label`, which PostgreSQL reads to start replay at the backup's checkpoint
//! instead of the one in `pg_control`. The steps:
//!
//! 1. nothing to do when the directory says it was prepared for this backup already
//!    ([`MARKER`]); refuse a directory a running server uses, or whose `pg_control` belongs to
//!    another cluster than the backup;
//! 2. read the catalog, check the backup is a snapshot backup and the target reachable
//!    ([`pgec2_core::catalog::plan_restore`], as `backup-fetch` does);
//! 3. remove what the running server left that recovery must not see (`postmaster.pid`, the
//!    WAL in `pg_wal`, replication slots, signal files and labels of an earlier recovery);
//! 4. take the restore's lease, as `backup-fetch` does ([`crate::lease::hold_for_restore`]):
//!    retention keeps the backup and the WAL the recovery replays, and the restored cluster's
//!    `wal-fetch` renews it; write `backup_label` and `tablespace_map` as the backup stored them,
//!    the recovery and archive settings, the agent configuration files and the signal file,
//!    each durably;
//! 5. write [`MARKER`] last.
//!
//! Every step can be repeated: an interrupted run is run again from the start, and a directory
//! once marked is never touched again (after its first start it is a live cluster).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgec2_core::catalog::{self, BackupInfo, BackupKind, RecoveryTarget, RestorePlan};
use pgec2_core::layout::Archive;
use pgec2_core::recovery_window::TimelineRequest;
use serde::{Deserialize, Serialize};

use super::cluster_config::{ArchiveMode, ClusterConfig};
use super::recovery_conf::{RecoverySettings, read_auto_conf};
use super::{BackupError, Refusal};
use crate::config::AgentConfig;
use crate::wal::durable::{sync_parent, write_atomically};

/// Written into the data directory once it is prepared: which backup of which archive.
pub const MARKER: &str = "pgec2_snapshot_restore.json";

/// Entries of the data directory whose contents the server's run left and recovery must not
/// read: WAL written after the snapshot's point (torn, possibly), and replication slots.
const EMPTIED: &[&str] = &["pg_wal", "pg_wal/archive_status", "pg_replslot"];

/// Files of the running server or of an earlier recovery of the source.
const REMOVED: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "recovery.signal",
    "standby.signal",
    crate::lease::LEASE_FILE,
];

/// What to prepare and how to recover.
#[derive(Clone, Debug)]
pub struct SnapshotRestoreRequest {
    /// The data directory, on the volume created from the snapshot.
    pub data_dir: PathBuf,
    /// The snapshot backup's name.
    pub name: String,
    pub target: RecoveryTarget,
    pub action: Option<String>,
    pub standby: bool,
    pub archive: ArchiveMode,
}

/// The marker's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    backup: String,
    /// The source archive, as [`Archive::describe`] names it.
    archive: String,
    prepared_at: DateTime<Utc>,
}

/// True when `data_dir` was prepared for `backup` of `archive` already.
pub fn prepared(data_dir: &Path, backup: &str, archive: &str) -> bool {
    read_marker(data_dir).is_some_and(|marker| marker.backup == backup && marker.archive == archive)
}

/// The backup `data_dir` was prepared for, when it was.
pub fn prepared_backup(data_dir: &Path) -> Option<String> {
    read_marker(data_dir).map(|marker| marker.backup)
}

fn read_marker(data_dir: &Path) -> Option<Marker> {
    serde_json::from_slice(&std::fs::read(data_dir.join(MARKER)).ok()?).ok()
}

/// Prepares `request.data_dir`; returns a one-line summary.
pub async fn prepare(
    config: &AgentConfig,
    archive: &Archive,
    request: &SnapshotRestoreRequest,
) -> Result<String, BackupError> {
    let data_dir = &request.data_dir;
    // 1. Done already? Not a live cluster, and the backup's cluster.
    if prepared(data_dir, &request.name, &archive.describe()) {
        return Ok(format!("{} was prepared for backup {} already", data_dir.display(), request.name));
    }
    refuse_running(data_dir)?;

    // 2. The backup, the timeline and the target.
    let plan = plan(archive, request).await?;
    check_system_identifier(data_dir, &plan.backup)?;
    let cluster_config = ClusterConfig::plan(config, &request.archive)?;
    cluster_config.check_new_archive().await?;

    // 3. What the running server left.
    remove_leftovers(data_dir)?;

    // 4. The lease, labels, settings, configuration files, signal.
    let destination = super::destination::Destination::existing(data_dir)?;
    let _lease = crate::lease::hold_for_restore(archive, &plan, &destination, request.standby).await?;
    let name = &plan.backup.name;
    let label_key = archive.layout.backup_label(name).map_err(BackupError::storage("name", name))?;
    write(data_dir, "backup_label", &catalog::get_content(archive, &label_key).await?)?;
    let map_key = archive.layout.tablespace_map(name).map_err(BackupError::storage("name", name))?;
    if archive.storage.head(&map_key).await.map_err(BackupError::storage("check", map_key.as_str()))?.is_some() {
        write(data_dir, "tablespace_map", &catalog::get_content(archive, &map_key).await?)?;
    }
    let settings = settings(&plan, &cluster_config, request)?;
    let existing = read_auto_conf(data_dir).map_err(BackupError::io("read", data_dir.join("postgresql.auto.conf")))?;
    write(data_dir, "postgresql.auto.conf", settings.render_auto_conf(&existing).as_bytes())?;
    for (file, text) in cluster_config.files_to_write() {
        write(data_dir, file, text.as_bytes())?;
    }
    write(data_dir, settings.signal_file(), b"")?;

    // 5. The marker, last.
    let marker = Marker { backup: name.clone(), archive: archive.describe(), prepared_at: Utc::now() };
    let json = serde_json::to_vec_pretty(&marker).map_err(|error| BackupError::Task(error.to_string()))?;
    write(data_dir, MARKER, &json)?;
    Ok(format!(
        "prepared {} from the snapshot of backup {name} ({}) for recovery to {} on timeline {}; archiving {}",
        data_dir.display(),
        plan.backup.snapshot_id.as_deref().unwrap_or("unknown snapshot"),
        request.target,
        plan.timeline.timeline,
        cluster_config.describe_archiving()
    ))
}

/// `snapshot-restore DATA NAME`: prepares the directory and prints what it did.
pub async fn command(
    config_path: Option<&Path>,
    args: crate::cli::SnapshotRestoreArgs,
) -> Result<std::process::ExitCode, BackupError> {
    let recovery = args.recovery;
    let request = SnapshotRestoreRequest {
        target: super::recovery_target(&recovery.target)?,
        data_dir: args.data_dir,
        name: args.name,
        action: recovery.target_action,
        standby: recovery.standby,
        archive: ArchiveMode::from_args(recovery.archive_mode.as_deref(), recovery.archive_config.as_deref()),
    };
    let config = AgentConfig::load(config_path)?;
    let archive = config.storage().await?;
    println!("{}", prepare(&config, &archive, &request).await?);
    Ok(std::process::ExitCode::SUCCESS)
}

/// The restore plan of the named snapshot backup.
async fn plan(archive: &Archive, request: &SnapshotRestoreRequest) -> Result<RestorePlan, BackupError> {
    let backups = catalog::scan_backups(archive).await?;
    let wal = catalog::load_wal_archive(archive, backups.segment_size()).await?;
    let Some(backup) = backups.committed.iter().find(|backup| backup.name == request.name) else {
        return Err(Refusal::NotCommitted { backup: request.name.clone(), archive: archive.describe() }.into());
    };
    if backup.kind != BackupKind::Snapshot {
        return Err(Refusal::NotASnapshot { backup: request.name.clone() }.into());
    }
    let snapshots = backups.of_kind(BackupKind::Snapshot);
    Ok(catalog::plan_restore(&snapshots, &wal, &request.name, &request.target, TimelineRequest::Latest)?)
}

fn settings(
    plan: &RestorePlan,
    cluster_config: &ClusterConfig,
    request: &SnapshotRestoreRequest,
) -> Result<RecoverySettings, BackupError> {
    let agent = std::env::current_exe().map_err(BackupError::io("find the agent's own path", "/proc/self/exe"))?;
    Ok(RecoverySettings {
        backup: plan.backup.name.clone(),
        agent: agent.display().to_string(),
        restore_config: cluster_config.restore.command_path(),
        archive: cluster_config.archive.clone(),
        pg_version: Some(plan.backup.pg_version / 10_000),
        target: request.target.clone(),
        action: request.action.clone(),
        timeline: plan.timeline.clone(),
        standby: request.standby,
        written_at: Utc::now(),
    })
}

/// Refuses a data directory that a running server uses: its `postmaster.pid` names a live
/// process whose working directory is this directory (the postmaster runs in it).
fn refuse_running(data_dir: &Path) -> Result<(), BackupError> {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else { return Ok(()) };
    let Some(pid) = text.lines().next().and_then(|line| line.trim().parse::<u32>().ok()) else { return Ok(()) };
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let here = std::fs::canonicalize(data_dir).ok();
    if cwd.is_some() && cwd == here {
        return Err(Refusal::ServerRunning { pid, data_dir: data_dir.to_path_buf() }.into());
    }
    Ok(())
}

/// Refuses a data directory whose `pg_control` names another cluster than the backup (the
/// system identifier is the first field of `pg_control`).
fn check_system_identifier(data_dir: &Path, backup: &BackupInfo) -> Result<(), BackupError> {
    let path = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(BackupError::io("read", &path))?;
    let identifier = bytes.first_chunk::<8>().map(|first| u64::from_le_bytes(*first));
    if identifier != Some(backup.system_identifier) {
        return Err(Refusal::OtherCluster {
            control_file: path,
            found: identifier,
            backup: backup.name.clone(),
            expected: backup.system_identifier,
        }
        .into());
    }
    Ok(())
}

/// Removes [`REMOVED`] and the files in [`EMPTIED`] (directories are kept).
fn remove_leftovers(data_dir: &Path) -> Result<(), BackupError> {
    for name in REMOVED {
        remove_file(&data_dir.join(name))?;
    }
    for name in EMPTIED {
        let directory = data_dir.join(name);
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(BackupError::io("list", &directory)(error)),
        };
        for entry in entries {
            let path = entry.map_err(BackupError::io("list", &directory))?.path();
            if path.is_dir() && *name == "pg_replslot" {
                std::fs::remove_dir_all(&path).map_err(BackupError::io("remove", &path))?;
            } else if !path.is_dir() {
                remove_file(&path)?;
            }
        }
        std::fs::File::open(&directory).and_then(|dir| dir.sync_all()).map_err(BackupError::io("sync", &directory))?;
    }
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path).map_err(BackupError::io("sync the directory of", path)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(BackupError::io("remove", path)(error)),
    }
}

fn write(data_dir: &Path, name: &str, content: &[u8]) -> Result<(), BackupError> {
    let path = data_dir.join(name);
    write_atomically(&path, content).map_err(BackupError::io("write", &path))
}

#[cfg(test)]
mod tests {
    use pgec2_core::wal::Lsn;

    use super::*;

    #[test]
    fn a_marker_counts_only_for_the_same_backup_of_the_same_archive() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!prepared(dir.path(), "base_1", "file:///a"));
        let marker = Marker { backup: "base_1".into(), archive: "file:///a".into(), prepared_at: Utc::now() };
        std::fs::write(dir.path().join(MARKER), serde_json::to_vec(&marker).expect("json")).expect("write");
        assert!(prepared(dir.path(), "base_1", "file:///a"));
        assert!(!prepared(dir.path(), "base_2", "file:///a"), "a snapshot of a copy names another backup");
        assert!(!prepared(dir.path(), "base_1", "file:///b"));
    }

    #[test]
    fn leftovers_of_the_running_server_go_and_the_directories_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path();
        for directory in ["pg_wal/archive_status", "pg_replslot/slot1", "base/1"] {
            std::fs::create_dir_all(data.join(directory)).expect("mkdir");
        }
        for file in [
            "postmaster.pid",
            "standby.signal",
            "pg_wal/000000010000000000000003",
            "pg_wal/archive_status/000000010000000000000002.ready",
            "pg_replslot/slot1/state",
            "base/1/1259",
        ] {
            std::fs::write(data.join(file), b"x").expect("write");
        }
        remove_leftovers(data).expect("remove");
        remove_leftovers(data).expect("again");
        assert!(data.join("pg_wal/archive_status").is_dir() && data.join("pg_replslot").is_dir());
        assert_eq!(std::fs::read_dir(data.join("pg_wal/archive_status")).expect("list").count(), 0);
        assert_eq!(std::fs::read_dir(data.join("pg_wal")).expect("list").count(), 1, "only archive_status");
        assert_eq!(std::fs::read_dir(data.join("pg_replslot")).expect("list").count(), 0);
        assert!(!data.join("postmaster.pid").exists() && !data.join("standby.signal").exists());
        assert!(data.join("base/1/1259").exists(), "data files are kept");
    }

    #[test]
    fn a_data_directory_of_another_cluster_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("global")).expect("mkdir");
        let mut control = 7_u64.to_le_bytes().to_vec();
        control.extend([0; 100]);
        std::fs::write(dir.path().join("global/pg_control"), control).expect("write");
        let mut backup = sample_backup();
        backup.system_identifier = 7;
        check_system_identifier(dir.path(), &backup).expect("same cluster");
        backup.system_identifier = 8;
        let refused = check_system_identifier(dir.path(), &backup).expect_err("another cluster");
        assert!(
            matches!(&refused, BackupError::Refused(Refusal::OtherCluster { found: Some(7), expected: 8, .. })),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("belongs to cluster 7"), "{refused}");
    }

    fn sample_backup() -> BackupInfo {
        BackupInfo::builder().named("base_1").lsns(Lsn(0x100), Lsn(0x200)).snapshot("snap-1").build()
    }
}
