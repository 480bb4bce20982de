//! `backup-push --method snapshot`: a base backup whose data is a snapshot of the host's data
//! volume, taken by the operator while this process holds the backup session open.
//!
//! 1. connect and check the server, as for any backup;
//! 2. start the non-exclusive backup on this one session; its start names the backup;
//! 3. ask for the snapshot: `snapshot-requests/<backup>/request.json` in the archive;
//! 4. wait until the operator answers `taken.json` (the snapshot's point in time is fixed);
//! 5. stop the backup (PostgreSQL waits for the end WAL to be archived), store `backup_label`
//!    and `tablespace_map` exactly as returned, check the WAL from start to end is archived;
//! 6. store the manifest (no files: the data is in the snapshot);
//! 7. wait until the operator answers `completed.json`, then commit `complete.json` naming the
//!    snapshot.
//!
//! The session is this process's: if it dies, PostgreSQL aborts the backup and nothing is
//! committed; an answer that never comes ends the wait after `wait` with nothing committed. The
//! handshake is described in [`pgec2_core::catalog::snapshot`].

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use pgec2_core::catalog::snapshot::{self, COMPLETED, REQUEST, SnapshotAnswer, SnapshotRequest, TAKEN};
use pgec2_core::catalog::{self, BackupInfo, BackupKind, BackupName};
use pgec2_core::layout::Archive;
use pgec2_core::manifest::BackupManifest;
use pgec2_core::storage::PutMode;

use super::push::{
    PushOptions, check_objects_present, check_owner, check_server, stopped_backup_info, store_label_files, wait_for_wal,
};
use super::{BackupError, Refusal};
use crate::config::AgentConfig;
use crate::postgres::{self, BackupSession, ServerFacts};

/// How often the archive is read for the operator's answers.
const POLL: Duration = Duration::from_millis(500);

/// Takes a snapshot backup; returns its commit record.
pub async fn push_snapshot_backup(
    config: &AgentConfig,
    archive: &Archive,
    pgdata: Option<&Path>,
    options: PushOptions,
    wait: Duration,
) -> Result<BackupInfo, BackupError> {
    // 1. Connect and check the server.
    let client = postgres::connect(&config.postgres).await?;
    let facts = ServerFacts::read(&client).await?;
    check_server(&facts, pgdata.or(config.pgdata()))?;
    check_owner(archive, &facts).await?;

    // 2. Start the backup; its start names it.
    let label = "pgec2-agent backup-push --method snapshot";
    let (session, start) = BackupSession::start(&client, facts.version_num, label).await?;
    let name = BackupName::new(start.time, start.timeline, start.lsn).to_string();
    tracing::info!(backup = %name, lsn = %start.lsn, "snapshot backup started");

    // 3-4. Ask for the snapshot and wait until it is taken.
    let request = SnapshotRequest { backup: name.clone(), start_lsn: start.lsn, requested_at: Utc::now() };
    snapshot::put(archive, &name, REQUEST, &request).await?;
    let taken = wait_for_answer(archive, &name, TAKEN, wait).await?;
    tracing::info!(backup = %name, snapshot = %taken.snapshot_id, "volume snapshot taken");

    // 5. Stop the backup, store the labels, check the WAL.
    let stop = session.stop().await?;
    drop(client);
    let mut stored_bytes = store_label_files(archive, &name, &stop).await?;
    let mut info = stopped_backup_info(&name, &start, &stop, &facts, options.permanent, options.annotations);
    info.kind = BackupKind::Snapshot;
    info.snapshot_id = Some(taken.snapshot_id.clone());
    wait_for_wal(archive, &info, info.timeline, None).await?;

    // 6. The manifest: no files, the data is in the snapshot.
    let manifest = BackupManifest::new(name.clone());
    let manifest_key = archive.layout.backup_manifest(&name).map_err(BackupError::storage("name", &name))?;
    stored_bytes +=
        catalog::put_json_sized(archive, &manifest_key, &manifest, PutMode::CreateNew, config.compression).await?;
    if options.permanent {
        catalog::set_pin_marker(archive, &name).await?;
    }

    // 7. Commit once the snapshot is complete.
    let completed = wait_for_answer(archive, &name, COMPLETED, wait).await?;
    if completed.snapshot_id != taken.snapshot_id {
        let (reported, taken) = (completed.snapshot_id, taken.snapshot_id);
        return Err(Refusal::SnapshotMismatch { backup: name, reported, taken }.into());
    }
    info.stored_bytes = stored_bytes;
    check_objects_present(archive, &manifest, !stop.tablespace_map.is_empty()).await?;
    let complete = archive.layout.backup_complete(&name).map_err(BackupError::storage("name", &name))?;
    catalog::put_json(archive, &complete, &info, PutMode::CreateNew).await?;
    tracing::info!(backup = %name, snapshot = %taken.snapshot_id, "snapshot backup committed");
    Ok(info)
}

/// Waits for the operator's answer `object` of the handshake of `backup`.
async fn wait_for_answer(
    archive: &Archive,
    backup: &str,
    object: &str,
    wait: Duration,
) -> Result<SnapshotAnswer, BackupError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(answer) = snapshot::get::<SnapshotAnswer>(archive, backup, object).await? {
            return Ok(answer);
        }
        if tokio::time::Instant::now() > deadline {
            let (backup, answer, archive) = (backup.to_string(), object.to_string(), archive.describe());
            return Err(Refusal::NoSnapshotAnswer { backup, answer, archive, waited: wait }.into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Refuses to fetch a snapshot backup by name: its data is in a volume snapshot, not in the
/// archive (`backup-fetch LATEST` picks among the backups copied into the archive only).
pub fn refuse_snapshot(backups: &catalog::BackupSet, name: &str) -> Result<(), BackupError> {
    let snapshot = backups.committed.iter().find(|backup| backup.name == name && backup.kind == BackupKind::Snapshot);
    match snapshot {
        Some(backup) => Err(Refusal::SnapshotNotInArchive {
            backup: name.to_string(),
            snapshot_id: backup.snapshot_id.clone().unwrap_or_else(|| "unknown id".to_string()),
        }
        .into()),
        None => Ok(()),
    }
}
