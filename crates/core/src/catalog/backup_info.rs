//! What a committed backup records about itself (`complete.json`) and how backups are named.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::wal::{Lsn, SegmentSize, TimelineId};

/// Version of the `complete.json` format this code writes.
pub const BACKUP_INFO_FORMAT: u32 = 1;

/// The commit record of a backup, `backups/<name>/complete.json`, written after every other
/// object of the backup. `backup-list --json` prints these objects (the fields the command-line
/// contract lists, plus `wal_segment_size`, `next_xid` and `format`); `permanent` there reflects
/// the pin marker at listing time, not only the value recorded at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub name: String,
    /// Server clock when the backup started (just before `pg_backup_start`).
    pub start_time: DateTime<Utc>,
    /// Server clock when `pg_backup_stop` returned: recovery targets must not be earlier.
    pub finish_time: DateTime<Utc>,
    /// `START WAL LOCATION`: the redo point; recovery needs WAL from this LSN's segment on.
    pub start_lsn: Lsn,
    /// The LSN `pg_backup_stop` returned: the restored cluster is consistent from here on.
    pub finish_lsn: Lsn,
    /// `START TIMELINE` of the backup.
    pub timeline: TimelineId,
    /// `server_version_num`, e.g. 150012.
    pub pg_version: u32,
    /// `pg_control`'s system identifier, a decimal string in JSON.
    #[serde(with = "crate::identity::u64_text")]
    pub system_identifier: u64,
    /// Bytes of file content copied.
    pub data_bytes: u64,
    /// Bytes stored for the backup (parts, manifest, label and map).
    pub stored_bytes: u64,
    /// Pinned: retention never deletes it.
    pub permanent: bool,
    /// WAL segment size of the cluster in bytes.
    pub wal_segment_size: u64,
    /// First transaction id not yet assigned when the backup finished (`pg_snapshot_xmax` after
    /// `pg_backup_stop`): transactions from here on commit after the backup's end.
    #[serde(default)]
    pub next_xid: Option<u64>,
    /// Free-form `key=value` notes given at creation (`backup-push --annotation`), such as the
    /// schedule tick or on-demand request a backup was taken for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// How the data was copied: `object_store` (files in parts under `backups/<name>/parts/`)
    /// or `snapshot` (a volume snapshot; only the labels and an empty manifest are stored).
    #[serde(default)]
    pub kind: BackupKind,
    /// The volume snapshot of a `snapshot` backup, as its cloud names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// `full`, or `incremental`: only the blocks changed since `parent` started were copied.
    #[serde(rename = "type", default)]
    pub backup_type: BackupType,
    /// The backup an incremental one builds on (`null` for a full backup).
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default = "default_format")]
    pub format: u32,
}

/// Whether a backup holds every file or only what changed since its parent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupType {
    /// Every file copied whole.
    #[default]
    Full,
    /// Changed blocks of relation files, other files whole; restored with its chain.
    Incremental,
}

impl BackupType {
    /// The name used in JSON and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
        }
    }
}

/// How a backup's data was copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Every file copied into compressed parts in the archive (`backup-push`).
    #[default]
    ObjectStore,
    /// A snapshot of the data volume taken between `pg_backup_start` and `pg_backup_stop`
    /// (`backup-push --method snapshot`); the labels and the manifest are in the archive.
    Snapshot,
}

impl BackupKind {
    /// The name used in JSON, status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::ObjectStore => "object_store",
            BackupKind::Snapshot => "snapshot",
        }
    }
}

fn default_format() -> u32 {
    BACKUP_INFO_FORMAT
}

impl BackupInfo {
    /// The cluster's WAL geometry as recorded.
    pub fn segment_size(&self) -> SegmentSize {
        SegmentSize::new(self.wal_segment_size).unwrap_or_default()
    }

    /// The first WAL segment recovery from this backup needs.
    pub fn start_segment(&self) -> u64 {
        self.segment_size().segment_of(self.start_lsn)
    }

    /// The segment holding the backup's end: archived before the backup was committed.
    pub fn finish_segment(&self) -> u64 {
        self.segment_size().segment_of(Lsn(self.finish_lsn.0.saturating_sub(1)).max(self.start_lsn))
    }
}

/// A backup name: `base_<YYYYMMDDTHHMMSSZ>_<timeline:08X><start LSN:016X>`, for example
/// `base_20260131T120000Z_000000010000000002000028`. Names sort in the order backups started,
/// and carry the start position, so WAL a running backup needs is known before it commits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupName {
    pub start_time: DateTime<Utc>,
    pub timeline: TimelineId,
    pub start_lsn: Lsn,
}

const NAME_PREFIX: &str = "base_";
const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl BackupName {
    pub fn new(start_time: DateTime<Utc>, timeline: TimelineId, start_lsn: Lsn) -> Self {
        Self { start_time, timeline, start_lsn }
    }

    /// Parses a name this agent generated; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(NAME_PREFIX)?;
        let (time, position) = rest.split_once('_')?;
        let start_time = Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(time, TIME_FORMAT).ok()?);
        let hex = |text: &str| text.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_lowercase());
        if position.len() != 24 || !hex(position) {
            return None;
        }
        let timeline = u32::from_str_radix(&position[..8], 16).ok()?;
        let start_lsn = Lsn(u64::from_str_radix(&position[8..], 16).ok()?);
        Some(Self { start_time, timeline, start_lsn })
    }
}

impl std::fmt::Display for BackupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = self.start_time.format(TIME_FORMAT);
        write!(f, "{NAME_PREFIX}{time}_{:08X}{:016X}", self.timeline, self.start_lsn.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_round_trip_and_sort_by_start_time() {
        let at = |seconds| Utc.timestamp_opt(seconds, 0).single().expect("time");
        let first = BackupName::new(at(1_769_860_800), 1, Lsn(0x2_0000_0028));
        let second = BackupName::new(at(1_769_860_801), 1, Lsn(0x1_0000_0028));
        assert_eq!(first.to_string(), "base_20260131T120000Z_000000010000000200000028");
        assert_eq!(BackupName::parse(&first.to_string()), Some(first.clone()));
        assert!(first.to_string() < second.to_string());
        for foreign in ["base_x_1", "full_20260131T120000Z_000000010000000200000028", "base_20260131T120000Z_0001"] {
            assert_eq!(BackupName::parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_finish_segment_is_the_one_holding_the_last_byte_before_the_stop_lsn() {
        let mut info = sample();
        info.start_lsn = Lsn(0x2_000028);
        info.finish_lsn = Lsn(0x3_000000);
        assert_eq!((info.start_segment(), info.finish_segment()), (2, 2));
        info.finish_lsn = Lsn(0x3_000100);
        assert_eq!(info.finish_segment(), 3);
    }

    #[test]
    fn the_system_identifier_is_a_string_in_json() {
        let json = serde_json::to_value(sample()).expect("json");
        assert_eq!(json["system_identifier"], "7312345678901234567");
        assert_eq!(json["start_lsn"], "0/2000028");
        let back: BackupInfo = serde_json::from_value(json).expect("parse");
        assert_eq!(back, sample());
    }

    #[test]
    fn a_commit_record_without_a_kind_is_an_object_store_backup() {
        let mut json = serde_json::to_value(sample()).expect("json");
        assert_eq!(json["kind"], "object_store");
        json.as_object_mut().expect("object").remove("kind");
        let back: BackupInfo = serde_json::from_value(json).expect("parse");
        assert_eq!(back.kind, BackupKind::ObjectStore);
        let mut snapshot = sample();
        snapshot.kind = BackupKind::Snapshot;
        snapshot.snapshot_id = Some("snap-0123".into());
        let json = serde_json::to_value(&snapshot).expect("json");
        assert_eq!((json["kind"].as_str(), json["snapshot_id"].as_str()), (Some("snapshot"), Some("snap-0123")));
    }

    pub(crate) fn sample() -> BackupInfo {
        let builder = BackupInfo::builder().named("base_20260131T120000Z_000000010000000002000028");
        let builder = builder
            .times(crate::catalog::fixtures::at(0), crate::catalog::fixtures::at(60))
            .lsns(Lsn(0x2_000028), Lsn(0x2_000100));
        builder.pg_version(150012).system_identifier(7_312_345_678_901_234_567).bytes(1000, 300).next_xid(740).build()
    }
}
