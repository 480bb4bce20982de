//! `backup-push --incremental`: which backup to build on, and which files to copy block by block.
//!
//! PostgreSQL 15 has no WAL summaries (PostgreSQL 17's `summarize_wal`), so changed blocks are
//! found by their page LSN: a block whose `pd_lsn` is at least the parent's start LSN was
//! written after the parent started, and is copied; a block with LSN 0 (zeroed, being
//! initialised) is copied too. Every change that matters for recovery is WAL-logged and sets
//! the page LSN (with data checksums or `wal_log_hints`, hint bits too); a block changed
//! after this backup starts is rewritten by WAL replay (full-page images) anyway.
//!
//! Only the main fork of relation files (`base/<db>/<n>[.<segment>]`, `global/<n>…`,
//! `pg_tblspc/<oid>/<version>/<db>/<n>…`) that the parent has and whose size is a whole number
//! of blocks is read block by block. Everything else is copied whole: the free space map and
//! visibility map forks (their pages change without a new LSN), `_init` forks, files new since
//! the parent, and every non-relation file.

use std::collections::BTreeSet;

use pgec2_core::catalog::{self, BackupInfo, BackupKind};
use pgec2_core::increment::ChainError;
use pgec2_core::layout::Archive;
use pgec2_core::manifest::{BLOCK_SIZE, BackupManifest, IncrementalOf, TABLESPACE_DIR};

use super::BackupError;
use super::walk::SourceFile;

/// Incrementals a chain may hold on its full backup unless configured otherwise.
pub const DEFAULT_MAX_CHAIN: usize = 6;

/// What `--incremental` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementalRequest {
    /// The parent: a backup name, or `LATEST` (the newest object-store backup).
    pub from: String,
    /// Incrementals a chain may hold; past it, a full backup is taken.
    pub max_chain: usize,
}

/// Failures particular to incremental backups.
#[derive(Debug, thiserror::Error)]
pub enum IncrementalError {
    #[error(
        "cannot take an incremental backup on {parent}: {reason}; name another backup with --from, or take a full \
         backup (without --incremental)"
    )]
    UnusableParent { parent: String, reason: String },
    #[error(
        "cannot restore backup {restoring}: the backup {backup} it builds on is unusable: {object}: {reason}; nothing \
         was written; restore an older backup whose chain is whole (backup-list shows each backup's parent), and take \
         a new full backup"
    )]
    BrokenChain { restoring: String, backup: String, object: String, reason: String },
    #[error(
        "cannot restore backup {restoring}: backup {backup} of its chain is damaged: {detail}; nothing was written; \
         run backup-verify {restoring} to list every damaged object, then restore an older backup whose chain \
         verifies, or take a new full backup"
    )]
    DamagedChain { restoring: String, backup: String, detail: String },
    #[error("cannot restore backup {restoring}: its chain does not fit together: {error}; nothing was written")]
    Chain { restoring: String, error: ChainError },
    #[error(
        "refusing to commit incremental backup {backup}: the backup {ancestor} it builds on was deleted while it was \
         taken ({object} is gone); nothing was committed: take a full backup (backup-push without --incremental)"
    )]
    AncestorGone { backup: String, ancestor: String, object: String },
    #[error(
        "--incremental copies changed blocks into the archive; a snapshot backup (--method snapshot) cannot be \
         incremental: drop one of the two"
    )]
    WithSnapshot,
}

/// The backup a new incremental builds on.
#[derive(Clone, Debug)]
pub struct Parent {
    pub info: BackupInfo,
    pub manifest: BackupManifest,
    /// The new backup's chain: the full backup first, the parent last.
    pub chain: Vec<String>,
}

impl Parent {
    /// What the new backup's manifest records about it.
    pub fn incremental_of(&self, deleted: Vec<String>) -> IncrementalOf {
        IncrementalOf {
            parent: self.info.name.clone(),
            since_lsn: self.info.start_lsn,
            chain: self.chain.clone(),
            deleted,
        }
    }
}

/// The parent for `request`, or `None` (with a note on stderr saying why) when a full backup
/// must be taken: no backup to build on yet, or the chain is at its maximum length.
pub async fn choose_parent(
    archive: &Archive,
    request: &IncrementalRequest,
    system_identifier: u64,
) -> Result<Option<Parent>, BackupError> {
    let backups = catalog::scan_backups(archive).await?;
    let own =
        |backup: &&BackupInfo| backup.kind == BackupKind::ObjectStore && backup.system_identifier == system_identifier;
    let info = if request.from == "LATEST" {
        match backups.committed.iter().rev().find(own) {
            Some(info) => info.clone(),
            None => {
                eprintln!("note: no backup of this cluster to build on yet: taking a full backup");
                return Ok(None);
            }
        }
    } else {
        let info = backups.find(&request.from, archive)?.clone();
        if !own(&&info) {
            let reason = "it is a snapshot backup or another cluster's".to_string();
            return Err(IncrementalError::UnusableParent { parent: info.name, reason }.into());
        }
        info
    };
    let manifest = catalog::read_manifest(archive, &info.name).await?;
    let mut chain = manifest.incremental.as_ref().map(|of| of.chain.clone()).unwrap_or_default();
    chain.push(info.name.clone());
    if let Some(missing) = chain.iter().find(|name| !backups.committed.iter().any(|backup| &backup.name == *name)) {
        let reason = format!("the backup {missing} it builds on is no longer a committed backup");
        return Err(IncrementalError::UnusableParent { parent: info.name, reason }.into());
    }
    if chain.len() > request.max_chain {
        eprintln!(
            "note: the chain on full backup {} already holds {} incremental backup(s), the maximum \
             (backup.max_incremental_chain = {}): taking a full backup",
            chain[0],
            chain.len() - 1,
            request.max_chain
        );
        return Ok(None);
    }
    Ok(Some(Parent { info, manifest, chain }))
}

/// The first backup of `chain` whose commit marker or manifest is no longer stored, with the
/// key of the missing object; `None` while the whole chain is there.
pub async fn missing_ancestor(archive: &Archive, chain: &[String]) -> Result<Option<(String, String)>, BackupError> {
    for name in chain {
        let keys = [archive.layout.backup_complete(name), archive.layout.backup_manifest(name)];
        for key in keys {
            let key = key.map_err(BackupError::storage("name", name))?;
            let stored = archive.storage.head(&key).await.map_err(BackupError::storage("check", key.as_str()))?;
            if stored.is_none() {
                return Ok(Some((name.clone(), key.to_string())));
            }
        }
    }
    Ok(None)
}

/// Refuses to commit `backup` when an ancestor in `chain` vanished while it was taken (a
/// retention run that did not see this push's lease): committed, it could never be restored.
pub async fn check_chain_before_commit(archive: &Archive, backup: &str, chain: &[String]) -> Result<(), BackupError> {
    match missing_ancestor(archive, chain).await? {
        None => Ok(()),
        Some((ancestor, object)) => {
            Err(IncrementalError::AncestorGone { backup: backup.to_string(), ancestor, object }.into())
        }
    }
}

/// Marks the files to copy block by block (see the module documentation) and returns the
/// parent's files that no longer exist.
pub fn plan_files(files: &mut [SourceFile], parent: &BackupManifest, since: u64) -> Vec<String> {
    let parent_paths: BTreeSet<&str> = parent.files.iter().map(|file| file.path.as_str()).collect();
    for file in files.iter_mut() {
        if is_relation_main_fork(&file.relative)
            && parent_paths.contains(file.relative.as_str())
            && std::fs::metadata(&file.absolute).is_ok_and(|meta| meta.len() % BLOCK_SIZE == 0)
        {
            file.pages_since = Some(since);
        }
    }
    let current: BTreeSet<&str> = files.iter().map(|file| file.relative.as_str()).collect();
    parent_paths.difference(&current).map(|path| path.to_string()).collect()
}

/// True for the main fork of a relation (`<relfilenode>` or `<relfilenode>.<segment>`) in a
/// database directory, `global/` or a tablespace's database directory.
pub fn is_relation_main_fork(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let name = match parts.as_slice() {
        ["base", database, name] if is_number(database) => name,
        ["global", name] => name,
        [TABLESPACE_DIR, oid, _, database, name] if is_number(oid) && is_number(database) => name,
        _ => return false,
    };
    match name.split_once('.') {
        Some((node, segment)) => is_number(node) && is_number(segment),
        None => is_number(name),
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_main_forks_of_relations_are_read_block_by_block() {
        for relation in ["base/5/16384", "base/5/16384.1", "global/1260", "pg_tblspc/16399/PG_15_202209061/5/16400"] {
            assert!(is_relation_main_fork(relation), "{relation}");
        }
        for other in [
            "base/5/16384_fsm",
            "base/5/16384_vm",
            "base/5/16384_init",
            "base/5/pg_filenode.map",
            "base/5/PG_VERSION",
            "global/pg_control",
            "pg_xact/0000",
            "postgresql.conf",
            "base/pgsql_tmp/1",
            "pg_tblspc/16399/PG_15_202209061/5/16400_vm",
        ] {
            assert!(!is_relation_main_fork(other), "{other}");
        }
    }

    #[test]
    fn files_of_the_parent_are_planned_block_by_block_and_vanished_ones_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |relative: &str, size: usize| {
            let absolute = dir.path().join(relative.replace('/', "_"));
            std::fs::write(&absolute, vec![0u8; size]).expect("write");
            SourceFile { relative: relative.into(), absolute, mode: 0o600, mtime: 0, pages_since: None }
        };
        let mut files =
            vec![file("base/5/1", 8192), file("base/5/2", 100), file("base/5/3", 8192), file("PG_VERSION", 3)];
        let mut parent = BackupManifest::new("p");
        for path in ["base/5/1", "base/5/2", "base/5/9", "PG_VERSION"] {
            parent.files.push(pgec2_core::manifest::FileEntry {
                path: path.into(),
                size: 0,
                mode: 0o600,
                mtime: 0,
                checksum: String::new(),
                chunks: Vec::new(),
                blocks: None,
            });
        }
        let deleted = plan_files(&mut files, &parent, 42);
        let planned: Vec<Option<u64>> = files.iter().map(|file| file.pages_since).collect();
        assert_eq!(planned, vec![Some(42), None, None, None], "only a parent's relation file of whole blocks");
        assert_eq!(deleted, vec!["base/5/9".to_string()]);
    }
}
