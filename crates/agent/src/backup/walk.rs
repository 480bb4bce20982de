//! Enumerates what a base backup copies from a data directory and its tablespaces, skipping
//! what PostgreSQL's documentation ("Backing Up the Data Directory") and `basebackup.c` skip:
//!
//! - the *contents* of `pg_wal` (kept: `pg_wal/` and `pg_wal/archive_status/`), `pg_replslot`,
//!   `pg_dynshmem`, `pg_notify`, `pg_serial`, `pg_snapshots`, `pg_stat_tmp` and `pg_subtrans`
//!   (the directories themselves are kept, so permissions survive);
//! - `postmaster.pid`, `postmaster.opts`, `backup_label`, `tablespace_map`, `backup_manifest`,
//!   `postgresql.auto.conf.tmp`, `current_logfiles.tmp`, `pg_internal.init*`, anything named
//!   `pgsql_tmp*` (temporary files and directories), at any depth;
//! - what a restore leaves for itself: `pgec2-restore-incomplete` and `pgec2-agent-source.toml`
//!   (a restore of this backup writes its own);
//! - temporary relations (`t<backend>_<relfilenode>…`) and the main, FSM and VM forks of unlogged
//!   relations (their `_init` fork is kept; recovery rebuilds them from it).
//!
//! `pg_wal` may be a symlink (initdb -X); it is recorded as a plain directory. `pg_tblspc/<oid>`
//! links become tablespaces whose files are listed under `pg_tblspc/<oid>/`. `global/pg_control`
//! is listed last, so its copy is the newest file of the backup, as pg_basebackup does.

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pgec2_core::manifest::{DirectoryEntry, SymlinkEntry, TABLESPACE_DIR, Tablespace};

/// Directories whose contents are not backed up (top level of the data directory).
const EXCLUDED_CONTENTS: &[&str] =
    &["pg_wal", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];

/// File names never backed up, at any depth.
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    crate::lease::LEASE_FILE,
    super::destination::RESTORE_MARKER,
    super::cluster_config::SOURCE_CONFIG_FILE,
];

/// The control file, copied last.
pub const CONTROL_FILE: &str = "global/pg_control";

/// A regular file to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path in the manifest (relative to the data directory).
    pub relative: String,
    pub absolute: PathBuf,
    pub mode: u32,
    pub mtime: i64,
    /// Copy only the blocks whose page LSN is at least this (or zero): a relation file of an
    /// incremental backup (see [`super::increment`]). `None`: the whole file.
    pub pages_since: Option<u64>,
}

/// Everything a backup copies, in copy order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTree {
    pub directories: Vec<DirectoryEntry>,
    pub files: Vec<SourceFile>,
    pub symlinks: Vec<SymlinkEntry>,
    pub tablespaces: Vec<Tablespace>,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to read {} while listing the data directory: {source}", path.display())]
pub struct WalkError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Lists the data directory `pgdata` and the tablespaces it links to.
pub fn walk_data_directory(pgdata: &Path) -> Result<SourceTree, WalkError> {
    let mut tree = SourceTree::default();
    walk_directory(pgdata, "", &mut tree)?;
    let control = tree.files.iter().position(|file| file.relative == CONTROL_FILE);
    if let Some(position) = control {
        let control = tree.files.remove(position);
        tree.files.push(control);
    }
    Ok(tree)
}

/// Walks `dir`, whose manifest path is `relative` ("" for the data directory itself).
fn walk_directory(dir: &Path, relative: &str, tree: &mut SourceTree) -> Result<(), WalkError> {
    let mut entries = match read_dir_sorted(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !relative.is_empty() => return Ok(()),
        Err(source) => return Err(WalkError { path: dir.to_path_buf(), source }),
    };
    let unlogged = unlogged_relations(&entries, relative);
    for (name, path) in entries.drain(..) {
        let child = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
        if is_excluded_file(&name) || is_temporary_relation(&name) || is_unlogged_fork(&name, &unlogged) {
            continue;
        }
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(WalkError { path, source }),
        };
        if metadata.file_type().is_symlink() {
            add_symlink(&path, &child, relative, tree)?;
        } else if metadata.is_dir() {
            add_directory(
                &path,
                &child,
                relative.is_empty() && EXCLUDED_CONTENTS.contains(&name.as_str()),
                &metadata,
                tree,
            )?;
        } else if metadata.is_file() {
            tree.files.push(source_file(child, path, &metadata));
        }
    }
    Ok(())
}

fn add_directory(
    path: &Path,
    child: &str,
    skip_contents: bool,
    metadata: &Metadata,
    tree: &mut SourceTree,
) -> Result<(), WalkError> {
    tree.directories.push(DirectoryEntry { path: child.to_string(), mode: metadata.permissions().mode() & 0o7777 });
    if child == "pg_wal" {
        let status = path.join("archive_status");
        let mode = std::fs::metadata(&status).map(|meta| meta.permissions().mode() & 0o7777).unwrap_or(0o700);
        tree.directories.push(DirectoryEntry { path: "pg_wal/archive_status".into(), mode });
    }
    if skip_contents { Ok(()) } else { walk_directory(path, child, tree) }
}

/// A symlink: `pg_wal` → a directory, `pg_tblspc/<oid>` → a tablespace, anything else kept as a link.
fn add_symlink(path: &Path, child: &str, parent: &str, tree: &mut SourceTree) -> Result<(), WalkError> {
    let target = std::fs::read_link(path).map_err(|source| WalkError { path: path.to_path_buf(), source })?;
    let followed = std::fs::metadata(path).map_err(|source| WalkError { path: path.to_path_buf(), source })?;
    if child == "pg_wal" {
        return add_directory(path, child, true, &followed, tree);
    }
    let oid =
        child.strip_prefix(TABLESPACE_DIR).and_then(|rest| rest.strip_prefix('/')).and_then(|oid| oid.parse().ok());
    if let (Some(oid), true, true) = (oid, parent == TABLESPACE_DIR, followed.is_dir()) {
        tree.tablespaces.push(Tablespace { oid, location: target.to_string_lossy().into_owned() });
        return walk_directory(path, child, tree);
    }
    tree.symlinks.push(SymlinkEntry { path: child.to_string(), target: target.to_string_lossy().into_owned() });
    Ok(())
}

fn source_file(relative: String, absolute: PathBuf, metadata: &Metadata) -> SourceFile {
    let mode = metadata.permissions().mode() & 0o7777;
    SourceFile { relative, absolute, mode, mtime: metadata.mtime(), pages_since: None }
}

fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        entries.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
    }
    entries.sort();
    Ok(entries)
}

fn is_excluded_file(name: &str) -> bool {
    EXCLUDED_FILES.contains(&name) || name.starts_with("pg_internal.init") || name.starts_with("pgsql_tmp")
}

/// `t<digits>_<digits>` optionally followed by a fork or segment suffix.
fn is_temporary_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else { return false };
    let Some((backend, relation)) = rest.split_once('_') else { return false };
    let relfilenode: String = relation.chars().take_while(char::is_ascii_digit).collect();
    !backend.is_empty() && backend.bytes().all(|b| b.is_ascii_digit()) && !relfilenode.is_empty()
}

/// Relation file nodes with an `_init` fork in a database directory (`base/<oid>` or
/// `pg_tblspc/<oid>/<version>/<oid>`): unlogged relations.
fn unlogged_relations(entries: &[(String, PathBuf)], relative: &str) -> BTreeSet<String> {
    let parts: Vec<&str> = relative.split('/').collect();
    let is_database_dir =
        matches!(parts.as_slice(), ["base", _]) || matches!(parts.as_slice(), [TABLESPACE_DIR, _, _, _]);
    if !is_database_dir {
        return BTreeSet::new();
    }
    entries.iter().filter_map(|(name, _)| name.strip_suffix("_init").map(str::to_string)).collect()
}

/// True for `<node>`, `<node>.<segment>`, `<node>_fsm…`, `<node>_vm…` of an unlogged relation.
fn is_unlogged_fork(name: &str, unlogged: &BTreeSet<String>) -> bool {
    if unlogged.is_empty() {
        return false;
    }
    let node: String = name.chars().take_while(char::is_ascii_digit).collect();
    let rest = &name[node.len()..];
    unlogged.contains(&node)
        && !rest.starts_with("_init")
        && (rest.is_empty() || rest.starts_with('.') || rest.starts_with("_fsm") || rest.starts_with("_vm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, relative: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, relative).expect("write");
    }

    #[test]
    fn what_postgres_says_to_skip_is_skipped_and_directories_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        for file in [
            "PG_VERSION",
            "global/pg_control",
            "global/1260",
            "global/pg_internal.init",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384.1",
            "base/5/16384_fsm",
            "base/5/16384_init",
            "base/5/t3_16390",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/000000010000000000000001.done",
            "pg_stat_tmp/global.stat",
            "pg_replslot/slot/state",
            "pg_subtrans/0000",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "postgresql.auto.conf",
        ] {
            touch(&root, file);
        }
        let tree = walk_data_directory(&root).expect("walk");
        let files: Vec<&str> = tree.files.iter().map(|file| file.relative.as_str()).collect();
        assert_eq!(
            files,
            vec!["PG_VERSION", "base/5/1259", "base/5/16384_init", "global/1260", "postgresql.auto.conf", CONTROL_FILE]
        );
        let dirs: Vec<&str> = tree.directories.iter().map(|dir| dir.path.as_str()).collect();
        for kept in ["pg_wal", "pg_wal/archive_status", "pg_stat_tmp", "pg_replslot", "pg_subtrans", "base/5"] {
            assert!(dirs.contains(&kept), "{kept} missing from {dirs:?}");
        }
        assert!(!dirs.contains(&"base/pgsql_tmp") && !dirs.contains(&"pg_replslot/slot"), "{dirs:?}");
    }

    #[test]
    fn tablespace_links_are_followed_and_other_links_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let location = dir.path().join("ts");
        touch(&location, "PG_15_202209061/5/16400");
        touch(&root, "PG_VERSION");
        std::fs::create_dir_all(root.join(TABLESPACE_DIR)).expect("pg_tblspc");
        std::os::unix::fs::symlink(&location, root.join("pg_tblspc/16399")).expect("link");
        std::os::unix::fs::symlink("/etc/hostname", root.join("hostname")).expect("link");
        let tree = walk_data_directory(&root).expect("walk");
        assert_eq!(tree.tablespaces, vec![Tablespace { oid: 16399, location: location.display().to_string() }]);
        assert!(tree.files.iter().any(|file| file.relative == "pg_tblspc/16399/PG_15_202209061/5/16400"));
        assert_eq!(tree.symlinks, vec![SymlinkEntry { path: "hostname".into(), target: "/etc/hostname".into() }]);
    }
}
