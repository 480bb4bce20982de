//! A chainable builder of commit records for tests: a backup of a PostgreSQL 15 cluster with
//! 16 MiB segments on timeline 1, its positions given in segments and its times in seconds
//! after a fixed epoch, so a test states only what it is about.
//!
//! ```
//! use pgec2_core::catalog::BackupInfo;
//!
//! let backup = BackupInfo::builder().segments(2, 3).named("b2").permanent().build();
//! assert_eq!(backup.name, "b2");
//! assert_eq!((backup.start_segment(), backup.finish_segment()), (2, 3));
//! ```

use chrono::{DateTime, TimeZone, Utc};

use super::{BACKUP_INFO_FORMAT, BackupInfo, BackupKind, BackupName, BackupType};
use crate::wal::{Lsn, TimelineId};

/// The segment size of built backups.
pub const SEGMENT: u64 = 16 * 1024 * 1024;
/// Time 0 of built backups: 2026-01-31T12:00:00Z.
pub const EPOCH: i64 = 1_769_860_800;

/// `seconds` after [`EPOCH`].
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(EPOCH + seconds, 0).single().unwrap_or_default()
}

/// Builds a [`BackupInfo`]; start with [`BackupInfo::builder`].
#[derive(Clone, Debug)]
pub struct BackupInfoBuilder {
    info: BackupInfo,
    named: bool,
}

impl BackupInfo {
    /// A builder of a backup in segment 2 (start and finish), at [`EPOCH`], named as
    /// `backup-push` names it unless [`BackupInfoBuilder::named`] says otherwise.
    pub fn builder() -> BackupInfoBuilder {
        let info = BackupInfo {
            name: String::new(),
            start_time: at(0),
            finish_time: at(0),
            start_lsn: Lsn(0),
            finish_lsn: Lsn(0),
            timeline: 1,
            pg_version: 150000,
            system_identifier: 1,
            data_bytes: 0,
            stored_bytes: 0,
            permanent: false,
            wal_segment_size: SEGMENT,
            next_xid: None,
            annotations: Default::default(),
            kind: BackupKind::ObjectStore,
            snapshot_id: None,
            backup_type: BackupType::Full,
            parent: None,
            format: BACKUP_INFO_FORMAT,
        };
        BackupInfoBuilder { info, named: false }.segments(2, 2)
    }
}

impl BackupInfoBuilder {
    /// Starts at offset 0x28 of segment `start` and finishes at 0x100 of segment `finish`.
    pub fn segments(self, start: u64, finish: u64) -> Self {
        self.lsns(Lsn(start * SEGMENT + 0x28), Lsn(finish * SEGMENT + 0x100))
    }

    pub fn lsns(mut self, start: Lsn, finish: Lsn) -> Self {
        self.info.start_lsn = start;
        self.info.finish_lsn = finish;
        self
    }

    /// Starts and finishes at these times ([`at`] gives times after [`EPOCH`]).
    pub fn times(mut self, start: DateTime<Utc>, finish: DateTime<Utc>) -> Self {
        self.info.start_time = start;
        self.info.finish_time = finish;
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.info.name = name.to_string();
        self.named = true;
        self
    }

    pub fn timeline(mut self, timeline: TimelineId) -> Self {
        self.info.timeline = timeline;
        self
    }

    pub fn system_identifier(mut self, system_identifier: u64) -> Self {
        self.info.system_identifier = system_identifier;
        self
    }

    /// Pinned: retention never deletes it.
    pub fn permanent(mut self) -> Self {
        self.info.permanent = true;
        self
    }

    pub fn bytes(mut self, data: u64, stored: u64) -> Self {
        self.info.data_bytes = data;
        self.info.stored_bytes = stored;
        self
    }

    pub fn next_xid(mut self, next_xid: u64) -> Self {
        self.info.next_xid = Some(next_xid);
        self
    }

    pub fn pg_version(mut self, pg_version: u32) -> Self {
        self.info.pg_version = pg_version;
        self
    }

    /// A snapshot backup whose data is in volume snapshot `snapshot_id`.
    pub fn snapshot(mut self, snapshot_id: &str) -> Self {
        self.info.kind = BackupKind::Snapshot;
        self.info.snapshot_id = Some(snapshot_id.to_string());
        self
    }

    /// An incremental backup built on `parent`.
    pub fn incremental_of(mut self, parent: &BackupInfo) -> Self {
        self.info.backup_type = BackupType::Incremental;
        self.info.parent = Some(parent.name.clone());
        self
    }

    pub fn build(self) -> BackupInfo {
        let mut info = self.info;
        if !self.named {
            info.name = BackupName::new(info.start_time, info.timeline, info.start_lsn).to_string();
        }
        info
    }
}
