//! The content of a stored wal-g object: decrypted with wal-g's libsodium key when one is set,
//! then decompressed by the method its suffix names.

use std::io::{self, Read};

use super::libsodium::{LibsodiumError, LibsodiumKey};
use super::{Method, WalgError};

/// How to read one stored object's content.
#[derive(Clone, Debug)]
pub struct ContentReader {
    key: String,
    method: Option<Method>,
    libsodium: Option<LibsodiumKey>,
}

impl ContentReader {
    /// The reader of object `key` (its suffix names the compression).
    pub fn new(key: &str, libsodium: Option<LibsodiumKey>) -> Self {
        let method = key.rsplit_once('.').and_then(|(_, ext)| Method::from_suffix(ext));
        Self { key: key.to_string(), method, libsodium }
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A reader of `stored`'s content. Fails at once when the object is plainly encrypted and no
    /// key is set; a wrong key or damage shows as a read error (see [`Self::explain`]).
    pub fn open<'a>(&self, stored: &'a [u8]) -> Result<Box<dyn Read + 'a>, WalgError> {
        let unsupported = || WalgError::Unsupported {
            key: self.key.clone(),
            method: self.method.map(|method| method.to_string()).unwrap_or_else(|| "unknown".to_string()),
        };
        let method = self.method.ok_or_else(unsupported)?;
        match &self.libsodium {
            Some(libsodium) => method.decoder(libsodium.decrypt(stored)).ok_or_else(unsupported),
            None if method.starts_unlike(stored) => Err(WalgError::MissingKey { key: self.key.clone(), method }),
            None => method.decoder(stored).ok_or_else(unsupported),
        }
    }

    /// What a failed read of the content means: a decryption failure (a wrong key, a damaged or
    /// cut encrypted object), or data that does not decompress.
    pub fn explain(&self, error: &io::Error) -> WalgError {
        if let Some(failure) = libsodium_failure(error) {
            return WalgError::Decrypt { key: self.key.clone(), error: failure };
        }
        let hint = if self.libsodium.is_none() {
            " (if wal-g encrypted this archive, set walg.libsodium_key or walg.libsodium_key_path as wal-g had it)"
        } else {
            ""
        };
        WalgError::Unreadable { key: self.key.clone(), reason: format!("{error}{hint}") }
    }
}

/// The decryption failure somewhere in `error`'s chain (decoders and the tar reader wrap it).
fn libsodium_failure(error: &io::Error) -> Option<LibsodiumError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|inner| inner as _);
    while let Some(error) = current {
        if let Some(failure) = error.downcast_ref::<LibsodiumError>() {
            return Some(failure.clone());
        }
        current = match error.downcast_ref::<io::Error>() {
            Some(io_error) => io_error.get_ref().map(|inner| inner as _),
            None => error.source(),
        };
    }
    None
}
