//! Reading wal-g's libsodium encryption (`WALG_LIBSODIUM_KEY`): wal-g compresses an object, then
//! encrypts the compressed bytes with libsodium's `crypto_secretstream_xchacha20poly1305`:
//!
//! - a 24-byte stream header;
//! - the plaintext cut into messages of [`CHUNK_SIZE`] bytes, each stored as its ciphertext
//!   plus [`ABYTES`] (a 1-byte encrypted tag and a 16-byte Poly1305 tag), tagged `MESSAGE`;
//! - a last message, shorter than a full one (empty when the plaintext fills the last chunk
//!   exactly), tagged `FINAL`.
//!
//! [`DecryptingReader`] checks every message as it reads it and accepts the stream only when it
//! ends exactly after a `FINAL` message: a wrong key, a changed byte, a truncated object or bytes
//! after the end each fail with [`LibsodiumError`], before any byte of the failing message is
//! handed on. The stream cipher is dryoc's pure-Rust implementation of libsodium's.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use dryoc::classic::crypto_secretstream_xchacha20poly1305::{
    Header, Key, State, crypto_secretstream_xchacha20poly1305_init_pull, crypto_secretstream_xchacha20poly1305_pull,
};
use dryoc::constants::{
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES, CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_HEADERBYTES,
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_FINAL, CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE,
};
use zeroize::Zeroizing;

/// wal-g's plaintext bytes per message.
pub const CHUNK_SIZE: usize = 8192;
/// What each message adds to its plaintext.
pub const ABYTES: usize = CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES;
/// The stream header's length.
pub const HEADER_BYTES: usize = CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_HEADERBYTES;
/// libsodium's key length.
const KEY_BYTES: usize = 32;
/// wal-g's shortest key under the `none` transform.
const MIN_PLAIN_KEY: usize = 25;

/// How the configured key text becomes the 32-byte key (wal-g's `WALG_LIBSODIUM_KEY_TRANSFORM`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyTransform {
    /// The text's bytes: at least 25, cut to 32, or zero-padded to 32 (wal-g's default).
    #[default]
    None,
    /// Standard base64 of exactly 32 bytes.
    Base64,
    /// Hexadecimal of exactly 32 bytes.
    Hex,
}

impl std::str::FromStr for KeyTransform {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "base64" => Ok(Self::Base64),
            "hex" => Ok(Self::Hex),
            _ => Err("expected none, base64 or hex (wal-g's WALG_LIBSODIUM_KEY_TRANSFORM)".to_string()),
        }
    }
}

impl fmt::Display for KeyTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Base64 => "base64",
            Self::Hex => "hex",
        })
    }
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the wal-g libsodium key in {setting} is shorter than {MIN_PLAIN_KEY} characters ({length})")]
    Short { setting: String, length: usize },
    #[error("the wal-g libsodium key in {setting} is not valid {transform}")]
    Decode { setting: String, transform: KeyTransform },
    #[error("the wal-g libsodium key in {setting} decodes to {length} bytes, not {KEY_BYTES}")]
    Length { setting: String, length: usize },
    #[error("failed to read the wal-g libsodium key file {path} ({setting}): {error}")]
    File { setting: String, path: String, error: io::Error },
}

/// A wal-g libsodium key, with the setting it came from (named in every error).
#[derive(Clone)]
pub struct LibsodiumKey {
    key: Arc<Zeroizing<Key>>,
    setting: Arc<str>,
}

impl fmt::Debug for LibsodiumKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibsodiumKey").field("setting", &self.setting).finish_non_exhaustive()
    }
}

impl LibsodiumKey {
    /// The key wal-g derives from `text` with `transform`; `setting` names where it was set.
    pub fn from_text(text: &str, transform: KeyTransform, setting: &str) -> Result<Self, KeyError> {
        let setting_name = || setting.to_string();
        let decoded: Zeroizing<Vec<u8>> = match transform {
            KeyTransform::None => {
                if text.len() < MIN_PLAIN_KEY {
                    return Err(KeyError::Short { setting: setting_name(), length: text.len() });
                }
                let mut bytes = Zeroizing::new(vec![0u8; KEY_BYTES]);
                let used = text.len().min(KEY_BYTES);
                bytes[..used].copy_from_slice(&text.as_bytes()[..used]);
                bytes
            }
            KeyTransform::Base64 => Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| KeyError::Decode { setting: setting_name(), transform })?,
            ),
            KeyTransform::Hex => {
                Zeroizing::new(decode_hex(text).ok_or(KeyError::Decode { setting: setting_name(), transform })?)
            }
        };
        let key: Key = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length { setting: setting_name(), length: decoded.len() })?;
        Ok(Self { key: Arc::new(Zeroizing::new(key)), setting: setting.into() })
    }

    /// The key in file `path`, surrounding white space trimmed (as wal-g reads
    /// `WALG_LIBSODIUM_KEY_PATH`).
    pub fn from_file(path: &Path, transform: KeyTransform, setting: &str) -> Result<Self, KeyError> {
        let file_error =
            |error| KeyError::File { setting: setting.to_string(), path: path.display().to_string(), error };
        let bytes = Zeroizing::new(std::fs::read(path).map_err(file_error)?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| file_error(io::Error::new(io::ErrorKind::InvalidData, "the key file is not UTF-8 text")))?;
        Self::from_text(text.trim(), transform, setting)
    }

    /// The setting the key came from.
    pub fn setting(&self) -> &str {
        &self.setting
    }

    /// A reader of `stored`'s plaintext.
    pub fn decrypt<R: Read>(&self, stored: R) -> DecryptingReader<R> {
        DecryptingReader {
            input: stored,
            key: self.clone(),
            state: None,
            plain: Vec::new(),
            offset: 0,
            finished: false,
        }
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

/// Why an encrypted object could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LibsodiumError {
    #[error(
        "cannot decrypt with the wal-g libsodium key from {setting}: the key is not the one wal-g encrypted with, or the object is damaged"
    )]
    Authentication { setting: String },
    #[error("the encrypted object is truncated: it ends before libsodium's final message")]
    Truncated,
    #[error("the encrypted object has bytes after libsodium's final message")]
    TrailingBytes,
    #[error("the encrypted object holds an unexpected libsodium tag {0}")]
    Tag(u8),
}

impl From<LibsodiumError> for io::Error {
    fn from(error: LibsodiumError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

/// The plaintext of a wal-g libsodium stream, each message authenticated before it is read.
pub struct DecryptingReader<R> {
    input: R,
    key: LibsodiumKey,
    state: Option<State>,
    plain: Vec<u8>,
    offset: usize,
    finished: bool,
}

impl<R: Read> DecryptingReader<R> {
    fn start(&mut self) -> io::Result<()> {
        let mut header: Header = [0u8; HEADER_BYTES];
        let read = read_full(&mut self.input, &mut header)?;
        if read < HEADER_BYTES {
            return Err(LibsodiumError::Truncated.into());
        }
        let mut state = State::new();
        crypto_secretstream_xchacha20poly1305_init_pull(&mut state, &header, &self.key.key);
        self.state = Some(state);
        Ok(())
    }

    /// Reads, checks and decrypts the next message into `plain`.
    fn next_message(&mut self) -> io::Result<()> {
        let mut stored = vec![0u8; CHUNK_SIZE + ABYTES];
        let read = read_full(&mut self.input, &mut stored)?;
        if read < ABYTES {
            return Err(LibsodiumError::Truncated.into());
        }
        let Some(state) = self.state.as_mut() else { return Err(LibsodiumError::Truncated.into()) };
        self.plain.resize(read - ABYTES, 0);
        let mut tag = 0u8;
        crypto_secretstream_xchacha20poly1305_pull(state, &mut self.plain, &mut tag, &stored[..read], None)
            .map_err(|_| LibsodiumError::Authentication { setting: self.key.setting.to_string() })?;
        self.offset = 0;
        match tag {
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_FINAL => {
                let mut probe = [0u8; 1];
                if read_full(&mut self.input, &mut probe)? != 0 {
                    self.plain.clear();
                    return Err(LibsodiumError::TrailingBytes.into());
                }
                self.finished = true;
                Ok(())
            }
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE if read == stored.len() => Ok(()),
            // A short message that is not the final one: the object was cut.
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE => {
                self.plain.clear();
                Err(LibsodiumError::Truncated.into())
            }
            other => {
                self.plain.clear();
                Err(LibsodiumError::Tag(other).into())
            }
        }
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.state.is_none() {
            self.start()?;
        }
        while self.offset == self.plain.len() {
            if self.finished {
                return Ok(0);
            }
            self.next_message()?;
        }
        let count = out.len().min(self.plain.len() - self.offset);
        out[..count].copy_from_slice(&self.plain[self.offset..self.offset + count]);
        self.offset += count;
        Ok(count)
    }
}

/// Reads until `buffer` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[path = "libsodium_tests.rs"]
mod tests;
