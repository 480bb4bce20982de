//! Encryption settings: whether WAL segments and backup parts are encrypted, with which
//! key-encryption key, and which older keys still read (rotation).
//!
//! ```toml
//! [encryption]
//! mode = "aes-256-gcm"
//! key_file = "/etc/pgec2/archive.key"       # or key_env = "PGEC2_ARCHIVE_KEY", or kms_key_id = "arn:aws:kms:…"
//! read_keys = "file:/etc/pgec2/2025.key"    # keys of older objects, comma-separated file:/env:/kms:
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use pgec2_core::encryption::{KeyProvider, Keyring, StaticKey};

use super::ConfigError;
use crate::kms::KmsKey;

/// The encryption of new objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncryptionMode {
    /// New objects are stored in the clear (encrypted ones still read with `read_keys`).
    #[default]
    None,
    /// New WAL segments and backup parts are encrypted with AES-256-GCM.
    Aes256Gcm,
}

impl fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncryptionMode::None => "none",
            EncryptionMode::Aes256Gcm => "aes-256-gcm",
        })
    }
}

impl FromStr for EncryptionMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(EncryptionMode::None),
            "aes-256-gcm" => Ok(EncryptionMode::Aes256Gcm),
            _ => Err("expected none or aes-256-gcm".to_string()),
        }
    }
}

/// Where a key-encryption key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding 64 hexadecimal digits or 32 raw bytes.
    File(PathBuf),
    /// An environment variable holding 64 hexadecimal digits.
    Env(String),
    /// A KMS key id, alias or ARN (data keys from `GenerateDataKey`, read with `Decrypt`).
    Kms(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "file:{}", path.display()),
            KeySource::Env(name) => write!(f, "env:{name}"),
            KeySource::Kms(key) => write!(f, "kms:{key}"),
        }
    }
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let source = match text.split_once(':') {
            Some(("file", path)) if path.starts_with('/') => KeySource::File(PathBuf::from(path)),
            Some(("env", name)) if !name.is_empty() => KeySource::Env(name.to_string()),
            Some(("kms", key)) if !key.is_empty() => KeySource::Kms(key.to_string()),
            _ => return Err(format!("{text:?} is not a key: expected file:/absolute/path, env:VARIABLE or kms:KEY")),
        };
        Ok(source)
    }
}

/// The `[encryption]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionSettings {
    pub mode: EncryptionMode,
    /// The key new objects are encrypted with (required with `aes-256-gcm`).
    pub key: Option<KeySource>,
    /// Keys of older objects, accepted for reading only.
    pub read_keys: Vec<KeySource>,
    /// KMS endpoint (a KMS-compatible server); `None` for AWS itself.
    pub kms_endpoint: Option<String>,
}

impl EncryptionSettings {
    /// Loads the keys: reads key files and variables, connects to KMS. `region` is the storage's.
    pub async fn keyring(&self, region: Option<&str>) -> Result<Keyring, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let writer = match (&self.mode, &self.key) {
            (EncryptionMode::Aes256Gcm, Some(source)) => Some(self.provider(source, region, &env).await?),
            _ => None,
        };
        let mut readers = Vec::with_capacity(self.read_keys.len());
        for source in &self.read_keys {
            readers.push(self.provider(source, region, &env).await?);
        }
        Ok(Keyring::new(writer, readers))
    }

    async fn provider(
        &self,
        source: &KeySource,
        region: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn KeyProvider>, ConfigError> {
        let failed = |reason: String| ConfigError::Key { key: source.to_string(), reason };
        let provider: Arc<dyn KeyProvider> = match source {
            KeySource::File(path) => Arc::new(StaticKey::from_file(path).map_err(|error| failed(error.to_string()))?),
            KeySource::Env(name) => {
                Arc::new(StaticKey::from_env(name, env).map_err(|error| failed(error.to_string()))?)
            }
            KeySource::Kms(key) => Arc::new(
                KmsKey::connect(key, region, self.kms_endpoint.as_deref())
                    .await
                    .map_err(|error| failed(error.to_string()))?,
            ),
        };
        Ok(provider)
    }
}

/// Parses `read_keys`: comma-separated key sources.
pub(super) fn parse_read_keys(text: &str) -> Result<Vec<KeySource>, String> {
    text.split(',').filter(|part| !part.trim().is_empty()).map(str::parse).collect()
}

/// Renders `read_keys` back to its text.
pub(super) fn read_keys_text(keys: &[KeySource]) -> Option<String> {
    (!keys.is_empty()).then(|| keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
}
