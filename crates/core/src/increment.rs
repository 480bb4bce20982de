//! Restoring a chain of incremental backups in one pass: which backup supplies each block of
//! each file of the newest backup.
//!
//! A chain is a full backup followed by incrementals, each built on the one before it. The
//! newest manifest lists every file to restore. For each file, its *layers* are its entries in
//! the chain, newest first, down to the first entry that stored the whole file. A block comes
//! from the newest layer that stored it; a block past a layer's length did not exist at that
//! backup (a truncation), so no older layer may supply it and it stays zero (WAL replay writes
//! it if it matters). The result, [`ChainPlan`], tells each backup of the chain which blocks of
//! which files to write, so each block is written exactly once.

use std::collections::BTreeMap;

use crate::manifest::{BLOCK_SIZE, BackupManifest, FileEntry};

/// Sorted, disjoint, half-open block ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockSet(Vec<(u64, u64)>);

impl BlockSet {
    /// Blocks `[start, end)` (empty when `end <= start`).
    pub fn range(start: u64, end: u64) -> Self {
        if end > start { Self(vec![(start, end)]) } else { Self::default() }
    }

    /// The blocks of `[first, count]` ranges as a manifest stores them.
    pub fn from_counted(ranges: &[[u32; 2]]) -> Self {
        let mut set: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &[first, count] in ranges {
            let (start, end) = (u64::from(first), u64::from(first) + u64::from(count));
            match set.last_mut() {
                Some((_, last_end)) if *last_end >= start => *last_end = (*last_end).max(end),
                _ => set.push((start, end)),
            }
        }
        Self(set)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Blocks in both sets.
    pub fn intersect(&self, other: &BlockSet) -> BlockSet {
        let (mut left, mut right, mut out) = (0, 0, Vec::new());
        while left < self.0.len() && right < other.0.len() {
            let (a, b) = (self.0[left], other.0[right]);
            let (start, end) = (a.0.max(b.0), a.1.min(b.1));
            if start < end {
                out.push((start, end));
            }
            if a.1 < b.1 { left += 1 } else { right += 1 }
        }
        BlockSet(out)
    }

    /// Blocks of this set not in `other`.
    pub fn subtract(&self, other: &BlockSet) -> BlockSet {
        let (mut out, mut first_cut) = (Vec::new(), 0);
        for &(mut start, end) in &self.0 {
            while other.0.get(first_cut).is_some_and(|cut| cut.1 <= start) {
                first_cut += 1;
            }
            for &(cut_start, cut_end) in other.0[first_cut..].iter().take_while(|cut| cut.0 < end) {
                if cut_start > start {
                    out.push((start, cut_start));
                }
                start = start.max(cut_end);
            }
            if start < end {
                out.push((start, end));
            }
        }
        BlockSet(out)
    }
}

/// Blocks needed to hold `length` bytes.
pub fn blocks_of(length: u64) -> u64 {
    length.div_ceil(BLOCK_SIZE)
}

/// A chain whose manifests do not fit together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("backup {backup} is not a full backup, but the chain starts with it")]
    NoFullBackup { backup: String },
    #[error("backup {backup} builds on {expected}, but the chain holds {found} before it")]
    WrongParent { backup: String, expected: String, found: String },
    #[error("file {path} of backup {backup} is stored as changed blocks, but {parent} has no such file")]
    MissingBase { backup: String, parent: String, path: String },
}

/// For each backup of a chain (oldest first), the blocks it supplies, by file path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainPlan {
    pub supplies: Vec<BTreeMap<String, BlockSet>>,
}

impl ChainPlan {
    /// Plans the restore of the last of `chain` (oldest first: a full backup, then each
    /// incremental built on the one before).
    pub fn build(chain: &[&BackupManifest]) -> Result<Self, ChainError> {
        check_links(chain)?;
        let mut supplies = vec![BTreeMap::new(); chain.len()];
        let Some((newest, older)) = chain.split_last() else { return Ok(Self { supplies }) };
        let indexes: Vec<BTreeMap<&str, &FileEntry>> = older
            .iter()
            .map(|manifest| manifest.files.iter().map(|file| (file.path.as_str(), file)).collect())
            .collect();
        for file in &newest.files {
            let mut remaining = BlockSet::range(0, blocks_of(final_length(file)));
            let mut layer = (chain.len() - 1, file);
            loop {
                let (position, entry) = layer;
                let supplied = match &entry.blocks {
                    None => remaining.intersect(&BlockSet::range(0, blocks_of(entry.size))),
                    Some(delta) => remaining.intersect(&BlockSet::from_counted(&delta.ranges)),
                };
                remaining = remaining.subtract(&supplied);
                if !supplied.is_empty() {
                    supplies[position].insert(file.path.clone(), supplied);
                }
                let Some(delta) = &entry.blocks else { break };
                remaining = remaining.intersect(&BlockSet::range(0, blocks_of(delta.length)));
                if remaining.is_empty() {
                    break;
                }
                let parent = position - 1;
                let base = indexes[parent].get(file.path.as_str()).ok_or_else(|| ChainError::MissingBase {
                    backup: chain[position].backup.clone(),
                    parent: chain[parent].backup.clone(),
                    path: file.path.clone(),
                })?;
                layer = (parent, base);
            }
        }
        Ok(Self { supplies })
    }
}

/// The length of a file restored from `entry`.
pub fn final_length(entry: &FileEntry) -> u64 {
    entry.blocks.as_ref().map_or(entry.size, |delta| delta.length)
}

/// Checks that each backup builds on the one before and the first is full.
fn check_links(chain: &[&BackupManifest]) -> Result<(), ChainError> {
    if let Some(first) = chain.first()
        && first.incremental.is_some()
    {
        return Err(ChainError::NoFullBackup { backup: first.backup.clone() });
    }
    for pair in chain.windows(2) {
        let (older, newer) = (pair[0], pair[1]);
        let expected = newer.incremental.as_ref().map(|of| of.parent.clone()).unwrap_or_default();
        if expected != older.backup {
            return Err(ChainError::WrongParent {
                backup: newer.backup.clone(),
                expected,
                found: older.backup.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{BlockDelta, IncrementalOf};
    use crate::wal::Lsn;

    fn whole(path: &str, blocks: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: blocks * BLOCK_SIZE,
            mode: 0o600,
            mtime: 0,
            checksum: String::new(),
            chunks: Vec::new(),
            blocks: None,
        }
    }

    fn delta(path: &str, length_blocks: u64, ranges: &[[u32; 2]]) -> FileEntry {
        let delta =
            BlockDelta { length: length_blocks * BLOCK_SIZE, ranges: ranges.to_vec(), checksums: String::new() };
        FileEntry { size: delta.block_count() * BLOCK_SIZE, blocks: Some(delta), ..whole(path, 0) }
    }

    fn manifest(name: &str, parent: Option<&str>, files: Vec<FileEntry>) -> BackupManifest {
        let mut manifest = BackupManifest::new(name);
        manifest.files = files;
        manifest.incremental = parent.map(|parent| IncrementalOf {
            parent: parent.into(),
            since_lsn: Lsn(0),
            chain: Vec::new(),
            deleted: Vec::new(),
        });
        manifest
    }

    fn set(ranges: &[(u64, u64)]) -> BlockSet {
        BlockSet(ranges.to_vec())
    }

    #[test]
    fn block_sets_intersect_and_subtract() {
        let a = set(&[(0, 10), (20, 30)]);
        let b = set(&[(5, 25)]);
        assert_eq!(a.intersect(&b), set(&[(5, 10), (20, 25)]));
        assert_eq!(a.subtract(&b), set(&[(0, 5), (25, 30)]));
        assert_eq!(b.subtract(&a), set(&[(10, 20)]));
        assert_eq!(BlockSet::from_counted(&[[0, 2], [2, 3], [9, 1]]), set(&[(0, 5), (9, 10)]));
    }

    #[test]
    fn the_newest_backup_that_stored_a_block_supplies_it_once() {
        let full =
            manifest("f", None, vec![whole("base/5/16384", 10), whole("PG_VERSION", 1), whole("base/5/gone", 2)]);
        let first =
            manifest("i1", Some("f"), vec![delta("base/5/16384", 12, &[[2, 3], [10, 2]]), whole("PG_VERSION", 1)]);
        let second = manifest("i2", Some("i1"), vec![delta("base/5/16384", 12, &[[3, 1]]), whole("PG_VERSION", 1)]);
        let plan = ChainPlan::build(&[&full, &first, &second]).expect("plan");
        assert_eq!(plan.supplies[2]["base/5/16384"], set(&[(3, 4)]));
        assert_eq!(plan.supplies[1]["base/5/16384"], set(&[(2, 3), (4, 5), (10, 12)]));
        assert_eq!(plan.supplies[0]["base/5/16384"], set(&[(0, 2), (5, 10)]));
        assert_eq!(plan.supplies[2]["PG_VERSION"], set(&[(0, 1)]));
        assert!(!plan.supplies[0].contains_key("PG_VERSION") && !plan.supplies[0].contains_key("base/5/gone"));
    }

    #[test]
    fn blocks_cut_by_a_truncation_are_never_taken_from_older_backups() {
        let full = manifest("f", None, vec![whole("base/5/16384", 10)]);
        let truncated = manifest("i1", Some("f"), vec![delta("base/5/16384", 2, &[])]);
        let regrown = manifest("i2", Some("i1"), vec![delta("base/5/16384", 6, &[[4, 1]])]);
        let plan = ChainPlan::build(&[&full, &truncated, &regrown]).expect("plan");
        assert_eq!(plan.supplies[2]["base/5/16384"], set(&[(4, 5)]));
        assert!(!plan.supplies[1].contains_key("base/5/16384"));
        assert_eq!(plan.supplies[0]["base/5/16384"], set(&[(0, 2)]), "blocks 2, 3 and 5 stay zero");
    }

    #[test]
    fn a_chain_that_does_not_fit_together_is_refused() {
        let full = manifest("f", None, vec![whole("a", 1)]);
        let orphan = manifest("i2", Some("i1"), vec![delta("a", 1, &[])]);
        assert!(matches!(ChainPlan::build(&[&full, &orphan]), Err(ChainError::WrongParent { .. })));
        let no_base = manifest("i1", Some("f"), vec![delta("b", 2, &[[0, 1]])]);
        assert!(matches!(ChainPlan::build(&[&full, &no_base]), Err(ChainError::MissingBase { .. })));
        assert!(matches!(ChainPlan::build(&[&no_base]), Err(ChainError::NoFullBackup { .. })));
    }
}
