//! The agent's configuration: a TOML file plus environment overrides.
//!
//! The file is `--config FILE`, else `$PGEC2_CONFIG`, else `/etc/pgec2/agent.toml` (a missing
//! default file is fine when the environment gives everything). Every key can be overridden by
//! an environment variable; the list is [`settings::SETTINGS`]. Precedence: environment, then
//! file, then default.
//!
//! ```toml
//! [storage]
//! url = "s3://backups-bucket/pgec2"
//! prefix = "default/orders-db"
//! region = "eu-west-1"
//! sse = "aws:kms"
//!
//! [compression]
//! algorithm = "zstd"
//! level = 3
//!
//! [postgres]
//! pgdata = "/var/lib/postgresql/15/main"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgec2_core::compression::Compression;
use pgec2_core::layout::{Archive, ArchiveLayout};
use pgec2_core::storage::StorageError;
use pgec2_core::storage::url::StorageUrl;

use crate::backup::upload::{PART_SIZE, S3_PART_SIZE};

mod check;
pub mod encryption;
mod parse;
pub mod settings;
mod storage;
#[cfg(test)]
mod tests;
pub mod walg;

pub use check::check_command;
pub use encryption::{EncryptionMode, EncryptionSettings, KeySource};
pub use settings::Source;
pub use storage::{ServerSideEncryption, StorageSettings};
pub use walg::WalgSettings;

/// Where the configuration file is looked for when neither `--config` nor `$PGEC2_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pgec2/agent.toml";

/// The agent's effective configuration, shared by every command.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The file the configuration was read from, if any.
    pub file: Option<PathBuf>,
    pub storage: StorageSettings,
    pub compression: Compression,
    pub encryption: EncryptionSettings,
    pub transfer: TransferSettings,
    pub postgres: PostgresSettings,
    /// Reading an encrypted wal-g archive.
    pub walg: WalgSettings,
}

/// Parallelism and deadlines of transfers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferSettings {
    pub upload_concurrency: usize,
    pub download_concurrency: usize,
    /// How many segments after the one asked for wal-fetch downloads in the background.
    pub prefetch: usize,
    /// Deadline of one `wal-push` or `wal-fetch`, retries included.
    pub command_timeout: Duration,
    /// `wal-push` also pushes the next ready WAL files and answers later calls from its spool.
    pub archive_async: bool,
    /// Above this many MiB of WAL waiting to be archived, `wal-push` drops segments (reports
    /// them archived without storing them) and records the hole; `None`: never (the default).
    pub archive_queue_max_mb: Option<u64>,
    /// Incremental backups a chain may hold on its full backup (`backup.max_incremental_chain`);
    /// `backup-push --incremental` takes a full backup past it.
    pub max_incremental_chain: usize,
    /// MiB of file content per stored backup part (`backup.part_size_mib`); `None`: chosen by
    /// the storage (see [`AgentConfig::backup_part_size`]).
    pub part_size_mib: Option<usize>,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            upload_concurrency: 4,
            download_concurrency: 4,
            prefetch: 8,
            command_timeout: Duration::from_secs(300),
            archive_async: false,
            archive_queue_max_mb: None,
            max_incremental_chain: crate::backup::increment::DEFAULT_MAX_CHAIN,
            part_size_mib: None,
        }
    }
}

/// Where the cluster is and how to connect to it (libpq's variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The data directory, when known (`PGDATA`).
    pub pgdata: Option<PathBuf>,
    /// Host name, or a directory holding the Unix socket.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// The spool of the `wal-receive` streaming from this server, when one does (its
    /// `status.json` is what `archive-status` reports); `None`: the ec2 service's spool.
    pub wal_receive_spool: Option<PathBuf>,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            pgdata: None,
            host: "/var/run/postgresql".to_string(),
            port: 5432,
            user: "postgres".to_string(),
            database: "postgres".to_string(),
            password: None,
            connect_timeout: Duration::from_secs(10),
            wal_receive_spool: None,
        }
    }
}

impl PostgresSettings {
    /// A tokio-postgres connection configuration for these settings.
    pub fn connection_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name("pgec2-agent")
            .connect_timeout(self.connect_timeout);
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }
}

/// A configuration that cannot be used; each message is one line naming the key and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read configuration file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("configuration file {}{} is not valid TOML: {message}", path.display(), line.map(|line| format!(" line {line}")).unwrap_or_default())]
    Syntax { path: PathBuf, line: Option<usize>, message: String },
    #[error("unknown key {key} in configuration file {}: known keys are {known}", path.display())]
    UnknownKey { path: PathBuf, key: String, known: String },
    #[error("invalid {key} = {value:?} (from {origin}): {reason}")]
    Invalid { key: &'static str, origin: Source, value: String, reason: String },
    #[error("{key} is not set: set it in the configuration file or with {env}")]
    Missing { key: &'static str, env: &'static str },
    #[error("failed to load the encryption key {key}: {reason}")]
    Key { key: String, reason: String },
    #[error("failed to open storage {url}: {error}")]
    OpenStorage { url: String, error: StorageError },
}

impl AgentConfig {
    /// Loads the configuration from `path` (or `$PGEC2_CONFIG`, or the default file) and the
    /// process environment, and validates it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, Path::new(DEFAULT_CONFIG_PATH), &|name| std::env::var(name).ok())
    }

    /// [`AgentConfig::load`] with an explicit default file and environment (for tests and embedding).
    pub fn load_with(
        path: Option<&Path>,
        default_path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (file, layers) = resolve(path, default_path, env)?;
        let mut config = parse::from_layers(&layers)?;
        config.file = file;
        Ok(config)
    }

    /// The archive this configuration points at: the opened store, this cluster's key layout
    /// and the encryption keys (key files and variables read now; KMS called when first needed).
    pub async fn storage(&self) -> Result<Archive, ConfigError> {
        let layout = ArchiveLayout::under(&self.storage.prefix)
            .map_err(|error| ConfigError::OpenStorage { url: self.storage.url.clone(), error })?;
        let storage = self.storage.open().await?;
        let keyring = self.encryption.keyring(self.storage.region.as_deref()).await?;
        Ok(Archive::new(storage, layout).with_keyring(keyring))
    }

    /// Content bytes per stored backup part: `backup.part_size_mib` when set, else
    /// [`S3_PART_SIZE`] on S3, where every part is a request and requests cost round trips, and
    /// [`PART_SIZE`] on a local directory, where smaller parts keep the memory lower.
    pub fn backup_part_size(&self) -> usize {
        match self.transfer.part_size_mib {
            Some(mib) => mib << 20,
            None if matches!(StorageUrl::parse(&self.storage.url), Ok(StorageUrl::S3 { .. })) => S3_PART_SIZE,
            None => PART_SIZE,
        }
    }

    /// The data directory: the configured one, else none.
    pub fn pgdata(&self) -> Option<&Path> {
        self.postgres.pgdata.as_deref()
    }

    /// Every setting's effective value as text (secrets in clear), in [`settings::SETTINGS`] order;
    /// `None` for unset optional settings.
    pub fn values(&self) -> Vec<(&'static str, Option<String>)> {
        parse::to_values(self)
    }

    /// Parses `text` as the configuration file `path` (named in messages), without the
    /// environment.
    pub fn from_file_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let layers = settings::Layers::collect(Some((path, text)), &|_| None)?;
        let mut config = parse::from_layers(&layers)?;
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// The configuration as a TOML file (secrets in clear): what `host apply` writes.
    pub fn to_toml(&self) -> String {
        self.toml_of(|_| true)
    }

    /// The storage, compression and transfer settings as a TOML file: no secrets and nothing
    /// about the connection to PostgreSQL. What `backup-fetch` writes for a restored cluster's
    /// `restore_command` and `archive_command`.
    pub fn to_archive_toml(&self) -> String {
        self.toml_of(|key| {
            !key.starts_with("postgres.") && settings::setting_for(key).is_some_and(|setting| !setting.secret)
        })
    }

    fn toml_of(&self, keep: impl Fn(&str) -> bool) -> String {
        let mut out = String::new();
        let mut section = "";
        for (key, value) in self.values() {
            let Some(value) = value.filter(|_| keep(key)) else { continue };
            let (this_section, name) = key.split_once('.').unwrap_or(("", key));
            if this_section != section {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("[{this_section}]\n"));
                section = this_section;
            }
            out.push_str(&format!("{name} = {}\n", toml::Value::String(value)));
        }
        out
    }
}

impl Default for AgentConfig {
    /// Defaults only; no storage url (so not valid until one is set).
    fn default() -> Self {
        Self {
            file: None,
            storage: StorageSettings::default(),
            compression: Compression::default(),
            encryption: EncryptionSettings::default(),
            transfer: TransferSettings::default(),
            postgres: PostgresSettings::default(),
            walg: WalgSettings::default(),
        }
    }
}

/// Finds the configuration file and layers its values under the environment's.
fn resolve(
    path: Option<&Path>,
    default_path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<PathBuf>, settings::Layers), ConfigError> {
    let explicit =
        path.map(Path::to_path_buf).or_else(|| env("PGEC2_CONFIG").filter(|p| !p.is_empty()).map(PathBuf::from));
    let (file, text) = match explicit {
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|error| ConfigError::Read { path: path.clone(), error })?;
            (Some(path), Some(text))
        }
        None => match std::fs::read_to_string(default_path) {
            Ok(text) => (Some(default_path.to_path_buf()), Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(error) => return Err(ConfigError::Read { path: default_path.to_path_buf(), error }),
        },
    };
    let layers = settings::Layers::collect(file.as_deref().zip(text.as_deref()), env)?;
    Ok((file, layers))
}
