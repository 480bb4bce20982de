//! What terminating a local host does to the machine: stop its PostgreSQL, snapshot or remove
//! its data directory. Every subprocess has a timeout.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::LocalError;
use super::files::io_error;

const STOP_TIMEOUT: Duration = Duration::from_secs(90);
const COPY_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs a prepared command with a timeout; its stderr becomes the error.
async fn run(mut command: tokio::process::Command, what: &str, timeout: Duration) -> Result<(), LocalError> {
    command.kill_on_drop(true).stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| LocalError::Setup(format!("failed to {what}: no answer within {}s", timeout.as_secs())))?
        .map_err(io_error(format!("start the command to {what}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(LocalError::Setup(format!(
        "failed to {what}: {} ({})",
        String::from_utf8_lossy(&output.stderr).trim(),
        output.status
    )))
}

/// Stops the PostgreSQL server of `data_directory` (fast shutdown) when one runs, as the
/// directory's owner, with the `pg_ctl` of the directory's major version under `postgres_root`.
pub async fn stop_postgres(data_directory: &Path, postgres_root: &Path) -> Result<(), LocalError> {
    let pid_file = data_directory.join("postmaster.pid");
    if !pid_file.exists() {
        return Ok(());
    }
    let version_file = data_directory.join("PG_VERSION");
    let version =
        std::fs::read_to_string(&version_file).map_err(io_error(format!("read {}", version_file.display())))?;
    let pg_ctl = postgres_root.join(version.trim()).join("bin/pg_ctl");
    let owner = std::fs::metadata(data_directory).map_err(io_error(format!("stat {}", data_directory.display())))?;
    let mut command = tokio::process::Command::new(&pg_ctl);
    command.arg("stop").arg("-D").arg(data_directory).args(["-m", "fast", "-w", "-t", "60"]);
    if nix::unistd::Uid::effective().is_root() && owner.uid() != 0 {
        command.uid(owner.uid()).gid(owner.gid());
    }
    let what = format!("stop PostgreSQL in {}", data_directory.display());
    let result = run(command, &what, STOP_TIMEOUT).await;
    // A stale postmaster.pid (server already gone) makes pg_ctl fail, but nothing runs.
    if result.is_err() && !pid_file.exists() {
        return Ok(());
    }
    result
}

/// Copies `source` to `target` preserving ownership and modes (`cp -a`).
pub async fn copy_tree(source: &Path, target: &Path) -> Result<(), LocalError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(format!("create {}", parent.display())))?;
    }
    let mut command = tokio::process::Command::new("cp");
    command.arg("-a").arg(source).arg(target);
    run(command, &format!("copy {} to {}", source.display(), target.display()), COPY_TIMEOUT).await
}

/// Removes a directory tree; a missing one is already removed.
pub async fn remove_tree(dir: &Path) -> Result<(), LocalError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LocalError::Io { what: format!("remove {}", dir.display()), source }),
    }
}
