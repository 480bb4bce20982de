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

use std::io::Read;

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
    #[error("failed to read the content to store: {0}")]
    Read(#[source] std::io::Error),
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
    let stored = compression.compress_appending(content, header_bytes(&header).to_vec())?;
    Ok((stored, header))
}

/// Most output space [`seal_reader`] reserves up front (untouched capacity costs no memory).
pub const MAX_OUTPUT_RESERVATION: usize = 64 * 1024 * 1024;

/// Bytes read from the source at a time by [`seal_reader`].
const READ_PIECE: usize = 256 * 1024;

/// Like [`seal`], reading the content from `reader` a piece at a time: memory holds the stored
/// bytes and one piece, never the whole content. `size_hint` (the expected content length)
/// sizes the output buffer (up to [`MAX_OUTPUT_RESERVATION`]); it grows beyond if needed.
pub fn seal_reader(
    reader: &mut impl Read,
    size_hint: usize,
    compression: Compression,
) -> Result<(Vec<u8>, Header), EnvelopeError> {
    let mut out = Vec::with_capacity(HEADER_LEN + size_hint.min(MAX_OUTPUT_RESERVATION));
    out.resize(HEADER_LEN, 0);
    let mut compressor = compression.stream_appending(out)?;
    let mut hasher = blake3::Hasher::new();
    let mut piece = vec![0u8; READ_PIECE];
    let mut content_len = 0u64;
    loop {
        let read = match reader.read(&mut piece) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(EnvelopeError::Read(error)),
        };
        hasher.update(&piece[..read]);
        compressor.write(&piece[..read])?;
        content_len += read as u64;
    }
    let header = Header { algorithm: compression.algorithm, content_len, content_hash: *hasher.finalize().as_bytes() };
    let mut stored = compressor.finish()?;
    stored[..HEADER_LEN].copy_from_slice(&header_bytes(&header));
    Ok((stored, header))
}

fn header_bytes(header: &Header) -> [u8; HEADER_LEN] {
    let mut bytes = [0u8; HEADER_LEN];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8] = VERSION;
    bytes[9] = header.algorithm.code();
    bytes[12..20].copy_from_slice(&header.content_len.to_le_bytes());
    bytes[20..52].copy_from_slice(&header.content_hash);
    bytes
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
    fn content_sealed_from_a_reader_opens_like_sealed_content() {
        let content: Vec<u8> = (0..700_000u32).map(|n| (n % 13) as u8).collect();
        for compression in each_compression() {
            let (expected_stored, expected) = seal(&content, compression).expect("seal");
            for hint in [0, content.len()] {
                let (stored, header) = seal_reader(&mut &content[..], hint, compression).expect("seal reader");
                assert_eq!(header, expected, "{compression:?}");
                assert_eq!(stored[..HEADER_LEN], expected_stored[..HEADER_LEN]);
                assert_eq!(open(&stored).expect("open"), (content.clone(), expected), "{compression:?}");
            }
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
