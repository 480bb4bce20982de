//! The state of WAL streaming: what `pgec2-agent wal-receive` records in its spool directory
//! (`status.json`) and prints with `wal-receive --status --json`, for the operator and for an
//! operator's human. The receiver rewrites it after every archive step and every failure.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wal::Lsn;

/// Where streaming stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// `starting`, `streaming`, `reconnecting` (a fault; resuming from the slot) or `stopped`
    /// (an error the receiver cannot get past by retrying; see `last_error`).
    pub state: String,
    /// The physical replication slot streamed from.
    pub slot: String,
    /// The server's system identifier and timeline, once connected.
    pub system_identifier: Option<String>,
    pub timeline: Option<u32>,
    /// The end of WAL on the server, as last reported by it.
    pub server_lsn: Option<Lsn>,
    /// The end of WAL received into the spool.
    pub received_lsn: Option<Lsn>,
    /// The end of WAL durable in the archive (complete segments plus the stored `.partial`):
    /// the recovery point a restore reaches. It is also the flush position acknowledged to the
    /// server, so the slot holds everything after it.
    pub archived_lsn: Option<Lsn>,
    /// When `archived_lsn` last advanced (or was confirmed current).
    pub archived_at: Option<DateTime<Utc>>,
    /// `server_lsn - archived_lsn`: WAL the archive does not have yet.
    pub lag_bytes: Option<u64>,
    /// The slot as `pg_replication_slots` shows it: `wal_status` (reserved, extended,
    /// unreserved, lost), and how much more WAL it may hold before the server gives it up
    /// (`safe_wal_size`, absent when the server sets no cap).
    pub slot_wal_status: Option<String>,
    pub slot_safe_wal_bytes: Option<i64>,
    /// The server's `max_slot_wal_keep_size` in MB (-1: no cap).
    pub max_slot_wal_keep_size_mb: Option<i64>,
    /// Conditions an operator must see, e.g. `SlotUncapped`, `SlotAtRisk`, `SlotLost`.
    #[serde(default)]
    pub warnings: Vec<StreamWarning>,
    /// The most recent error, with its time.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A condition of streaming an operator must act on or know about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamWarning {
    /// `SlotUncapped`: the server sets no `max_slot_wal_keep_size`, so a receiver that stops
    ///   reading lets the slot fill the primary's disk.
    /// `SlotAtRisk`: the slot holds more WAL than the cap allows; the server removes it at the
    ///   next checkpoint.
    /// `SlotLost`: the server gave up the slot (WAL it needed was removed); the receiver
    ///   recreated it and streaming restarted after a gap that only archive_command covers.
    pub kind: String,
    pub message: String,
}

impl StreamStatus {
    /// Seconds since the archive last caught up, when known.
    pub fn seconds_since_archived(&self, now: DateTime<Utc>) -> Option<i64> {
        self.archived_at.map(|at| (now - at).num_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_document_uses_camel_case_and_reads_back() {
        let status = StreamStatus {
            state: "streaming".into(),
            slot: "pgec2".into(),
            archived_lsn: Some(Lsn(0x3000060)),
            lag_bytes: Some(0),
            warnings: vec![StreamWarning { kind: "SlotUncapped".into(), message: "m".into() }],
            ..StreamStatus::default()
        };
        let text = serde_json::to_string(&status).expect("serialize");
        assert!(text.contains("\"archivedLsn\":\"0/3000060\"") && text.contains("\"lagBytes\":0"), "{text}");
        assert_eq!(serde_json::from_str::<StreamStatus>(&text).expect("parse"), status);
    }
}
