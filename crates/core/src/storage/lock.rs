//! Immutable objects: S3 Object Lock on everything written, and what retention does about it.
//!
//! With [`ObjectLock`] set, every object the store writes carries a retention date (`days` from
//! the write) in `governance` or `compliance` mode, so neither a compromised host nor a mistake
//! can remove a committed backup or its WAL before then. Retention asks the store
//! ([`crate::storage::Storage::retained_until`]) and never deletes a locked object early.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// S3 Object Lock retention modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can still remove or shorten the lock.
    Governance,
    /// Nobody, the root account included, can remove the object before the date.
    Compliance,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Governance => "governance",
            Self::Compliance => "compliance",
        })
    }
}

impl FromStr for LockMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "governance" => Ok(Self::Governance),
            "compliance" => Ok(Self::Compliance),
            _ => Err("expected governance or compliance".to_string()),
        }
    }
}

/// The lock put on every object written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    /// Days from the write until the object may be deleted (1 to 36500).
    pub days: u32,
}

impl ObjectLock {
    /// The retention date of an object written at `now`.
    pub fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::days(i64::from(self.days))
    }
}

/// An object retention kept because it is locked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Locked {
    /// The backup or WAL file kept.
    pub name: String,
    /// When it can be deleted.
    pub until: DateTime<Utc>,
}
