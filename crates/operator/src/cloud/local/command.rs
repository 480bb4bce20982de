//! Commands on a local host: the script runs as a child `/bin/sh` in its own process group,
//! with everything recorded under `<host>/commands/<id>/` (script, stdout, stderr, exit status,
//! pid), so [`status`] answers after an operator restart too: a command still running is
//! re-attached (its pid and start time match), one whose process vanished without an exit
//! status is reported failed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{LocalError, process};
use pgec2_contract::output::tail;

use super::files::{io_error, read_text, write_atomic};
use crate::cloud::{CommandStatus, HostCommand};

const RECORD: &str = "command.json";
const SCRIPT: &str = "script.sh";
const STDOUT: &str = "stdout.log";
const STDERR: &str = "stderr.log";
const EXIT: &str = "exit-status";
const ENDED: &str = "ended-by-operator";

/// Runs the script, then records its exit status atomically.
const WRAPPER: &str = r#"/bin/sh "$1" </dev/null >"$2" 2>"$3"; echo $? >"$4.tmp" && mv "$4.tmp" "$4""#;

/// What is kept about a started command.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommandRecord {
    id: String,
    purpose: String,
    /// Seconds since the epoch.
    started_at: u64,
    timeout_seconds: u64,
    pid: i32,
    /// `/proc/<pid>/stat` start time, to tell our process from a later one with the same pid.
    process_start: Option<u64>,
}

/// The directory of command `id` on the host at `host_dir`.
fn command_dir(host_dir: &Path, id: &str) -> PathBuf {
    host_dir.join("commands").join(id)
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or_default()
}

/// Starts `command` on the host at `host_dir` and returns its id.
pub async fn start(
    host_dir: &Path,
    command: &HostCommand,
    environment: &[(String, String)],
) -> Result<String, LocalError> {
    let id = format!("cmd-{}-{}", now_seconds(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dir = command_dir(host_dir, &id);
    std::fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
    write_atomic(&dir.join(SCRIPT), command.script.as_bytes())?;
    let mut shell = tokio::process::Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(WRAPPER)
        .arg("pgec2-host-command")
        .args([SCRIPT, STDOUT, STDERR, EXIT])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .envs(environment.iter().map(|(key, value)| (key.as_str(), value.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = shell.spawn().map_err(io_error(format!("start command {id} ({})", command.purpose)))?;
    let pid = child.id().and_then(|pid| i32::try_from(pid).ok()).unwrap_or_default();
    let record = CommandRecord {
        id: id.clone(),
        purpose: command.purpose.clone(),
        started_at: now_seconds(),
        timeout_seconds: command.timeout.as_secs().max(1),
        pid,
        process_start: process::start_time(pid),
    };
    save(&dir, &record)?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    tokio::spawn(enforce_timeout(dir, record));
    Ok(id)
}

/// Ends the command when its timeout passes while this process lives ([`status`] does it after
/// a restart).
async fn enforce_timeout(dir: PathBuf, record: CommandRecord) {
    tokio::time::sleep(Duration::from_secs(record.timeout_seconds)).await;
    if !dir.join(EXIT).exists() && is_alive(&record) {
        end(&dir, &record, "timed out");
    }
}

fn save(dir: &Path, record: &CommandRecord) -> Result<(), LocalError> {
    let path = dir.join(RECORD);
    let text = serde_json::to_vec_pretty(record).map_err(|source| LocalError::Corrupt { path, source })?;
    write_atomic(&dir.join(RECORD), &text)
}

fn load(dir: &Path, id: &str) -> Result<CommandRecord, LocalError> {
    let path = dir.join(RECORD);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(LocalError::UnknownCommand(id.to_string()));
        }
        Err(source) => return Err(LocalError::Io { what: format!("read {}", path.display()), source }),
    };
    serde_json::from_slice(&text).map_err(|source| LocalError::Corrupt { path, source })
}

/// The progress of command `id` on the host at `host_dir`.
pub fn status(host_dir: &Path, id: &str) -> Result<CommandStatus, LocalError> {
    let dir = command_dir(host_dir, id);
    let record = load(&dir, id)?;
    if let Some(finished) = finished(&dir)? {
        return Ok(finished);
    }
    if is_alive(&record) {
        if now_seconds() > record.started_at + record.timeout_seconds {
            end(&dir, &record, "timed out");
            return finished(&dir).map(|status| status.unwrap_or(CommandStatus::InProgress));
        }
        return Ok(CommandStatus::InProgress);
    }
    // The process may have finished between the two checks.
    if let Some(finished) = finished(&dir)? {
        return Ok(finished);
    }
    failed(
        &dir,
        None,
        "the command's process ended without recording an exit status (the machine or operator restarted while it ran); send it again",
    )
}

/// The final status when the command has one.
fn finished(dir: &Path) -> Result<Option<CommandStatus>, LocalError> {
    let ended = read_text(&dir.join(ENDED))?;
    if !ended.trim().is_empty() {
        let reason = format!("the command was stopped: {}", ended.trim());
        return failed(dir, None, &reason).map(Some);
    }
    let exit = read_text(&dir.join(EXIT))?;
    let exit = exit.trim();
    if exit.is_empty() {
        return Ok(None);
    }
    let code: i32 =
        exit.parse().map_err(|_| LocalError::Setup(format!("unreadable exit status {exit:?} in {}", dir.display())))?;
    if code == 0 {
        return Ok(Some(CommandStatus::Succeeded { stdout: read_text(&dir.join(STDOUT))? }));
    }
    failed(dir, Some(code), "").map(Some)
}

fn failed(dir: &Path, exit_code: Option<i32>, note: &str) -> Result<CommandStatus, LocalError> {
    let mut stderr_tail = tail(&read_text(&dir.join(STDERR))?);
    if !note.is_empty() {
        if !stderr_tail.is_empty() {
            stderr_tail.push('\n');
        }
        stderr_tail.push_str(note);
    }
    Ok(CommandStatus::Failed { exit_code, stdout: read_text(&dir.join(STDOUT))?, stderr_tail })
}

/// Stops the command's process group and records why.
fn end(dir: &Path, record: &CommandRecord, reason: &str) {
    let _ = write_atomic(&dir.join(ENDED), reason.as_bytes());
    if record.pid > 0 {
        let group = Pid::from_raw(record.pid);
        let _ = killpg(group, Signal::SIGTERM);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            let _ = killpg(group, Signal::SIGKILL);
        });
    }
}

/// Stops every command still running on the host (before it is terminated).
pub fn stop_all(host_dir: &Path) -> Result<(), LocalError> {
    for dir in super::files::subdirectories(&host_dir.join("commands"))? {
        let id = dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let record = load(&dir, &id)?;
        if finished(&dir)?.is_none() && is_alive(&record) {
            end(&dir, &record, "the host was terminated");
        }
    }
    Ok(())
}

/// Ids of the commands with `purpose` still running on the host, oldest first.
pub fn running(host_dir: &Path, purpose: &str) -> Result<Vec<String>, LocalError> {
    let mut running = Vec::new();
    for dir in super::files::subdirectories(&host_dir.join("commands"))? {
        let id = dir.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let record = load(&dir, &id)?;
        if record.purpose == purpose && finished(&dir)?.is_none() && is_alive(&record) {
            running.push((record.started_at, id));
        }
    }
    running.sort();
    Ok(running.into_iter().map(|(_, id)| id).collect())
}

/// True when the recorded process still runs (and is the same process, not a reused pid).
fn is_alive(record: &CommandRecord) -> bool {
    process::is_alive(record.pid, record.process_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(script: &str, timeout: Duration) -> HostCommand {
        HostCommand { purpose: "test".into(), script: script.into(), timeout }
    }

    async fn wait_finished(host: &Path, id: &str) -> CommandStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let current = status(host, id).expect("status");
            if !matches!(current, CommandStatus::InProgress | CommandStatus::Pending) {
                return current;
            }
            assert!(std::time::Instant::now() < deadline, "command {id} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_succeeding_command_reports_its_stdout() {
        let host = tempfile::tempdir().expect("tempdir");
        let id =
            start(host.path(), &command("echo '{\"ok\":true}'", Duration::from_secs(30)), &[]).await.expect("start");
        assert_eq!(
            wait_finished(host.path(), &id).await,
            CommandStatus::Succeeded { stdout: "{\"ok\":true}\n".into() }
        );
    }

    #[tokio::test]
    async fn a_failing_command_reports_exit_code_and_stderr_tail() {
        let host = tempfile::tempdir().expect("tempdir");
        let id = start(
            host.path(),
            &command("echo step one >&2; echo 'apply failed' >&2; exit 3", Duration::from_secs(30)),
            &[],
        )
        .await
        .expect("start");
        let CommandStatus::Failed { exit_code, stderr_tail, .. } = wait_finished(host.path(), &id).await else {
            panic!("expected a failure");
        };
        assert_eq!(exit_code, Some(3));
        assert_eq!(stderr_tail, "step one\napply failed");
    }

    #[tokio::test]
    async fn a_command_running_past_its_timeout_is_stopped_and_failed() {
        let host = tempfile::tempdir().expect("tempdir");
        let id = start(host.path(), &command("sleep 30", Duration::from_secs(1)), &[]).await.expect("start");
        let CommandStatus::Failed { stderr_tail, .. } = wait_finished(host.path(), &id).await else {
            panic!("expected a failure");
        };
        assert!(stderr_tail.contains("timed out"), "{stderr_tail}");
    }

    #[tokio::test]
    async fn a_command_whose_process_vanished_is_failed_with_a_clear_message() {
        let host = tempfile::tempdir().expect("tempdir");
        let id = start(host.path(), &command("true", Duration::from_secs(30)), &[]).await.expect("start");
        wait_finished(host.path(), &id).await;
        // What an operator restart finds when the process died without recording its exit. The
        // wrapper may still be exiting right after it wrote the exit status: wait until it is gone.
        std::fs::remove_file(command_dir(host.path(), &id).join(EXIT)).expect("remove exit status");
        let CommandStatus::Failed { exit_code: None, stderr_tail, .. } = wait_finished(host.path(), &id).await else {
            panic!("expected a failure");
        };
        assert!(stderr_tail.contains("without recording an exit status"), "{stderr_tail}");
    }

    #[tokio::test]
    async fn an_unknown_command_id_is_an_error() {
        let host = tempfile::tempdir().expect("tempdir");
        assert!(matches!(status(host.path(), "cmd-missing"), Err(LocalError::UnknownCommand(_))));
    }
}
