//! The local spool: the segment being received is written to `<spool>/<segment>.partial`; when
//! it is full it is fsynced and renamed to `<segment>`, ready for `wal-push`'s code, and removed
//! once archived. Nothing in the spool is acknowledged to the server before it is in the archive,
//! so a lost spool costs a re-stream from the slot, never WAL.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use pgec2_core::wal::{Lsn, SegmentSize, TimelineId};

use super::error::ReceiveError;

/// The segment being filled.
pub struct Spool {
    dir: PathBuf,
    size: SegmentSize,
    timeline: TimelineId,
    segment: u64,
    file: File,
    /// End of what has been written (the next byte expected from the server).
    written: Lsn,
}

impl Spool {
    /// Starts a new spool at the beginning of the segment holding `start` (stale files of an
    /// earlier run are removed: the slot still has everything they held).
    pub fn begin(dir: &Path, size: SegmentSize, timeline: TimelineId, start: Lsn) -> Result<Self, ReceiveError> {
        std::fs::create_dir_all(dir).map_err(spool_error(dir))?;
        for entry in std::fs::read_dir(dir).map_err(spool_error(dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") || (name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let segment = size.segment_of(start);
        let file = open_segment(dir, size, timeline, segment)?;
        Ok(Self { dir: dir.to_path_buf(), size, timeline, segment, file, written: size.start_of(segment) })
    }

    pub fn size(&self) -> SegmentSize {
        self.size
    }

    /// The next LSN the stream must deliver.
    pub fn written(&self) -> Lsn {
        self.written
    }

    /// The name of the segment being filled.
    pub fn segment_name(&self) -> String {
        self.size.segment_name(self.timeline, self.segment)
    }

    /// The spool file of the segment being filled.
    pub fn partial_path(&self) -> PathBuf {
        partial_path(&self.dir, &self.segment_name())
    }

    /// Bytes of the current segment received so far.
    pub fn filled(&self) -> u64 {
        self.written.0 - self.size.start_of(self.segment).0
    }

    /// The start of the segment being filled.
    pub fn segment_start(&self) -> Lsn {
        self.size.start_of(self.segment)
    }

    /// Appends WAL that starts at `start` (which must be [`Self::written`]); returns the paths of
    /// the segments it completed, fsynced and renamed, in order.
    pub fn append(&mut self, start: Lsn, mut data: &[u8]) -> Result<Vec<PathBuf>, ReceiveError> {
        if start != self.written {
            return Err(ReceiveError::NotContiguous { expected: self.written.to_string(), got: start.to_string() });
        }
        let mut completed = Vec::new();
        while !data.is_empty() {
            let end = self.size.start_of(self.segment + 1);
            let take = usize::try_from(end.0 - self.written.0).unwrap_or(usize::MAX).min(data.len());
            let path = self.partial_path();
            self.file.write_all(&data[..take]).map_err(spool_error(&path))?;
            self.written = Lsn(self.written.0 + take as u64);
            data = &data[take..];
            if self.written == end {
                completed.push(self.complete()?);
            }
        }
        Ok(completed)
    }

    /// The current segment's content so far, read back from the spool file.
    pub fn read_filled(&self) -> Result<Vec<u8>, ReceiveError> {
        let path = self.partial_path();
        let mut content = Vec::with_capacity(self.filled() as usize);
        File::open(&path)
            .and_then(|file| file.take(self.filled()).read_to_end(&mut content))
            .map_err(spool_error(&path))?;
        Ok(content)
    }

    /// Fsyncs the full segment, renames it to its segment name and opens the next one.
    fn complete(&mut self) -> Result<PathBuf, ReceiveError> {
        let name = self.segment_name();
        let from = partial_path(&self.dir, &name);
        let to = self.dir.join(&name);
        self.file.sync_all().map_err(spool_error(&from))?;
        std::fs::rename(&from, &to).map_err(spool_error(&to))?;
        self.segment += 1;
        self.file = open_segment(&self.dir, self.size, self.timeline, self.segment)?;
        Ok(to)
    }
}

fn partial_path(dir: &Path, segment_name: &str) -> PathBuf {
    dir.join(format!("{segment_name}.partial"))
}

fn open_segment(dir: &Path, size: SegmentSize, timeline: TimelineId, segment: u64) -> Result<File, ReceiveError> {
    let path = partial_path(dir, &size.segment_name(timeline, segment));
    OpenOptions::new().create(true).write(true).truncate(true).open(&path).map_err(spool_error(&path))
}

fn spool_error(path: &Path) -> impl Fn(std::io::Error) -> ReceiveError + '_ {
    move |error| ReceiveError::Spool { path: path.to_path_buf(), error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_spanning_a_segment_boundary_completes_the_segment_and_starts_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = SegmentSize::new(1 << 20).expect("size");
        let mut spool = Spool::begin(dir.path(), size, 1, Lsn((1 << 20) + 100)).expect("begin");
        assert_eq!(spool.written(), Lsn(1 << 20), "a spool starts at its segment's beginning");
        let data = vec![7u8; (1 << 20) + 10];
        let completed = spool.append(Lsn(1 << 20), &data).expect("append");
        assert_eq!(completed, vec![dir.path().join("000000010000000000000001")]);
        assert_eq!(std::fs::metadata(&completed[0]).expect("segment").len(), 1 << 20);
        assert_eq!(spool.segment_name(), "000000010000000000000002");
        assert_eq!(spool.read_filled().expect("read"), vec![7u8; 10]);
        let gap = spool.append(Lsn((2 << 20) + 11), b"x").expect_err("a gap");
        assert!(matches!(gap, ReceiveError::NotContiguous { .. }), "{gap}");
    }
}
