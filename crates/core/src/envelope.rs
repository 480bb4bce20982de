//! The envelope every stored object is wrapped in: a fixed header recording the compression and
//! the BLAKE3 checksum and length of the original content, followed by the compressed payload.
//!
//! ```text
//! offset size  field
//! 0      8     magic "PGEC2OBJ"
//! 8      1     format version (1)
//! 9      1     compression: 0 none, 1 zstd, 2 lz4
//! 10     2     reserved, zero
//! 12     8     content length, little endian
//! 20     32    BLAKE3 hash of the content
//! 52     ...   payload
//! ```
//! Objects are self-describing, so any backend (even a plain directory) keeps the checksum with
//! the data, and a reader detects corruption whatever the store.

use crate::compression::{self, Algorithm, Compression, CompressionError};

const MAGIC: &[u8; 8] = b"PGEC2OBJ";
const VERSION: u8 = 1;
/// Size of the envelope header in bytes.
pub const HEADER_LEN: usize = 52;
/// Largest content an object may hold (WAL segments and backup parts are far smaller); a
/// larger recorded length means a corrupt header, refused before any memory is reserved.
pub const MAX_CONTENT_LEN: u64 = 4 << 30;

/// The header fields of a stored object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub algorithm: Algorithm,
    pub content_len: u64,
    pub content_hash: [u8; 32],
}

impl Header {
    /// The content hash as lowercase hex, as recorded in manifests.
    pub fn content_hash_hex(&self) -> String {
        blake3::Hash::from_bytes(self.content_hash).to_hex().to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("object is not a pgec2 object (bad magic or too short, {len} bytes)")]
    NotAnObject { len: usize },
    #[error("object has format version {0}, this agent reads version 1: upgrade pgec2-agent")]
    UnsupportedVersion(u8),
    #[error("object header records an implausible content length of {0} bytes (corrupt object)")]
    ImplausibleLength(u64),
    #[error("object has unknown compression code {0}")]
    UnknownCompression(u8),
    #[error("object header is corrupt: its reserved bytes are not zero")]
    ReservedNotZero,
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error(
        "object content is corrupt: expected {expected_len} bytes hashing to {expected}, got {actual_len} bytes hashing to {actual}"
    )]
    ChecksumMismatch { expected: String, actual: String, expected_len: u64, actual_len: u64 },
}

/// Compresses `content` and wraps it; returns the stored bytes and the header.
pub fn seal(content: &[u8], compression: Compression) -> Result<(Vec<u8>, Header), EnvelopeError> {
    let header = Header {
        algorithm: compression.algorithm,
        content_len: content.len() as u64,
        content_hash: *blake3::hash(content).as_bytes(),
    };
    let payload = compression.compress(content)?;
    let mut stored = Vec::with_capacity(HEADER_LEN + payload.len());
    stored.extend_from_slice(MAGIC);
    stored.push(VERSION);
    stored.push(header.algorithm.code());
    stored.extend_from_slice(&[0, 0]);
    stored.extend_from_slice(&header.content_len.to_le_bytes());
    stored.extend_from_slice(&header.content_hash);
    stored.extend_from_slice(&payload);
    Ok((stored, header))
}

/// Reads only the header of stored bytes (at least [`HEADER_LEN`] of them).
pub fn read_header(stored: &[u8]) -> Result<Header, EnvelopeError> {
    if stored.len() < HEADER_LEN || &stored[..8] != MAGIC {
        return Err(EnvelopeError::NotAnObject { len: stored.len() });
    }
    if stored[8] != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(stored[8]));
    }
    let algorithm = Algorithm::from_code(stored[9]).ok_or(EnvelopeError::UnknownCompression(stored[9]))?;
    if stored[10..12] != [0, 0] {
        return Err(EnvelopeError::ReservedNotZero);
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&stored[12..20]);
    let mut content_hash = [0u8; 32];
    content_hash.copy_from_slice(&stored[20..52]);
    let content_len = u64::from_le_bytes(len_bytes);
    if content_len > MAX_CONTENT_LEN {
        return Err(EnvelopeError::ImplausibleLength(content_len));
    }
    Ok(Header { algorithm, content_len, content_hash })
}

/// Unwraps stored bytes: decompresses and verifies length and checksum.
pub fn open(stored: &[u8]) -> Result<(Vec<u8>, Header), EnvelopeError> {
    let header = read_header(stored)?;
    let expected_len = usize::try_from(header.content_len).unwrap_or(usize::MAX);
    let content = compression::decompress(header.algorithm, &stored[HEADER_LEN..], expected_len)?;
    let actual = blake3::hash(&content);
    if content.len() as u64 != header.content_len || actual.as_bytes() != &header.content_hash {
        return Err(EnvelopeError::ChecksumMismatch {
            expected: header.content_hash_hex(),
            actual: actual.to_hex().to_string(),
            expected_len: header.content_len,
            actual_len: content.len() as u64,
        });
    }
    Ok((content, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn each_compression() -> Vec<Compression> {
        vec![
            Compression { algorithm: Algorithm::None, level: 0 },
            Compression { algorithm: Algorithm::Zstd, level: 3 },
            Compression { algorithm: Algorithm::Lz4, level: 0 },
        ]
    }

    #[test]
    fn sealed_content_opens_to_the_same_bytes_for_every_algorithm() {
        let content: Vec<u8> = (0..100_000u32).flat_map(|n| (n % 251).to_le_bytes()).collect();
        for compression in each_compression() {
            let (stored, header) = seal(&content, compression).expect("seal");
            let (opened, opened_header) = open(&stored).expect("open");
            assert_eq!(opened, content, "{compression:?}");
            assert_eq!(opened_header, header);
        }
    }

    #[test]
    fn any_flipped_payload_byte_is_detected() {
        let content = b"the quick brown fox jumps over the lazy dog".repeat(100);
        for compression in each_compression() {
            let (stored, _) = seal(&content, compression).expect("seal");
            for position in [HEADER_LEN, HEADER_LEN + 7, stored.len() - 1] {
                let mut corrupt = stored.clone();
                corrupt[position] ^= 0x01;
                assert!(open(&corrupt).is_err(), "{compression:?} flip at {position} went unnoticed");
            }
        }
    }

    #[test]
    fn any_flipped_header_byte_is_detected() {
        let content = b"header bytes matter too".repeat(10);
        for compression in each_compression() {
            let (stored, _) = seal(&content, compression).expect("seal");
            for position in 0..HEADER_LEN {
                let mut corrupt = stored.clone();
                corrupt[position] ^= 0x01;
                assert!(open(&corrupt).is_err(), "{compression:?} flip at header byte {position} went unnoticed");
            }
        }
    }

    #[test]
    fn foreign_bytes_are_not_an_object() {
        assert!(matches!(open(b"hello"), Err(EnvelopeError::NotAnObject { .. })));
    }
}
