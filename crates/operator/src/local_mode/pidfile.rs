//! The pid file of a `local run` in its state directory: one run per state directory, and the
//! process `local stop` signals.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The pid file's name inside the state directory.
pub const PID_FILE: &str = "operator.pid";

/// The program name a live `local run` has in `/proc/<pid>/comm`.
const PROGRAM: &str = "pgec2-operator";

/// Failures around the pid file.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("another `pgec2-operator local run` (pid {pid}) uses {}; stop it first with `pgec2-operator local stop --state-dir {}`", dir.display(), dir.display())]
    AlreadyRunning { pid: i32, dir: PathBuf },
    #[error("failed to {what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("failed to signal pid {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
    #[error("pid {pid} did not exit within {}s", timeout.as_secs())]
    StillRunning { pid: i32, timeout: Duration },
}

/// The pid file of this process; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Claims the state directory for this process, replacing a stale pid file.
    pub fn claim(state_dir: &Path) -> Result<Self, PidFileError> {
        let path = state_dir.join(PID_FILE);
        if let Some(pid) = running(state_dir)? {
            return Err(PidFileError::AlreadyRunning { pid, dir: state_dir.to_path_buf() });
        }
        let temporary = state_dir.join(format!(".{PID_FILE}.tmp"));
        let io = |what: &'static str| {
            let path = temporary.clone();
            move |source| PidFileError::Io { what, path, source }
        };
        std::fs::write(&temporary, format!("{}\n", std::process::id())).map_err(io("write"))?;
        std::fs::rename(&temporary, &path).map_err(io("rename"))?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own pid file: a later run may have claimed the directory meanwhile.
        let ours = read_pid(&self.path).ok().flatten() == i32::try_from(std::process::id()).ok();
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid of the live `local run` of `state_dir`, if there is one (a stale file is ignored).
pub fn running(state_dir: &Path) -> Result<Option<i32>, PidFileError> {
    let Some(pid) = read_pid(&state_dir.join(PID_FILE))? else { return Ok(None) };
    Ok(is_operator(pid).then_some(pid))
}

/// Sends SIGTERM to `pid` and waits until it has exited.
pub async fn terminate(pid: i32, timeout: Duration) -> Result<(), PidFileError> {
    match kill(Pid::from_raw(pid), Signal::SIGTERM) {
        Ok(()) | Err(nix::Error::ESRCH) => {}
        Err(source) => return Err(PidFileError::Signal { pid, source }),
    }
    let deadline = Instant::now() + timeout;
    while is_operator(pid) {
        if Instant::now() > deadline {
            return Err(PidFileError::StillRunning { pid, timeout });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn read_pid(path: &Path) -> Result<Option<i32>, PidFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse::<i32>().ok().filter(|pid| *pid > 0)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PidFileError::Io { what: "read", path: path.to_path_buf(), source }),
    }
}

/// True when `pid` is a live (not zombie) pgec2-operator process.
fn is_operator(pid: i32) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
    // The state is the field after the parenthesised command name.
    let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
    comm.trim() == PROGRAM && !zombie
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_pid_file_does_not_block_a_new_run_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().expect("temporary directory");
        // pid 1 is alive but is not an operator: stale.
        std::fs::write(dir.path().join(PID_FILE), "1\n").expect("write");
        let claimed = PidFile::claim(dir.path()).expect("claim over a stale file");
        let written = std::fs::read_to_string(dir.path().join(PID_FILE)).expect("read");
        assert_eq!(written.trim(), std::process::id().to_string());
        drop(claimed);
        assert!(!dir.path().join(PID_FILE).exists());
    }

    #[test]
    fn nothing_runs_without_a_pid_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        assert_eq!(running(dir.path()).expect("read"), None);
    }
}
