//! The local hosts' PostgreSQL servers as processes on this machine, for what a machine does
//! around the operator: start them when local mode starts again (an EC2 instance starts its
//! PostgreSQL at boot; here the "instances" boot with local mode), and stop them cleanly when
//! it stops. Reads the local cloud's layout: `<state>/hosts/<namespace>/<name>/host.json` and
//! the data directory `volume/data` (see [`crate::cloud::local`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a fast shutdown may take before PostgreSQL is told to stop immediately.
const FAST_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an immediate shutdown may take.
const IMMEDIATE_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `pg_ctl start` may wait for the server to accept connections (crash recovery).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Where Debian keeps PostgreSQL versions (`<root>/<major>/bin`), as the local cloud does.
const POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// Failures of starting or stopping a host's PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum HostProcessError {
    #[error("failed to {what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("failed to stop PostgreSQL (pid {pid}) of {host}: {source}")]
    Signal { host: String, pid: i32, source: nix::Error },
    #[error("PostgreSQL (pid {pid}) of {host} did not stop within {}s", timeout.as_secs())]
    StillRunning { host: String, pid: i32, timeout: Duration },
    #[error("failed to start PostgreSQL of {host}: {message}")]
    Start { host: String, message: String },
}

/// A host directory of the local cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalHost {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` of the PostgresHost the directory belongs to (from `host.json`).
    pub uid: Option<String>,
    pub dir: PathBuf,
}

impl LocalHost {
    /// `<namespace>/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// PGDATA.
    pub fn data_directory(&self) -> PathBuf {
        self.dir.join("volume").join("data")
    }

    /// The pid of the running postmaster, when one runs.
    pub fn postmaster(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_directory().join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse::<i32>().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "postgres" || comm.trim() == "postmaster").then_some(pid)
    }
}

/// Every host directory under `<state>/hosts`, sorted.
pub fn scan(state_dir: &Path) -> Result<Vec<LocalHost>, HostProcessError> {
    let mut hosts = Vec::new();
    for namespace in subdirectories(&state_dir.join("hosts"))? {
        for dir in subdirectories(&namespace)? {
            let record = std::fs::read(dir.join("host.json")).ok();
            let uid = record
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .and_then(|record| record.get("uid").and_then(serde_json::Value::as_str).map(str::to_owned));
            hosts.push(LocalHost { namespace: file_name(&namespace), name: file_name(&dir), uid, dir });
        }
    }
    Ok(hosts)
}

/// Stops the host's WAL receiver, then its PostgreSQL with a fast shutdown (connections closed,
/// data flushed, a shutdown checkpoint written), immediate if that does not finish in time.
/// Answers whether a server was running.
pub async fn stop(host: &LocalHost) -> Result<bool, HostProcessError> {
    if let Err(error) = crate::cloud::local::wal_receive::stop(&host.dir) {
        tracing::warn!(host = %host.key(), %error, "failed to stop wal-receive");
    }
    let Some(pid) = host.postmaster() else { return Ok(false) };
    let signal = |signal| match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(source) => Err(HostProcessError::Signal { host: host.key(), pid, source }),
    };
    signal(Signal::SIGINT)?;
    if wait_gone(host, FAST_STOP_TIMEOUT).await {
        return Ok(true);
    }
    tracing::warn!(host = %host.key(), pid, "fast shutdown did not finish; stopping immediately");
    signal(Signal::SIGQUIT)?;
    if wait_gone(host, IMMEDIATE_STOP_TIMEOUT).await {
        return Ok(true);
    }
    Err(HostProcessError::StillRunning { host: host.key(), pid, timeout: FAST_STOP_TIMEOUT + IMMEDIATE_STOP_TIMEOUT })
}

async fn wait_gone(host: &LocalHost, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while host.postmaster().is_some() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Starts the host's PostgreSQL as the data directory's owner, with the configuration the
/// agent wrote, logging where the agent's `host apply` logs; waits until it accepts connections.
pub async fn start(host: &LocalHost) -> Result<(), HostProcessError> {
    let data = host.data_directory();
    let version_file = data.join("PG_VERSION");
    let version = std::fs::read_to_string(&version_file).map_err(|source| HostProcessError::Io {
        what: "read",
        path: version_file,
        source,
    })?;
    let owner =
        std::fs::metadata(&data).map_err(|source| HostProcessError::Io { what: "stat", path: data.clone(), source })?;
    let volume = host.dir.join("volume");
    let mut command = tokio::process::Command::new(Path::new(POSTGRES_ROOT).join(version.trim()).join("bin/pg_ctl"));
    command
        .args(["start", "-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-D"])
        .arg(&data)
        .arg("-l")
        .arg(volume.join("postgresql.log"))
        .current_dir(&volume)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if nix::unistd::Uid::effective().is_root() && owner.uid() != 0 {
        command.uid(owner.uid()).gid(owner.gid());
    }
    let failed = |message: String| HostProcessError::Start { host: host.key(), message };
    let output = tokio::time::timeout(START_TIMEOUT + Duration::from_secs(30), command.output())
        .await
        .map_err(|_| failed(format!("pg_ctl start did not return within {}s", START_TIMEOUT.as_secs())))?
        .map_err(|error| failed(format!("could not run pg_ctl: {error}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(failed(format!(
        "{} {}(see {})",
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim(),
        volume.join("postgresql.log").display()
    )))
}

fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, HostProcessError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(HostProcessError::Io { what: "list", path: dir.to_path_buf(), source }),
    };
    let mut found: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).filter(|path| path.is_dir()).collect();
    found.sort();
    Ok(found)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_directories_are_found_with_their_owner_uid() {
        let state = tempfile::tempdir().expect("temporary directory");
        let db = state.path().join("hosts/default/db");
        std::fs::create_dir_all(db.join("volume/data")).expect("mkdir");
        std::fs::write(db.join("host.json"), r#"{"uid": "1234-abcd", "name": "db"}"#).expect("write");
        std::fs::create_dir_all(state.path().join("hosts/shop/orders")).expect("mkdir");
        let hosts = scan(state.path()).expect("scan");
        assert_eq!(hosts.len(), 2);
        assert_eq!((hosts[0].key(), hosts[0].uid.as_deref()), ("default/db".to_string(), Some("1234-abcd")));
        assert_eq!((hosts[1].key(), hosts[1].uid.as_deref()), ("shop/orders".to_string(), None));
        assert_eq!(hosts[0].data_directory(), db.join("volume/data"));
        assert_eq!(hosts[0].postmaster(), None, "no server runs");
    }

    #[test]
    fn a_stale_postmaster_pid_file_is_not_a_running_server() {
        let state = tempfile::tempdir().expect("temporary directory");
        let data = state.path().join("hosts/default/db/volume/data");
        std::fs::create_dir_all(&data).expect("mkdir");
        // Our own pid is alive but is not PostgreSQL.
        std::fs::write(data.join("postmaster.pid"), format!("{}\n/data\n", std::process::id())).expect("write");
        let host = scan(state.path()).expect("scan").remove(0);
        assert_eq!(host.postmaster(), None);
    }
}
