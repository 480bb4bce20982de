//! Client-side encryption of stored objects: the keys.
//!
//! Every encrypted object has a data key of its own, 32 random bytes used once with AES-256-GCM
//! (see [`crate::envelope`] for the chunked format). The data key is stored in the object's
//! header *wrapped* (encrypted) by a key-encryption key, and the header names that key by its
//! id. A [`KeyProvider`] is one key-encryption key: a static key from a file or an environment
//! variable ([`StaticKey`], here), or a KMS key (implemented outside this crate, which stays
//! free of cloud SDKs). A [`Keyring`] holds the key new objects are written with and every key
//! accepted for reading, so the key-encryption key can be rotated without rewriting data: new
//! objects name the new key, old ones keep naming the old key, which stays in the keyring.

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;
use zeroize::Zeroizing;

mod static_key;

pub use static_key::StaticKey;

/// Length of an AES-256 key, of data keys and of static key-encryption keys.
pub const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;

/// A data key: 32 secret bytes, wiped from memory when dropped.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A new random data key.
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// A data key from its bytes (what an unwrapping yields).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A data key from a slice that must be exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self::from_bytes(array))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(********)")
    }
}

/// Why a key could not wrap or unwrap a data key. Messages name the key; callers add the object.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "it was encrypted with key {key_id}, which is not configured (keys configured: {configured}): add that key to encryption.read_keys"
    )]
    UnknownKey { key_id: String, configured: String },
    #[error(
        "no encryption key is configured, and it was encrypted with key {key_id}: set encryption.key_file, encryption.key_env, encryption.kms_key_id or encryption.read_keys to that key"
    )]
    NoKey { key_id: String },
    #[error("its data key does not decrypt with {key}: the wrong key, or the object was altered")]
    WrongKey { key: String },
    #[error("{key}: {reason}")]
    Provider { key: String, reason: String },
}

/// One key-encryption key: wraps data keys for new objects, unwraps them for reading.
/// Implementations are synchronous; a remote one (KMS) does its network calls inside.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The id recorded in the headers of objects this key wraps, e.g. `key:3fa9c2d1e0b4a785`.
    fn key_id(&self) -> &str;
    /// The key as named in messages (where it comes from and its id).
    fn describe(&self) -> String;
    /// Whether this provider unwraps data keys recorded with `key_id` (a KMS provider accepts
    /// every KMS key id, since KMS finds the key from the wrapped blob).
    fn accepts(&self, key_id: &str) -> bool {
        key_id == self.key_id()
    }
    /// Encrypts `data_key` for the header of a new object.
    fn wrap(&self, data_key: &DataKey) -> Result<Vec<u8>, KeyError>;
    /// Decrypts a data key this provider (or one it accepts) wrapped under `key_id`.
    fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, KeyError>;
}

/// The keys an archive is written and read with. The default keyring has none: objects are
/// written in the clear, and encrypted objects cannot be read.
#[derive(Clone, Default, Debug)]
pub struct Keyring {
    writer: Option<Arc<dyn KeyProvider>>,
    readers: Vec<Arc<dyn KeyProvider>>,
}

impl Keyring {
    /// No keys: objects are written in the clear.
    pub fn none() -> Self {
        Self::default()
    }

    /// New objects are encrypted with `writer`; `readers` (and `writer`) read.
    pub fn new(writer: Option<Arc<dyn KeyProvider>>, readers: Vec<Arc<dyn KeyProvider>>) -> Self {
        Self { writer, readers }
    }

    /// The key new objects are encrypted with, if any.
    pub fn writer(&self) -> Option<&Arc<dyn KeyProvider>> {
        self.writer.as_ref()
    }

    /// True when new objects are encrypted.
    pub fn encrypts(&self) -> bool {
        self.writer.is_some()
    }

    /// Unwraps the data key an object's header records under `key_id`.
    pub fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        let mut candidates = self.writer.iter().chain(self.readers.iter());
        let Some(provider) = candidates.find(|provider| provider.accepts(key_id)) else {
            if self.writer.is_none() && self.readers.is_empty() {
                return Err(KeyError::NoKey { key_id: key_id.to_string() });
            }
            let configured: Vec<String> =
                self.writer.iter().chain(self.readers.iter()).map(|provider| provider.key_id().to_string()).collect();
            return Err(KeyError::UnknownKey { key_id: key_id.to_string(), configured: configured.join(", ") });
        };
        provider.unwrap(key_id, wrapped)
    }
}

/// Encrypts `data_key` with AES-256-GCM under `kek` (a random nonce, `key_id` authenticated):
/// nonce ‖ ciphertext ‖ tag, 60 bytes. What static keys store, and KMS keys below their blob.
pub fn wrap_with(kek: &DataKey, key_id: &str, data_key: &DataKey) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut buffer = data_key.as_bytes().to_vec();
    let aad = wrap_aad(key_id);
    // Encrypting into a buffer of the right size cannot fail (only absurd lengths do).
    let tag = kek.cipher().encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut buffer).unwrap_or_default();
    let mut wrapped = Vec::with_capacity(NONCE_LEN + KEY_LEN + TAG_LEN);
    wrapped.extend_from_slice(&nonce);
    wrapped.extend_from_slice(&buffer);
    wrapped.extend_from_slice(&tag);
    wrapped
}

/// Reverses [`wrap_with`]; `None` when `kek` is not the key that wrapped it (or it was altered).
pub fn unwrap_with(kek: &DataKey, key_id: &str, wrapped: &[u8]) -> Option<DataKey> {
    if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = wrapped.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(KEY_LEN);
    let mut buffer = Zeroizing::new([0u8; KEY_LEN]);
    buffer.copy_from_slice(ciphertext);
    kek.cipher()
        .decrypt_in_place_detached(Nonce::from_slice(nonce), &wrap_aad(key_id), buffer.as_mut(), Tag::from_slice(tag))
        .ok()?;
    Some(DataKey(buffer))
}

fn wrap_aad(key_id: &str) -> Vec<u8> {
    [b"pgec2 data key wrapped by ".as_slice(), key_id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_data_key_unwraps_only_with_its_key_and_id() {
        let (kek, other) = (DataKey::random(), DataKey::random());
        let data_key = DataKey::random();
        let wrapped = wrap_with(&kek, "key:one", &data_key);
        assert_eq!(unwrap_with(&kek, "key:one", &wrapped).map(|key| *key.as_bytes()), Some(*data_key.as_bytes()));
        assert!(unwrap_with(&other, "key:one", &wrapped).is_none());
        assert!(unwrap_with(&kek, "key:two", &wrapped).is_none());
        let mut flipped = wrapped.clone();
        flipped[20] ^= 1;
        assert!(unwrap_with(&kek, "key:one", &flipped).is_none());
    }

    #[test]
    fn a_keyring_names_the_missing_key() {
        let key = StaticKey::from_bytes([7u8; KEY_LEN], "test key".into());
        let keyring = Keyring::new(Some(Arc::new(key)), Vec::new());
        let error = keyring.unwrap("key:0000000000000000", &[0u8; 60]).expect_err("unknown key");
        assert!(error.to_string().contains("key:0000000000000000"), "{error}");
        let error = Keyring::none().unwrap("key:0000000000000000", &[0u8; 60]).expect_err("no key");
        assert!(error.to_string().contains("no encryption key is configured"), "{error}");
    }
}
