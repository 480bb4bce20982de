//! wal-g's libsodium key, taken the way wal-g takes it, for reading an encrypted wal-g archive
//! (`storage.walg_prefix`). The environment variables are wal-g's own, so a wal-g host's
//! environment works unchanged.
//!
//! ```toml
//! [walg]
//! libsodium_key_path = "/etc/wal-g/libsodium.key"   # WALG_LIBSODIUM_KEY_PATH, or libsodium_key (WALG_LIBSODIUM_KEY)
//! libsodium_key_transform = "base64"                 # WALG_LIBSODIUM_KEY_TRANSFORM: none (default), base64, hex
//! ```

use std::path::PathBuf;

use pgec2_core::walg::{KeyTransform, LibsodiumKey};

use super::ConfigError;

/// The setting of an inline key, as errors name it.
pub const INLINE_KEY: &str = "walg.libsodium_key (WALG_LIBSODIUM_KEY)";
/// The setting of a key file, as errors name it.
pub const KEY_PATH: &str = "walg.libsodium_key_path (WALG_LIBSODIUM_KEY_PATH)";

/// How the wal-g archive is decrypted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalgSettings {
    /// wal-g's `WALG_LIBSODIUM_KEY`: the key text (a secret).
    pub libsodium_key: Option<String>,
    /// wal-g's `WALG_LIBSODIUM_KEY_PATH`: a file holding the key text.
    pub libsodium_key_path: Option<PathBuf>,
    /// wal-g's `WALG_LIBSODIUM_KEY_TRANSFORM`.
    pub libsodium_key_transform: KeyTransform,
}

impl WalgSettings {
    /// The key, read now (a key file is read here); `None` when the wal-g archive is not encrypted.
    pub fn libsodium_key(&self) -> Result<Option<LibsodiumKey>, ConfigError> {
        let transform = self.libsodium_key_transform;
        let key = match (&self.libsodium_key, &self.libsodium_key_path) {
            (Some(text), _) => LibsodiumKey::from_text(text, transform, INLINE_KEY)
                .map_err(|error| ConfigError::Key { key: INLINE_KEY.to_string(), reason: error.to_string() })?,
            (None, Some(path)) => LibsodiumKey::from_file(path, transform, KEY_PATH)
                .map_err(|error| ConfigError::Key { key: KEY_PATH.to_string(), reason: error.to_string() })?,
            (None, None) => return Ok(None),
        };
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::AgentConfig;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, format!("[storage]\nurl = \"file:///archive\"\n{file}")).expect("write config");
        let lookup = |name: &str| env.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string());
        AgentConfig::load_with(Some(&path), Path::new("/nonexistent"), &lookup)
    }

    #[test]
    fn wal_g_s_own_variables_give_the_libsodium_key() {
        let config =
            load("", &[("WALG_LIBSODIUM_KEY", "abcd"), ("WALG_LIBSODIUM_KEY_TRANSFORM", "hex")]).expect("config");
        assert_eq!(config.walg.libsodium_key.as_deref(), Some("abcd"));
        assert_eq!(config.walg.libsodium_key_transform, KeyTransform::Hex);
        let error = config.walg.libsodium_key().expect_err("two bytes are not a key").to_string();
        assert!(error.contains(INLINE_KEY), "{error}");
        assert!(!config.to_archive_toml().contains("abcd"), "the inline key is a secret, not written for restores");

        let config = load("[walg]\nlibsodium_key_path = \"/etc/wal-g/key\"\n", &[]).expect("config");
        assert_eq!(config.walg.libsodium_key_path.as_deref(), Some(Path::new("/etc/wal-g/key")));
        assert!(config.to_archive_toml().contains("libsodium_key_path = \"/etc/wal-g/key\""));
        assert!(load("", &[]).expect("config").walg.libsodium_key().expect("no key").is_none());
    }

    #[test]
    fn a_key_and_a_key_file_together_or_an_unknown_transform_are_refused() {
        let both = load(
            "[walg]\nlibsodium_key_path = \"/etc/wal-g/key\"\n",
            &[("WALG_LIBSODIUM_KEY", "x".repeat(32).as_str())],
        );
        assert!(both.expect_err("both").to_string().contains("walg.libsodium_key_path"));
        let transform = load("", &[("WALG_LIBSODIUM_KEY_TRANSFORM", "rot13")]);
        assert!(transform.expect_err("rot13").to_string().contains("walg.libsodium_key_transform"));
    }
}
