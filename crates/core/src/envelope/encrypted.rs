//! Encrypted envelopes (format version 2): the compressed payload encrypted with AES-256-GCM in
//! chunks under a data key of the object's own, the data key wrapped by a key-encryption key.
//!
//! ```text
//! offset size  field
//! 0      8     magic "PGEC2OBJ"
//! 8      1     format version (2)
//! 9      1     compression: 0 none, 1 zstd, 2 lz4
//! 10     1     encryption: 1 AES-256-GCM
//! 11     1     reserved, zero
//! 12     8     content length, little endian
//! 20     32    BLAKE3 hash of everything from offset 52 to the end (the stored ciphertext)
//! 52     2     key id length K, then K bytes: the key-encryption key's id (UTF-8)
//!        2     wrapped data key length W, then W bytes: the data key as that key wrapped it
//!        4     chunk length C: payload bytes per chunk, little endian
//!        7     nonce prefix (random)
//!        48    BLAKE3 hash of the content, encrypted (32 bytes and a 16-byte tag)
//!        ...   chunks: each C bytes of compressed payload encrypted, then its 16-byte tag;
//!              the last chunk is shorter or equal, and there is always at least one
//! ```
//! Chunk `i` uses the nonce prefix ‖ `i` (4 bytes, big endian) ‖ 1 for the last chunk, 0
//! otherwise (the STREAM construction: chunks cannot be reordered, dropped or cut short); the
//! content hash uses counter 0xFFFFFFFF and flag 2. Every encryption authenticates bytes 0..20
//! and the key id, wrapped key, chunk length and nonce prefix, so no header field can be swapped.

use std::io::Read;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;

use super::{EnvelopeError, HEADER_LEN, Header, MAGIC};
use crate::encryption::{DataKey, KeyProvider, Keyring, NONCE_LEN, TAG_LEN};

/// Format version of encrypted objects (plain objects keep version 1, byte for byte).
pub(super) const VERSION: u8 = 2;
/// The encryption code of AES-256-GCM.
pub(super) const AES_256_GCM: u8 = 1;
/// Payload bytes per encrypted chunk: what a reader decrypts and holds at a time.
pub const CHUNK_LEN: usize = 64 * 1024;
const PREFIX_LEN: usize = 7;
const SEALED_HASH_LEN: usize = 32 + TAG_LEN;
const HASH_COUNTER: u32 = u32::MAX;

/// The encryption of one object being sealed: its data key, wrapped, and its nonce prefix.
pub(super) struct Encrypting {
    data_key: DataKey,
    key_id: String,
    wrapped: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
}

impl Encrypting {
    /// A fresh data key for one object, wrapped by `provider`.
    pub(super) fn new(provider: &dyn KeyProvider) -> Result<Self, EnvelopeError> {
        let data_key = DataKey::random();
        let wrapped = provider.wrap(&data_key)?;
        let mut prefix = [0u8; PREFIX_LEN];
        rand::rng().fill_bytes(&mut prefix);
        Ok(Self { data_key, key_id: provider.key_id().to_string(), wrapped, prefix })
    }

    /// The encrypting of the keyring's writer, if it has one.
    pub(super) fn for_keyring(keyring: &Keyring) -> Result<Option<Self>, EnvelopeError> {
        keyring.writer().map(|writer| Self::new(writer.as_ref())).transpose()
    }

    /// Bytes between the clear header and the chunks.
    pub(super) fn header_len(&self) -> usize {
        self.fixed_len() + SEALED_HASH_LEN
    }

    fn fixed_len(&self) -> usize {
        2 + self.key_id.len() + 2 + self.wrapped.len() + 4 + PREFIX_LEN
    }

    /// `out` holds [`HEADER_LEN`] + [`Self::header_len`] bytes of room, then the compressed
    /// payload; fills in both headers and encrypts the payload in place.
    pub(super) fn finish(&self, out: &mut Vec<u8>, header: &Header) -> Result<(), EnvelopeError> {
        let start = HEADER_LEN + self.header_len();
        out[..8].copy_from_slice(MAGIC);
        out[8] = VERSION;
        out[9] = header.algorithm.code();
        out[10] = AES_256_GCM;
        out[11] = 0;
        out[12..20].copy_from_slice(&header.content_len.to_le_bytes());
        let fixed = self.fixed_header()?;
        out[HEADER_LEN..HEADER_LEN + fixed.len()].copy_from_slice(&fixed);
        let aad = [&out[..20], &fixed[..]].concat();
        let cipher = self.data_key.cipher();
        let mut hash = header.content_hash;
        let tag = encrypt(&cipher, &nonce(&self.prefix, HASH_COUNTER, 2), &aad, &mut hash)?;
        let hash_at = HEADER_LEN + fixed.len();
        out[hash_at..hash_at + 32].copy_from_slice(&hash);
        out[hash_at + 32..start].copy_from_slice(&tag);
        encrypt_chunks(&cipher, &self.prefix, &aad, out, start)?;
        let stored_hash = blake3::hash(&out[HEADER_LEN..]);
        out[20..HEADER_LEN].copy_from_slice(stored_hash.as_bytes());
        Ok(())
    }

    fn fixed_header(&self) -> Result<Vec<u8>, EnvelopeError> {
        let too_long = || EnvelopeError::Malformed("key id or wrapped key longer than 65535 bytes".to_string());
        let key_id_len = u16::try_from(self.key_id.len()).map_err(|_| too_long())?;
        let wrapped_len = u16::try_from(self.wrapped.len()).map_err(|_| too_long())?;
        let mut fixed = Vec::with_capacity(self.fixed_len());
        fixed.extend_from_slice(&key_id_len.to_le_bytes());
        fixed.extend_from_slice(self.key_id.as_bytes());
        fixed.extend_from_slice(&wrapped_len.to_le_bytes());
        fixed.extend_from_slice(&self.wrapped);
        fixed.extend_from_slice(&(CHUNK_LEN as u32).to_le_bytes());
        fixed.extend_from_slice(&self.prefix);
        Ok(fixed)
    }
}

/// Encrypts `out[start..]` in place as chunks, inserting each chunk's tag after it. Chunks are
/// moved to their final places from the last one back, so no second buffer is needed.
fn encrypt_chunks(
    cipher: &Aes256Gcm,
    prefix: &[u8; PREFIX_LEN],
    aad: &[u8],
    out: &mut Vec<u8>,
    start: usize,
) -> Result<(), EnvelopeError> {
    let payload_len = out.len() - start;
    let chunks = payload_len.div_ceil(CHUNK_LEN).max(1);
    out.resize(out.len() + chunks * TAG_LEN, 0);
    for index in (0..chunks).rev() {
        let from = start + index * CHUNK_LEN;
        let len = CHUNK_LEN.min(payload_len - index * CHUNK_LEN);
        let to = start + index * (CHUNK_LEN + TAG_LEN);
        out.copy_within(from..from + len, to);
        let counter = u32::try_from(index).map_err(|_| EnvelopeError::ImplausibleLength(payload_len as u64))?;
        let last = u8::from(index + 1 == chunks);
        let tag = encrypt(cipher, &nonce(prefix, counter, last), aad, &mut out[to..to + len])?;
        out[to + len..to + len + TAG_LEN].copy_from_slice(&tag);
    }
    Ok(())
}

fn encrypt(cipher: &Aes256Gcm, nonce: &[u8; NONCE_LEN], aad: &[u8], buffer: &mut [u8]) -> Result<Tag, EnvelopeError> {
    cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buffer)
        .map_err(|_| EnvelopeError::Malformed("AES-GCM refused to encrypt a chunk".to_string()))
}

fn nonce(prefix: &[u8; PREFIX_LEN], counter: u32, flag: u8) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..PREFIX_LEN].copy_from_slice(prefix);
    nonce[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[NONCE_LEN - 1] = flag;
    nonce
}

/// The encryption header of a stored encrypted object.
#[derive(Debug)]
pub(super) struct StoredEncryption<'a> {
    pub key_id: &'a str,
    wrapped: &'a [u8],
    chunk_len: usize,
    prefix: [u8; PREFIX_LEN],
    sealed_hash: &'a [u8],
    aad: Vec<u8>,
    /// Where the chunks start.
    chunks_at: usize,
}

/// Parses the encryption header of `stored` (whose clear header says it is encrypted).
pub(super) fn parse(stored: &[u8]) -> Result<StoredEncryption<'_>, EnvelopeError> {
    let mut cursor = Cursor { stored, at: HEADER_LEN };
    let key_id_len = cursor.u16("key id")?;
    let key_id = std::str::from_utf8(cursor.take(key_id_len, "key id")?)
        .map_err(|_| EnvelopeError::Malformed("its key id is not UTF-8".to_string()))?;
    let wrapped_len = cursor.u16("wrapped key")?;
    let wrapped = cursor.take(wrapped_len, "wrapped key")?;
    let chunk_bytes = cursor.take(4, "chunk length")?;
    let chunk_len = u32::from_le_bytes([chunk_bytes[0], chunk_bytes[1], chunk_bytes[2], chunk_bytes[3]]) as usize;
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(cursor.take(PREFIX_LEN, "nonce")?);
    let fixed_end = cursor.at;
    let sealed_hash = cursor.take(SEALED_HASH_LEN, "content hash")?;
    if chunk_len == 0 || chunk_len > 64 << 20 {
        return Err(EnvelopeError::Malformed(format!("its chunk length {chunk_len} is implausible")));
    }
    let aad = [&stored[..20], &stored[HEADER_LEN..fixed_end]].concat();
    Ok(StoredEncryption { key_id, wrapped, chunk_len, prefix, sealed_hash, aad, chunks_at: cursor.at })
}

struct Cursor<'a> {
    stored: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], EnvelopeError> {
        let piece = self
            .stored
            .get(self.at..self.at + len)
            .ok_or_else(|| EnvelopeError::Malformed(format!("its encryption header is cut short ({what})")))?;
        self.at += len;
        Ok(piece)
    }

    fn u16(&mut self, what: &str) -> Result<usize, EnvelopeError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]) as usize)
    }
}

impl<'a> StoredEncryption<'a> {
    /// Unwraps the data key with `keyring` and decrypts the content hash.
    pub(super) fn unlock(&self, keyring: &Keyring) -> Result<(DataKey, [u8; 32]), EnvelopeError> {
        let data_key = keyring.unwrap(self.key_id, self.wrapped)?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&self.sealed_hash[..32]);
        data_key
            .cipher()
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce(&self.prefix, HASH_COUNTER, 2)),
                &self.aad,
                &mut hash,
                Tag::from_slice(&self.sealed_hash[32..]),
            )
            .map_err(|_| EnvelopeError::Decrypt { chunk: None })?;
        Ok((data_key, hash))
    }

    /// A reader of the decrypted payload.
    pub(super) fn reader(&self, stored: &'a [u8], data_key: &DataKey) -> DecryptReader<'a> {
        DecryptReader {
            cipher: data_key.cipher(),
            aad: self.aad.clone(),
            prefix: self.prefix,
            chunk_len: self.chunk_len,
            rest: &stored[self.chunks_at..],
            index: 0,
            buffer: Vec::with_capacity(self.chunk_len + TAG_LEN),
            position: 0,
            done: false,
        }
    }
}

/// Decrypts chunks one at a time: memory holds one chunk, whatever the object's size.
pub(super) struct DecryptReader<'a> {
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    chunk_len: usize,
    rest: &'a [u8],
    index: u32,
    buffer: Vec<u8>,
    position: usize,
    done: bool,
}

impl DecryptReader<'_> {
    fn next_chunk(&mut self) -> Result<(), EnvelopeError> {
        if self.rest.len() < TAG_LEN {
            return Err(EnvelopeError::Decrypt { chunk: Some(self.index) });
        }
        let last = self.rest.len() <= self.chunk_len + TAG_LEN;
        let take = self.rest.len().min(self.chunk_len + TAG_LEN);
        let (chunk, rest) = self.rest.split_at(take);
        let (ciphertext, tag) = chunk.split_at(take - TAG_LEN);
        self.buffer.clear();
        self.buffer.extend_from_slice(ciphertext);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce(&self.prefix, self.index, u8::from(last))),
                &self.aad,
                &mut self.buffer,
                Tag::from_slice(tag),
            )
            .map_err(|_| EnvelopeError::Decrypt { chunk: Some(self.index) })?;
        self.rest = rest;
        self.position = 0;
        self.done = last;
        self.index = self.index.wrapping_add(1);
        Ok(())
    }
}

impl Read for DecryptReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.buffer.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk().map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
        }
        let count = buffer.len().min(self.buffer.len() - self.position);
        buffer[..count].copy_from_slice(&self.buffer[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}
