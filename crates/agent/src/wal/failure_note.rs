//! `pgec2-recovery-failure` in the data directory: why `wal-fetch` stopped archive recovery.
//!
//! PostgreSQL logs `restore_command`'s stderr, but the log may be in a journal or a file the
//! caller does not read. When `wal-fetch` makes recovery stop (exit status above 125) it also
//! writes its message here, so `host apply` can report it (and the operator show it in the
//! host's status); the next successful fetch of that data directory removes it.

use std::path::{Path, PathBuf};

/// The note's file name in the data directory.
pub const FAILURE_NOTE: &str = "pgec2-recovery-failure";
/// Longest note read back (a message, not a log).
const MAX_NOTE: u64 = 16 * 1024;

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FAILURE_NOTE)
}

/// Makes PostgreSQL stop archive recovery of `data_dir` with `message`: says it on stderr
/// (PostgreSQL's log), records it in the note, and returns [`EXIT_ABORT_RECOVERY`].
///
/// [`EXIT_ABORT_RECOVERY`]: super::EXIT_ABORT_RECOVERY
pub fn stop_recovery(data_dir: &Path, message: &str) -> std::process::ExitCode {
    let status = super::EXIT_ABORT_RECOVERY;
    eprintln!("error: {message}");
    eprintln!(
        "  exiting with status {status} so that PostgreSQL stops recovery instead of ending it early; the message \
         is also in {}",
        path(data_dir).display()
    );
    write(data_dir, message);
    std::process::ExitCode::from(status)
}

/// Records why recovery stops; a failure to write is logged only (stderr says it anyway).
pub fn write(data_dir: &Path, message: &str) {
    let text = format!("{} {message}\n", chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if let Err(error) = super::durable::write_atomically(&path(data_dir), text.as_bytes()) {
        tracing::warn!(dir = %data_dir.display(), %error, "could not record why recovery stops");
    }
}

/// Removes a note left by an earlier failure (recovery goes on now).
pub fn clear(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}

/// The note's message, when `wal-fetch` stopped recovery of `data_dir`.
pub fn read(data_dir: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path(data_dir)).ok()?.take(MAX_NOTE).read_to_string(&mut text).ok()?;
    let message = text.trim().split_once(' ').map_or("", |(_written_at, message)| message.trim());
    (!message.is_empty()).then(|| message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_read_back_until_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), None);
        write(dir.path(), "WAL segment 000000010000000000000005 is missing");
        assert_eq!(read(dir.path()).as_deref(), Some("WAL segment 000000010000000000000005 is missing"));
        let text = std::fs::read_to_string(dir.path().join(FAILURE_NOTE)).expect("note");
        assert!(text.starts_with("20"), "the note says when: {text}");
        clear(dir.path());
        assert_eq!(read(dir.path()), None);
        clear(dir.path());
    }
}
