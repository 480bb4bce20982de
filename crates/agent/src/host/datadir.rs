//! The data directory: created once, by initdb or by restoring a backup, and never touched
//! again. Both build the cluster in a staging directory beside PGDATA and rename it into place
//! only when complete, so a crash or timeout midway never leaves a half-made PGDATA that a later
//! run would take for a cluster.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgec2_core::host_spec::{BootstrapSpec, HostSpec, InitdbSpec, RecoverySpec, RecoveryTarget};

use super::command::{Cmd, OsUser};
use super::{Done, StepError, files};

const INITDB_TIMEOUT: Duration = Duration::from_secs(600);
/// A restore copies the whole database: allow a day.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What the data directory holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataState {
    /// Absent or empty: it may be created.
    Empty,
    /// A cluster of this major version.
    Cluster(String),
    /// Files but no PG_VERSION: not ours to touch.
    Unknown(Vec<String>),
}

/// Looks at the data directory.
pub fn inspect(data_directory: &Path) -> Result<DataState, StepError> {
    if let Some(version) = files::read_optional(&data_directory.join("PG_VERSION"))? {
        return Ok(DataState::Cluster(String::from_utf8_lossy(&version).trim().to_string()));
    }
    let entries = match std::fs::read_dir(data_directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(DataState::Empty),
        Err(source) => {
            return Err(files::FileError { action: "list", path: data_directory.to_path_buf(), source }.into());
        }
    };
    let mut names: Vec<String> =
        entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    Ok(if names.is_empty() { DataState::Empty } else { DataState::Unknown(names) })
}

/// The staging directory beside the data directory.
pub fn staging_path(data_directory: &Path) -> PathBuf {
    let name = data_directory.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    data_directory.with_file_name(format!(".{name}.pgec2-staging"))
}

/// The initdb arguments (after the program) for `target`.
pub fn initdb_args(initdb: &InitdbSpec, user: &str, target: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-D".into(), target.into(), "-U".into(), user.into()];
    args.push(format!("--encoding={}", initdb.encoding.as_deref().unwrap_or("UTF8")).into());
    args.push(format!("--locale={}", initdb.locale.as_deref().unwrap_or("C.UTF-8")).into());
    args.extend(["--auth-local=peer".into(), "--auth-host=scram-sha-256".into()]);
    if initdb.data_checksums {
        args.push("--data-checksums".into());
    }
    args
}

/// Which agent configurations a restore uses.
#[derive(Clone, Copy, Debug)]
pub struct RestoreConfigs<'a> {
    /// The recovery source's archive (read only).
    pub source: &'a Path,
    /// The host's own archive, when it archives: the restored cluster's archive_command uses
    /// it (`--archive-config`), never the source's; without one, archiving is off.
    pub own: Option<&'a Path>,
}

/// The agent arguments for `backup-fetch` into `target`.
pub fn restore_args(
    recovery: &RecoverySpec,
    standby: bool,
    configs: RestoreConfigs<'_>,
    target: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--config".into(), configs.source.into(), "backup-fetch".into()];
    args.extend([target.as_os_str().to_os_string(), recovery.backup.clone().into()]);
    match configs.own {
        Some(own) => args.extend(["--archive-config".into(), own.into()]),
        None => args.extend(["--archive-mode".into(), "off".into()]),
    }
    match &recovery.target {
        None => {}
        Some(RecoveryTarget::Time(time)) => args.extend(["--target-time".into(), time.into()]),
        Some(RecoveryTarget::Lsn(lsn)) => args.extend(["--target-lsn".into(), lsn.into()]),
        Some(RecoveryTarget::Xid(xid)) => args.extend(["--target-xid".into(), xid.into()]),
        Some(RecoveryTarget::Name(name)) => args.extend(["--target-name".into(), name.into()]),
        Some(RecoveryTarget::Immediate) => args.push("--target-immediate".into()),
    }
    if standby {
        args.push("--standby".into());
    } else if recovery.target.is_some() {
        args.extend(["--target-action".into(), recovery.target_action.as_str().into()]);
    }
    args
}

/// Creates the cluster if the data directory is empty; leaves an existing one alone.
pub async fn converge(spec: &HostSpec, user: &OsUser) -> Result<Done, StepError> {
    let data = &spec.data_directory;
    match inspect(data)? {
        DataState::Cluster(version) if version == spec.postgres_version.to_string() => {
            if let Some(recovery) = spec.recovery().filter(|recovery| recovery.from_snapshot) {
                return prepare_snapshot(spec, recovery, user).await;
            }
            return Ok(Done::unchanged(format!("existing PostgreSQL {version} cluster left as it is")));
        }
        DataState::Cluster(version) => {
            return Err(StepError::DataDirectory {
                path: data.to_path_buf(),
                problem: format!(
                    "holds a PostgreSQL {version} cluster but the spec asks for {}",
                    spec.postgres_version
                ),
                remedy: "major upgrades are not automatic; nothing was changed".into(),
            });
        }
        DataState::Unknown(names) => {
            let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
            return Err(StepError::DataDirectory {
                path: data.to_path_buf(),
                problem: format!("is not empty ({}) and holds no cluster (no PG_VERSION)", shown.join(", ")),
                remedy: "refusing to touch it; move its contents away or choose another dataDirectory".into(),
            });
        }
        DataState::Empty => {
            if let Some(recovery) = spec.recovery().filter(|recovery| recovery.from_snapshot) {
                return Err(StepError::DataDirectory {
                    path: data.to_path_buf(),
                    problem: format!(
                        "holds no cluster, but the data volume was to be created from the snapshot of backup {}",
                        recovery.backup
                    ),
                    remedy: "was the volume made from another snapshot? nothing was changed".into(),
                });
            }
        }
    }
    let staging = staging_path(data);
    if staging.exists() {
        // Only our own interrupted attempt can be there; it is rebuilt from scratch.
        std::fs::remove_dir_all(&staging).map_err(|source| files::FileError {
            action: "remove the interrupted attempt",
            path: staging.clone(),
            source,
        })?;
    }
    files::ensure_directory(&staging, 0o700, Some(user))?;
    let detail = match &spec.bootstrap {
        BootstrapSpec::Initdb(initdb) => {
            let program = spec.bin_directory().join("initdb");
            Cmd::new(program)
                .args(initdb_args(initdb, &user.name, &staging))
                .run_as(user)
                .timeout(INITDB_TIMEOUT)
                .run()
                .await?;
            let checksums = if initdb.data_checksums { " with data checksums" } else { "" };
            format!("initdb created a PostgreSQL {} cluster{checksums}", spec.postgres_version)
        }
        BootstrapSpec::Recovery(recovery) => {
            let source = spec.source_config_path();
            let own = spec.archive.as_ref().map(|_| spec.agent_config_path.as_path());
            let args = restore_args(recovery, spec.standby, RestoreConfigs { source: &source, own }, &staging);
            Cmd::new(&spec.agent_binary).args(args).run_as(user).timeout(RESTORE_TIMEOUT).run().await?;
            let mode = if spec.standby { "as a standby" } else { "for recovery" };
            format!("restored backup {} from {} {mode}", recovery.backup, recovery.source.url)
        }
    };
    move_into_place(&staging, data)?;
    Ok(Done::changed(detail))
}

/// A data directory on a volume created from a snapshot backup's snapshot: prepared for
/// recovery in place by `pgec2-agent snapshot-restore`, once (its marker says so afterwards).
async fn prepare_snapshot(spec: &HostSpec, recovery: &RecoverySpec, user: &OsUser) -> Result<Done, StepError> {
    let data = &spec.data_directory;
    if crate::backup::snapshot_restore::prepared_backup(data).as_deref() == Some(recovery.backup.as_str()) {
        let detail = format!("cluster restored from the snapshot of backup {} left as it is", recovery.backup);
        return Ok(Done::unchanged(detail));
    }
    let source = spec.source_config_path();
    let own = spec.archive.as_ref().map(|_| spec.agent_config_path.as_path());
    let args = snapshot_restore_args(recovery, spec.standby, RestoreConfigs { source: &source, own }, data);
    let printed = Cmd::new(&spec.agent_binary).args(args).run_as(user).timeout(RESTORE_TIMEOUT).run().await?;
    Ok(Done::changed(printed.trim().to_string()))
}

/// The agent arguments for `snapshot-restore` of `data`: those of `backup-fetch`, in place.
pub fn snapshot_restore_args(
    recovery: &RecoverySpec,
    standby: bool,
    configs: RestoreConfigs<'_>,
    data: &Path,
) -> Vec<OsString> {
    let mut args = restore_args(recovery, standby, configs, data);
    if let Some(subcommand) = args.iter_mut().find(|arg| *arg == "backup-fetch") {
        *subcommand = "snapshot-restore".into();
    }
    args
}

/// Renames the finished staging directory to the data directory (replacing an empty one).
fn move_into_place(staging: &Path, data: &Path) -> Result<(), StepError> {
    if data.exists() {
        std::fs::remove_dir(data).map_err(|source| files::FileError {
            action: "remove the empty",
            path: data.to_path_buf(),
            source,
        })?;
    }
    std::fs::rename(staging, data).map_err(|source| files::FileError {
        action: "move the new cluster to",
        path: data.to_path_buf(),
        source,
    })?;
    files::sync_directory(data.parent().unwrap_or(Path::new("/")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use pgec2_core::host_spec::{StorageSpec, TargetAction};

    use super::*;

    fn recovery(target: Option<RecoveryTarget>) -> RecoverySpec {
        RecoverySpec {
            source: StorageSpec::new("s3://bucket").with_prefix("default/prod"),
            backup: "LATEST".into(),
            target,
            target_action: TargetAction::Pause,
            from_snapshot: false,
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|arg| arg.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn initdb_gets_checksums_encoding_locale_and_no_trust() {
        let spec = InitdbSpec { data_checksums: true, encoding: None, locale: Some("en_US.UTF-8".into()) };
        let args = strings(initdb_args(&spec, "postgres", Path::new("/d")));
        assert_eq!(
            args,
            [
                "-D",
                "/d",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=en_US.UTF-8",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--data-checksums"
            ]
        );
        let without = InitdbSpec { data_checksums: false, encoding: Some("LATIN1".into()), locale: None };
        let args = strings(initdb_args(&without, "pg", Path::new("/d")));
        assert!(!args.contains(&"--data-checksums".to_string()) && args.contains(&"--encoding=LATIN1".to_string()));
    }

    #[test]
    fn a_point_in_time_restore_passes_its_target_and_action() {
        let configs = RestoreConfigs {
            source: Path::new("/etc/pgec2/agent-source.toml"),
            own: Some(Path::new("/etc/pgec2/agent.toml")),
        };
        let args = strings(restore_args(
            &recovery(Some(RecoveryTarget::Time("2026-01-31T12:00:00Z".into()))),
            false,
            configs,
            Path::new("/d"),
        ));
        assert_eq!(
            args,
            [
                "--config",
                "/etc/pgec2/agent-source.toml",
                "backup-fetch",
                "/d",
                "LATEST",
                "--archive-config",
                "/etc/pgec2/agent.toml",
                "--target-time",
                "2026-01-31T12:00:00Z",
                "--target-action",
                "pause"
            ]
        );
    }

    #[test]
    fn a_standby_restore_follows_the_archive_without_a_target_action() {
        let configs = RestoreConfigs { source: Path::new("/c"), own: None };
        let args = strings(restore_args(&recovery(None), true, configs, Path::new("/d")));
        assert_eq!(args, ["--config", "/c", "backup-fetch", "/d", "LATEST", "--archive-mode", "off", "--standby"]);
        let args = strings(restore_args(&recovery(Some(RecoveryTarget::Immediate)), false, configs, Path::new("/d")));
        assert!(args.ends_with(&[
            "--target-immediate".to_string(),
            "--target-action".to_string(),
            "pause".to_string()
        ]));
    }

    #[test]
    fn a_snapshot_restore_takes_the_same_arguments_in_place() {
        let configs = RestoreConfigs { source: Path::new("/c"), own: Some(Path::new("/o")) };
        let args = strings(snapshot_restore_args(&recovery(None), false, configs, Path::new("/data")));
        assert_eq!(args, ["--config", "/c", "snapshot-restore", "/data", "LATEST", "--archive-config", "/o"]);
    }

    #[test]
    fn a_directory_with_files_but_no_cluster_is_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        assert_eq!(inspect(&data).expect("inspect"), DataState::Empty);
        std::fs::create_dir(&data).expect("mkdir");
        assert_eq!(inspect(&data).expect("inspect"), DataState::Empty);
        std::fs::write(data.join("important.csv"), b"1,2,3").expect("write");
        assert_eq!(inspect(&data).expect("inspect"), DataState::Unknown(vec!["important.csv".into()]));
        std::fs::write(data.join("PG_VERSION"), b"15\n").expect("write");
        assert_eq!(inspect(&data).expect("inspect"), DataState::Cluster("15".into()));
    }

    #[test]
    fn the_staging_directory_sits_beside_the_data_directory() {
        assert_eq!(
            staging_path(Path::new("/var/lib/postgresql/15/main")),
            PathBuf::from("/var/lib/postgresql/15/.main.pgec2-staging")
        );
    }
}
