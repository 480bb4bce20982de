//! Where a backup's or a restore's time goes: busy time per stage of the copy pipeline, summed
//! over the threads that run it, logged at `info` when the copy ends (`PGEC2_LOG=info`).
//!
//! backup-push:
//! - `read`: `read(2)` of the data files into part buffers (the reader thread);
//! - `checksum`: BLAKE3 of each file as it is read (the reader thread);
//! - `reader_wait`: the reader waiting for a free part buffer (the pipeline downstream is full);
//! - `compress`: sealing parts (BLAKE3 of the part and zstd), summed over the compression workers;
//! - `upload`: storing sealed parts, summed over the uploads in flight.
//!
//! backup-fetch:
//! - `verify`: an incremental chain's pre-verification, before anything is written (wall time:
//!   every part the restore reads downloaded and checked, see [`super::chain_verify`]);
//! - `download`: fetching stored parts, summed over the downloads in flight;
//! - `decompress`: decompressing parts and verifying their checksums, summed over the decoders;
//! - `write`: `write(2)` of file contents (the writer thread);
//! - `writer_wait`: the writer waiting for the next part (the pipeline upstream is behind); the
//!   writer's remaining busy time is the files' checksums;
//! - `sync`: the final durability step (syncfs, or directory fsyncs).
//!
//! Sums over parallel workers can exceed the wall time; a stage whose sum is close to
//! `wall × workers` is the one that limits the copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::restore_sync::SyncMethod;

/// Nanoseconds spent per stage, shared by the pipeline's threads.
#[derive(Debug, Default)]
pub struct StageTimes {
    read: AtomicU64,
    checksum: AtomicU64,
    reader_wait: AtomicU64,
    compress: AtomicU64,
    upload: AtomicU64,
    verify: AtomicU64,
    download: AtomicU64,
    decompress: AtomicU64,
    write: AtomicU64,
    writer_wait: AtomicU64,
    sync: AtomicU64,
}

/// A stage of the copy pipeline.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    Read,
    Checksum,
    ReaderWait,
    Compress,
    Upload,
    Verify,
    Download,
    Decompress,
    Write,
    WriterWait,
    Sync,
}

impl StageTimes {
    /// Adds `elapsed` to `stage`.
    pub fn add(&self, stage: Stage, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.counter(stage).fetch_add(nanos, Ordering::Relaxed);
    }

    /// Runs `work`, adding its duration to `stage`.
    pub fn time<T>(&self, stage: Stage, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        self.add(stage, started.elapsed());
        result
    }

    /// Seconds spent in `stage` so far.
    pub fn seconds(&self, stage: Stage) -> f64 {
        self.counter(stage).load(Ordering::Relaxed) as f64 / 1e9
    }

    fn counter(&self, stage: Stage) -> &AtomicU64 {
        match stage {
            Stage::Read => &self.read,
            Stage::Checksum => &self.checksum,
            Stage::ReaderWait => &self.reader_wait,
            Stage::Compress => &self.compress,
            Stage::Upload => &self.upload,
            Stage::Verify => &self.verify,
            Stage::Download => &self.download,
            Stage::Decompress => &self.decompress,
            Stage::Write => &self.write,
            Stage::WriterWait => &self.writer_wait,
            Stage::Sync => &self.sync,
        }
    }

    /// Logs the summary of a copy that took `wall`.
    pub fn log(&self, backup: &str, wall: Duration, content_bytes: u64, stored_bytes: u64) {
        let wall_s = wall.as_secs_f64();
        let mb_per_s = if wall_s > 0.0 { content_bytes as f64 / 1e6 / wall_s } else { 0.0 };
        tracing::info!(
            backup,
            wall_s = %format!("{wall_s:.3}"),
            read_s = %format!("{:.3}", self.seconds(Stage::Read)),
            checksum_s = %format!("{:.3}", self.seconds(Stage::Checksum)),
            reader_wait_s = %format!("{:.3}", self.seconds(Stage::ReaderWait)),
            compress_s = %format!("{:.3}", self.seconds(Stage::Compress)),
            upload_s = %format!("{:.3}", self.seconds(Stage::Upload)),
            content_bytes,
            stored_bytes,
            mb_per_s = %format!("{mb_per_s:.1}"),
            "copy stages (busy seconds summed over workers)"
        );
    }
}

impl StageTimes {
    /// Logs the summary of a restore that took `wall`.
    pub fn log_restore(&self, backup: &str, method: SyncMethod, wall: Duration, content_bytes: u64, stored_bytes: u64) {
        let wall_s = wall.as_secs_f64();
        let mb_per_s = if wall_s > 0.0 { content_bytes as f64 / 1e6 / wall_s } else { 0.0 };
        tracing::info!(
            backup,
            wall_s = %format!("{wall_s:.3}"),
            verify_s = %format!("{:.3}", self.seconds(Stage::Verify)),
            download_s = %format!("{:.3}", self.seconds(Stage::Download)),
            decompress_s = %format!("{:.3}", self.seconds(Stage::Decompress)),
            write_s = %format!("{:.3}", self.seconds(Stage::Write)),
            writer_wait_s = %format!("{:.3}", self.seconds(Stage::WriterWait)),
            sync_s = %format!("{:.3}", self.seconds(Stage::Sync)),
            sync = ?method,
            content_bytes,
            stored_bytes,
            mb_per_s = %format!("{mb_per_s:.1}"),
            "restore stages (busy seconds summed over workers)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_spent_in_a_stage_is_added_up() {
        let times = StageTimes::default();
        times.add(Stage::Upload, Duration::from_millis(1500));
        times.add(Stage::Upload, Duration::from_millis(500));
        let value = times.time(Stage::Read, || 7);
        assert_eq!(value, 7);
        assert!((times.seconds(Stage::Upload) - 2.0).abs() < 1e-9);
        assert_eq!(times.seconds(Stage::Compress), 0.0);
    }
}
