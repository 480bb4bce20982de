//! Typed parsing and validation of layered values, and the way back to text.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use pgec2_core::compression::{Algorithm, Compression};
use pgec2_core::layout::ArchiveLayout;
use pgec2_core::storage::lock::{LockMode, ObjectLock};
use pgec2_core::walg::KeyTransform;

use super::encryption::{EncryptionMode, EncryptionSettings, KeySource, parse_read_keys, read_keys_text};
use super::settings::{Layers, Source, Value, setting_for};
use super::storage::{ServerSideEncryption, StorageSettings, validate_endpoint, validate_url};
use super::{AgentConfig, ConfigError, PostgresSettings, TransferSettings, WalgSettings};
use crate::backup::upload::MAX_PART_SIZE_MIB;

/// Upper bound of every concurrency setting (more only exhausts sockets and memory).
const MAX_CONCURRENCY: usize = 256;

/// Builds and validates the configuration from layered values over the defaults.
pub(super) fn from_layers(layers: &Layers) -> Result<AgentConfig, ConfigError> {
    let defaults = AgentConfig::default();
    let reader = Reader { layers };
    let storage = StorageSettings {
        url: reader.required("storage.url", validate_url)?,
        prefix: reader.optional("storage.prefix", validate_prefix)?.unwrap_or_default(),
        endpoint: reader.optional("storage.endpoint", validate_endpoint)?,
        region: reader.optional("storage.region", |text| Ok(text.to_string()))?,
        sse: reader.optional("storage.sse", |text| text.parse())?,
        kms_key_id: reader.optional("storage.kms_key_id", |text| Ok(text.to_string()))?,
        storage_class: reader.optional("storage.storage_class", validate_storage_class)?,
        walg_prefix: reader.optional("storage.walg_prefix", validate_url)?,
        object_lock: object_lock_from(&reader)?,
        timeout: reader.or("storage.timeout_secs", defaults.storage.timeout, parse_seconds)?,
        min_throughput: reader
            .or("storage.min_throughput", defaults.storage.min_throughput, |text| parse_number(text, 1, u64::MAX))?,
    };
    if storage.kms_key_id.is_some() && storage.sse != Some(ServerSideEncryption::AwsKms) {
        let value = reader.layers.get("storage.kms_key_id").cloned().unwrap_or(default_value());
        return Err(invalid("storage.kms_key_id", &value, "a KMS key needs storage.sse = \"aws:kms\""));
    }
    let algorithm: Algorithm = reader.or("compression.algorithm", Algorithm::Zstd, |text| {
        text.parse().map_err(|_| "expected zstd, lz4 or none".to_string())
    })?;
    let level = reader.or("compression.level", defaults.compression.level, |text| parse_number(text, 1, 19))?;
    let compression = Compression::new(algorithm, level).map_err(|error| {
        let value = reader.layers.get("compression.level").cloned().unwrap_or(default_value());
        invalid("compression.level", &value, &error.to_string())
    })?;
    let encryption = encryption_from(&reader)?;
    let transfer = TransferSettings {
        upload_concurrency: reader.or("transfer.upload_concurrency", defaults.transfer.upload_concurrency, |text| {
            parse_number(text, 1, MAX_CONCURRENCY)
        })?,
        download_concurrency: reader.or(
            "transfer.download_concurrency",
            defaults.transfer.download_concurrency,
            |text| parse_number(text, 1, MAX_CONCURRENCY),
        )?,
        prefetch: reader.or("transfer.prefetch", defaults.transfer.prefetch, |text| parse_number(text, 0, 64))?,
        command_timeout: reader.or(
            "transfer.command_timeout_secs",
            defaults.transfer.command_timeout,
            parse_seconds,
        )?,
        archive_async: reader.or("transfer.archive_async", defaults.transfer.archive_async, parse_bool)?,
        archive_queue_max_mb: reader
            .optional("transfer.archive_queue_max_mb", |text| parse_number(text, 16, 1 << 40))?,
        max_incremental_chain: reader.or(
            "backup.max_incremental_chain",
            defaults.transfer.max_incremental_chain,
            |text| parse_number(text, 1, 1000),
        )?,
        part_size_mib: reader.optional("backup.part_size_mib", |text| parse_number(text, 1, MAX_PART_SIZE_MIB))?,
    };
    let postgres = PostgresSettings {
        pgdata: reader.optional("postgres.pgdata", parse_absolute_path)?,
        host: reader.or("postgres.host", defaults.postgres.host, |text| Ok(text.to_string()))?,
        port: reader.or("postgres.port", defaults.postgres.port, |text| parse_number(text, 1, u16::MAX))?,
        user: reader.or("postgres.user", defaults.postgres.user, |text| Ok(text.to_string()))?,
        database: reader.or("postgres.database", defaults.postgres.database, |text| Ok(text.to_string()))?,
        password: reader.optional("postgres.password", |text| Ok(text.to_string()))?,
        connect_timeout: reader.or(
            "postgres.connect_timeout_secs",
            defaults.postgres.connect_timeout,
            parse_seconds,
        )?,
        wal_receive_spool: reader.optional("postgres.wal_receive_spool", parse_absolute_path)?,
    };
    let walg = walg_from(&reader)?;
    Ok(AgentConfig { file: None, storage, compression, encryption, transfer, postgres, walg })
}

/// `storage.object_lock_mode` and `storage.object_lock_days`: both or neither.
fn object_lock_from(reader: &Reader<'_>) -> Result<Option<ObjectLock>, ConfigError> {
    let mode: Option<LockMode> = reader.optional("storage.object_lock_mode", str::parse)?;
    let days: Option<u32> = reader.optional("storage.object_lock_days", |text| parse_number(text, 1, 36_500))?;
    match (mode, days) {
        (Some(mode), Some(days)) => Ok(Some(ObjectLock { mode, days })),
        (None, None) => Ok(None),
        (Some(_), None) => {
            let value = reader.layers.get("storage.object_lock_mode").cloned().unwrap_or(default_value());
            Err(invalid("storage.object_lock_mode", &value, "an object lock needs storage.object_lock_days too"))
        }
        (None, Some(_)) => {
            let value = reader.layers.get("storage.object_lock_days").cloned().unwrap_or(default_value());
            Err(invalid("storage.object_lock_days", &value, "an object lock needs storage.object_lock_mode too"))
        }
    }
}

/// The `[walg]` section: at most one of wal-g's inline key and key file.
fn walg_from(reader: &Reader<'_>) -> Result<WalgSettings, ConfigError> {
    let walg = WalgSettings {
        libsodium_key: reader.optional("walg.libsodium_key", |text| Ok(text.to_string()))?,
        libsodium_key_path: reader.optional("walg.libsodium_key_path", parse_absolute_path)?,
        libsodium_key_transform: reader.or("walg.libsodium_key_transform", KeyTransform::None, str::parse)?,
    };
    if walg.libsodium_key.is_some() && walg.libsodium_key_path.is_some() {
        let value = reader.layers.get("walg.libsodium_key_path").cloned().unwrap_or(default_value());
        return Err(invalid(
            "walg.libsodium_key_path",
            &value,
            "set only one of walg.libsodium_key and walg.libsodium_key_path",
        ));
    }
    Ok(walg)
}

/// The `[encryption]` section: at most one key for writing, required by `aes-256-gcm`.
fn encryption_from(reader: &Reader<'_>) -> Result<EncryptionSettings, ConfigError> {
    let mode: EncryptionMode = reader.or("encryption.mode", EncryptionMode::None, str::parse)?;
    let keys = [
        ("encryption.key_file", reader.optional("encryption.key_file", |text| format!("file:{text}").parse())?),
        ("encryption.key_env", reader.optional("encryption.key_env", |text| format!("env:{text}").parse())?),
        ("encryption.kms_key_id", reader.optional("encryption.kms_key_id", |text| format!("kms:{text}").parse())?),
    ];
    let mut given = keys.into_iter().filter_map(|(key, source)| Some((key, source?)));
    let key: Option<(&'static str, KeySource)> = given.next();
    let mode_value = || reader.layers.get("encryption.mode").cloned().unwrap_or(default_value());
    if let Some((second, _)) = given.next() {
        let value = reader.layers.get(second).cloned().unwrap_or(default_value());
        return Err(invalid(
            second,
            &value,
            "set only one of encryption.key_file, encryption.key_env and encryption.kms_key_id",
        ));
    }
    match (mode, &key) {
        (EncryptionMode::Aes256Gcm, None) => {
            return Err(invalid(
                "encryption.mode",
                &mode_value(),
                "encryption needs a key: set encryption.key_file, encryption.key_env or encryption.kms_key_id",
            ));
        }
        (EncryptionMode::None, Some((name, _))) => {
            let value = reader.layers.get(name).cloned().unwrap_or(default_value());
            return Err(invalid(
                name,
                &value,
                "a key is used only with encryption.mode = \"aes-256-gcm\" (to read old objects after turning encryption off, list it in encryption.read_keys)",
            ));
        }
        _ => {}
    }
    Ok(EncryptionSettings {
        mode,
        key: key.map(|(_, source)| source),
        read_keys: reader.or("encryption.read_keys", Vec::new(), parse_read_keys)?,
        kms_endpoint: reader.optional("encryption.kms_endpoint", validate_endpoint)?,
    })
}

/// Renders every setting's value as the text the file would hold.
pub(super) fn to_values(config: &AgentConfig) -> Vec<(&'static str, Option<String>)> {
    let storage = &config.storage;
    let transfer = &config.transfer;
    let postgres = &config.postgres;
    let text = |value: &dyn ToString| Some(value.to_string());
    let values = vec![
        ("storage.url", Some(storage.url.clone()).filter(|url| !url.is_empty())),
        ("storage.prefix", Some(storage.prefix.clone()).filter(|prefix| !prefix.is_empty())),
        ("storage.endpoint", storage.endpoint.clone()),
        ("storage.region", storage.region.clone()),
        ("storage.sse", storage.sse.map(|sse| sse.to_string())),
        ("storage.kms_key_id", storage.kms_key_id.clone()),
        ("storage.storage_class", storage.storage_class.clone()),
        ("storage.timeout_secs", text(&storage.timeout.as_secs())),
        ("storage.min_throughput", text(&storage.min_throughput)),
        ("storage.walg_prefix", storage.walg_prefix.clone()),
        ("storage.object_lock_mode", storage.object_lock.map(|lock| lock.mode.to_string())),
        ("storage.object_lock_days", storage.object_lock.map(|lock| lock.days.to_string())),
        ("encryption.mode", text(&config.encryption.mode)),
        ("encryption.key_file", key_text(&config.encryption.key, "file")),
        ("encryption.key_env", key_text(&config.encryption.key, "env")),
        ("encryption.kms_key_id", key_text(&config.encryption.key, "kms")),
        ("encryption.read_keys", read_keys_text(&config.encryption.read_keys)),
        ("encryption.kms_endpoint", config.encryption.kms_endpoint.clone()),
        ("compression.algorithm", text(&config.compression.algorithm)),
        ("compression.level", text(&config.compression.level)),
        ("transfer.upload_concurrency", text(&transfer.upload_concurrency)),
        ("transfer.download_concurrency", text(&transfer.download_concurrency)),
        ("transfer.prefetch", text(&transfer.prefetch)),
        ("transfer.command_timeout_secs", text(&transfer.command_timeout.as_secs())),
        ("transfer.archive_async", text(&transfer.archive_async)),
        ("transfer.archive_queue_max_mb", transfer.archive_queue_max_mb.map(|mb| mb.to_string())),
        ("backup.max_incremental_chain", text(&transfer.max_incremental_chain)),
        ("backup.part_size_mib", transfer.part_size_mib.map(|mib| mib.to_string())),
        ("postgres.pgdata", postgres.pgdata.as_ref().map(|path| path.display().to_string())),
        ("postgres.host", text(&postgres.host)),
        ("postgres.port", text(&postgres.port)),
        ("postgres.user", text(&postgres.user)),
        ("postgres.database", text(&postgres.database)),
        ("postgres.password", postgres.password.clone()),
        ("postgres.connect_timeout_secs", text(&postgres.connect_timeout.as_secs())),
        ("postgres.wal_receive_spool", postgres.wal_receive_spool.as_ref().map(|path| path.display().to_string())),
        ("walg.libsodium_key", config.walg.libsodium_key.clone()),
        ("walg.libsodium_key_path", config.walg.libsodium_key_path.as_ref().map(|path| path.display().to_string())),
        ("walg.libsodium_key_transform", {
            Some(config.walg.libsodium_key_transform).filter(|t| *t != KeyTransform::None).map(|t| t.to_string())
        }),
    ];
    debug_assert!(values.iter().all(|(key, _)| setting_for(key).is_some()));
    values
}

/// The writing key's value for the setting of `kind` (`file`, `env` or `kms`), if it is of that kind.
fn key_text(key: &Option<KeySource>, kind: &str) -> Option<String> {
    key.as_ref().and_then(|key| key.to_string().strip_prefix(&format!("{kind}:")).map(str::to_string))
}

/// Reads typed values out of the layers, turning parse failures into [`ConfigError::Invalid`].
struct Reader<'l> {
    layers: &'l Layers,
}

impl Reader<'_> {
    fn optional<T>(
        &self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.layers.get(key) {
            None => Ok(None),
            Some(value) => parse(value.text.trim()).map(Some).map_err(|reason| invalid(key, value, &reason)),
        }
    }

    fn or<T>(
        &self,
        key: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        Ok(self.optional(key, parse)?.unwrap_or(default))
    }

    fn required<T>(&self, key: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let env = setting_for(key).and_then(|setting| setting.env.first().copied()).unwrap_or("its variable");
        self.optional(key, parse)?.ok_or(ConfigError::Missing { key, env })
    }
}

fn default_value() -> Value {
    Value { text: String::new(), source: Source::Default }
}

fn invalid(key: &'static str, value: &Value, reason: &str) -> ConfigError {
    let secret = setting_for(key).is_some_and(|setting| setting.secret);
    ConfigError::Invalid {
        key,
        origin: value.source.clone(),
        value: if secret { super::settings::MASK.to_string() } else { value.text.clone() },
        reason: reason.to_string(),
    }
}

fn parse_number<T: FromStr + PartialOrd + std::fmt::Display>(text: &str, min: T, max: T) -> Result<T, String> {
    let number: T = text.parse().map_err(|_| format!("expected a whole number from {min} to {max}"))?;
    if number < min || number > max {
        return Err(format!("must be from {min} to {max}"));
    }
    Ok(number)
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    parse_number(text, 1u64, 86_400).map(Duration::from_secs)
}

fn parse_absolute_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path.is_absolute() { Ok(path) } else { Err("must be an absolute path".to_string()) }
}

fn validate_prefix(text: &str) -> Result<String, String> {
    ArchiveLayout::under(text).map_err(|_| "expected a relative path like namespace/name, without '..'".to_string())?;
    Ok(text.trim_matches('/').to_string())
}

fn validate_storage_class(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        Ok(text.to_string())
    } else {
        Err("expected an S3 storage class such as STANDARD, STANDARD_IA or INTELLIGENT_TIERING".to_string())
    }
}
