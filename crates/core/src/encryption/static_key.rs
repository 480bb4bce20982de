//! A key-encryption key held by the host: 32 bytes from a file or an environment variable.

use std::path::Path;

use super::{DataKey, KEY_LEN, KeyError, KeyProvider, unwrap_with, wrap_with};

/// A static key-encryption key. Its id is derived from the key itself (a one-way fingerprint),
/// so objects name the key they need without any naming scheme to configure or keep straight.
#[derive(Debug)]
pub struct StaticKey {
    key: DataKey,
    id: String,
    source: String,
}

/// Why a static key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StaticKeyError {
    #[error("failed to read the encryption key file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "the encryption key in {source_name} is not a key: expected 64 hexadecimal digits (e.g. from `openssl rand -hex 32`) or exactly 32 bytes"
    )]
    Malformed { source_name: String },
    #[error("the encryption key variable {name} is not set (encryption.key_env names the variable that holds the key)")]
    UnsetVariable { name: String },
}

impl StaticKey {
    /// The key `bytes`, described as `source` in messages.
    pub fn from_bytes(bytes: [u8; KEY_LEN], source: String) -> Self {
        let fingerprint = blake3::derive_key("pgec2 2026-12 key-encryption-key id", &bytes);
        let id = format!("key:{}", hex(&fingerprint[..8]));
        Self { key: DataKey::from_bytes(bytes), id, source }
    }

    /// The key in the file at `path`: 64 hexadecimal digits (surrounding whitespace ignored) or
    /// exactly 32 raw bytes.
    pub fn from_file(path: &Path) -> Result<Self, StaticKeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| StaticKeyError::Read { path: shown.clone(), error })?;
        let source = format!("key file {shown}");
        let key = parse_key(&bytes).ok_or_else(|| StaticKeyError::Malformed { source_name: source.clone() })?;
        Ok(Self::from_bytes(key, source))
    }

    /// The key in the environment variable `name` (64 hexadecimal digits), read through `env`.
    pub fn from_env(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, StaticKeyError> {
        let value = env(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| StaticKeyError::UnsetVariable { name: name.to_string() })?;
        let source = format!("key in ${name}");
        let key =
            parse_hex_key(value.trim()).ok_or_else(|| StaticKeyError::Malformed { source_name: source.clone() })?;
        Ok(Self::from_bytes(key, source))
    }
}

impl KeyProvider for StaticKey {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn describe(&self) -> String {
        format!("{} (id {})", self.source, self.id)
    }

    fn wrap(&self, data_key: &DataKey) -> Result<Vec<u8>, KeyError> {
        Ok(wrap_with(&self.key, &self.id, data_key))
    }

    fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        unwrap_with(&self.key, key_id, wrapped).ok_or_else(|| KeyError::WrongKey { key: self.describe() })
    }
}

fn parse_key(bytes: &[u8]) -> Option<[u8; KEY_LEN]> {
    if let Some(key) = std::str::from_utf8(bytes).ok().and_then(|text| parse_hex_key(text.trim())) {
        return Some(key);
    }
    bytes.try_into().ok()
}

fn parse_hex_key(text: &str) -> Option<[u8; KEY_LEN]> {
    if text.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (index, pair) in text.as_bytes().chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        key[index] = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_holds_hex_digits_or_raw_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hex_path = dir.path().join("hex.key");
        std::fs::write(&hex_path, format!("{}\n", "ab".repeat(32))).expect("write");
        let raw_path = dir.path().join("raw.key");
        std::fs::write(&raw_path, [0xabu8; 32]).expect("write");
        let from_hex = StaticKey::from_file(&hex_path).expect("hex key");
        let from_raw = StaticKey::from_file(&raw_path).expect("raw key");
        assert_eq!(from_hex.key_id(), from_raw.key_id(), "the same key has the same id");
        let bad_path = dir.path().join("bad.key");
        std::fs::write(&bad_path, "not a key").expect("write");
        let error = StaticKey::from_file(&bad_path).expect_err("malformed");
        assert!(error.to_string().contains("bad.key"), "{error}");
    }

    #[test]
    fn different_keys_have_different_ids_and_do_not_unwrap_each_other() {
        let one = StaticKey::from_bytes([1u8; 32], "one".into());
        let two = StaticKey::from_bytes([2u8; 32], "two".into());
        assert_ne!(one.key_id(), two.key_id());
        let wrapped = one.wrap(&DataKey::random()).expect("wrap");
        let error = two.unwrap(one.key_id(), &wrapped).expect_err("wrong key");
        assert!(error.to_string().contains("two"), "{error}");
    }
}
