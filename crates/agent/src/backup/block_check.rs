//! `backup-verify`'s check of an incremental backup's stored blocks: each block of a file stored
//! as changed blocks ([`pgec2_core::manifest::BlockDelta`]) is hashed as its bytes pass and
//! compared with the checksum the manifest records for it, so a damaged block is named by file
//! and block number, not only by the part or the file that holds it.

use pgec2_core::manifest::{BLOCK_SIZE, FileEntry, block_checksum};

use super::BackupError;
use super::parts::FileSink;

/// A stored block whose bytes do not hash to the manifest's checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMismatch {
    pub path: String,
    /// The block's number in the relation file.
    pub block: u32,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for BlockMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "file {} block {} hashes to {}, the manifest says {}",
            self.path, self.block, self.actual, self.expected
        )
    }
}

/// The file being checked: its stored block numbers, the position of the block being read
/// and the bytes of it hashed so far.
struct Current {
    path: String,
    blocks: Vec<u32>,
    checksums: String,
    position: usize,
    hasher: blake3::Hasher,
    filled: u64,
}

/// A [`FileSink`] that checks every stored block of incremental files and keeps nothing.
#[derive(Default)]
pub struct BlockCheck {
    current: Option<Current>,
    pub mismatches: Vec<BlockMismatch>,
}

impl BlockCheck {
    /// The block completed at `current.position`: compared, then the next one starts.
    fn finish_block(&mut self) {
        let Some(current) = self.current.as_mut() else { return };
        let actual = block_checksum(&current.hasher);
        let position = current.position;
        let expected = current.checksums.get(position * actual.len()..(position + 1) * actual.len());
        if expected != Some(actual.as_str()) {
            self.mismatches.push(BlockMismatch {
                path: current.path.clone(),
                block: current.blocks.get(position).copied().unwrap_or(u32::MAX),
                expected: expected.unwrap_or("nothing").to_string(),
                actual,
            });
        }
        current.position += 1;
        current.hasher = blake3::Hasher::new();
        current.filled = 0;
    }
}

impl FileSink for BlockCheck {
    fn begin(&mut self, file: &FileEntry) -> Result<(), BackupError> {
        self.current = file.blocks.as_ref().map(|delta| Current {
            path: file.path.clone(),
            blocks: delta.blocks().collect(),
            checksums: delta.checksums.clone(),
            position: 0,
            hasher: blake3::Hasher::new(),
            filled: 0,
        });
        Ok(())
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), BackupError> {
        while !bytes.is_empty() {
            let Some(current) = self.current.as_mut() else { return Ok(()) };
            let room = usize::try_from(BLOCK_SIZE - current.filled).unwrap_or(usize::MAX);
            let (piece, rest) = bytes.split_at(room.min(bytes.len()));
            current.hasher.update(piece);
            current.filled += piece.len() as u64;
            bytes = rest;
            if current.filled == BLOCK_SIZE {
                self.finish_block();
            }
        }
        Ok(())
    }

    fn finish(&mut self, _: &FileEntry) -> Result<(), BackupError> {
        self.current = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pgec2_core::manifest::BlockDelta;

    use super::*;

    fn incremental_file(blocks: &[Vec<u8>], ranges: Vec<[u32; 2]>) -> FileEntry {
        let checksums =
            blocks.iter().map(|block| block_checksum(&blake3::Hasher::new().update(block).clone())).collect();
        let content: Vec<u8> = blocks.concat();
        FileEntry {
            path: "base/5/16384".into(),
            size: content.len() as u64,
            mode: 0o600,
            mtime: 0,
            checksum: blake3::hash(&content).to_hex().to_string(),
            chunks: Vec::new(),
            blocks: Some(BlockDelta { length: 20 * BLOCK_SIZE, ranges, checksums }),
        }
    }

    #[test]
    fn a_flipped_byte_is_named_by_file_and_block_number() {
        let blocks: Vec<Vec<u8>> = (0..3u8).map(|fill| vec![fill; BLOCK_SIZE as usize]).collect();
        let file = incremental_file(&blocks, vec![[2, 1], [7, 2]]);
        let mut damaged = blocks.concat();
        damaged[BLOCK_SIZE as usize + 100] ^= 0x01;
        let mut check = BlockCheck::default();
        check.begin(&file).expect("begin");
        for piece in damaged.chunks(5000) {
            check.write(piece).expect("write");
        }
        assert_eq!(check.mismatches.len(), 1, "{:?}", check.mismatches);
        assert_eq!((check.mismatches[0].path.as_str(), check.mismatches[0].block), ("base/5/16384", 7));
        assert!(check.mismatches[0].to_string().starts_with("file base/5/16384 block 7 hashes to"));

        let mut clean = BlockCheck::default();
        clean.begin(&file).expect("begin");
        clean.write(&blocks.concat()).expect("write");
        assert!(clean.mismatches.is_empty());
    }
}
