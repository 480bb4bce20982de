//! Subprocesses of `host apply`: always with a timeout, a clean environment, optionally as the
//! PostgreSQL OS user, and with the tail of stderr kept for the report.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::unistd::{Uid, User};
use pgec2_contract::output::tail;

/// How long the quick commands (psql, blkid, pg_ctl status, systemctl queries) may take.
pub const QUICK: Duration = Duration::from_secs(30);

/// Environment variables passed through to every command (AWS credentials and settings for
/// restores and, through PostgreSQL, for archive_command; the agent's log filter).
const PASSED_THROUGH_PREFIXES: &[&str] = &["AWS_"];
const PASSED_THROUGH: &[&str] = &["PGEC2_LOG", "TZ"];

/// A subprocess failure.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("failed to start {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command} did not finish within {seconds} s and was killed")]
    Timeout { command: String, seconds: u64 },
    #[error("{command} failed ({status}): {stderr_tail}")]
    Failed { command: String, status: String, stderr_tail: String },
}

/// The OS user PostgreSQL runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl OsUser {
    /// Looks the user up in the password database.
    pub fn lookup(name: &str) -> Result<Option<Self>, std::io::Error> {
        let user = User::from_name(name).map_err(std::io::Error::from)?;
        Ok(user.map(|user| Self { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), home: user.dir }))
    }

    /// True when commands must switch to this user (we are root and it is another user).
    pub fn needs_switch(&self) -> bool {
        Uid::effective().as_raw() != self.uid
    }
}

/// True when this process runs as root.
pub fn running_as_root() -> bool {
    Uid::effective().is_root()
}

/// A command line to run.
#[derive(Debug)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    user: Option<OsUser>,
    timeout: Duration,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    /// A command with the [`QUICK`] timeout, run as ourselves.
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self { program: program.as_ref().to_path_buf(), args: Vec::new(), envs: Vec::new(), user: None, timeout: QUICK }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Runs the command as `user` (switching only when we are another user).
    pub fn run_as(mut self, user: &OsUser) -> Self {
        self.user = Some(user.clone());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line for messages: program name and arguments.
    pub fn display(&self) -> String {
        let name = self.program.file_name().unwrap_or(self.program.as_os_str()).to_string_lossy();
        let mut line = name.into_owned();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }

    /// Runs the command and returns what it printed, whatever its exit status.
    pub async fn output(&self) -> Result<Finished, CommandError> {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args).env_clear().current_dir("/");
        command.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").env("LANG", "C");
        for (name, value) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if PASSED_THROUGH.contains(&text.as_ref()) || PASSED_THROUGH_PREFIXES.iter().any(|p| text.starts_with(p)) {
                command.env(&name, &value);
            }
        }
        if let Some(user) = self.user.as_ref().filter(|user| user.needs_switch()) {
            command.uid(user.uid).gid(user.gid);
            command.env("HOME", &user.home).env("USER", &user.name).env("LOGNAME", &user.name);
        } else if let Some(home) = std::env::var_os("HOME") {
            command.env("HOME", home);
        }
        command.envs(self.envs.iter().map(|(name, value)| (name, value)));
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let child = command.spawn().map_err(|source| CommandError::Spawn { command: self.display(), source })?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| CommandError::Timeout { command: self.display(), seconds: self.timeout.as_secs() })?
            .map_err(|source| CommandError::Spawn { command: self.display(), source })?;
        Ok(Finished {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs the command and returns its stdout; a non-zero exit is an error with stderr's tail.
    pub async fn run(&self) -> Result<String, CommandError> {
        let finished = self.output().await?;
        if finished.status.success() {
            return Ok(finished.stdout);
        }
        Err(self.failure(&finished))
    }

    /// The error for a finished command that did not succeed.
    pub fn failure(&self, finished: &Finished) -> CommandError {
        let text = if finished.stderr.trim().is_empty() { &finished.stdout } else { &finished.stderr };
        CommandError::Failed { command: self.display(), status: finished.status.to_string(), stderr_tail: tail(text) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_command_reports_its_stderr_tail() {
        let error =
            Cmd::new("/bin/sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]).run().await.expect_err("fails");
        let text = error.to_string();
        assert!(text.starts_with("sh -c"), "{text}");
        assert!(text.contains("exit status: 3") && text.ends_with("one\ntwo"), "{text}");
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_at_its_timeout() {
        let started = std::time::Instant::now();
        let error =
            Cmd::new("/bin/sleep").arg("30").timeout(Duration::from_millis(200)).run().await.expect_err("times out");
        assert!(matches!(error, CommandError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn commands_get_a_clean_environment() {
        let stdout = Cmd::new("/usr/bin/env").env("PGEC2_EXTRA", "1").run().await.expect("env runs");
        assert!(stdout.contains("PGEC2_EXTRA=1"));
        assert!(!stdout.contains("CARGO_"), "cargo's variables leaked: {stdout}");
    }
}
