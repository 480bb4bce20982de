//! Where recovery stops, as the restore planner reads it: parsed from the spelling every part
//! of pgec2 shares ([`pgec2_contract::recovery::RecoveryTarget`]: the PostgresHost CRD, the
//! HostSpec, the agent's `--target-*` options). The one conversion, [`TryFrom`], is used by
//! the agent (`backup-fetch`, `snapshot-restore`) and by the operator's check before a
//! restore host is launched, so both read a target the same way.

use chrono::{DateTime, Utc};
use pgec2_contract::recovery::RecoveryTarget as SpelledTarget;

use crate::target_time::{TargetTimeError, parse_target_time};
use crate::wal::Lsn;

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay every archived segment, then promote.
    EndOfArchive,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Xid(u64),
    /// A restore point created with `pg_create_restore_point`.
    Name(String),
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryTarget::EndOfArchive => f.write_str("the end of the archive"),
            RecoveryTarget::Immediate => f.write_str("the backup's consistent point"),
            RecoveryTarget::Time(time) => write!(f, "time {}", time.to_rfc3339()),
            RecoveryTarget::Lsn(lsn) => write!(f, "LSN {lsn}"),
            RecoveryTarget::Xid(xid) => write!(f, "transaction {xid}"),
            RecoveryTarget::Name(name) => write!(f, "restore point {name:?}"),
        }
    }
}

/// A spelled recovery target whose text cannot be read; the caller names where it came from
/// (an option, a field of the spec) with [`InvalidTarget::kind`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidTarget {
    #[error(transparent)]
    Time(#[from] TargetTimeError),
    #[error("{0:?} is not an LSN such as 0/3000060")]
    Lsn(String),
    #[error("{0:?} is not a transaction id")]
    Xid(String),
}

impl InvalidTarget {
    /// The kind of target refused, as the spec's field and the agent's option name it
    /// (`time`, `lsn`, `xid`).
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidTarget::Time(_) => "time",
            InvalidTarget::Lsn(_) => "lsn",
            InvalidTarget::Xid(_) => "xid",
        }
    }
}

impl TryFrom<&SpelledTarget> for RecoveryTarget {
    type Error = InvalidTarget;

    fn try_from(target: &SpelledTarget) -> Result<Self, InvalidTarget> {
        Ok(match target {
            SpelledTarget::Time(text) => RecoveryTarget::Time(parse_target_time(text)?),
            SpelledTarget::Lsn(text) => {
                RecoveryTarget::Lsn(text.parse().map_err(|_| InvalidTarget::Lsn(text.clone()))?)
            }
            SpelledTarget::Xid(text) => {
                RecoveryTarget::Xid(text.parse().map_err(|_| InvalidTarget::Xid(text.clone()))?)
            }
            SpelledTarget::Name(name) => RecoveryTarget::Name(name.clone()),
            SpelledTarget::Immediate => RecoveryTarget::Immediate,
        })
    }
}

/// No target spelled recovers to the end of the archive.
impl TryFrom<Option<&SpelledTarget>> for RecoveryTarget {
    type Error = InvalidTarget;

    fn try_from(target: Option<&SpelledTarget>) -> Result<Self, InvalidTarget> {
        target.map_or(Ok(RecoveryTarget::EndOfArchive), RecoveryTarget::try_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(target: SpelledTarget) -> Result<RecoveryTarget, InvalidTarget> {
        RecoveryTarget::try_from(&target)
    }

    #[test]
    fn a_time_target_is_read_in_utc_from_rfc_3339_or_psql_form_and_needs_a_zone() {
        let utc = |text: &str| RecoveryTarget::Time(text.parse().expect("utc"));
        assert_eq!(read(SpelledTarget::Time("2026-01-31T12:00:00+01:00".into())), Ok(utc("2026-01-31T11:00:00Z")));
        assert_eq!(read(SpelledTarget::Time("2026-01-31 12:00:00.25+01".into())), Ok(utc("2026-01-31T11:00:00.25Z")));
        let no_zone = read(SpelledTarget::Time("2026-01-31 12:00:00".into())).expect_err("no zone");
        assert!(matches!(no_zone, InvalidTarget::Time(TargetTimeError::NoTimeZone { .. })), "{no_zone:?}");
        assert_eq!(no_zone.kind(), "time");
        assert!(read(SpelledTarget::Time("yesterday".into())).is_err());
    }

    #[test]
    fn an_lsn_target_is_read_as_an_lsn_and_other_text_is_refused() {
        assert_eq!(read(SpelledTarget::Lsn("0/3000060".into())), Ok(RecoveryTarget::Lsn(Lsn(0x0300_0060))));
        let refused = read(SpelledTarget::Lsn("0/zz".into())).expect_err("not hex");
        assert_eq!(refused, InvalidTarget::Lsn("0/zz".into()));
        assert_eq!(refused.to_string(), "\"0/zz\" is not an LSN such as 0/3000060");
    }

    #[test]
    fn an_xid_target_is_read_as_a_number_and_other_text_is_refused() {
        assert_eq!(read(SpelledTarget::Xid("7415".into())), Ok(RecoveryTarget::Xid(7415)));
        let refused = read(SpelledTarget::Xid("-1".into())).expect_err("negative");
        assert_eq!((refused.kind(), refused.to_string().as_str()), ("xid", "\"-1\" is not a transaction id"));
    }

    #[test]
    fn a_restore_point_target_keeps_its_name() {
        assert_eq!(
            read(SpelledTarget::Name("before upgrade".into())),
            Ok(RecoveryTarget::Name("before upgrade".into()))
        );
    }

    #[test]
    fn an_immediate_target_stays_immediate_and_no_target_is_the_end_of_the_archive() {
        assert_eq!(read(SpelledTarget::Immediate), Ok(RecoveryTarget::Immediate));
        assert_eq!(RecoveryTarget::try_from(None), Ok(RecoveryTarget::EndOfArchive));
    }
}
