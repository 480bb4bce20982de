//! `backup-fetch`: restore a backup into an empty directory, ready for `pg_ctl start`.
//!
//! 1. remove what a killed restore left in the destination, refuse a non-empty one, decide the
//!    restored cluster's agent configuration and archive (`--archive-mode`), before any other
//!    work;
//! 2. read the catalog, pick the backup and timeline, refuse a target that cannot be reached
//!    (see [`pgec2_core::catalog::plan_restore`]);
//! 3. read the manifest, check the tablespace directories; take the restore's lease (from now on
//!    retention keeps the backup, its chain and its WAL); for an incremental backup, check that
//!    every backup of its chain is there and readable, then verify every part the restore will
//!    read against its manifest's checksum (see [`super::chain_restore`] and
//!    [`super::chain_verify`]);
//! 4. mark the restore in progress; restore directories, files (checksums verified, fsynced)
//!    and links;
//! 5. write `backup_label` and `tablespace_map`, the recovery and archive settings, the agent
//!    configuration files and the signal file, each fsynced;
//! 6. fsync the data directory, then move `global/pg_control` into place last: until then the
//!    directory cannot be started by mistake as a crashed cluster (see [`Destination::complete`]).
//!
//! A failure after step 3 removes what was written, leaving the destination as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use pgec2_core::catalog::{self, RecoveryTarget, RestorePlan};
use pgec2_core::envelope::{self, EnvelopeError};
use pgec2_core::increment::final_length;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::BackupManifest;
use pgec2_core::recovery_window::{TimelineRequest, diverged_ancestors};

use super::BackupError;
use super::chain_restore::{extract_chain, load_chain, unread_parts};
use super::chain_verify::{VerifiedChain, verify_chain};
use super::cluster_config::{ArchiveMode, ClusterConfig};
use super::destination::{Destination, RestoreMarker, clear_interrupted};
use super::extract::extract;
use super::recovery_conf::{RecoverySettings, read_auto_conf};
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
    /// Where the restored cluster archives.
    pub archive: ArchiveMode,
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
    /// Where the restored cluster archives (see [`ClusterConfig::describe_archiving`]).
    pub archiving: String,
}

/// Restores `request.name` into `request.dest`.
pub async fn fetch_backup(
    config: &AgentConfig,
    archive: &Archive,
    request: &FetchRequest,
) -> Result<FetchSummary, BackupError> {
    // 1. Clear a killed restore's leftovers, refuse a non-empty destination, plan the configuration.
    if let Some(removed) = clear_interrupted(&request.dest)? {
        eprintln!("note: {removed}");
    }
    Destination::check(&request.dest, &BackupManifest::new(""), &BTreeMap::new())?;
    let cluster_config = ClusterConfig::plan(config, &request.archive)?;
    cluster_config.check_new_archive().await?;

    // 2. Pick the backup and timeline; refuse unreachable targets.
    let backups = catalog::scan_backups(archive).await?;
    let wal = catalog::load_wal_archive(archive, backups.segment_size()).await?;
    super::snapshot::refuse_snapshot(&backups, &request.name)?;
    let copies = backups.of_kind(catalog::BackupKind::ObjectStore);
    let plan = catalog::plan_restore(&copies, &wal, &request.name, &request.target, request.timeline)?;
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
    // An incremental backup's whole chain is checked here, before anything is written.
    let manifest = Arc::new(catalog::read_manifest(archive, &name).await?);
    let destination = Arc::new(Destination::check(&request.dest, &manifest, &request.tablespace_mapping)?);
    // From here on a lease keeps the backup (and so its chain) and its WAL from retention: taken
    // before the chain is read, so a delete on another host cannot remove a part meanwhile.
    let lease = crate::lease::take_for_restore(archive, &plan, &destination.data_dir, request.standby).await;
    let chain = load_chain(archive, &backups, manifest.clone()).await?;
    // Every part a chain restore will read verified against its manifest, still writing nothing.
    let concurrency = config.transfer.download_concurrency;
    let skipped = unread_parts(&chain)?;
    let verified = verify_chain(archive, chain, &skipped, &destination.data_dir, concurrency).await?;

    // 4–6. Restore; on failure, remove what was written (once the marker is ours: a second
    // backup-fetch racing into the same directory fails there and removes nothing).
    destination.create_roots()?;
    let marker = destination.mark_in_progress(&name)?;
    let restore = Restore { archive, plan: &plan, cluster_config: &cluster_config, request };
    match restore.run(marker, &lease, &verified, destination.clone(), concurrency).await {
        Ok(downloaded_bytes) => Ok(FetchSummary {
            backup: name,
            dest: destination.data_dir.clone(),
            files: manifest.files.len(),
            data_bytes: manifest.files.iter().map(final_length).sum(),
            downloaded_bytes,
            timeline: plan.timeline.timeline,
            target: request.target.to_string(),
            archiving: cluster_config.describe_archiving(),
        }),
        Err(error) => {
            destination.clean_up();
            Err(error)
        }
    }
}

/// An encrypted backup restores only with its key: the first part's data key is unwrapped
/// before anything is written, so a wrong or missing key fails with nothing to clean up.
pub(super) async fn check_keys(archive: &Archive, manifest: &BackupManifest) -> Result<(), BackupError> {
    let Some(first) = manifest.parts.first() else { return Ok(()) };
    let key = archive
        .layout
        .backup_part(&manifest.backup, first.index)
        .map_err(BackupError::storage("name", &manifest.backup))?;
    let start = archive
        .storage
        .get_start(&key, envelope::HEADERS_MAX_LEN as u64)
        .await
        .map_err(BackupError::storage("download", key.as_str()))?;
    match envelope::check_key(&start, &archive.keyring) {
        Err(EnvelopeError::Key(error)) => {
            Err(BackupError::Undecryptable { backup: manifest.backup.clone(), object: key.to_string(), error })
        }
        // Damage is found and reported where the part is restored.
        _ => Ok(()),
    }
}

/// One restore's inputs, decided before anything is written.
struct Restore<'a> {
    archive: &'a Archive,
    plan: &'a RestorePlan,
    cluster_config: &'a ClusterConfig,
    request: &'a FetchRequest,
}

impl Restore<'_> {
    async fn run(
        &self,
        marker: RestoreMarker,
        lease: &crate::lease::RestoreLease,
        verified: &VerifiedChain,
        destination: Arc<Destination>,
        concurrency: usize,
    ) -> Result<u64, BackupError> {
        let Some(manifest) = verified.chain.last().cloned() else { return Ok(0) };
        // 4. Directories, files, links (each fsynced), under the lease, whose copy the restored
        // cluster's wal-fetch renews.
        lease.keep_in(&destination)?;
        let downloaded = if verified.chain.len() > 1 {
            extract_chain(self.archive, verified, destination.clone(), concurrency).await?
        } else {
            extract(self.archive, manifest.clone(), destination.clone(), concurrency).await?
        };

        // 5. backup_label, tablespace_map, settings, agent configuration, signal file.
        let (archive, name) = (self.archive, &self.plan.backup.name);
        let label_key = archive.layout.backup_label(name).map_err(BackupError::storage("name", name))?;
        let label = catalog::get_content(archive, &label_key).await?;
        destination.write_new(&destination.data_dir.join("backup_label"), &label)?;
        if !manifest.tablespaces.is_empty() {
            let map_key = archive.layout.tablespace_map(name).map_err(BackupError::storage("name", name))?;
            let map = String::from_utf8_lossy(&catalog::get_content(archive, &map_key).await?).into_owned();
            let map = remap_tablespaces(&map, &manifest, &destination);
            destination.write_new(&destination.data_dir.join("tablespace_map"), map.as_bytes())?;
        }
        let settings = self.settings()?;
        let existing = read_auto_conf(&destination.data_dir)
            .map_err(BackupError::io("read", destination.data_dir.join("postgresql.auto.conf")))?;
        replace_durably(&destination, "postgresql.auto.conf", settings.render_auto_conf(&existing).as_bytes())?;
        for (file, text) in self.cluster_config.files_to_write() {
            destination.write_new(&destination.data_dir.join(file), text.as_bytes())?;
        }
        destination.write_new(&destination.data_dir.join(settings.signal_file()), b"")?;

        // 6. The data directory's entries durable, then pg_control last.
        destination.complete(marker)?;
        Ok(downloaded)
    }

    fn settings(&self) -> Result<RecoverySettings, BackupError> {
        let agent = std::env::current_exe().map_err(BackupError::io("find the agent's own path", "/proc/self/exe"))?;
        Ok(RecoverySettings {
            backup: self.plan.backup.name.clone(),
            agent: agent.display().to_string(),
            restore_config: self.cluster_config.restore.command_path(),
            archive: self.cluster_config.archive.clone(),
            pg_version: Some(self.plan.backup.pg_version / 10_000),
            target: self.request.target.clone(),
            action: self.request.action.clone(),
            timeline: self.plan.timeline.clone(),
            standby: self.request.standby,
            written_at: Utc::now(),
        })
    }
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

/// Replaces `<data dir>/<name>` atomically (temp file, fsync, rename); the data directory is
/// fsynced by [`Destination::complete`].
fn replace_durably(destination: &Destination, name: &str, content: &[u8]) -> Result<(), BackupError> {
    let target = destination.data_dir.join(name);
    let temporary = destination.data_dir.join(format!("{name}.pgec2-tmp"));
    destination.write_new(&temporary, content)?;
    destination.rename(&temporary, &target)
}
