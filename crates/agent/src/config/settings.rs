//! Every configuration setting, defined once: its key in the TOML file, the environment
//! variables that override it, and whether it is a secret. Values are layered here
//! (environment over file over default) before [`super::AgentConfig`] parses them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// What secrets are printed as.
pub const MASK: &str = "********";

/// One setting of the agent's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// `section.name` as written in the TOML file.
    pub key: &'static str,
    /// Environment variables that override the file, first set wins.
    pub env: &'static [&'static str],
    /// Masked when printed.
    pub secret: bool,
    /// One line for `config check`.
    pub help: &'static str,
}

const fn setting(key: &'static str, env: &'static [&'static str], help: &'static str) -> Setting {
    Setting { key, env, secret: false, help }
}

/// The complete list of settings, in the order `config check` prints them.
pub const SETTINGS: &[Setting] = &[
    setting("storage.url", &["PGEC2_STORAGE_URL"], "s3://bucket/prefix or file:///absolute/dir"),
    setting("storage.prefix", &["PGEC2_STORAGE_PREFIX"], "this cluster's archive inside the url, e.g. namespace/name"),
    setting("storage.endpoint", &["PGEC2_S3_ENDPOINT"], "S3-compatible endpoint (path-style), empty for AWS"),
    setting("storage.region", &["PGEC2_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"], "S3 region"),
    setting("storage.sse", &["PGEC2_S3_SSE"], "server-side encryption: AES256 or aws:kms"),
    setting("storage.kms_key_id", &["PGEC2_S3_KMS_KEY_ID"], "KMS key for sse = aws:kms"),
    setting("storage.storage_class", &["PGEC2_S3_STORAGE_CLASS"], "S3 storage class, e.g. STANDARD_IA"),
    setting(
        "storage.timeout_secs",
        &["PGEC2_STORAGE_TIMEOUT"],
        "stall limit: an attempt with no progress this long is cut and retried",
    ),
    setting(
        "storage.min_throughput",
        &["PGEC2_STORAGE_MIN_THROUGHPUT"],
        "slowest link supported: a call's time budget grows by size / this",
    ),
    setting(
        "storage.walg_prefix",
        &["PGEC2_WALG_PREFIX"],
        "a wal-g archive read beside this one (s3://bucket/path or file:///dir), never written",
    ),
    setting(
        "storage.object_lock_mode",
        &["PGEC2_S3_OBJECT_LOCK_MODE"],
        "S3 Object Lock on every object written: governance or compliance (bucket with Object Lock enabled)",
    ),
    setting("storage.object_lock_days", &["PGEC2_S3_OBJECT_LOCK_DAYS"], "days each written object stays locked"),
    setting(
        "encryption.mode",
        &["PGEC2_ENCRYPTION"],
        "client-side encryption of WAL and backup parts: none or aes-256-gcm",
    ),
    setting(
        "encryption.key_file",
        &["PGEC2_ENCRYPTION_KEY_FILE"],
        "key-encryption key: a file of 64 hex digits or 32 bytes",
    ),
    setting(
        "encryption.key_env",
        &["PGEC2_ENCRYPTION_KEY_ENV"],
        "key-encryption key: the variable holding 64 hex digits",
    ),
    setting(
        "encryption.kms_key_id",
        &["PGEC2_ENCRYPTION_KMS_KEY_ID"],
        "key-encryption key: a KMS key id, alias or ARN",
    ),
    setting(
        "encryption.read_keys",
        &["PGEC2_ENCRYPTION_READ_KEYS"],
        "older keys accepted for reading, comma-separated file:PATH, env:VAR, kms:KEY",
    ),
    setting("encryption.kms_endpoint", &["PGEC2_KMS_ENDPOINT"], "KMS-compatible endpoint, empty for AWS"),
    setting("compression.algorithm", &["PGEC2_COMPRESSION"], "zstd, lz4 or none"),
    setting("compression.level", &["PGEC2_COMPRESSION_LEVEL"], "zstd level, 1 to 19"),
    setting("transfer.upload_concurrency", &["PGEC2_UPLOAD_CONCURRENCY"], "parallel uploads"),
    setting("transfer.download_concurrency", &["PGEC2_DOWNLOAD_CONCURRENCY"], "parallel downloads"),
    setting("transfer.prefetch", &["PGEC2_PREFETCH"], "WAL segments wal-fetch prefetches, 0 disables"),
    setting(
        "transfer.archive_async",
        &["PGEC2_ARCHIVE_ASYNC"],
        "wal-push also pushes the next ready WAL files, answers later calls from pg_wal/.pgec2-archived",
    ),
    setting(
        "transfer.archive_queue_max_mb",
        &["PGEC2_ARCHIVE_QUEUE_MAX_MB"],
        "above this much WAL waiting to be archived, wal-push drops segments and records the hole (off unless set)",
    ),
    setting("transfer.command_timeout_secs", &["PGEC2_COMMAND_TIMEOUT"], "deadline of one wal-push or wal-fetch"),
    setting(
        "backup.max_incremental_chain",
        &["PGEC2_MAX_INCREMENTAL_CHAIN"],
        "incremental backups a chain may hold on its full one; backup-push --incremental takes a full past it",
    ),
    setting(
        "backup.part_size_mib",
        &["PGEC2_PART_SIZE_MIB"],
        "MiB of file content per stored part, 1 to 4 (default: 2 on a local directory, 4 on S3)",
    ),
    setting("postgres.pgdata", &["PGDATA"], "data directory"),
    setting("postgres.host", &["PGHOST"], "host name or socket directory"),
    setting("postgres.port", &["PGPORT"], "port"),
    setting("postgres.user", &["PGUSER"], "user"),
    setting("postgres.database", &["PGDATABASE"], "database"),
    Setting { key: "postgres.password", env: &["PGPASSWORD"], secret: true, help: "password" },
    setting("postgres.connect_timeout_secs", &["PGCONNECT_TIMEOUT"], "connection timeout"),
    setting(
        "postgres.wal_receive_spool",
        &["PGEC2_WAL_RECEIVE_SPOOL"],
        "spool of the wal-receive streaming from this server (default /var/lib/pgec2-wal-receive)",
    ),
    Setting {
        key: "walg.libsodium_key",
        env: &["PGEC2_WALG_LIBSODIUM_KEY", "WALG_LIBSODIUM_KEY"],
        secret: true,
        help: "wal-g's libsodium key, to read an encrypted wal-g archive",
    },
    setting(
        "walg.libsodium_key_path",
        &["PGEC2_WALG_LIBSODIUM_KEY_PATH", "WALG_LIBSODIUM_KEY_PATH"],
        "a file holding wal-g's libsodium key",
    ),
    setting(
        "walg.libsodium_key_transform",
        &["PGEC2_WALG_LIBSODIUM_KEY_TRANSFORM", "WALG_LIBSODIUM_KEY_TRANSFORM"],
        "how wal-g reads the key text: none, base64 or hex",
    ),
];

/// Looks a setting up by key.
pub fn setting_for(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub source: Source,
}

/// The values given by the file and the environment, environment winning, keyed by setting key.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    values: BTreeMap<&'static str, Value>,
}

impl Layers {
    /// Layers the file's values (if any) under the environment's.
    pub fn collect(file: Option<(&Path, &str)>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut layers = Self::default();
        if let Some((path, text)) = file {
            for (key, text) in parse_file(path, text)? {
                layers.values.insert(key, Value { text, source: Source::File(path.to_path_buf()) });
            }
        }
        for setting in SETTINGS {
            let from_env =
                setting.env.iter().find_map(|name| Some((*name, env(name).filter(|value| !value.is_empty())?)));
            if let Some((name, text)) = from_env {
                layers.values.insert(setting.key, Value { text, source: Source::Env(name) });
            }
        }
        Ok(layers)
    }

    /// The layered value of `key`, if the file or the environment gave one.
    pub fn get(&self, key: &'static str) -> Option<&Value> {
        debug_assert!(setting_for(key).is_some(), "{key} is not in SETTINGS");
        self.values.get(key)
    }
}

/// Flattens the TOML file to `section.name = text`, refusing unknown keys and nested values.
fn parse_file(path: &Path, text: &str) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|error: toml::de::Error| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: error.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1)),
        message: error.message().to_string(),
    })?;
    let mut values = Vec::new();
    for (section, entries) in &table {
        let toml::Value::Table(entries) = entries else {
            return Err(unknown_key(path, section));
        };
        for (name, value) in entries {
            let key = format!("{section}.{name}");
            let setting = setting_for(&key).ok_or_else(|| unknown_key(path, &key))?;
            let text = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Boolean(flag) => flag.to_string(),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: setting.key,
                        origin: Source::File(path.to_path_buf()),
                        value: if setting.secret { MASK.to_string() } else { value.to_string() },
                        reason: "expected a string or an integer".to_string(),
                    });
                }
            };
            values.push((setting.key, text));
        }
    }
    Ok(values)
}

fn unknown_key(path: &Path, key: &str) -> ConfigError {
    let section = key.split('.').next().unwrap_or(key);
    let mut known: Vec<&str> = SETTINGS.iter().map(|setting| setting.key).filter(|k| k.starts_with(section)).collect();
    if known.is_empty() {
        known = SETTINGS.iter().map(|setting| setting.key).collect();
    }
    ConfigError::UnknownKey { path: path.to_path_buf(), key: key.to_string(), known: known.join(", ") }
}
