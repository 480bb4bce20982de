//! `backup-push`: a base backup of the running cluster, told as a story.
//!
//! 1. connect and check the server (a primary, archiving on, the data directory we were given,
//!    the cluster that owns the archive); an incremental backup chooses its parent and takes a
//!    lease on it (retention keeps the parent's chain while the lease lives; released at the end);
//! 2. start the non-exclusive backup (immediate checkpoint) on that one session; its start time,
//!    timeline and LSN name the backup;
//! 3. list the data directory and tablespaces, copy the files into parts (parallel compression
//!    and uploads, bounded memory), and start making the parts durable in one batch (on a local
//!    directory, one `syncfs` instead of two journal commits per part; nothing to do on S3);
//! 4. stop the backup (PostgreSQL switches to a new WAL segment);
//! 5. store `backup_label` and `tablespace_map` exactly as returned;
//! 6. check that every WAL segment from the start to the end is in the archive;
//! 7. wait until the parts are durable, then store the manifest, then (pinned backups) the pin;
//! 8. check every object is still there (for an incremental, every ancestor's commit marker and
//!    manifest too: a chain with a hole is never committed), then commit: `complete.json`, last.
//!
//! A failure anywhere before step 8 leaves an uncommitted backup that is never listed and that
//! `delete garbage` removes; the session ends and PostgreSQL aborts the backup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use pgec2_core::backoff::Backoff;
use pgec2_core::catalog::{self, BACKUP_INFO_FORMAT, BackupInfo, BackupName, BackupType};
use pgec2_core::compression::{Algorithm, Compression};
use pgec2_core::envelope;
use pgec2_core::identity;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BackupManifest, INCREMENTAL_MANIFEST_FORMAT};
use pgec2_core::storage::{ObjectKey, PutMode};
use pgec2_core::wal::{SegmentSize, TimelineId};

use super::increment::{self, IncrementalRequest};
use super::upload::{PartWriter, sync_parts};
use super::walk::walk_data_directory;
use super::{BackupError, Refusal};
use crate::config::AgentConfig;
use crate::postgres::backup_api::label_timeline;
use crate::postgres::{self, BackupSession, BackupStart, BackupStop, ServerFacts};

/// How long to wait for the end WAL segment to appear in the archive after `pg_backup_stop`
/// (as long as PostgreSQL's own wait was given before the agent took it over).
const WAL_ARRIVAL_TIMEOUT: Duration = crate::postgres::backup_api::STOP_TIMEOUT;
/// The first and the longest pause between two looks for a segment not yet archived.
const WAL_POLL: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));

/// What the caller asks of a new backup.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Pin it: retention never deletes it.
    pub permanent: bool,
    /// Notes recorded in its commit record.
    pub annotations: BTreeMap<String, String>,
    /// An incremental backup (`--incremental`): only blocks changed since the parent.
    pub incremental: Option<IncrementalRequest>,
}

/// Takes a base backup; returns its commit record.
pub async fn push_backup(
    config: &AgentConfig,
    archive: &Archive,
    pgdata: Option<&Path>,
    options: PushOptions,
) -> Result<BackupInfo, BackupError> {
    // 1. Connect and check the server; an incremental backup finds its parent and leases its
    // chain, so that retention keeps it while this backup runs.
    let client = postgres::connect(&config.postgres).await?;
    let facts = ServerFacts::read(&client).await?;
    let pgdata = check_server(&facts, pgdata.or(config.pgdata()))?;
    check_owner(archive, &facts).await?;
    let Some(request) = &options.incremental else {
        return copy_and_commit(config, archive, &client, &facts, &pgdata, None, options).await;
    };
    let Some(parent) = increment::choose_parent(archive, request, facts.system_identifier).await? else {
        return copy_and_commit(config, archive, &client, &facts, &pgdata, None, options).await;
    };
    let lease = crate::lease::hold_for_push(archive, &parent.info, &pgdata).await;
    let pushed = match increment::missing_ancestor(archive, &parent.chain).await {
        Ok(None) => copy_and_commit(config, archive, &client, &facts, &pgdata, Some(parent), options).await,
        Ok(Some((ancestor, object))) => {
            let reason = format!("the backup {ancestor} it builds on was deleted meanwhile ({object} is gone)");
            Err(increment::IncrementalError::UnusableParent { parent: parent.info.name, reason }.into())
        }
        Err(error) => Err(error),
    };
    lease.release().await;
    pushed
}

/// Steps 2 to 8 of a backup on a checked server; `parent` for an incremental backup.
async fn copy_and_commit(
    config: &AgentConfig,
    archive: &Archive,
    client: &tokio_postgres::Client,
    facts: &ServerFacts,
    pgdata: &Path,
    parent: Option<increment::Parent>,
    options: PushOptions,
) -> Result<BackupInfo, BackupError> {
    let PushOptions { permanent, annotations, .. } = options;
    // 2. Start the backup; its start names it.
    let (session, start) = BackupSession::start(client, facts.version_num, "pgec2-agent backup-push").await?;
    let name = BackupName::new(start.time, start.timeline, start.lsn).to_string();
    tracing::info!(backup = %name, lsn = %start.lsn, "backup started");
    let parent = parent.filter(|parent| same_timeline(parent, &start));

    // 3. List and copy the files (an incremental: changed blocks of the parent's relation files).
    let walk_root = pgdata.to_path_buf();
    let mut tree = tokio::task::spawn_blocking(move || walk_data_directory(&walk_root))
        .await
        .map_err(|error| BackupError::Task(error.to_string()))??;
    let deleted =
        parent.as_ref().map(|parent| increment::plan_files(&mut tree.files, &parent.manifest, parent.info.start_lsn.0));
    let writer = PartWriter {
        archive: archive.clone(),
        backup: name.clone(),
        compression: config.compression,
        concurrency: config.transfer.upload_concurrency,
        part_size: config.backup_part_size(),
    };
    let (packed, parts) = writer.copy(tree.files).await?;
    tracing::info!(backup = %name, files = packed.files.len(), parts = parts.len(), "files copied");
    // The parts' sync runs while PostgreSQL stops the backup and its WAL is archived (step 7 waits).
    let (sync_archive, sync_name) = (archive.clone(), name.clone());
    let parts_durable = tokio::spawn(async move { sync_parts(&sync_archive, &sync_name).await });

    // 4. Stop the backup; step 6 waits for its WAL in the archive.
    let stop = session.stop().await?;

    // 5. Store backup_label and tablespace_map exactly as returned.
    let mut stored_bytes = store_label_files(archive, &name, &stop).await?;

    // 6. Check the WAL from start to end is archived.
    let mut info = stopped_backup_info(&name, &start, &stop, facts, permanent, annotations);
    wait_for_wal(archive, &info, info.timeline, Some(&pgdata.join("pg_wal"))).await?;

    // 7. The parts durable, then the manifest, then the pin: nothing refers to a part before.
    parts_durable.await.map_err(|error| BackupError::Task(error.to_string()))??;
    let mut manifest = BackupManifest::new(name.clone());
    manifest.directories = tree.directories;
    manifest.files = packed.files;
    manifest.symlinks = tree.symlinks;
    manifest.tablespaces = tree.tablespaces;
    manifest.parts = parts;
    if let Some(parent) = &parent {
        manifest.format = INCREMENTAL_MANIFEST_FORMAT;
        manifest.incremental = Some(parent.incremental_of(deleted.unwrap_or_default()));
        info.backup_type = BackupType::Incremental;
        info.parent = Some(parent.info.name.clone());
    }
    let manifest_key = archive.layout.backup_manifest(&name).map_err(BackupError::storage("name", &name))?;
    stored_bytes +=
        catalog::put_json_sized(archive, &manifest_key, &manifest, PutMode::CreateNew, config.compression).await?;
    if permanent {
        catalog::set_pin_marker(archive, &name).await?;
    }

    // 8. Commit: every object still there (an incremental's whole chain too), then complete.json last.
    info.data_bytes = manifest.data_bytes();
    info.stored_bytes = stored_bytes + manifest.stored_part_bytes();
    check_objects_present(archive, &manifest, !stop.tablespace_map.is_empty()).await?;
    if let Some(parent) = &parent {
        increment::check_chain_before_commit(archive, &name, &parent.chain).await?;
    }
    let complete = archive.layout.backup_complete(&name).map_err(BackupError::storage("name", &name))?;
    catalog::put_json(archive, &complete, &info, PutMode::CreateNew).await?;
    tracing::info!(backup = %name, "backup committed");
    // Holes the archive queue cap made before this backup no longer stop a restore.
    let start_segment = info.segment_size().segment_name(info.timeline, info.start_segment());
    crate::wal::queue_cap::forget_before(&pgdata.join("pg_wal"), &start_segment);
    Ok(info)
}

/// False (with a note) when the parent is on another timeline than the new backup: after a
/// promotion or a restore, block LSNs no longer tell what changed since the parent.
fn same_timeline(parent: &increment::Parent, start: &BackupStart) -> bool {
    if parent.info.timeline == start.timeline {
        return true;
    }
    eprintln!(
        "note: the parent backup {} is on timeline {}, the server on timeline {}: taking a full backup",
        parent.info.name, parent.info.timeline, start.timeline
    );
    false
}

/// The commit record of an object-store backup that `stop` ended (its sizes still zero); a
/// snapshot backup sets its kind and snapshot id on it.
pub(super) fn stopped_backup_info(
    name: &str,
    start: &BackupStart,
    stop: &BackupStop,
    facts: &ServerFacts,
    permanent: bool,
    annotations: BTreeMap<String, String>,
) -> BackupInfo {
    BackupInfo {
        name: name.to_string(),
        start_time: start.time,
        finish_time: stop.time,
        start_lsn: start.lsn,
        finish_lsn: stop.lsn,
        timeline: label_timeline(&stop.backup_label).unwrap_or(start.timeline),
        pg_version: facts.version_num,
        system_identifier: facts.system_identifier,
        data_bytes: 0,
        stored_bytes: 0,
        permanent,
        wal_segment_size: SegmentSize::new(facts.wal_segment_size).unwrap_or_default().bytes(),
        next_xid: stop.next_xid,
        annotations,
        kind: catalog::BackupKind::ObjectStore,
        snapshot_id: None,
        backup_type: BackupType::Full,
        parent: None,
        format: BACKUP_INFO_FORMAT,
    }
}

/// Refuses a standby, a server without archiving, or a data directory that is not the server's.
pub(super) fn check_server(facts: &ServerFacts, pgdata: Option<&Path>) -> Result<PathBuf, BackupError> {
    if facts.in_recovery {
        return Err(Refusal::Standby.into());
    }
    if facts.archive_mode == "off" {
        return Err(Refusal::ArchivingOff.into());
    }
    let server_dir = facts.data_directory.clone();
    let Some(given) = pgdata else { return Ok(server_dir) };
    let same = match (std::fs::canonicalize(given), std::fs::canonicalize(&server_dir)) {
        (Ok(given), Ok(server)) => given == server,
        _ => given == server_dir,
    };
    if !same {
        return Err(Refusal::WrongDataDirectory { given: given.to_path_buf(), server: server_dir }.into());
    }
    Ok(given.to_path_buf())
}

/// Refuses to back up into an archive another cluster owns.
pub(super) async fn check_owner(archive: &Archive, facts: &ServerFacts) -> Result<(), BackupError> {
    if let Some(owner) = identity::read_owner(archive).await?
        && owner.system_identifier != facts.system_identifier
    {
        let (owner, pushing) = (owner.system_identifier, facts.system_identifier);
        return Err(identity::IdentityError::ForeignCluster { archive: archive.describe(), owner, pushing }.into());
    }
    Ok(())
}

/// Stores `backup_label` and (when there are tablespaces) `tablespace_map`; returns bytes stored.
pub(super) async fn store_label_files(archive: &Archive, name: &str, stop: &BackupStop) -> Result<u64, BackupError> {
    let label_key = archive.layout.backup_label(name).map_err(BackupError::storage("name", name))?;
    let map_key = archive.layout.tablespace_map(name).map_err(BackupError::storage("name", name))?;
    let mut stored = put_raw(archive, &label_key, stop.backup_label.as_bytes()).await?;
    if !stop.tablespace_map.is_empty() {
        stored += put_raw(archive, &map_key, stop.tablespace_map.as_bytes()).await?;
    }
    Ok(stored)
}

async fn put_raw(archive: &Archive, key: &ObjectKey, content: &[u8]) -> Result<u64, BackupError> {
    let none = Compression { algorithm: Algorithm::None, level: 0 };
    let (stored, _) =
        envelope::seal(content, none).map_err(|source| BackupError::Seal { object: key.to_string(), source })?;
    let size = stored.len() as u64;
    archive
        .storage
        .put_new_or_identical(key, Bytes::from(stored))
        .await
        .map_err(BackupError::storage("upload", key.as_str()))?;
    Ok(size)
}

/// Waits until every segment from the backup's start to its end is in the archive.
pub(super) async fn wait_for_wal(
    archive: &Archive,
    info: &BackupInfo,
    timeline: TimelineId,
    wal_dir: Option<&Path>,
) -> Result<(), BackupError> {
    let size = info.segment_size();
    let deadline = tokio::time::Instant::now() + WAL_ARRIVAL_TIMEOUT;
    let mut pauses = WAL_POLL.retries();
    for segment in info.start_segment()..=info.finish_segment() {
        let name = size.segment_name(timeline, segment);
        let key = archive.layout.wal_file(&name).map_err(BackupError::storage("name", &name))?;
        while archive.storage.head(&key).await.map_err(BackupError::storage("check", key.as_str()))?.is_none() {
            if wal_dir.is_some_and(|dir| crate::wal::queue_cap::was_dropped(dir, &name)) {
                return Err(Refusal::WalDropped { segment: name }.into());
            }
            if tokio::time::Instant::now() > deadline {
                let (segment, archive) = (name, archive.describe());
                return Err(Refusal::WalMissing { segment, archive, waited: WAL_ARRIVAL_TIMEOUT }.into());
            }
            tokio::time::sleep(pauses.next_delay()).await;
        }
    }
    Ok(())
}

/// Checks that the labels, the manifest and every part are stored before the commit marker is
/// written (a concurrent `delete garbage` with a too-short grace period must not leave a
/// committed backup with missing objects).
pub(super) async fn check_objects_present(
    archive: &Archive,
    manifest: &BackupManifest,
    has_tablespace_map: bool,
) -> Result<(), BackupError> {
    let prefix = archive.layout.backup_prefix(&manifest.backup);
    let listing = archive.storage.list(&prefix).await.map_err(BackupError::storage("list", &prefix))?;
    let present: std::collections::BTreeSet<&str> = listing.iter().map(|meta| meta.key.as_str()).collect();
    let mut expected =
        vec![archive.layout.backup_manifest(&manifest.backup), archive.layout.backup_label(&manifest.backup)];
    if has_tablespace_map {
        expected.push(archive.layout.tablespace_map(&manifest.backup));
    }
    expected.extend(manifest.parts.iter().map(|part| archive.layout.backup_part(&manifest.backup, part.index)));
    for key in expected {
        let key = key.map_err(BackupError::storage("name", &manifest.backup))?;
        if !present.contains(key.as_str()) {
            return Err(Refusal::ObjectVanished { key: key.to_string() }.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pgec2_core::identity::{ClusterIdentity, IdentityError};
    use pgec2_core::layout::ArchiveLayout;
    use pgec2_core::storage::memory::MemoryStorage;

    use super::*;

    fn primary(data_directory: &Path) -> ServerFacts {
        ServerFacts {
            version_num: 150_000,
            system_identifier: 7,
            data_directory: data_directory.to_path_buf(),
            wal_segment_size: 16 << 20,
            archive_mode: "on".into(),
            in_recovery: false,
        }
    }

    #[test]
    fn backup_push_refuses_a_standby_a_server_without_archiving_and_another_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let facts = primary(dir.path());
        assert_eq!(check_server(&facts, Some(dir.path())).expect("the server's own directory"), dir.path());
        let standby = ServerFacts { in_recovery: true, ..primary(dir.path()) };
        assert!(matches!(check_server(&standby, None), Err(BackupError::Refused(Refusal::Standby))));
        let off = ServerFacts { archive_mode: "off".into(), ..primary(dir.path()) };
        let refused = check_server(&off, None).expect_err("archiving is off");
        assert!(matches!(refused, BackupError::Refused(Refusal::ArchivingOff)));
        assert!(refused.to_string().contains("archive_command = 'pgec2-agent wal-push %p'"), "{refused}");
        let other = dir.path().join("other");
        let refused = check_server(&facts, Some(&other));
        assert!(
            matches!(&refused, Err(BackupError::Refused(Refusal::WrongDataDirectory { given, server })) if given == &other && server == dir.path()),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn backup_push_refuses_an_archive_another_cluster_owns() {
        let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::root());
        let dir = tempfile::tempdir().expect("tempdir");
        check_owner(&archive, &primary(dir.path())).await.expect("an unclaimed archive");
        let owner = ClusterIdentity::new(8, None, None);
        let key = archive.layout.cluster_identity().expect("key");
        catalog::put_json(&archive, &key, &owner, PutMode::CreateNew).await.expect("claim");
        let refused = check_owner(&archive, &primary(dir.path())).await.expect_err("another cluster's archive");
        assert!(
            matches!(&refused, BackupError::Identity(error) if matches!(**error, IdentityError::ForeignCluster { owner: 8, pushing: 7, .. })),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_backup_whose_part_vanished_is_not_committed() {
        let archive = Archive::new(Arc::new(MemoryStorage::new()), ArchiveLayout::root());
        let mut manifest = BackupManifest::new("base_1");
        manifest.parts.push(pgec2_core::manifest::PartInfo {
            index: 0,
            content_bytes: 1,
            stored_bytes: 1,
            checksum: String::new(),
        });
        for key in [archive.layout.backup_manifest("base_1"), archive.layout.backup_label("base_1")] {
            archive.storage.put(&key.expect("key"), Bytes::from_static(b"x"), PutMode::CreateNew).await.expect("put");
        }
        let refused = check_objects_present(&archive, &manifest, false).await.expect_err("the part is missing");
        let part = archive.layout.backup_part("base_1", 0).expect("key");
        assert!(
            matches!(&refused, BackupError::Refused(Refusal::ObjectVanished { key }) if key == part.as_str()),
            "{refused:?}"
        );
    }
}
