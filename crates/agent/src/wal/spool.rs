//! Asynchronous archiving's local memory: which WAL files a `wal-push` already stored ahead of
//! PostgreSQL asking for them, and which files are ready to be pushed ahead.
//!
//! With `transfer.archive_async = true`, `wal-push X` stores X and, in parallel, the next files
//! PostgreSQL has marked ready (`pg_wal/archive_status/<file>.ready`). Every file stored that way
//! gets a marker `pg_wal/.pgec2-archived/<file>` holding the archive it went to and the length
//! and BLAKE3 hash of its content; when PostgreSQL then asks for that file, `wal-push` answers
//! from the marker (after hashing the local file and finding the same content) without a store
//! round trip. A marker is written only after the store durably accepted the object, so a marker
//! never claims more than the archive holds; a marker lost in a crash only costs a push that
//! finds the object already archived. Markers are removed when they answer, and swept when their
//! file has left `pg_wal`.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pgec2_core::envelope::Header;
use pgec2_core::wal::WalFileName;

/// The marker directory, inside `pg_wal` (never part of a base backup).
pub const SPOOL_DIR: &str = ".pgec2-archived";
/// The background pusher's lock file, in the marker directory.
pub const PUSHER_LOCK: &str = ".pusher.lock";
/// How a failure note is named: `.<file>.failed`.
const FAILED_SUFFIX: &str = ".failed";

/// The markers of one data directory's `pg_wal`.
#[derive(Clone, Debug)]
pub struct Spool {
    wal_dir: PathBuf,
    dir: PathBuf,
}

/// What a marker records: the archive, and the content stored there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Marker {
    archive: String,
    content_len: u64,
    content_hash: String,
}

impl Marker {
    fn render(&self) -> String {
        format!("{}\n{}\n{}\n", self.content_len, self.content_hash, self.archive)
    }

    /// Parses a marker; `None` for anything torn or foreign.
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.strip_suffix('\n')?.splitn(3, '\n');
        let content_len = lines.next()?.parse().ok()?;
        let content_hash = lines.next()?.to_string();
        let archive = lines.next()?.to_string();
        (content_hash.len() == 64 && content_hash.bytes().all(|b| b.is_ascii_hexdigit()) && !archive.is_empty())
            .then_some(Self { archive, content_len, content_hash })
    }
}

impl Spool {
    /// The spool of the data directory whose `pg_wal` is `wal_dir`.
    pub fn new(wal_dir: &Path) -> Self {
        Self { wal_dir: wal_dir.to_path_buf(), dir: wal_dir.join(SPOOL_DIR) }
    }

    /// The `pg_wal` directory.
    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// True when `file` (at `path`) was already stored in `archive` with exactly its current
    /// content; the marker is then removed (PostgreSQL marks the file done and never asks again).
    pub fn answer(&self, file: &str, path: &Path, archive: &str) -> bool {
        let marker_path = self.dir.join(file);
        let Ok(text) = fs::read_to_string(&marker_path) else { return false };
        let Some(marker) = Marker::parse(&text) else { return false };
        if marker.archive != archive {
            return false;
        }
        let Ok((content_len, content_hash)) = hash_file(path) else { return false };
        let same = content_len == marker.content_len && content_hash == marker.content_hash;
        if same {
            let _ = fs::remove_file(&marker_path);
        }
        same
    }

    /// Records that `file` is stored in `archive` with `header`'s content. Best effort: a marker
    /// that cannot be written only costs a push that finds the file already archived.
    pub fn record(&self, file: &str, archive: &str, header: &Header) {
        let marker = Marker {
            archive: archive.to_string(),
            content_len: header.content_len,
            content_hash: header.content_hash_hex(),
        };
        let written = fs::create_dir_all(&self.dir).and_then(|()| {
            // Written aside and renamed: a reader sees a whole marker or none. No fsync: a marker
            // lost or torn in a crash is ignored, and the object it names is already durable.
            let temp = self.dir.join(format!(".{file}.{}.tmp", std::process::id()));
            fs::write(&temp, marker.render())?;
            fs::rename(&temp, self.dir.join(file))
        });
        if let Err(error) = written {
            tracing::debug!(file, %error, "could not record the file as archived ahead");
        }
    }

    /// Up to `limit` files PostgreSQL has marked ready to archive that have neither a marker nor
    /// a failure note and that `skip` does not exclude, oldest first (history files first, as
    /// PostgreSQL orders them).
    pub fn pending(&self, limit: usize, skip: impl Fn(&str) -> bool) -> Vec<String> {
        if limit == 0 {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(self.wal_dir.join("archive_status")) else { return Vec::new() };
        let mut ready: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
            .filter(|name| !skip(name) && name.parse::<WalFileName>().is_ok())
            .collect();
        ready.sort_by_key(|name| (!name.ends_with(".history"), name.clone()));
        // Looks for markers and notes only until `limit` files are found: with a long backlog,
        // the pusher asks every few milliseconds and wants one or two files.
        ready
            .into_iter()
            .filter(|name| !self.dir.join(name).exists() && !self.failure_path(name).exists())
            .take(limit)
            .collect()
    }

    /// Whether PostgreSQL has marked `file` ready to archive.
    pub fn is_ready(&self, file: &str) -> bool {
        self.wal_dir.join("archive_status").join(format!("{file}.ready")).exists()
    }

    /// Whether a marker for `file` exists (without checking it).
    pub fn has_marker(&self, file: &str) -> bool {
        self.dir.join(file).exists()
    }

    /// Notes that the background pusher could not store `file` (see [`super::pusher`]): it does
    /// not try that file again, and the `wal-push` that PostgreSQL runs for it pushes it itself.
    pub fn note_failure(&self, file: &str, error: &str) {
        let written = fs::create_dir_all(&self.dir).and_then(|()| fs::write(self.failure_path(file), error));
        if let Err(error) = written {
            tracing::debug!(file, %error, "could not note a failed push ahead");
        }
    }

    /// Takes (reads and removes) the failure note of `file`, if any.
    pub fn take_failure(&self, file: &str) -> Option<String> {
        let path = self.failure_path(file);
        let note = fs::read_to_string(&path).ok()?;
        let _ = fs::remove_file(&path);
        Some(note)
    }

    fn failure_path(&self, file: &str) -> PathBuf {
        self.dir.join(format!(".{file}{FAILED_SUFFIX}"))
    }

    /// Takes the background pusher's lock (held for the pusher's life; released by the kernel
    /// when it exits or is killed); `None` when a pusher holds it.
    pub fn try_lock_pusher(&self) -> io::Result<Option<fs::File>> {
        fs::create_dir_all(&self.dir)?;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.dir.join(PUSHER_LOCK))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for an operator (and the tests) to find: best effort.
                let _ = file
                    .set_len(0)
                    .and_then(|()| io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes()));
                Ok(Some(file))
            }
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(error)) => Err(error),
        }
    }

    /// Whether `lock` (taken by [`Self::try_lock_pusher`]) is still this `pg_wal`'s lock file: false
    /// once the directory was removed or replaced (a restore, a new cluster at the same path).
    pub fn still_locked_by(&self, lock: &fs::File) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(held), Ok(current)) = (lock.metadata(), fs::metadata(self.dir.join(PUSHER_LOCK))) else { return false };
        held.dev() == current.dev() && held.ino() == current.ino()
    }

    /// The process id the running pusher wrote into its lock file.
    pub fn pusher_pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join(PUSHER_LOCK)).ok()?.trim().parse().ok()
    }

    /// Whether a background pusher holds its lock now.
    pub fn pusher_running(&self) -> bool {
        let Ok(file) = fs::File::open(self.dir.join(PUSHER_LOCK)) else { return false };
        matches!(file.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
    }

    /// Removes markers and failure notes whose file is no longer in `pg_wal` (PostgreSQL recycled
    /// it without asking, e.g. after archiving was turned off), and temporaries of interrupted
    /// writes. Run by the background pusher, which alone writes markers, under its lock.
    pub fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let file = name.strip_prefix('.').and_then(|name| name.strip_suffix(FAILED_SUFFIX)).unwrap_or(&name);
            let stale = name.ends_with(".tmp") || (!file.starts_with('.') && !self.wal_dir.join(file).exists());
            if stale && *name != *PUSHER_LOCK {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The length and BLAKE3 hash (hex) of the file at `path`.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut length = 0u64;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
    Ok((length, hasher.finalize().to_hex().to_string()))
}

#[cfg(test)]
mod tests {
    use pgec2_core::compression::Algorithm;

    use super::*;

    const SEGMENT: &str = "000000010000000000000003";

    fn wal_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("pg_wal");
        fs::create_dir_all(wal.join("archive_status")).expect("mkdir");
        (dir, wal)
    }

    fn header_of(content: &[u8]) -> Header {
        Header {
            algorithm: Algorithm::Zstd,
            content_len: content.len() as u64,
            content_hash: *blake3::hash(content).as_bytes(),
            encrypted: false,
        }
    }

    #[test]
    fn a_recorded_file_is_answered_once_and_only_with_the_same_content_and_archive() {
        let (_dir, wal) = wal_dir();
        let path = wal.join(SEGMENT);
        fs::write(&path, b"segment content").expect("write");
        let spool = Spool::new(&wal);
        assert!(!spool.answer(SEGMENT, &path, "file:///a"), "nothing recorded yet");
        spool.record(SEGMENT, "file:///a", &header_of(b"segment content"));
        assert!(!spool.answer(SEGMENT, &path, "file:///b"), "another archive");
        fs::write(&path, b"segment CONTENT").expect("rewrite");
        assert!(!spool.answer(SEGMENT, &path, "file:///a"), "different content");
        fs::write(&path, b"segment content").expect("rewrite");
        assert!(spool.answer(SEGMENT, &path, "file:///a"));
        assert!(!spool.answer(SEGMENT, &path, "file:///a"), "a marker answers once");
    }

    #[test]
    fn torn_markers_answer_nothing() {
        for torn in ["", "15\n", "15\nabc\nfile:///a\n", "x\n0000\nfile:///a"] {
            assert_eq!(Marker::parse(torn), None, "{torn:?}");
        }
        let marker = Marker { archive: "file:///a b".into(), content_len: 3, content_hash: "a".repeat(64) };
        assert_eq!(Marker::parse(&marker.render()), Some(marker));
    }

    #[test]
    fn pending_files_skip_the_excluded_one_and_those_stored_ahead() {
        let (_dir, wal) = wal_dir();
        for name in ["000000010000000000000005", "000000010000000000000004", SEGMENT, "00000002.history", "junk"] {
            fs::write(wal.join("archive_status").join(format!("{name}.ready")), b"").expect("ready");
        }
        fs::write(wal.join("archive_status/000000010000000000000002.done"), b"").expect("done");
        let spool = Spool::new(&wal);
        spool.record("000000010000000000000004", "file:///a", &header_of(b"x"));
        assert_eq!(spool.pending(8, |name| name == SEGMENT), vec!["00000002.history", "000000010000000000000005"]);
        assert_eq!(spool.pending(1, |name| name == SEGMENT), vec!["00000002.history"]);
        spool.sweep();
        assert!(!wal.join(SPOOL_DIR).join("000000010000000000000004").exists(), "its segment is gone");
    }

    #[test]
    fn a_failure_note_keeps_its_file_from_the_pusher_until_taken_and_is_swept_with_its_file() {
        let (_dir, wal) = wal_dir();
        for name in [SEGMENT, "000000010000000000000004"] {
            fs::write(wal.join(name), b"x").expect("segment");
            fs::write(wal.join("archive_status").join(format!("{name}.ready")), b"").expect("ready");
        }
        let spool = Spool::new(&wal);
        spool.note_failure(SEGMENT, "the store refused");
        assert_eq!(spool.pending(8, |_| false), vec!["000000010000000000000004"]);
        assert_eq!(spool.pending(8, |name| name.ends_with('4')), Vec::<String>::new());
        spool.sweep();
        assert_eq!(spool.take_failure(SEGMENT).as_deref(), Some("the store refused"), "its file is still there");
        assert_eq!(spool.take_failure(SEGMENT), None, "a note is taken once");
        spool.note_failure(SEGMENT, "again");
        fs::remove_file(wal.join(SEGMENT)).expect("recycle");
        spool.sweep();
        assert_eq!(spool.take_failure(SEGMENT), None, "swept with its file");
    }

    #[test]
    fn only_one_pusher_holds_the_lock_and_others_see_it_running() {
        let (_dir, wal) = wal_dir();
        let spool = Spool::new(&wal);
        assert!(!spool.pusher_running());
        let held = spool.try_lock_pusher().expect("lock").expect("first holder");
        assert!(spool.pusher_running());
        assert!(spool.try_lock_pusher().expect("lock").is_none(), "a second pusher");
        spool.sweep();
        assert!(spool.still_locked_by(&held));
        drop(held);
        assert!(!spool.pusher_running(), "released with its holder");
        assert!(spool.try_lock_pusher().expect("lock").is_some());
    }
}
