//! [`HostSpec::validate`]: whether a spec can work, decided before anything is touched.

use std::path::Path;

use super::{BootstrapSpec, HostSpec, Profile, StorageSpec};
use crate::compression::Compression;
use crate::storage::url::ServerSideEncryption;

/// The parameters pgec2 sets itself (the one list, shared with the CRD's rule); a spec's
/// `parameters` may not set them. `wal_level` is allowed, as `replica` or `logical`.
pub use pgec2_contract::parameters::MANAGED_PARAMETERS;

/// The longest Unix socket path the kernel accepts (`sun_path` minus the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why a spec cannot work. The operator shows it in a condition; fixing the spec is the remedy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("postgresVersion {0} is not supported: use 13 to 17")]
    UnsupportedVersion(u32),
    #[error("{field} must be an absolute path, got {path:?}")]
    RelativePath { field: &'static str, path: String },
    #[error("dataDirectory {data:?} must be a directory inside volume.mountPath {mount:?}, not the mount itself")]
    DataOutsideVolume { data: String, mount: String },
    #[error("the ec2 profile needs volume.volumeId (an EBS volume id like vol-0123456789abcdef0), got {0:?}")]
    VolumeId(Option<String>),
    #[error("volume.filesystem {0:?} is not supported: use ext4 or xfs")]
    Filesystem(String),
    #[error("osUser {0:?} is not a valid user name")]
    OsUser(String),
    #[error("port must be between 1 and 65535")]
    Port,
    #[error("parameter {0:?} is not a valid PostgreSQL parameter name")]
    ParameterName(String),
    #[error("parameter {name:?} is managed by pgec2 and cannot be set in parameters")]
    ManagedParameter { name: String },
    #[error("parameter {name:?} has a value with a line break")]
    ParameterValue { name: String },
    #[error("wal_level must be replica or logical (archiving needs at least replica), got {0:?}")]
    WalLevel(String),
    #[error("pgHba line {index} is empty or spans several lines")]
    HbaLine { index: usize },
    #[error("the socket path {0:?} is longer than the 107 bytes Unix sockets allow: use a shorter socketDirectory")]
    SocketPathTooLong(String),
    #[error("standby needs bootstrap.recovery: a standby follows a source archive")]
    StandbyWithoutSource,
    #[error("{field} {url:?} is not a storage URL: use s3://bucket/prefix or file:///absolute/dir")]
    StorageUrl { field: &'static str, url: String },
    #[error("{field}: {reason}")]
    Storage { field: &'static str, reason: String },
    #[error("archive compression: {0}")]
    Compression(String),
    #[error("{field} {value:?} contains a line break or a NUL")]
    Text { field: &'static str, value: String },
}

impl HostSpec {
    /// Checks everything that can be checked without the host; the first problem wins.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(13..=17).contains(&self.postgres_version) {
            return Err(SpecError::UnsupportedVersion(self.postgres_version));
        }
        self.validate_paths()?;
        self.validate_volume()?;
        if !valid_user_name(&self.os_user) {
            return Err(SpecError::OsUser(self.os_user.clone()));
        }
        if self.port == 0 {
            return Err(SpecError::Port);
        }
        single_line("host", &self.host)?;
        single_line("listenAddresses", &self.listen_addresses)?;
        self.validate_parameters()?;
        for (index, line) in self.pg_hba.iter().enumerate() {
            if line.trim().is_empty() || line.contains(['\n', '\r', '\0']) {
                return Err(SpecError::HbaLine { index });
            }
        }
        if self.standby && self.recovery().is_none() {
            return Err(SpecError::StandbyWithoutSource);
        }
        if let Some(archive) = &self.archive {
            validate_storage("archive.storage", &archive.storage)?;
            Compression::new(archive.compression, archive.compression_level)
                .map_err(|error| SpecError::Compression(error.to_string()))?;
        }
        if let BootstrapSpec::Recovery(recovery) = &self.bootstrap {
            validate_storage("bootstrap.recovery.source", &recovery.source)?;
            single_line("bootstrap.recovery.backup", &recovery.backup)?;
        }
        Ok(())
    }

    fn validate_paths(&self) -> Result<(), SpecError> {
        let socket = self.socket_directory();
        let paths: [(&'static str, &Path); 6] = [
            ("volume.mountPath", &self.volume.mount_path),
            ("dataDirectory", &self.data_directory),
            ("agentConfigPath", &self.agent_config_path),
            ("agentBinary", &self.agent_binary),
            ("socketDirectory", &socket),
            ("binDirectory", self.bin_directory.as_deref().unwrap_or(Path::new("/"))),
        ];
        for (field, path) in paths {
            let text = path.to_string_lossy();
            if !path.is_absolute() {
                return Err(SpecError::RelativePath { field, path: text.into_owned() });
            }
            single_line(field, &text)?;
        }
        let inside = self.data_directory.starts_with(&self.volume.mount_path)
            && self.data_directory != self.volume.mount_path
            && !self.data_directory.components().any(|part| part == std::path::Component::ParentDir);
        if !inside {
            return Err(SpecError::DataOutsideVolume {
                data: self.data_directory.display().to_string(),
                mount: self.volume.mount_path.display().to_string(),
            });
        }
        let socket_file = socket.join(format!(".s.PGSQL.{}", self.port));
        if socket_file.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SpecError::SocketPathTooLong(socket_file.display().to_string()));
        }
        Ok(())
    }

    fn validate_volume(&self) -> Result<(), SpecError> {
        if !matches!(self.volume.filesystem.as_str(), "ext4" | "xfs") {
            return Err(SpecError::Filesystem(self.volume.filesystem.clone()));
        }
        if self.profile == Profile::Ec2 && !self.volume.volume_id.as_deref().is_some_and(valid_volume_id) {
            return Err(SpecError::VolumeId(self.volume.volume_id.clone()));
        }
        Ok(())
    }

    fn validate_parameters(&self) -> Result<(), SpecError> {
        for (name, value) in &self.parameters {
            let valid_name = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
            if !valid_name {
                return Err(SpecError::ParameterName(name.clone()));
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(SpecError::ParameterValue { name: name.clone() });
            }
            if name == "wal_level" {
                if !matches!(value.to_ascii_lowercase().as_str(), "replica" | "logical") {
                    return Err(SpecError::WalLevel(value.clone()));
                }
            } else if pgec2_contract::parameters::is_managed(name) {
                return Err(SpecError::ManagedParameter { name: name.clone() });
            }
        }
        Ok(())
    }
}

fn validate_storage(field: &'static str, storage: &StorageSpec) -> Result<(), SpecError> {
    let url = storage.url.as_str();
    let valid = match (url.strip_prefix("s3://"), url.strip_prefix("file://")) {
        (Some(rest), _) => !rest.is_empty() && !rest.starts_with('/'),
        (_, Some(rest)) => rest.starts_with('/'),
        _ => false,
    };
    if !valid || url.contains(['\n', '\r', '\0', '"', '\'']) {
        return Err(SpecError::StorageUrl { field, url: url.to_string() });
    }
    let optional = [&storage.prefix, &storage.region, &storage.endpoint, &storage.storage_class, &storage.kms_key_id];
    for value in optional.into_iter().flatten() {
        single_line(field, value)?;
    }
    if let Some(prefix) = &storage.prefix
        && (prefix.starts_with('/') || prefix.split('/').any(|segment| segment == ".."))
    {
        return Err(SpecError::Storage { field, reason: format!("prefix {prefix:?} must be relative, without '..'") });
    }
    match (storage.server_side_encryption, &storage.kms_key_id) {
        (None | Some(ServerSideEncryption::Aes256), Some(_)) => {
            Err(SpecError::Storage { field, reason: "kmsKeyId needs serverSideEncryption aws:kms".to_string() })
        }
        _ => Ok(()),
    }
}

fn single_line(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(SpecError::Text { field, value: value.to_string() });
    }
    Ok(())
}

/// `vol-` and 8 or 17 hex digits.
fn valid_volume_id(id: &str) -> bool {
    id.strip_prefix("vol-").is_some_and(|hex| matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A portable user name: letters, digits, `_`, `-`, `.`, not starting with `-`, at most 32 bytes.
fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::host_spec::tests::local_spec;
    use crate::host_spec::{RecoverySpec, TargetAction};

    #[test]
    fn the_local_cloud_spec_is_valid() {
        assert_eq!(local_spec().validate(), Ok(()));
    }

    #[test]
    fn an_ec2_spec_needs_an_ebs_volume_id() {
        let mut spec = local_spec();
        spec.profile = Profile::Ec2;
        assert_eq!(spec.validate(), Err(SpecError::VolumeId(None)));
        spec.volume.volume_id = Some("vol-12".into());
        assert!(matches!(spec.validate(), Err(SpecError::VolumeId(_))));
        spec.volume.volume_id = Some("vol-0123456789abcdef0".into());
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn the_data_directory_must_sit_inside_the_volume_below_its_root() {
        let mut spec = local_spec();
        spec.data_directory = PathBuf::from("/srv/hosts/db1");
        assert!(matches!(spec.validate(), Err(SpecError::DataOutsideVolume { .. })), "the mount root holds lost+found");
        spec.data_directory = PathBuf::from("/srv/other/data");
        assert!(matches!(spec.validate(), Err(SpecError::DataOutsideVolume { .. })));
        spec.data_directory = PathBuf::from("/srv/hosts/db1/../escape");
        assert!(matches!(spec.validate(), Err(SpecError::DataOutsideVolume { .. })));
    }

    #[test]
    fn parameters_may_not_take_over_archiving_or_connections() {
        let mut spec = local_spec();
        spec.parameters.insert("archive_command".into(), "/bin/true".into());
        assert_eq!(spec.validate(), Err(SpecError::ManagedParameter { name: "archive_command".into() }));
        spec.parameters.clear();
        spec.parameters.insert("wal_level".into(), "minimal".into());
        assert_eq!(spec.validate(), Err(SpecError::WalLevel("minimal".into())));
        spec.parameters.insert("wal_level".into(), "logical".into());
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn parameter_names_and_values_cannot_inject_configuration_lines() {
        let mut spec = local_spec();
        spec.parameters.insert("work_mem".into(), "4MB\narchive_mode = off".into());
        assert_eq!(spec.validate(), Err(SpecError::ParameterValue { name: "work_mem".into() }));
        spec.parameters.clear();
        spec.parameters.insert("work_mem = 1\nx".into(), "1".into());
        assert!(matches!(spec.validate(), Err(SpecError::ParameterName(_))));
        spec.parameters.clear();
        spec.pg_hba.push("host all all 0.0.0.0/0 trust\nlocal all all trust".into());
        assert_eq!(spec.validate(), Err(SpecError::HbaLine { index: 0 }));
    }

    #[test]
    fn a_standby_needs_a_source_archive() {
        let mut spec = local_spec();
        spec.standby = true;
        assert_eq!(spec.validate(), Err(SpecError::StandbyWithoutSource));
        spec.bootstrap = BootstrapSpec::Recovery(RecoverySpec {
            source: StorageSpec::new("s3://bucket/prod"),
            backup: "LATEST".into(),
            target: None,
            target_action: TargetAction::Promote,
            from_snapshot: false,
        });
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn storage_urls_must_be_s3_or_absolute_file_urls() {
        let mut spec = local_spec();
        for bad in ["/srv/archive", "file://relative", "s3://", "http://x/y"] {
            spec.archive.as_mut().expect("archive").storage.url = bad.into();
            assert!(matches!(spec.validate(), Err(SpecError::StorageUrl { .. })), "{bad} accepted");
        }
    }

    #[test]
    fn storage_encryption_and_prefix_follow_the_agent_rules() {
        let mut spec = local_spec();
        let storage = &mut spec.archive.as_mut().expect("archive").storage;
        storage.kms_key_id = Some("alias/pg".into());
        assert!(matches!(spec.validate(), Err(SpecError::Storage { .. })), "a KMS key without aws:kms");
        let storage = &mut spec.archive.as_mut().expect("archive").storage;
        storage.server_side_encryption = Some(ServerSideEncryption::AwsKms);
        assert_eq!(spec.validate(), Ok(()));
        let storage = &mut spec.archive.as_mut().expect("archive").storage;
        storage.prefix = Some("default/../other".into());
        assert!(matches!(spec.validate(), Err(SpecError::Storage { .. })));
    }

    #[test]
    fn a_socket_directory_too_long_for_unix_sockets_is_refused() {
        let mut spec = local_spec();
        spec.socket_directory = Some(PathBuf::from(format!("/{}", "d".repeat(100))));
        assert!(matches!(spec.validate(), Err(SpecError::SocketPathTooLong(_))));
    }

    #[test]
    fn unsupported_versions_filesystems_and_users_are_refused() {
        let mut spec = local_spec();
        spec.postgres_version = 12;
        assert_eq!(spec.validate(), Err(SpecError::UnsupportedVersion(12)));
        let mut spec = local_spec();
        spec.volume.filesystem = "btrfs".into();
        assert_eq!(spec.validate(), Err(SpecError::Filesystem("btrfs".into())));
        let mut spec = local_spec();
        spec.os_user = "-rf".into();
        assert_eq!(spec.validate(), Err(SpecError::OsUser("-rf".into())));
    }
}
