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

    /// Up to `limit` files PostgreSQL has marked ready to archive, other than `current` and those
    /// already stored ahead, oldest first (history files first, as PostgreSQL orders them).
    pub fn ready_files(&self, current: &str, limit: usize) -> Vec<String> {
        if limit == 0 {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(self.wal_dir.join("archive_status")) else { return Vec::new() };
        let mut ready: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
            .filter(|name| name != current && name.parse::<WalFileName>().is_ok())
            .filter(|name| !self.dir.join(name).exists())
            .collect();
        ready.sort_by_key(|name| (!name.ends_with(".history"), name.clone()));
        ready.truncate(limit);
        ready
    }

    /// Removes markers whose file is no longer in `pg_wal` (PostgreSQL recycled it without asking,
    /// e.g. after archiving was turned off), and temporaries of interrupted writes.
    pub fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !self.wal_dir.join(&*name).exists() {
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
    fn ready_files_skip_the_current_one_and_those_stored_ahead() {
        let (_dir, wal) = wal_dir();
        for name in ["000000010000000000000005", "000000010000000000000004", SEGMENT, "00000002.history", "junk"] {
            fs::write(wal.join("archive_status").join(format!("{name}.ready")), b"").expect("ready");
        }
        fs::write(wal.join("archive_status/000000010000000000000002.done"), b"").expect("done");
        let spool = Spool::new(&wal);
        spool.record("000000010000000000000004", "file:///a", &header_of(b"x"));
        assert_eq!(spool.ready_files(SEGMENT, 8), vec!["00000002.history", "000000010000000000000005"]);
        assert_eq!(spool.ready_files(SEGMENT, 1), vec!["00000002.history"]);
        spool.sweep();
        assert!(!wal.join(SPOOL_DIR).join("000000010000000000000004").exists(), "its segment is gone");
    }
}
