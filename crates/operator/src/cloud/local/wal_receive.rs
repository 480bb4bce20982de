//! WAL streaming on local hosts: what `pgec2-wal-receive.service` is on an EC2 host. A host whose
//! HostSpec streams WAL ([`HostSpec::streams_wal`]) gets `pgec2-agent wal-receive` as a process
//! of its OS user, with the spec's one command line ([`HostSpec::wal_receive_argv`]), once its
//! PostgreSQL is up and out of recovery; it is started again when it dies or its command line
//! changes, and stopped (its slot dropped) when streaming is turned off, the host terminated
//! or local mode stops the host's PostgreSQL.
//!
//! ```text
//! <host>/wal-receive.json       the running receiver: pid, start time, command line
//! <host>/wal-receive.log        its stdout and stderr
//! <host>/wal-receive.lock       held while a supervisor looks at the host
//! <host>/agent/wal-receive/     its spool (HostSpec::wal_receive_spool)
//! ```
//!
//! The [`Supervisor`] looks at every running host every [`CHECK_INTERVAL`] while the local
//! cloud lives; the receivers outlive an operator restart (they run in their own process
//! group, as PostgreSQL does) and the next supervisor adopts them through their record.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgec2_core::host_spec::{HostSpec, WAL_RECEIVE_SLOT};
use serde::{Deserialize, Serialize};

use super::files::{OsUser, io_error, write_atomic};
use super::record::{self, RecordState};
use super::{LocalError, process};

/// How often the supervisor looks at the hosts.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long a receiver has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dropping the slot may take.
const DROP_SLOT_TIMEOUT: Duration = Duration::from_secs(30);
const RECORD: &str = "wal-receive.json";
const LOG: &str = "wal-receive.log";
const LOCK: &str = "wal-receive.lock";

/// What is kept about a started receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceiverRecord {
    pid: i32,
    /// `/proc/<pid>/stat` start time.
    process_start: Option<u64>,
    argv: Vec<String>,
}

impl ReceiverRecord {
    fn is_alive(&self) -> bool {
        self.pid > 0 && process::is_alive(self.pid, self.process_start)
    }
}

/// Keeps the receivers of the local hosts running as their specs ask.
#[derive(Clone, Debug)]
pub struct Supervisor {
    pub hosts_root: PathBuf,
    pub user: OsUser,
    /// `<root>/<major>/bin` holds PostgreSQL's programs.
    pub postgres_root: PathBuf,
    /// Environment of the receivers beyond the spec's (AWS credentials, S3 endpoint).
    pub environment: Vec<(String, String)>,
}

impl Supervisor {
    /// Looks at the hosts every [`CHECK_INTERVAL`], forever.
    pub async fn run(self) {
        loop {
            self.check_all().await;
            tokio::time::sleep(CHECK_INTERVAL).await;
        }
    }

    /// One look at every running host; a host's failure is logged and retried next time.
    pub async fn check_all(&self) {
        let hosts = match record::scan(&self.hosts_root) {
            Ok(hosts) => hosts,
            Err(error) => {
                tracing::warn!(%error, "wal-receive supervisor: cannot list the local hosts");
                return;
            }
        };
        for (dir, host) in hosts.into_iter().filter(|(_, host)| host.state == RecordState::Running) {
            if let Err(error) = self.converge(&dir).await {
                tracing::warn!(host = %format!("{}/{}", host.namespace, host.name), %error, "wal-receive supervisor");
            }
        }
    }

    /// Starts, restarts or stops the receiver of the host at `host_dir` as its spec asks.
    async fn converge(&self, host_dir: &Path) -> Result<(), LocalError> {
        let Some(spec) = read_spec(host_dir)? else { return Ok(()) };
        let Some(_lock) = lock(host_dir)? else { return Ok(()) };
        let current = load(host_dir)?;
        if !spec.streams_wal() {
            if current.is_some() {
                stop(host_dir)?;
                self.drop_slot(&spec).await?;
                remove(host_dir)?;
                tracing::info!(host = spec.host, "stopped wal-receive and dropped its slot: streaming is off");
            }
            return Ok(());
        }
        let argv = spec.wal_receive_argv();
        match current {
            Some(record) if record.is_alive() && record.argv == argv => return Ok(()),
            Some(record) if record.is_alive() => {
                tracing::info!(host = spec.host, "restarting wal-receive: its command line changed");
                stop(host_dir)?;
            }
            _ => {}
        }
        if !postgres_ready(&spec.data_directory) {
            return Ok(());
        }
        self.start(host_dir, &spec, argv)
    }

    /// Starts the receiver in its own process group, as the OS user, logging to its log file.
    fn start(&self, host_dir: &Path, spec: &HostSpec, argv: Vec<String>) -> Result<(), LocalError> {
        let spool = spec.wal_receive_spool();
        std::fs::create_dir_all(&spool).map_err(io_error(format!("create {}", spool.display())))?;
        self.user.give(&spool)?;
        let log_path = host_dir.join(LOG);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("open {}", log_path.display())))?;
        let log_copy = log.try_clone().map_err(io_error(format!("open {}", log_path.display())))?;
        let (program, arguments) = argv.split_first().ok_or_else(|| LocalError::Setup("empty command".into()))?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(arguments)
            .current_dir(&spool)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &spool)
            .env("LANG", "C.UTF-8")
            .envs(self.environment.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .envs(spec.wal_receive_environment())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_copy)
            .process_group(0);
        if self.user.is_other() {
            command.uid(self.user.uid.as_raw()).gid(self.user.gid.as_raw());
        }
        let mut child = command.spawn().map_err(io_error(format!("start wal-receive for {}", spec.host)))?;
        let pid = child.id().and_then(|pid| i32::try_from(pid).ok()).unwrap_or_default();
        // Reap it when it exits while this process lives (it is a zombie until then).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        save(host_dir, &ReceiverRecord { pid, process_start: process::start_time(pid), argv })?;
        tracing::info!(host = spec.host, pid, log = %log_path.display(), "started wal-receive");
        Ok(())
    }

    /// Drops the receiver's slot so that it holds no WAL (none is fine).
    async fn drop_slot(&self, spec: &HostSpec) -> Result<(), LocalError> {
        let psql = self.postgres_root.join(spec.postgres_version.to_string()).join("bin/psql");
        let sql = format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{WAL_RECEIVE_SLOT}'"
        );
        let mut command = tokio::process::Command::new(&psql);
        command
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", &sql])
            .envs(spec.wal_receive_environment())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if self.user.is_other() {
            command.uid(self.user.uid.as_raw()).gid(self.user.gid.as_raw());
        }
        let what = format!("drop the replication slot {WAL_RECEIVE_SLOT} of {}", spec.host);
        let output = tokio::time::timeout(DROP_SLOT_TIMEOUT, command.output())
            .await
            .map_err(|_| {
                LocalError::Setup(format!("failed to {what}: no answer within {}s", DROP_SLOT_TIMEOUT.as_secs()))
            })?
            .map_err(io_error(format!("run {} to {what}", psql.display())))?;
        if output.status.success() {
            return Ok(());
        }
        Err(LocalError::Setup(format!(
            "failed to {what}: {}; it is tried again while streaming stays off",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Stops the host's receiver when one runs (SIGTERM, SIGKILL after [`STOP_TIMEOUT`]); answers
/// whether one was running. Its record stays, so a supervisor that finds streaming turned off
/// still drops the slot.
pub fn stop(host_dir: &Path) -> Result<bool, LocalError> {
    let Some(record) = load(host_dir)?.filter(ReceiverRecord::is_alive) else { return Ok(false) };
    let pid = Pid::from_raw(record.pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while record.is_alive() {
        if Instant::now() > deadline {
            let _ = kill(pid, Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// The pid of the host's running receiver, when one runs.
pub fn running(host_dir: &Path) -> Result<Option<i32>, LocalError> {
    Ok(load(host_dir)?.filter(ReceiverRecord::is_alive).map(|record| record.pid))
}

/// True when the server of `data_directory` runs and accepts connections as a primary: its
/// `postmaster.pid` names a live process and says `ready` (a server in recovery says `starting`
/// or `standby`).
fn postgres_ready(data_directory: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data_directory.join("postmaster.pid")) else { return false };
    let lines: Vec<&str> = text.lines().collect();
    let Some(pid) = lines.first().and_then(|line| line.trim().parse::<i32>().ok()) else { return false };
    process::is_alive(pid, None) && lines.get(7).is_some_and(|status| status.trim() == "ready")
}

/// The HostSpec the bootstrap wrote on the host; `None` before the first setup.
fn read_spec(host_dir: &Path) -> Result<Option<HostSpec>, LocalError> {
    let path = host_dir.join("agent").join(pgec2_core::bootstrap::SPEC_FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| LocalError::Corrupt { path, source }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LocalError::Io { what: format!("read {}", path.display()), source }),
    }
}

/// The host's supervisor lock, or `None` when another supervisor holds it.
fn lock(host_dir: &Path) -> Result<Option<Flock<File>>, LocalError> {
    let path = host_dir.join(LOCK);
    let file = File::create(&path).map_err(io_error(format!("create {}", path.display())))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(LocalError::Setup(format!("failed to lock {}: {errno}", path.display()))),
    }
}

fn load(host_dir: &Path) -> Result<Option<ReceiverRecord>, LocalError> {
    let path = host_dir.join(RECORD);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| LocalError::Corrupt { path, source }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LocalError::Io { what: format!("read {}", path.display()), source }),
    }
}

fn save(host_dir: &Path, record: &ReceiverRecord) -> Result<(), LocalError> {
    let path = host_dir.join(RECORD);
    let bytes =
        serde_json::to_vec_pretty(record).map_err(|source| LocalError::Corrupt { path: path.clone(), source })?;
    write_atomic(&path, &bytes)
}

fn remove(host_dir: &Path) -> Result<(), LocalError> {
    let path = host_dir.join(RECORD);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(LocalError::Io { what: format!("remove {}", path.display()), source: error })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_server_that_says_ready_counts_as_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!postgres_ready(dir.path()), "no postmaster.pid");
        let pid = std::process::id();
        let pid_file = |status: &str| format!("{pid}\n/data\n1700000000\n5432\n/run\n127.0.0.1\n  1  2\n{status}\n");
        std::fs::write(dir.path().join("postmaster.pid"), pid_file("starting")).expect("write");
        assert!(!postgres_ready(dir.path()), "still in recovery");
        std::fs::write(dir.path().join("postmaster.pid"), pid_file("ready   ")).expect("write");
        assert!(postgres_ready(dir.path()));
        std::fs::write(dir.path().join("postmaster.pid"), "999999999\n/data\n1\n5432\n/run\n*\n 1 2\nready\n")
            .expect("write");
        assert!(!postgres_ready(dir.path()), "a stale pid file");
    }

    #[test]
    fn a_dead_receiver_is_not_running_and_stopping_it_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(running(dir.path()).expect("running"), None);
        let record = ReceiverRecord { pid: 999_999_999, process_start: Some(1), argv: vec!["x".into()] };
        save(dir.path(), &record).expect("save");
        assert_eq!(running(dir.path()).expect("running"), None);
        assert!(!stop(dir.path()).expect("stop"));
    }
}
