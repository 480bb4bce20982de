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
//!
//! With a [`Keyring`] that has a writing key, objects are sealed encrypted instead (format
//! version 2, see [`encrypted`]): compressed first, then encrypted in chunks. Plain objects are
//! still written as version 1, so archives written before encryption existed read unchanged.

use std::io::Read;

use crate::compression::{self, Algorithm, Compression, CompressionError, Compressor, DecompressReader};
use crate::encryption::{KeyError, Keyring};

mod encrypted;
pub mod frames;

pub use frames::ReadAt;

pub use encrypted::CHUNK_LEN;
use encrypted::Encrypting;

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
    /// The BLAKE3 hash of the content. Only for an encrypted object read by [`read_header`]
    /// (without its key) is it the hash of the stored ciphertext, which is what the clear
    /// header records: the content's hash is itself encrypted.
    pub content_hash: [u8; 32],
    /// The object is encrypted (format version 2).
    pub encrypted: bool,
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
    #[error("object has format version {0}, this agent reads versions 1 and 2: upgrade pgec2-agent")]
    UnsupportedVersion(u8),
    #[error("object has unknown encryption code {0}: upgrade pgec2-agent")]
    UnknownEncryption(u8),
    #[error("encrypted object is malformed: {0}")]
    Malformed(String),
    #[error("cannot decrypt the object: {0}")]
    Key(#[from] KeyError),
    #[error("encrypted object does not authenticate{}: it was altered or damaged", chunk.map(|chunk| format!(" (chunk {chunk})")).unwrap_or_default())]
    Decrypt { chunk: Option<u32> },
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
    #[error("encrypted object is corrupt: its stored bytes hash to {actual}, its header records {expected}")]
    StoredChecksumMismatch { expected: String, actual: String },
}

impl EnvelopeError {
    /// True when the object could not be decrypted for want of the right key (not damage).
    pub fn is_key_error(&self) -> bool {
        matches!(self, EnvelopeError::Key(_))
    }
}

/// Compresses `content` and wraps it; returns the stored bytes and the header.
pub fn seal(content: &[u8], compression: Compression) -> Result<(Vec<u8>, Header), EnvelopeError> {
    seal_with(content, compression, &Keyring::none())
}

/// Like [`seal`], encrypted when `keyring` has a writing key.
pub fn seal_with(
    content: &[u8],
    compression: Compression,
    keyring: &Keyring,
) -> Result<(Vec<u8>, Header), EnvelopeError> {
    let mut stored = Vec::new();
    let header = Sealer::with_keyring(compression, keyring.clone())?.seal_into(content, &mut stored)?;
    Ok((stored, header))
}

fn content_header(algorithm: Algorithm, content: &[u8], encrypted: bool) -> Header {
    Header { algorithm, content_len: content.len() as u64, content_hash: *blake3::hash(content).as_bytes(), encrypted }
}

/// Seals many objects with one compression context, into output buffers the caller reuses
/// (backup-push keeps one per worker, so parts are sealed without allocating per part).
pub struct Sealer {
    compressor: Compressor,
    keyring: Keyring,
}

impl Sealer {
    pub fn new(compression: Compression) -> Result<Self, EnvelopeError> {
        Self::with_keyring(compression, Keyring::none())
    }

    /// A sealer that encrypts every object (each with a data key of its own) when `keyring`
    /// has a writing key.
    pub fn with_keyring(compression: Compression, keyring: Keyring) -> Result<Self, EnvelopeError> {
        Ok(Self { compressor: Compressor::new(compression)?, keyring })
    }

    /// Like [`seal`]: replaces what `out` holds with the stored bytes of `content`.
    pub fn seal_into(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<Header, EnvelopeError> {
        let encrypting = Encrypting::for_keyring(&self.keyring)?;
        let header = content_header(self.compressor.compression().algorithm, content, encrypting.is_some());
        out.clear();
        match &encrypting {
            None => out.extend_from_slice(&header_bytes(&header)),
            Some(encrypting) => out.resize(HEADER_LEN + encrypting.header_len(), 0),
        }
        self.compressor.compress_appending(content, out)?;
        if let Some(encrypting) = encrypting {
            encrypting.finish(out, &header)?;
        }
        Ok(header)
    }
}

/// Most output space [`seal_reader`] reserves up front (untouched capacity costs no memory).
pub const MAX_OUTPUT_RESERVATION: usize = 64 * 1024 * 1024;

/// Bytes read from the source at a time by [`seal_reader`].
const READ_PIECE: usize = 256 * 1024;

/// Like [`seal`], reading the content from `reader` a piece at a time: memory holds the stored
/// bytes and one piece, never the whole content. `size_hint` (the expected content length)
/// sizes the output buffer (up to [`MAX_OUTPUT_RESERVATION`]); it grows beyond if needed.
pub fn seal_reader(
    reader: &mut (impl Read + Send),
    size_hint: usize,
    compression: Compression,
) -> Result<(Vec<u8>, Header), EnvelopeError> {
    seal_reader_with(reader, size_hint, compression, &Keyring::none())
}

/// Like [`seal_reader`], encrypted when `keyring` has a writing key (the payload is encrypted
/// in place once compressed: no second copy of the object).
pub fn seal_reader_with(
    reader: &mut (impl Read + Send),
    size_hint: usize,
    compression: Compression,
    keyring: &Keyring,
) -> Result<(Vec<u8>, Header), EnvelopeError> {
    seal_into(size_hint, compression, keyring, |out| match compression.algorithm {
        Algorithm::Zstd => frames::compress_frames(reader, compression, out),
        Algorithm::None | Algorithm::Lz4 => stream_pieces(reader, compression, out),
    })
}

/// Like [`seal_reader_with`], reading `source` (a file) at offsets: zstd content compressed by
/// `workers` threads as a series of independent frames, each thread reading its own (see
/// [`frames`]); other algorithms stream on the calling thread.
pub fn seal_at(
    source: &(impl ReadAt + ?Sized),
    size_hint: usize,
    compression: Compression,
    keyring: &Keyring,
    workers: usize,
) -> Result<(Vec<u8>, Header), EnvelopeError> {
    seal_into(size_hint, compression, keyring, |out| match compression.algorithm {
        Algorithm::Zstd => frames::compress_frames_at(source, compression, workers, out),
        Algorithm::None | Algorithm::Lz4 => stream_pieces(&mut frames::InOrder { source, offset: 0 }, compression, out),
    })
}

/// The stored bytes: room for the headers, the payload `compress` appends, then the headers
/// (and, with a writing key, the payload encrypted in place).
fn seal_into(
    size_hint: usize,
    compression: Compression,
    keyring: &Keyring,
    compress: impl FnOnce(&mut Vec<u8>) -> Result<frames::Sealed, EnvelopeError>,
) -> Result<(Vec<u8>, Header), EnvelopeError> {
    let encrypting = Encrypting::for_keyring(keyring)?;
    let headers_len = HEADER_LEN + encrypting.as_ref().map_or(0, Encrypting::header_len);
    let reservation = size_hint.min(MAX_OUTPUT_RESERVATION);
    let mut out = Vec::with_capacity(headers_len + reservation + reservation / CHUNK_LEN * 16 + 16);
    out.resize(headers_len, 0);
    let sealed = compress(&mut out)?;
    let header = Header {
        algorithm: compression.algorithm,
        content_len: sealed.content_len,
        content_hash: sealed.content_hash,
        encrypted: encrypting.is_some(),
    };
    match encrypting {
        None => out[..HEADER_LEN].copy_from_slice(&header_bytes(&header)),
        Some(encrypting) => encrypting.finish(&mut out, &header)?,
    }
    Ok((out, header))
}

/// Compresses `reader` as one stream, a [`READ_PIECE`] at a time, appending to `out`.
fn stream_pieces(
    reader: &mut impl Read,
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<frames::Sealed, EnvelopeError> {
    let mut compressor = compression.stream_appending(std::mem::take(out))?;
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
    *out = compressor.finish()?;
    Ok(frames::Sealed { content_len, content_hash: *hasher.finalize().as_bytes() })
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

/// Reads only the header of stored bytes (at least [`HEADER_LEN`] of them). For an encrypted
/// object the hash is that of the stored ciphertext (see [`Header::content_hash`]).
pub fn read_header(stored: &[u8]) -> Result<Header, EnvelopeError> {
    if stored.len() < HEADER_LEN || &stored[..8] != MAGIC {
        return Err(EnvelopeError::NotAnObject { len: stored.len() });
    }
    let encrypted = match stored[8] {
        VERSION => false,
        encrypted::VERSION => true,
        other => return Err(EnvelopeError::UnsupportedVersion(other)),
    };
    let algorithm = Algorithm::from_code(stored[9]).ok_or(EnvelopeError::UnknownCompression(stored[9]))?;
    match (encrypted, stored[10]) {
        (false, 0) | (true, encrypted::AES_256_GCM) => {}
        (false, _) => return Err(EnvelopeError::ReservedNotZero),
        (true, code) => return Err(EnvelopeError::UnknownEncryption(code)),
    }
    if stored[11] != 0 {
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
    Ok(Header { algorithm, content_len, content_hash, encrypted })
}

/// Bytes at the start of an object that always hold its headers (clear and encryption).
pub const HEADERS_MAX_LEN: usize = 4096;

/// Checks that `keyring` decrypts the object whose first bytes are `start` (at least its
/// headers, [`HEADERS_MAX_LEN`] suffice): unwraps its data key, reads no content. A plain
/// object passes.
pub fn check_key(start: &[u8], keyring: &Keyring) -> Result<(), EnvelopeError> {
    if read_header(start)?.encrypted {
        encrypted::parse(start)?.unlock(keyring)?;
    }
    Ok(())
}

/// Unwraps stored bytes: decompresses and verifies length and checksum. An encrypted object
/// fails with [`KeyError::NoKey`]: use [`open_with`].
pub fn open(stored: &[u8]) -> Result<(Vec<u8>, Header), EnvelopeError> {
    open_with(stored, &Keyring::none())
}

/// Like [`open`], decrypting an encrypted object with the key `keyring` has for it.
pub fn open_with(stored: &[u8], keyring: &Keyring) -> Result<(Vec<u8>, Header), EnvelopeError> {
    let header = read_header(stored)?;
    if header.encrypted {
        let mut reader = open_reader_with(stored, keyring)?;
        let capacity = usize::try_from(header.content_len).unwrap_or(usize::MAX).min(MAX_OUTPUT_RESERVATION);
        let mut content = Vec::with_capacity(capacity);
        let mut piece = vec![0u8; READ_PIECE];
        loop {
            let read = reader.read_content(&mut piece)?;
            if read == 0 {
                break;
            }
            content.extend_from_slice(&piece[..read]);
        }
        return Ok((content, reader.finish()?));
    }
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

/// Reads the content of stored bytes a piece at a time, hashing it as it goes: what [`open`]
/// checks, without holding the content. Bytes handed out before the end are not yet verified;
/// [`ContentReader::finish`] (or a read that reaches the end) verifies length and checksum, and
/// a reader never hands out more bytes than the header records.
pub struct ContentReader<'a> {
    header: Header,
    decoder: DecompressReader<'a>,
    hasher: blake3::Hasher,
    read: u64,
    verified: bool,
}

/// Starts reading the content of `stored` (the header is checked now, the content as it is read).
pub fn open_reader(stored: &[u8]) -> Result<ContentReader<'_>, EnvelopeError> {
    open_reader_with(stored, &Keyring::none())
}

/// Like [`open_reader`], for encrypted objects too: the stored ciphertext's hash is verified and
/// the data key unwrapped now (so a wrong or missing key fails before any content is read), and
/// the content is decrypted a chunk at a time as it is read.
pub fn open_reader_with<'a>(stored: &'a [u8], keyring: &Keyring) -> Result<ContentReader<'a>, EnvelopeError> {
    let mut header = read_header(stored)?;
    let decoder = if header.encrypted {
        let actual = blake3::hash(&stored[HEADER_LEN..]);
        if actual.as_bytes() != &header.content_hash {
            return Err(EnvelopeError::StoredChecksumMismatch {
                expected: header.content_hash_hex(),
                actual: actual.to_hex().to_string(),
            });
        }
        let encryption = encrypted::parse(stored)?;
        let (data_key, content_hash) = encryption.unlock(keyring)?;
        header.content_hash = content_hash;
        DecompressReader::over_reader(header.algorithm, Box::new(encryption.reader(stored, &data_key)))?
    } else {
        DecompressReader::new(header.algorithm, &stored[HEADER_LEN..])?
    };
    Ok(ContentReader { header, decoder, hasher: blake3::Hasher::new(), read: 0, verified: false })
}

impl ContentReader<'_> {
    /// The object's header: the length and checksum the content must have.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next content bytes into `buffer`; 0 only at the verified end of the content.
    pub fn read_content(&mut self, buffer: &mut [u8]) -> Result<usize, EnvelopeError> {
        if self.verified || buffer.is_empty() {
            return Ok(0);
        }
        // Never ask for more than one byte past the recorded length: a longer content is
        // detected without inflating it.
        let room = self.header.content_len.saturating_sub(self.read).saturating_add(1);
        let wanted = buffer.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let read = self.decoder.read_content(&mut buffer[..wanted])?;
        if read == 0 {
            self.verify()?;
            return Ok(0);
        }
        self.read += read as u64;
        if self.read > self.header.content_len {
            return Err(self.mismatch());
        }
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }

    /// Reads what is left and verifies length and checksum; returns the header.
    pub fn finish(mut self) -> Result<Header, EnvelopeError> {
        let mut scratch = [0u8; 4096];
        while self.read_content(&mut scratch)? > 0 {}
        Ok(self.header)
    }

    fn verify(&mut self) -> Result<(), EnvelopeError> {
        if self.read != self.header.content_len || self.hasher.finalize().as_bytes() != &self.header.content_hash {
            return Err(self.mismatch());
        }
        self.verified = true;
        Ok(())
    }

    fn mismatch(&self) -> EnvelopeError {
        EnvelopeError::ChecksumMismatch {
            expected: self.header.content_hash_hex(),
            actual: self.hasher.finalize().to_hex().to_string(),
            expected_len: self.header.content_len,
            actual_len: self.read,
        }
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.read_content(buffer).map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
    }
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
    fn a_reused_sealer_stores_what_seal_stores() {
        let contents = [b"first object ".repeat(500), vec![7u8; 3], Vec::new()];
        for compression in each_compression() {
            let mut sealer = Sealer::new(compression).expect("sealer");
            let mut out = Vec::new();
            for content in &contents {
                let header = sealer.seal_into(content, &mut out).expect("seal into");
                assert_eq!(open(&out).expect("open"), (content.clone(), header), "{compression:?}");
            }
        }
    }

    #[test]
    fn content_read_in_pieces_is_verified_at_its_end() {
        let content: Vec<u8> = (0..300_000u32).map(|n| (n % 17) as u8).collect();
        for compression in each_compression() {
            let (stored, header) = seal(&content, compression).expect("seal");
            let mut reader = open_reader(&stored).expect("reader");
            let mut read = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut read).expect("read");
            assert_eq!(read, content, "{compression:?}");
            assert_eq!(reader.finish().expect("finish"), header);

            let mut corrupt = stored.clone();
            let last = corrupt.len() - 1;
            corrupt[last] ^= 0x01;
            let failed = open_reader(&corrupt).and_then(|mut reader| {
                let mut piece = [0u8; 1000];
                while reader.read_content(&mut piece)? > 0 {}
                reader.finish()
            });
            assert!(failed.is_err(), "{compression:?}: a flipped byte went unnoticed");
        }
    }

    #[test]
    fn a_reader_never_hands_out_more_than_the_recorded_length() {
        let content = vec![42u8; 10_000];
        for compression in each_compression() {
            let (mut stored, _) = seal(&content, compression).expect("seal");
            stored[12..20].copy_from_slice(&5_000u64.to_le_bytes());
            let mut reader = open_reader(&stored).expect("reader");
            let mut piece = vec![0u8; 20_000];
            let mut total = 0;
            let outcome = loop {
                match reader.read_content(&mut piece) {
                    Ok(0) => break Ok(()),
                    Ok(read) => total += read,
                    Err(error) => break Err(error),
                }
            };
            assert!(outcome.is_err(), "{compression:?}");
            assert!(total <= 5_000, "{compression:?}: handed out {total} bytes");
        }
    }

    #[test]
    fn foreign_bytes_are_not_an_object() {
        assert!(matches!(open(b"hello"), Err(EnvelopeError::NotAnObject { .. })));
    }
}

#[cfg(test)]
mod encrypted_tests;
