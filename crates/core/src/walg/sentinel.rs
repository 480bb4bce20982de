//! wal-g's `<name>_backup_stop_sentinel.json`: what a finished backup covers.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The fields of a sentinel pgec2 uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Sentinel {
    /// Where the backup started (pg_backup_start's LSN).
    #[serde(rename = "LSN")]
    pub start_lsn: u64,
    /// Where it ended: recovery must replay at least this far.
    #[serde(rename = "FinishLSN", default)]
    pub finish_lsn: Option<u64>,
    #[serde(rename = "PgVersion")]
    pub pg_version: u32,
    #[serde(rename = "StartTime", default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(rename = "FinishTime", default)]
    pub finish_time: Option<DateTime<Utc>>,
    #[serde(rename = "SystemIdentifier", default)]
    pub system_identifier: Option<u64>,
    #[serde(rename = "UncompressedSize", default)]
    pub uncompressed_size: u64,
    #[serde(rename = "CompressedSize", default)]
    pub compressed_size: u64,
    #[serde(rename = "IsPermanent", default)]
    pub permanent: bool,
    /// Set on a delta backup: the backup it applies on.
    #[serde(rename = "IncrementFrom", default)]
    pub increment_from: Option<String>,
}

impl Sentinel {
    /// Parses a sentinel's JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walg_sentinel_gives_the_backup_start_end_and_version() {
        let text = br#"{"LSN":50331688,"PgVersion":150018,"FinishLSN":50331904,"SystemIdentifier":7716317475525054788,"UncompressedSize":23572480,"CompressedSize":2942634,"ChkpNum":null,"Version":2,"StartTime":"2026-12-06T22:12:50.849006483Z","FinishTime":"2026-12-06T22:12:51.764565210Z","DateFmt":"%Y-%m-%dT%H:%M:%S.%fZ","Hostname":"vm","DataDir":"/tmp/wg/data","IsPermanent":false}"#;
        let sentinel = Sentinel::parse(text).expect("sentinel");
        assert_eq!(sentinel.start_lsn, 50331688);
        assert_eq!(sentinel.finish_lsn, Some(50331904));
        assert_eq!(sentinel.pg_version, 150018);
        assert!(sentinel.increment_from.is_none());
        assert!(sentinel.finish_time.is_some());
    }
}
