//! Which agent configuration a restored cluster's `restore_command` and `archive_command` use,
//! and where the restored cluster archives (`backup-fetch --archive-mode`).
//!
//! Both commands name only the agent binary and a configuration file, never credentials: the
//! agent reads those at run time from the AWS default chain (environment of the server, the
//! PostgreSQL user's `~/.aws`, the instance profile). The configuration files backup-fetch
//! writes hold storage, compression and transfer settings only ([`AgentConfig::to_archive_toml`]).
//!
//! - `restore_command` reads the archive the backup came from: the `--config` file when it alone
//!   gives the settings backup-fetch used, else `pgec2-agent-source.toml` written into the data
//!   directory (settings given in the environment; excluded from backups: a restore of a backup
//!   of this copy writes its own).
//! - `archive_command`, by `--archive-mode`:
//!   - `off` (default): `archive_mode = off`. A copy restored by hand never writes into its
//!     source's archive; it has the source's system identifier, so nothing else would stop it.
//!   - `preserve`: the archive settings restored with the backup are kept. Only for the
//!     original cluster recovering after a disaster: it continues its own archive.
//!   - a storage URL (`s3://bucket/prefix`, `file:///dir`) or a prefix inside the source's
//!     storage URL: a new, empty archive, written as `pgec2-agent-archive.toml` in the data
//!     directory (kept in backups of the copy: it is where the copy archives).
//!   - `--archive-config FILE`: an existing agent configuration (how `host apply` points a
//!     restored host at its own prefix).
//!
//! Files written into the data directory are named relative to it in the commands: PostgreSQL
//! runs both commands in the data directory, so the paths stay right when the directory moves.

use std::path::{Path, PathBuf};

use pgec2_core::layout::Archive;

use super::{BackupError, Refusal};
use crate::config::AgentConfig;

/// The source archive's configuration, when backup-fetch writes one.
pub const SOURCE_CONFIG_FILE: &str = "pgec2-agent-source.toml";
/// The new archive's configuration (`--archive-mode URL|PREFIX`).
pub const ARCHIVE_CONFIG_FILE: &str = "pgec2-agent-archive.toml";

/// Where the restored cluster archives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveMode {
    Off,
    Preserve,
    /// A new archive: a storage URL, or a prefix inside the source's storage URL.
    New(String),
    /// An existing agent configuration file for the cluster's own archive.
    Config(PathBuf),
}

impl ArchiveMode {
    /// From `--archive-mode` and `--archive-config` (clap lets at most one through).
    pub fn from_args(mode: Option<&str>, config: Option<&Path>) -> Self {
        match (mode, config) {
            (_, Some(config)) => ArchiveMode::Config(config.to_path_buf()),
            (None | Some("off"), None) => ArchiveMode::Off,
            (Some("preserve"), None) => ArchiveMode::Preserve,
            (Some(location), None) => ArchiveMode::New(location.to_string()),
        }
    }
}

/// A configuration file one of the restored cluster's commands reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    /// An existing file, by absolute path.
    Existing(PathBuf),
    /// A file backup-fetch writes into the data directory.
    Written { name: &'static str, text: String },
}

impl ConfigFile {
    /// The path as the command names it (relative to the data directory when written there).
    pub fn command_path(&self) -> String {
        match self {
            ConfigFile::Existing(path) => path.display().to_string(),
            ConfigFile::Written { name, .. } => (*name).to_string(),
        }
    }
}

/// What archive_command becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveSetting {
    Off,
    Preserve,
    Archive(ConfigFile),
}

/// The restored cluster's agent configuration, decided before anything is restored.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub restore: ConfigFile,
    pub archive: ArchiveSetting,
    /// The new archive (`--archive-mode URL|PREFIX`), checked to be unclaimed.
    new_archive: Option<AgentConfig>,
}

impl ClusterConfig {
    /// Decides the files from the effective configuration and `--archive-mode`.
    pub fn plan(config: &AgentConfig, mode: &ArchiveMode) -> Result<Self, BackupError> {
        let restore = restore_config(config)?;
        let (archive, new_archive) = match mode {
            ArchiveMode::Off => (ArchiveSetting::Off, None),
            ArchiveMode::Preserve => (ArchiveSetting::Preserve, None),
            ArchiveMode::Config(path) => {
                let path = std::fs::canonicalize(path).map_err(BackupError::io("resolve --archive-config", path))?;
                read_config(&path)?;
                (ArchiveSetting::Archive(ConfigFile::Existing(path)), None)
            }
            ArchiveMode::New(location) => {
                let new = new_archive_config(config, location)?;
                let text = with_header("the restored cluster's own archive: archive_command uses it", &new);
                (ArchiveSetting::Archive(ConfigFile::Written { name: ARCHIVE_CONFIG_FILE, text }), Some(new))
            }
        };
        Ok(Self { restore, archive, new_archive })
    }

    /// Refuses a new archive that a cluster already archives into (its `cluster.json` exists):
    /// a restored copy needs an archive of its own.
    pub async fn check_new_archive(&self) -> Result<(), BackupError> {
        let Some(new) = &self.new_archive else { return Ok(()) };
        let archive: Archive = new.storage().await?;
        let key = archive.layout.cluster_identity().map_err(BackupError::storage("name", "cluster.json"))?;
        let head = archive.storage.head(&key).await.map_err(BackupError::storage("read", key.as_str()))?;
        if head.is_some() {
            return Err(Refusal::ArchiveInUse { archive: archive.describe(), key: key.to_string() }.into());
        }
        Ok(())
    }

    /// Where the restored cluster archives, for the summary line.
    pub fn describe_archiving(&self) -> String {
        match (&self.archive, &self.new_archive) {
            (ArchiveSetting::Off, _) => "off (archive_mode = off)".to_string(),
            (ArchiveSetting::Preserve, _) => "as restored (--archive-mode preserve)".to_string(),
            (ArchiveSetting::Archive(_), Some(new)) => format!("into the new archive {}", archive_location(new)),
            (ArchiveSetting::Archive(file), None) => format!("with {}", file.command_path()),
        }
    }

    /// The files to write into the data directory: (name, content).
    pub fn files_to_write(&self) -> Vec<(&'static str, &str)> {
        let archive = match &self.archive {
            ArchiveSetting::Archive(file) => Some(file),
            _ => None,
        };
        std::iter::once(&self.restore)
            .chain(archive)
            .filter_map(|file| match file {
                ConfigFile::Written { name, text } => Some((*name, text.as_str())),
                ConfigFile::Existing(_) => None,
            })
            .collect()
    }
}

/// The `--config` file when it alone gives the settings in effect; else a file to write.
fn restore_config(config: &AgentConfig) -> Result<ConfigFile, BackupError> {
    if let Some(file) = &config.file {
        let alone = read_config(file)?;
        if alone.to_archive_toml() == config.to_archive_toml() {
            let path = std::fs::canonicalize(file).map_err(BackupError::io("resolve", file))?;
            return Ok(ConfigFile::Existing(path));
        }
    }
    let purpose = "the archive this cluster was restored from: restore_command uses it";
    Ok(ConfigFile::Written { name: SOURCE_CONFIG_FILE, text: with_header(purpose, config) })
}

/// Reads a configuration file without the environment.
fn read_config(path: &Path) -> Result<AgentConfig, BackupError> {
    let text = std::fs::read_to_string(path).map_err(BackupError::io("read", path))?;
    Ok(AgentConfig::from_file_text(path, &text)?)
}

/// The source's settings with the storage location replaced by `location` (a URL, or a prefix
/// inside the source's URL). Refuses the source's own archive.
fn new_archive_config(config: &AgentConfig, location: &str) -> Result<AgentConfig, BackupError> {
    let mut new = config.clone();
    if location.contains("://") {
        new.storage.url = location.to_string();
        new.storage.prefix = String::new();
    } else {
        new.storage.prefix = location.trim_matches('/').to_string();
    }
    let new = AgentConfig::from_file_text(Path::new(ARCHIVE_CONFIG_FILE), &new.to_archive_toml()).map_err(|error| {
        BackupError::from(Refusal::InvalidOption {
            option: "--archive-mode",
            value: location.to_string(),
            expected: format!("off, preserve, a storage URL or a prefix ({error})"),
        })
    })?;
    if archive_location(&new) == archive_location(config) {
        return Err(Refusal::ArchiveIsSource { location: location.to_string() }.into());
    }
    Ok(new)
}

/// `url/prefix`, normalized.
fn archive_location(config: &AgentConfig) -> String {
    let url = config.storage.url.trim_end_matches('/');
    let prefix = config.storage.prefix.trim_matches('/');
    if prefix.is_empty() { url.to_string() } else { format!("{url}/{prefix}") }
}

fn with_header(purpose: &str, config: &AgentConfig) -> String {
    format!(
        "# Written by pgec2-agent backup-fetch: {purpose}.\n# No credentials: the agent reads them at run time \
         (AWS default chain).\n\n{}",
        config.to_archive_toml()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(file: Option<&Path>) -> AgentConfig {
        let mut config = AgentConfig::from_file_text(
            Path::new("agent.toml"),
            "[storage]\nurl = \"s3://bucket/base\"\nprefix = \"default/prod\"\nendpoint = \"http://127.0.0.1:5000\"\n",
        )
        .expect("config");
        config.file = file.map(Path::to_path_buf);
        config
    }

    #[test]
    fn settings_from_the_environment_are_written_without_the_connection_or_secrets() {
        let mut config = config(None);
        config.postgres.password = Some("hunter2".into());
        let plan = ClusterConfig::plan(&config, &ArchiveMode::Off).expect("plan");
        let ConfigFile::Written { name, text } = &plan.restore else { panic!("expected a written file") };
        assert_eq!(*name, SOURCE_CONFIG_FILE);
        assert!(text.contains("url = \"s3://bucket/base\"") && text.contains("prefix = \"default/prod\""), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("[postgres]"), "{text}");
        assert_eq!(plan.archive, ArchiveSetting::Off);
        assert_eq!(plan.files_to_write().len(), 1);
    }

    #[test]
    fn a_config_file_that_gives_every_setting_is_named_as_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "[storage]\nurl = \"s3://bucket/base\"\nprefix = \"default/prod\"\nendpoint = \"http://127.0.0.1:5000\"\n",
        )
        .expect("write");
        let plan = ClusterConfig::plan(&config(Some(&path)), &ArchiveMode::Preserve).expect("plan");
        assert_eq!(plan.restore, ConfigFile::Existing(std::fs::canonicalize(&path).expect("canonical")));
        assert!(plan.files_to_write().is_empty());
        // The environment overrode the prefix: the file alone would read another archive.
        let mut overridden = config(Some(&path));
        overridden.storage.prefix = "default/other".into();
        let plan = ClusterConfig::plan(&overridden, &ArchiveMode::Preserve).expect("plan");
        assert!(matches!(plan.restore, ConfigFile::Written { .. }));
    }

    #[test]
    fn a_new_archive_is_a_prefix_or_a_url_and_never_the_source() {
        let config = config(None);
        let plan = ClusterConfig::plan(&config, &ArchiveMode::New("default/copy".into())).expect("prefix");
        let ArchiveSetting::Archive(ConfigFile::Written { text, .. }) = &plan.archive else { panic!("archive") };
        assert!(text.contains("prefix = \"default/copy\"") && text.contains("url = \"s3://bucket/base\""), "{text}");
        assert_eq!(plan.describe_archiving(), "into the new archive s3://bucket/base/default/copy");
        let plan = ClusterConfig::plan(&config, &ArchiveMode::New("file:///srv/copy".into())).expect("url");
        let ArchiveSetting::Archive(ConfigFile::Written { text, .. }) = &plan.archive else { panic!("archive") };
        assert!(text.contains("url = \"file:///srv/copy\"") && !text.contains("prefix"), "{text}");
        for same in ["default/prod", "/default/prod/", "s3://bucket/base/default/prod"] {
            let refused = ClusterConfig::plan(&config, &ArchiveMode::New(same.into()));
            assert!(
                matches!(&refused, Err(BackupError::Refused(Refusal::ArchiveIsSource { location })) if location == same),
                "{same}: {refused:?}"
            );
            let message = refused.expect_err("refused").to_string();
            assert!(message.contains("must not archive into its source"), "{message}");
        }
        let invalid = ClusterConfig::plan(&config, &ArchiveMode::New("ftp://x".into()));
        assert!(
            matches!(&invalid, Err(BackupError::Refused(Refusal::InvalidOption { option: "--archive-mode", .. }))),
            "{invalid:?}"
        );
    }

    #[test]
    fn archive_mode_arguments_map_to_modes() {
        assert_eq!(ArchiveMode::from_args(None, None), ArchiveMode::Off);
        assert_eq!(ArchiveMode::from_args(Some("preserve"), None), ArchiveMode::Preserve);
        assert_eq!(ArchiveMode::from_args(Some("a/b"), None), ArchiveMode::New("a/b".into()));
        assert_eq!(ArchiveMode::from_args(None, Some(Path::new("/c"))), ArchiveMode::Config("/c".into()));
    }
}
