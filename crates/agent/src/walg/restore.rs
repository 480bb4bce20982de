//! `backup-fetch` of a wal-g backup: its tar partitions unpacked into the destination
//! (`backup_label` comes with the last one), `global/pg_control` moved into place last, then
//! the same recovery settings, agent configuration and signal file as a pgec2 restore. WAL
//! comes from pgec2's archive and, for what wal-g pushed, from the wal-g archive (see
//! [`super::wal`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgec2_core::catalog::{self, RecoveryTarget};
use pgec2_core::layout::Archive;
use pgec2_core::manifest::BackupManifest;
use pgec2_core::recovery_window::{TimelineChoice, TimelineRequest};
use pgec2_core::walg::{ContentReader, WalgArchive, WalgBackup, WalgError, tar};

use crate::backup::cluster_config::ClusterConfig;
use crate::backup::destination::{CONTROL_FILE_PENDING, Destination, clear_interrupted};
use crate::backup::fetch::{FetchRequest, FetchSummary};
use crate::backup::recovery_conf::{RecoverySettings, read_auto_conf};
use crate::backup::{BackupError, Refusal};
use crate::config::AgentConfig;

/// Where the pg_control partition is unpacked before its file moves into place.
const CONTROL_STAGING: &str = ".pgec2-walg-control";

/// The wal-g backup `request` asks for, when it is one: a wal-g backup's name, or `LATEST` when
/// the newest backup (ending before a time target) is wal-g's.
pub async fn choose(
    config: &AgentConfig,
    archive: &Archive,
    request: &FetchRequest,
) -> Result<Option<(WalgArchive, WalgBackup)>, BackupError> {
    let Some(walg) = super::open(config).await? else { return Ok(None) };
    let backups = walg.backups().await?;
    let ends_in_time = |finish: Option<DateTime<Utc>>| match (&request.target, finish) {
        (RecoveryTarget::Time(target), Some(finish)) => finish <= *target,
        _ => true,
    };
    let chosen = if request.name == "LATEST" {
        let newest = backups.iter().rev().find(|backup| ends_in_time(backup.sentinel.finish_time));
        let own = catalog::scan_backups(archive).await?;
        let own_newest =
            own.committed.iter().filter(|backup| ends_in_time(Some(backup.finish_time))).map(|b| b.finish_time).max();
        newest.filter(|backup| own_newest.is_none_or(|own| backup.sentinel.finish_time.is_some_and(|walg| walg > own)))
    } else {
        backups.iter().find(|backup| backup.name == request.name)
    };
    Ok(chosen.cloned().map(|backup| (walg, backup)))
}

/// Restores wal-g backup `backup` into `request.dest`.
pub async fn fetch_walg_backup(
    config: &AgentConfig,
    walg: &WalgArchive,
    backup: &WalgBackup,
    request: &FetchRequest,
) -> Result<FetchSummary, BackupError> {
    if backup.sentinel.increment_from.is_some() {
        return Err(WalgError::Delta { name: backup.name.clone() }.into());
    }
    if !request.tablespace_mapping.is_empty() {
        let refusal = Refusal::UnsupportedForWalg { option: "--tablespace-mapping", backup: backup.name.clone() };
        return Err(refusal.into());
    }
    if let Some(removed) = clear_interrupted(&request.dest)? {
        eprintln!("note: {removed}");
    }
    let destination = Destination::check(&request.dest, &BackupManifest::new(""), &BTreeMap::new())?;
    let cluster_config = ClusterConfig::plan(config, &request.archive)?;
    cluster_config.check_new_archive().await?;
    let partitions = walg.partitions(&backup.name).await?;
    if !partitions.iter().any(|key| key.contains("/pg_control.")) {
        return Err(damaged(&backup.name, "it has no pg_control partition"));
    }
    tracing::info!(backup = %backup.name, parts = partitions.len(), "restoring a wal-g backup");
    destination.create_roots()?;
    let marker = destination.mark_in_progress(&backup.name)?;
    let restore = Restore { walg, backup, request, cluster_config: &cluster_config, destination: &destination };
    match restore.run(&partitions).await {
        Ok((files, data_bytes, downloaded_bytes)) => {
            destination.complete(marker)?;
            Ok(FetchSummary {
                backup: backup.name.clone(),
                dest: destination.data_dir.clone(),
                files,
                data_bytes,
                downloaded_bytes,
                timeline: restore.timeline().timeline,
                target: request.target.to_string(),
                archiving: cluster_config.describe_archiving(),
            })
        }
        Err(error) => {
            destination.clean_up();
            Err(error)
        }
    }
}

fn damaged(backup: &str, detail: impl Into<String>) -> BackupError {
    BackupError::Damaged { backup: backup.to_string(), detail: detail.into() }
}

struct Restore<'a> {
    walg: &'a WalgArchive,
    backup: &'a WalgBackup,
    request: &'a FetchRequest,
    cluster_config: &'a ClusterConfig,
    destination: &'a Destination,
}

impl Restore<'_> {
    /// Unpacks every partition and writes the settings; returns (files, bytes, stored bytes).
    async fn run(&self, partitions: &[String]) -> Result<(usize, u64, u64), BackupError> {
        let data_dir = self.destination.data_dir.clone();
        let (mut files, mut bytes, mut stored_bytes) = (0usize, 0u64, 0u64);
        for key in partitions {
            let stored = self.walg.get(key).await?;
            stored_bytes += stored.len() as u64;
            let control = key.contains("/pg_control.");
            let into = if control { data_dir.join(CONTROL_STAGING) } else { data_dir.clone() };
            let unpacked = unpack(self.backup.name.clone(), self.walg.content(key), stored, into).await?;
            files += unpacked.files as usize;
            bytes += unpacked.bytes;
        }
        let staged = data_dir.join(CONTROL_STAGING).join("global/pg_control");
        if !staged.is_file() {
            return Err(damaged(&self.backup.name, "its pg_control partition holds no global/pg_control"));
        }
        self.destination.rename(&staged, &data_dir.join(CONTROL_FILE_PENDING))?;
        let staging = data_dir.join(CONTROL_STAGING);
        std::fs::remove_dir_all(&staging).map_err(BackupError::io("remove", &staging))?;
        if !data_dir.join("backup_label").is_file() {
            return Err(damaged(&self.backup.name, "no partition holds backup_label"));
        }
        self.give_all(&data_dir)?;
        self.write_settings(&data_dir)?;
        Ok((files, bytes, stored_bytes))
    }

    /// Gives every unpacked entry to the data directory's owner.
    fn give_all(&self, data_dir: &Path) -> Result<(), BackupError> {
        for entry in walkdir::WalkDir::new(data_dir).min_depth(1) {
            let entry = entry.map_err(|error| BackupError::io("walk", data_dir)(error.into()))?;
            self.destination.give(entry.path())?;
        }
        Ok(())
    }

    fn write_settings(&self, data_dir: &Path) -> Result<(), BackupError> {
        let settings = self.settings()?;
        let auto_conf = data_dir.join("postgresql.auto.conf");
        let existing = read_auto_conf(data_dir).map_err(BackupError::io("read", &auto_conf))?;
        let temporary = data_dir.join("postgresql.auto.conf.pgec2-tmp");
        self.destination.write_new(&temporary, settings.render_auto_conf(&existing).as_bytes())?;
        self.destination.rename(&temporary, &auto_conf)?;
        for (file, text) in self.cluster_config.files_to_write() {
            self.destination.write_new(&data_dir.join(file), text.as_bytes())?;
        }
        self.destination.write_new(&data_dir.join(settings.signal_file()), b"")
    }

    fn timeline(&self) -> TimelineChoice {
        match self.request.timeline {
            TimelineRequest::Latest => TimelineChoice { timeline: self.backup.timeline(), latest_works: true },
            TimelineRequest::Current => TimelineChoice { timeline: self.backup.timeline(), latest_works: false },
            TimelineRequest::Id(id) => TimelineChoice { timeline: id, latest_works: false },
        }
    }

    fn settings(&self) -> Result<RecoverySettings, BackupError> {
        let agent = std::env::current_exe().map_err(BackupError::io("find the agent's own path", "/proc/self/exe"))?;
        Ok(RecoverySettings {
            backup: self.backup.name.clone(),
            agent: agent.display().to_string(),
            restore_config: self.cluster_config.restore.command_path(),
            archive: self.cluster_config.archive.clone(),
            pg_version: Some(self.backup.sentinel.pg_version / 10_000),
            target: self.request.target.clone(),
            action: self.request.action.clone(),
            timeline: self.timeline(),
            standby: self.request.standby,
            written_at: Utc::now(),
        })
    }
}

/// Decrypts, decompresses and unpacks one stored partition into `into`, off the async workers.
async fn unpack(
    backup: String,
    content: ContentReader,
    stored: bytes::Bytes,
    into: PathBuf,
) -> Result<tar::Unpacked, BackupError> {
    let task = tokio::task::spawn_blocking(move || {
        let decoder = content.open(&stored[..])?;
        tar::unpack(decoder, &into).map_err(|error| match error {
            tar::TarError::Write { path, error } => BackupError::Io { action: "write", path, source: error },
            tar::TarError::Read(error) | tar::TarError::Broken { error, .. } => match content.explain(&error) {
                failure @ WalgError::Decrypt { .. } => failure.into(),
                _ => damaged(&backup, format!("{}: {error}", content.key())),
            },
            error => damaged(&backup, format!("{}: {error}", content.key())),
        })
    });
    task.await.map_err(|error| BackupError::Task(error.to_string()))?
}
