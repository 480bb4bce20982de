//! The manifest of a base backup: every directory, file, symlink and tablespace of the copied
//! data directory, and where each file's bytes sit in the backup's parts.
//!
//! A backup's file contents are packed, in manifest order, into size-bounded *parts*
//! (`backups/<name>/parts/<index>`). A part is one [`crate::envelope`] object whose content is
//! the plain concatenation of file pieces; the manifest is the index into it: each file lists its
//! [`Chunk`]s (part, offset inside the part's content, length). Small files take one chunk; a file
//! larger than what is left in a part continues at offset 0 of the next part. Reading the parts
//! in index order and each part front to back therefore yields every file's bytes in order, which
//! lets a restore verify each file's BLAKE3 checksum while it streams.
//!
//! The manifest is written after the last part and before `complete.json`, so a committed
//! backup always has a manifest that describes exactly the parts stored.
//!
//! An *incremental* backup (format 2, [`IncrementalOf`]) lists every file of the data directory
//! too, but a relation file it read page by page holds only the 8 KiB blocks changed since its
//! parent started ([`BlockDelta`]); the other blocks come from the chain of backups it builds on
//! (see [`crate::increment`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::wal::Lsn;

/// Version of the manifest format of a full backup (read by every agent version).
pub const MANIFEST_FORMAT: u32 = 1;

/// Version of the manifest format of an incremental backup: agents that read only format 1
/// refuse it rather than restore its blocks as whole files.
pub const INCREMENTAL_MANIFEST_FORMAT: u32 = 2;

/// PostgreSQL's block size (`BLCKSZ`): the unit an incremental backup copies.
pub const BLOCK_SIZE: u64 = 8192;

/// Hex digits of each block's checksum in [`BlockDelta::checksums`] (the first 8 bytes of BLAKE3).
pub const BLOCK_CHECKSUM_HEX: usize = 16;

/// Where tablespace links live inside a data directory.
pub const TABLESPACE_DIR: &str = "pg_tblspc";

/// The file list of one base backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    /// The backup's name.
    pub backup: String,
    /// Directories, parents before children (restore creates them in this order).
    pub directories: Vec<DirectoryEntry>,
    /// Regular files in the order their bytes were packed into parts.
    pub files: Vec<FileEntry>,
    /// Symbolic links other than tablespace links.
    pub symlinks: Vec<SymlinkEntry>,
    /// Tablespaces: `pg_tblspc/<oid>` pointed at `location` in the backed-up cluster.
    pub tablespaces: Vec<Tablespace>,
    /// Every part of the backup, by index from 0.
    pub parts: Vec<PartInfo>,
    /// For an incremental backup: what it builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalOf>,
}

/// The backups an incremental backup builds on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalOf {
    /// The reference backup: blocks whose page LSN is at least its start LSN were copied.
    pub parent: String,
    /// The parent's start LSN.
    pub since_lsn: Lsn,
    /// The whole chain this backup builds on, the full backup first and the parent last.
    pub chain: Vec<String>,
    /// Files of the parent that no longer exist (dropped relations, removed files).
    #[serde(default)]
    pub deleted: Vec<String>,
}

impl IncrementalOf {
    /// The full backup at the root of the chain.
    pub fn full(&self) -> &str {
        self.chain.first().map_or(self.parent.as_str(), String::as_str)
    }
}

/// The blocks of a relation file an incremental backup stored; its content in the parts is
/// these blocks, in this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDelta {
    /// The file's length when it was read: blocks at or past it in older backups are gone
    /// (the relation was truncated).
    pub length: u64,
    /// Stored blocks as `[first, count]` ranges, ascending and not touching.
    pub ranges: Vec<[u32; 2]>,
    /// The first 8 bytes of each stored block's BLAKE3, hex, concatenated in block order.
    pub checksums: String,
}

impl BlockDelta {
    /// How many blocks are stored.
    pub fn block_count(&self) -> u64 {
        self.ranges.iter().map(|range| u64::from(range[1])).sum()
    }

    /// The stored block numbers, in order.
    pub fn blocks(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|&[first, count]| first..first.saturating_add(count))
    }

    /// The expected checksum of the `position`-th stored block.
    pub fn checksum_of(&self, position: usize) -> Option<&str> {
        self.checksums.get(position * BLOCK_CHECKSUM_HEX..(position + 1) * BLOCK_CHECKSUM_HEX)
    }

    fn check(&self, size: u64) -> Result<(), String> {
        let mut next = 0u64;
        for &[first, count] in &self.ranges {
            if count == 0 || u64::from(first) < next {
                return Err(format!("block range [{first}, {count}] is empty, out of order or touches the previous"));
            }
            next = u64::from(first) + u64::from(count) + 1;
        }
        let blocks = self.block_count();
        if blocks * BLOCK_SIZE != size {
            return Err(format!("{blocks} blocks stored but {size} bytes"));
        }
        if (next.saturating_sub(1)) * BLOCK_SIZE > self.length {
            return Err(format!("a stored block lies past the file's length {}", self.length));
        }
        if self.checksums.len() as u64 != blocks * BLOCK_CHECKSUM_HEX as u64 {
            return Err(format!("{} checksum digits for {blocks} blocks", self.checksums.len()));
        }
        Ok(())
    }
}

/// The checksum recorded for one block: the first 8 bytes of its BLAKE3, hex.
pub fn block_checksum(hasher: &blake3::Hasher) -> String {
    hasher.finalize().to_hex()[..BLOCK_CHECKSUM_HEX].to_string()
}

/// A directory, relative to the data directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub path: String,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// A regular file, relative to the data directory (tablespace files under `pg_tblspc/<oid>/`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// Bytes copied (a file that shrank during the copy records what was read).
    pub size: u64,
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// BLAKE3 of the copied bytes, lowercase hex.
    pub checksum: String,
    /// Where the bytes are, in file order; empty for an empty file.
    pub chunks: Vec<Chunk>,
    /// In an incremental backup, a relation file read page by page: the stored bytes are these
    /// blocks (`size` and `checksum` describe the stored bytes). `None`: the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockDelta>,
}

/// A piece of a file stored contiguously in one part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub part: u32,
    /// Offset inside the part's (decompressed) content.
    pub offset: u64,
    pub length: u64,
}

/// A symbolic link, relative to the data directory, and its target as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymlinkEntry {
    pub path: String,
    pub target: String,
}

/// A tablespace of the backed-up cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    pub oid: u32,
    /// Absolute directory the `pg_tblspc/<oid>` link pointed at.
    pub location: String,
}

impl Tablespace {
    /// `pg_tblspc/<oid>`: the prefix of this tablespace's paths in the manifest.
    pub fn link_path(&self) -> String {
        format!("{TABLESPACE_DIR}/{}", self.oid)
    }
}

/// One stored part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub index: u32,
    /// Bytes of file content in the part.
    pub content_bytes: u64,
    /// Bytes of the stored (compressed, enveloped) object.
    pub stored_bytes: u64,
    /// BLAKE3 of the part's content, lowercase hex (also in the object's envelope).
    pub checksum: String,
}

/// One piece of a part's content: which file and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index into [`BackupManifest::files`].
    pub file: usize,
    /// Offset inside the file.
    pub file_offset: u64,
    /// Offset inside the part's content.
    pub part_offset: u64,
    pub length: u64,
}

/// A manifest that cannot be trusted to restore from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest format {0} is not supported by this agent (reads formats 1 and 2): upgrade pgec2-agent")]
    UnsupportedFormat(u32),
    #[error("manifest path {0:?} is not a plain relative path inside the data directory")]
    UnsafePath(String),
    #[error("manifest path {path:?} lies under symbolic link {link:?}")]
    PathUnderSymlink { path: String, link: String },
    #[error("manifest lists {0:?} twice")]
    Duplicate(String),
    #[error("file {path:?}: {reason}")]
    BadChunks { path: String, reason: String },
    #[error("parts are not numbered 0..{count} in order")]
    BadPartNumbering { count: usize },
    #[error("part {part}: {reason}")]
    BadPart { part: u32, reason: String },
    #[error("file {path:?}: block list: {reason}")]
    BadBlocks { path: String, reason: String },
    #[error("format {format} does not match the manifest's content (incremental: {incremental})")]
    FormatMismatch { format: u32, incremental: bool },
}

/// True when `path` is relative, non-empty and has no empty, `.` or `..` components.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

impl BackupManifest {
    /// An empty manifest for `backup`.
    pub fn new(backup: impl Into<String>) -> Self {
        Self { format: MANIFEST_FORMAT, backup: backup.into(), ..Self::default() }
    }

    /// Total bytes of file content.
    pub fn data_bytes(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }

    /// Total bytes of stored parts.
    pub fn stored_part_bytes(&self) -> u64 {
        self.parts.iter().map(|part| part.stored_bytes).sum()
    }

    /// Checks everything a restore relies on: safe paths, no path under a symlink, chunks that
    /// cover each file exactly and lie inside their parts, parts filled front to back in file
    /// order with no gap or overlap.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT && self.format != INCREMENTAL_MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat(self.format));
        }
        let incremental = self.incremental.is_some();
        if incremental != (self.format == INCREMENTAL_MANIFEST_FORMAT)
            || (!incremental && self.files.iter().any(|file| file.blocks.is_some()))
        {
            return Err(ManifestError::FormatMismatch { format: self.format, incremental });
        }
        for file in &self.files {
            if let Some(blocks) = &file.blocks {
                blocks
                    .check(file.size)
                    .map_err(|reason| ManifestError::BadBlocks { path: file.path.clone(), reason })?;
            }
        }
        self.validate_paths()?;
        self.validate_parts()?;
        self.pieces_by_part().map(|_| ())
    }

    fn validate_paths(&self) -> Result<(), ManifestError> {
        let mut seen = BTreeSet::new();
        let tablespace_links = self.tablespaces.iter().map(Tablespace::link_path);
        let all_paths = self
            .directories
            .iter()
            .map(|entry| entry.path.clone())
            .chain(self.files.iter().map(|entry| entry.path.clone()))
            .chain(self.symlinks.iter().map(|entry| entry.path.clone()))
            .chain(tablespace_links);
        for path in all_paths {
            if !is_safe_relative_path(&path) {
                return Err(ManifestError::UnsafePath(path));
            }
            if !seen.insert(path.clone()) {
                return Err(ManifestError::Duplicate(path));
            }
        }
        for link in &self.symlinks {
            let prefix = format!("{}/", link.path);
            if let Some(path) = seen.iter().find(|path| path.starts_with(&prefix)) {
                return Err(ManifestError::PathUnderSymlink { path: path.clone(), link: link.path.clone() });
            }
        }
        Ok(())
    }

    fn validate_parts(&self) -> Result<(), ManifestError> {
        for (position, part) in self.parts.iter().enumerate() {
            if part.index as usize != position {
                return Err(ManifestError::BadPartNumbering { count: self.parts.len() });
            }
        }
        Ok(())
    }

    /// For every part, the pieces of files it holds, ordered by offset. Fails unless the pieces
    /// tile each part's content exactly and each file's chunks cover the file in order.
    pub fn pieces_by_part(&self) -> Result<Vec<Vec<Piece>>, ManifestError> {
        let mut pieces: Vec<Vec<Piece>> = vec![Vec::new(); self.parts.len()];
        let mut fill: Vec<u64> = vec![0; self.parts.len()];
        let mut last_part = 0u32;
        for (index, file) in self.files.iter().enumerate() {
            let bad = |reason: String| ManifestError::BadChunks { path: file.path.clone(), reason };
            let mut file_offset = 0u64;
            for chunk in &file.chunks {
                let part = chunk.part as usize;
                if part >= self.parts.len() {
                    return Err(bad(format!(
                        "chunk in part {} but the backup has {} parts",
                        chunk.part,
                        self.parts.len()
                    )));
                }
                if chunk.part < last_part || chunk.offset != fill[part] || chunk.length == 0 {
                    return Err(bad(format!("chunk at part {} offset {} is out of order", chunk.part, chunk.offset)));
                }
                pieces[part].push(Piece { file: index, file_offset, part_offset: chunk.offset, length: chunk.length });
                fill[part] += chunk.length;
                file_offset += chunk.length;
                last_part = chunk.part;
            }
            if file_offset != file.size {
                return Err(bad(format!("chunks hold {file_offset} bytes, the file has {}", file.size)));
            }
        }
        for (part, filled) in self.parts.iter().zip(&fill) {
            if part.content_bytes != *filled {
                let reason = format!("holds {} bytes but its chunks add up to {filled}", part.content_bytes);
                return Err(ManifestError::BadPart { part: part.index, reason });
            }
        }
        Ok(pieces)
    }

    /// The tablespace a manifest path belongs to, and the path inside the tablespace.
    pub fn tablespace_of<'p>(&self, path: &'p str) -> Option<(&Tablespace, &'p str)> {
        let rest = path.strip_prefix(TABLESPACE_DIR)?.strip_prefix('/')?;
        let (oid, inside) = rest.split_once('/')?;
        let tablespace = self.tablespaces.iter().find(|tablespace| tablespace.oid.to_string() == oid)?;
        Some((tablespace, inside))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, chunks: &[(u32, u64, u64)]) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            size: chunks.iter().map(|chunk| chunk.2).sum(),
            mode: 0o600,
            mtime: 0,
            checksum: String::new(),
            chunks: chunks.iter().map(|&(part, offset, length)| Chunk { part, offset, length }).collect(),
            blocks: None,
        }
    }

    fn part(index: u32, content_bytes: u64) -> PartInfo {
        PartInfo { index, content_bytes, stored_bytes: 0, checksum: String::new() }
    }

    fn two_part_manifest() -> BackupManifest {
        let mut manifest = BackupManifest::new("base_1");
        manifest.directories.push(DirectoryEntry { path: "base".into(), mode: 0o700 });
        manifest.files = vec![
            file("PG_VERSION", &[(0, 0, 3)]),
            file("base/1/1259", &[(0, 3, 97), (1, 0, 50)]),
            file("empty", &[]),
            file("global/pg_control", &[(1, 50, 10)]),
        ];
        manifest.parts = vec![part(0, 100), part(1, 60)];
        manifest
    }

    #[test]
    fn a_file_spanning_two_parts_is_read_back_in_order() {
        let manifest = two_part_manifest();
        manifest.validate().expect("valid");
        let pieces = manifest.pieces_by_part().expect("pieces");
        assert_eq!(pieces[0].len(), 2);
        assert_eq!(pieces[1][0], Piece { file: 1, file_offset: 97, part_offset: 0, length: 50 });
        assert_eq!(pieces[1][1].file, 3);
        assert_eq!(manifest.data_bytes(), 160);
    }

    #[test]
    fn a_manifest_survives_a_json_round_trip() {
        let manifest = two_part_manifest();
        let json = serde_json::to_vec(&manifest).expect("serialize");
        assert_eq!(serde_json::from_slice::<BackupManifest>(&json).expect("parse"), manifest);
    }

    #[test]
    fn paths_that_would_escape_the_restore_directory_are_refused() {
        for bad in ["/etc/passwd", "../x", "base/../../x", "a//b", "", "./x"] {
            let mut manifest = two_part_manifest();
            manifest.files[2].path = bad.to_string();
            assert_eq!(manifest.validate(), Err(ManifestError::UnsafePath(bad.to_string())), "{bad}");
        }
    }

    #[test]
    fn a_file_under_a_symlink_is_refused() {
        let mut manifest = two_part_manifest();
        manifest.symlinks.push(SymlinkEntry { path: "base".into(), target: "/etc".into() });
        manifest.directories.clear();
        assert!(matches!(manifest.validate(), Err(ManifestError::PathUnderSymlink { .. })));
    }

    #[test]
    fn chunks_that_do_not_tile_the_parts_are_refused() {
        let mut gap = two_part_manifest();
        gap.files[3].chunks[0].offset = 51;
        assert!(matches!(gap.validate(), Err(ManifestError::BadChunks { .. })));

        let mut short = two_part_manifest();
        short.files[0].size = 4;
        assert!(matches!(short.validate(), Err(ManifestError::BadChunks { .. })));

        let mut missing_bytes = two_part_manifest();
        missing_bytes.parts[1].content_bytes = 61;
        assert!(matches!(missing_bytes.validate(), Err(ManifestError::BadPart { part: 1, .. })));

        let mut unknown_part = two_part_manifest();
        unknown_part.files[3].chunks[0].part = 2;
        assert!(matches!(unknown_part.validate(), Err(ManifestError::BadChunks { .. })));
    }

    #[test]
    fn tablespace_paths_resolve_to_their_tablespace() {
        let mut manifest = two_part_manifest();
        manifest.tablespaces.push(Tablespace { oid: 16385, location: "/srv/ts".into() });
        let (tablespace, inside) = manifest.tablespace_of("pg_tblspc/16385/PG_15_202209061/5/16386").expect("mapped");
        assert_eq!((tablespace.oid, inside), (16385, "PG_15_202209061/5/16386"));
        assert!(manifest.tablespace_of("pg_tblspc/99/x").is_none());
        assert!(manifest.tablespace_of("base/1").is_none());
    }
}
