//! `host apply`: converge this machine to a [`HostSpec`] and report each step as JSON.
//!
//! The steps, in order (the local profile skips the volume, package and systemd work):
//!
//! ```text
//! spec            read and validate the spec
//! data-device     find the EBS volume by id (NVMe serial)                      ec2
//! filesystem      keep its filesystem, or format a blank volume                ec2
//! fstab           UUID=… <mount> <fs> defaults,nofail,noatime 0 2, once        ec2
//! mount           mount it when it is not                                      ec2
//! packages        PostgreSQL N from apt.postgresql.org when missing            ec2
//! os-user         the user PostgreSQL runs as
//! directories     data directory parents, socket and configuration directories
//! agent-config    agent.toml (own archive), agent-source.toml (recovery source)
//! data-directory  initdb or backup-fetch into an empty PGDATA; never touch a cluster
//! tls-certificate a self-signed certificate when ssl is on and none exists
//! postgresql-conf conf.d/01-pgec2.conf: tuning, parameters, archiving, connections
//! pg-hba          pg_hba.conf: the spec's rules, then peer for the OS user, then SCRAM
//! service         start; reload on change; restart only for pending_restart parameters
//! promote         a standby the spec no longer wants becomes a primary (pg_ctl promote)
//! facts           version, system identifier, timeline, recovery state
//! ```
//!
//! Every step compares before it writes, so a second run reports everything unchanged. The
//! first failed step ends the run; its detail names what failed and the command's stderr.
//! The pure parts (tuning, rendering, planning) live in their own modules with their tests.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::process::ExitCode;

use pgec2_core::host_spec::{HostReport, HostSpec, PostgresFacts, Profile, SpecError, StepOutcome, StepReport};

mod agent_config;
mod command;
mod configure;
mod datadir;
mod device;
mod files;
mod fstab;
mod hba;
mod packages;
mod postgres;
mod promote;
mod render_conf;
mod service;
#[cfg(test)]
mod test_support;
mod tls;
mod tuning;
mod volume;
pub(crate) mod wal_receive_unit;

pub use command::CommandError;
pub use files::FileError;

use command::{OsUser, running_as_root};
use postgres::Server;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    AgentConfig(#[from] agent_config::AgentConfigError),
    /// The data directory holds something pgec2 will not change (another major version, files
    /// that are no cluster, a primary the spec wants as a standby).
    #[error("{}: {problem}; {remedy}", path.display())]
    DataDirectory { path: PathBuf, problem: String, remedy: String },
    /// The data volume, its device, filesystem, fstab entry or mount is not as the spec says.
    #[error("{volume}: {problem}; {remedy}")]
    Volume { volume: String, problem: String, remedy: String },
    /// The host lacks something host apply needs and does not install itself.
    #[error("{problem}: {remedy}")]
    Prerequisite { problem: String, remedy: String },
    /// Another host apply holds this host's lock.
    #[error("another host apply is running on this host (it holds {}): wait for it to finish", lock.display())]
    Busy { lock: PathBuf },
    /// The spec file is not a HostSpec.
    #[error(
        "{} is not a valid HostSpec: {reason}; check that the operator and the agent are the same release",
        path.display()
    )]
    UnreadableSpec { path: PathBuf, reason: String },
    /// PostgreSQL refused or failed.
    #[error("{0}")]
    Postgres(String),
}

/// What a successful step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub outcome: StepOutcome,
    pub detail: String,
}

impl Done {
    pub fn changed(detail: impl Into<String>) -> Self {
        Self { outcome: StepOutcome::Changed, detail: detail.into() }
    }

    pub fn unchanged(detail: impl Into<String>) -> Self {
        Self { outcome: StepOutcome::Unchanged, detail: detail.into() }
    }

    pub fn skipped(detail: impl Into<String>) -> Self {
        Self { outcome: StepOutcome::Skipped, detail: detail.into() }
    }
}

/// Failure to print the report.
#[derive(Debug, thiserror::Error)]
#[error("failed to write the host apply report to stdout: {0}")]
pub struct ReportError(#[from] std::io::Error);

/// `pgec2-agent host apply SPEC`: prints the report; exit 0 when every step succeeded, 1 and a
/// one-line error on stderr naming the failed step otherwise.
pub async fn apply_command(spec_path: &Path) -> Result<ExitCode, ReportError> {
    let report = apply(spec_path).await;
    crate::output::print_json(&report)?;
    match report.failed_step() {
        None => Ok(ExitCode::SUCCESS),
        Some(failed) => {
            let first_line = failed.detail.lines().next().unwrap_or_default();
            eprintln!("error: host apply failed at step {}: {first_line}", failed.step);
            Ok(ExitCode::from(1))
        }
    }
}

/// Converges the host to the spec in `spec_path` and reports what each step did.
pub async fn apply(spec_path: &Path) -> HostReport {
    let mut recorder = Recorder::default();
    let spec = match load_spec(spec_path) {
        Ok(spec) => spec,
        Err(error) => {
            recorder.fail("spec", &error);
            return recorder.finish(None, None);
        }
    };
    let profile = match spec.profile {
        Profile::Ec2 => "ec2",
        Profile::Local => "local",
    };
    // Held until the run ends: a second host apply on this host fails instead of racing.
    let _lock = match lock(&spec) {
        Ok(lock) => lock,
        Err(error) => {
            recorder.fail("spec", &error);
            return recorder.finish(Some(&spec), None);
        }
    };
    recorder.done(
        "spec",
        Done::unchanged(format!("{} ({profile} profile, PostgreSQL {})", spec.host, spec.postgres_version)),
    );
    let facts = run_steps(&spec, &mut recorder).await.ok().flatten();
    recorder.finish(Some(&spec), facts)
}

/// Takes `<config directory>/host-apply.lock` (flock, released when the process ends).
fn lock(spec: &HostSpec) -> Result<Flock<File>, StepError> {
    let directory = spec.config_directory();
    files::ensure_directory(&directory, 0o755, None)?;
    let path = directory.join("host-apply.lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|source| FileError {
        action: "open",
        path: path.clone(),
        source,
    })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => StepError::Busy { lock: path.clone() },
        errno => FileError { action: "lock", path, source: errno.into() }.into(),
    })
}

/// Reads and validates the spec file.
fn load_spec(path: &Path) -> Result<HostSpec, StepError> {
    let text = std::fs::read(path).map_err(|source| FileError {
        action: "read the host spec",
        path: path.to_path_buf(),
        source,
    })?;
    let spec: HostSpec = serde_json::from_slice(&text)
        .map_err(|error| StepError::UnreadableSpec { path: path.to_path_buf(), reason: error.to_string() })?;
    spec.validate()?;
    Ok(spec)
}

/// The run stopped at a failed step (already recorded).
struct Stopped;

async fn run_steps(spec: &HostSpec, recorder: &mut Recorder) -> Result<Option<PostgresFacts>, Stopped> {
    let ec2 = spec.profile == Profile::Ec2;
    if ec2 {
        let device = recorder.value("data-device", volume::find(spec).await)?;
        let volume = recorder.value("filesystem", volume::filesystem(spec, &device).await)?;
        recorder.step("fstab", volume::fstab_entry(spec, &volume))?;
        recorder.step("mount", volume::mount(spec, &volume).await)?;
    } else {
        for step in ["data-device", "filesystem", "fstab", "mount"] {
            recorder.done(step, Done::skipped("local profile"));
        }
    }
    recorder.step("packages", packages_step(spec).await)?;
    let user = recorder.value("os-user", os_user(spec))?;
    let server = Server::new(spec, user.clone());
    recorder.step("directories", configure::directories(spec, &user))?;
    recorder.step("agent-config", configure::agent_configs(spec))?;
    recorder.step("data-directory", datadir::converge(spec, &user).await)?;
    let tls = if spec.ssl_enabled() { tls::converge(spec, &user).await } else { Ok(Done::skipped("ssl is off")) };
    let tls_changed = tls.as_ref().is_ok_and(|done| done.outcome == StepOutcome::Changed);
    recorder.step("tls-certificate", tls)?;
    let conf_changed = recorder.value("postgresql-conf", configure::postgresql_conf(spec, &server).await)?;
    let hba_changed = recorder.value("pg-hba", configure::pg_hba(spec, &server).await)?;
    let changes = service::Changes { config: conf_changed || hba_changed || tls_changed };
    recorder.step("service", service::converge(spec, &server, changes).await)?;
    recorder.step("promote", promote::converge(spec, &server).await)?;
    recorder.step("wal-receive", wal_receive_unit::converge(spec, &server).await)?;
    if !server.accepting().await {
        recorder.done("facts", Done::skipped("the server does not accept connections yet (recovery in progress?)"));
        return Ok(None);
    }
    let facts =
        recorder.value("facts", server.facts().await.map(|facts| (facts, Done::unchanged("read from the server"))))?;
    Ok(Some(facts))
}

/// Step `packages`: installs PostgreSQL (ec2); checks it is there (local).
async fn packages_step(spec: &HostSpec) -> Result<Done, StepError> {
    let postgres = spec.bin_directory().join("postgres");
    match spec.profile {
        Profile::Ec2 => Ok(match packages::install(spec.postgres_version, &postgres).await? {
            Some(detail) => Done::changed(detail),
            None => Done::unchanged(format!("{} present", postgres.display())),
        }),
        Profile::Local if postgres.exists() => {
            Ok(Done::skipped(format!("local profile, using {}", postgres.display())))
        }
        Profile::Local => Err(StepError::Prerequisite {
            problem: format!("{} is missing", postgres.display()),
            remedy: format!(
                "install PostgreSQL {} or set binDirectory (the local profile installs nothing)",
                spec.postgres_version
            ),
        }),
    }
}

/// Step `os-user`: the user exists, and we can act as it.
fn os_user(spec: &HostSpec) -> Result<(OsUser, Done), StepError> {
    let user = OsUser::lookup(&spec.os_user)
        .map_err(|error| StepError::Prerequisite {
            problem: format!("failed to look up user {}: {error}", spec.os_user),
            remedy: "check the host's user database (getent passwd)".into(),
        })?
        .ok_or_else(|| StepError::Prerequisite {
            problem: format!("OS user {} does not exist", spec.os_user),
            remedy: "create it or set osUser".into(),
        })?;
    if user.needs_switch() && !running_as_root() {
        return Err(StepError::Prerequisite {
            problem: format!("host apply runs as another user than {} and is not root", user.name),
            remedy: format!("run it as root or as {}", user.name),
        });
    }
    let detail = format!("{} (uid {})", user.name, user.uid);
    Ok((user, Done::unchanged(detail)))
}

/// Collects step reports. Steps run one after the other, so a step took the time since the
/// previous one was recorded.
struct Recorder {
    steps: Vec<StepReport>,
    since: std::time::Instant,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { steps: Vec::new(), since: std::time::Instant::now() }
    }
}

impl Recorder {
    fn done(&mut self, step: &str, done: Done) {
        tracing::info!(step, outcome = ?done.outcome, detail = %done.detail, "host apply step");
        let milliseconds = self.lap();
        self.steps.push(StepReport {
            step: step.to_string(),
            outcome: done.outcome,
            detail: done.detail,
            milliseconds,
        });
    }

    fn fail(&mut self, step: &str, error: &StepError) {
        let milliseconds = self.lap();
        let (outcome, detail) = (StepOutcome::Failed, error.to_string());
        self.steps.push(StepReport { step: step.to_string(), outcome, detail, milliseconds });
    }

    /// Milliseconds since the previous step was recorded.
    fn lap(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.since);
        self.since = now;
        u64::try_from(elapsed.as_millis()).ok()
    }

    fn step(&mut self, step: &str, result: Result<Done, StepError>) -> Result<(), Stopped> {
        self.value(step, result.map(|done| ((), done)))
    }

    fn value<T>(&mut self, step: &str, result: Result<(T, Done), StepError>) -> Result<T, Stopped> {
        match result {
            Ok((value, done)) => {
                self.done(step, done);
                Ok(value)
            }
            Err(error) => {
                self.fail(step, &error);
                Err(Stopped)
            }
        }
    }

    fn finish(self, spec: Option<&HostSpec>, postgres: Option<PostgresFacts>) -> HostReport {
        let succeeded = self.steps.iter().all(|step| step.outcome != StepOutcome::Failed);
        HostReport {
            host: spec.map(|spec| spec.host.clone()).unwrap_or_default(),
            profile: spec.map(|spec| spec.profile),
            succeeded,
            steps: self.steps,
            postgres,
        }
    }
}
