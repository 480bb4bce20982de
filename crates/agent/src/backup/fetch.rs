//! `backup-fetch`: restore a backup into an empty directory, ready for `pg_ctl start`.
//!
//! 1. refuse a non-empty destination, before any other work;
//! 2. read the catalog, pick the backup and timeline, refuse a target that cannot be reached
//!    (see [`pgec2_core::catalog::plan_restore`]);
//! 3. read the manifest, check the tablespace directories;
//! 4. restore directories, files (checksums verified, fsynced) and links;
//! 5. write `backup_label` and `tablespace_map`, the recovery settings and the signal file;
//! 6. move `global/pg_control` into place last: until then the directory cannot be started by
//!    mistake as a crashed cluster.
//!
//! A failure after step 3 removes what was written, leaving the destination as it was.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use pgec2_core::catalog::{self, RecoveryTarget, RestorePlan};
use pgec2_core::layout::Archive;
use pgec2_core::manifest::BackupManifest;
use pgec2_core::recovery_window::{TimelineRequest, diverged_ancestors};

use super::BackupError;
use super::destination::{CONTROL_FILE_PENDING, Destination};
use super::extract::{extract, sync_directory};
use super::recovery_conf::{RecoverySettings, read_auto_conf};
use super::walk::CONTROL_FILE;
use crate::config::AgentConfig;

/// What to restore and how to recover.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub dest: PathBuf,
    /// A backup name or `LATEST`.
    pub name: String,
    pub target: RecoveryTarget,
    pub action: Option<String>,
    pub standby: bool,
    /// Old tablespace directory → new one.
    pub tablespace_mapping: BTreeMap<String, PathBuf>,
    pub timeline: TimelineRequest,
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FetchSummary {
    pub backup: String,
    pub dest: PathBuf,
    pub files: usize,
    pub data_bytes: u64,
    pub downloaded_bytes: u64,
    pub timeline: u32,
    pub target: String,
}

/// Restores `request.name` into `request.dest`.
pub async fn fetch_backup(
    config: &AgentConfig,
    archive: &Archive,
    request: &FetchRequest,
) -> Result<FetchSummary, BackupError> {
    // 1. Refuse a non-empty destination first.
    Destination::check(&request.dest, &BackupManifest::new(""), &BTreeMap::new())?;

    // 2. Pick the backup and timeline; refuse unreachable targets.
    let backups = catalog::scan_backups(archive).await?;
    let wal = catalog::load_wal_archive(archive, backups.segment_size()).await?;
    let plan = catalog::plan_restore(&backups.committed, &wal, &request.name, &request.target, request.timeline)?;
    let name = plan.backup.name.clone();
    tracing::info!(backup = %name, timeline = plan.timeline.timeline, "restoring");
    for (ancestor, branch, newest) in diverged_ancestors(&wal, &wal.history(plan.timeline.timeline)) {
        eprintln!(
            "note: recovering along timeline {}, which branched off timeline {ancestor} at {branch}; timeline {ancestor} \
             continued up to {newest}, which this restore will not replay (choose with --target-timeline)",
            plan.timeline.timeline
        );
    }

    // 3. Read the manifest; check the tablespace directories.
    let manifest = Arc::new(catalog::read_manifest(archive, &name).await?);
    let destination = Arc::new(Destination::check(&request.dest, &manifest, &request.tablespace_mapping)?);

    // 4–6. Restore; on failure, remove what was written.
    destination.create_roots()?;
    match restore_into(config, archive, &plan, manifest.clone(), destination.clone(), request).await {
        Ok(downloaded_bytes) => Ok(FetchSummary {
            backup: name,
            dest: destination.data_dir.clone(),
            files: manifest.files.len(),
            data_bytes: manifest.data_bytes(),
            downloaded_bytes,
            timeline: plan.timeline.timeline,
            target: request.target.to_string(),
        }),
        Err(error) => {
            destination.clean_up();
            Err(error)
        }
    }
}

async fn restore_into(
    config: &AgentConfig,
    archive: &Archive,
    plan: &RestorePlan,
    manifest: Arc<BackupManifest>,
    destination: Arc<Destination>,
    request: &FetchRequest,
) -> Result<u64, BackupError> {
    // 4. Directories, files, links, under a lease that keeps the backup and its WAL from retention.
    let _lease = crate::lease::hold_for_restore(archive, plan, &destination, request.standby).await?;
    let downloaded =
        extract(archive, manifest.clone(), destination.clone(), config.transfer.download_concurrency).await?;

    // 5. backup_label, tablespace_map, recovery settings, signal file.
    let name = &plan.backup.name;
    let label_key = archive.layout.backup_label(name).map_err(BackupError::storage("name", name))?;
    let label = catalog::get_content(archive, &label_key).await?;
    write_durably(&destination, &destination.data_dir.join("backup_label"), &label)?;
    if !manifest.tablespaces.is_empty() {
        let map_key = archive.layout.tablespace_map(name).map_err(BackupError::storage("name", name))?;
        let map = String::from_utf8_lossy(&catalog::get_content(archive, &map_key).await?).into_owned();
        let map = remap_tablespaces(&map, &manifest, &destination);
        write_durably(&destination, &destination.data_dir.join("tablespace_map"), map.as_bytes())?;
    }
    let settings = recovery_settings(config, plan, request)?;
    let existing = read_auto_conf(&destination.data_dir)
        .map_err(BackupError::io("read", destination.data_dir.join("postgresql.auto.conf")))?;
    replace_durably(&destination, "postgresql.auto.conf", settings.render_auto_conf(&existing).as_bytes())?;
    write_durably(&destination, &destination.data_dir.join(settings.signal_file()), b"")?;

    // 6. pg_control last.
    let pending = destination.data_dir.join(CONTROL_FILE_PENDING);
    let control = destination.data_dir.join(CONTROL_FILE);
    std::fs::rename(&pending, &control).map_err(BackupError::io("move into place", &control))?;
    sync_directory(&destination.data_dir.join("global"))?;
    sync_directory(&destination.data_dir)?;
    Ok(downloaded)
}

fn recovery_settings(
    config: &AgentConfig,
    plan: &RestorePlan,
    request: &FetchRequest,
) -> Result<RecoverySettings, BackupError> {
    let agent = std::env::current_exe().map_err(BackupError::io("find the agent's own path", "/proc/self/exe"))?;
    let config_file = match &config.file {
        Some(file) => {
            Some(std::fs::canonicalize(file).map_err(BackupError::io("resolve", file))?.display().to_string())
        }
        None => None,
    };
    Ok(RecoverySettings {
        backup: plan.backup.name.clone(),
        agent: agent.display().to_string(),
        config_file,
        environment: RecoverySettings::inherited_environment(),
        target: request.target.clone(),
        action: request.action.clone(),
        timeline: plan.timeline.clone(),
        standby: request.standby,
        written_at: Utc::now(),
    })
}

/// `tablespace_map` with the locations of remapped tablespaces replaced (lines are `oid path`).
fn remap_tablespaces(map: &str, manifest: &BackupManifest, destination: &Destination) -> String {
    map.lines()
        .map(|line| {
            let oid = line.split(' ').next().and_then(|oid| oid.parse::<u32>().ok());
            let original = oid.and_then(|oid| manifest.tablespaces.iter().find(|tablespace| tablespace.oid == oid));
            let restored = oid.and_then(|oid| destination.tablespaces.get(&oid));
            match (oid, original, restored) {
                (Some(oid), Some(original), Some(restored)) if Path::new(&original.location) != restored => {
                    format!("{oid} {}\n", restored.display())
                }
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

/// Creates `path` with `content` (mode 0600), fsyncs it, and gives it to the owner.
fn write_durably(destination: &Destination, path: &Path, content: &[u8]) -> Result<(), BackupError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(BackupError::io("create", path))?;
    file.write_all(content).and_then(|()| file.sync_all()).map_err(BackupError::io("write", path))?;
    destination.give(path)
}

/// Replaces `<data dir>/<name>` atomically (temp file, fsync, rename).
fn replace_durably(destination: &Destination, name: &str, content: &[u8]) -> Result<(), BackupError> {
    let target = destination.data_dir.join(name);
    let temporary = destination.data_dir.join(format!("{name}.pgec2-tmp"));
    write_durably(destination, &temporary, content)?;
    std::fs::rename(&temporary, &target).map_err(BackupError::io("replace", &target))
}
