//! What `pgec2-agent drill-check --json` reports about a restored copy during a restore drill:
//! when recovery finished, how far it replayed, whether the copy archives WAL (it must not),
//! and the outcome of each check. The operator reads it into the policy's
//! `status.verification`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The report of one `drill-check` run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillCheckReport {
    /// True once the server had left recovery (promoted) within the recovery timeout.
    pub recovered: bool,
    /// When the agent first saw the server out of recovery (the agent's clock).
    pub recovered_at: Option<DateTime<Utc>>,
    /// The last WAL location replayed (`pg_last_wal_replay_lsn()`).
    pub recovered_to_lsn: Option<String>,
    /// Commit time of the last transaction replayed (`pg_last_xact_replay_timestamp()`).
    pub recovered_to_time: Option<DateTime<Utc>>,
    /// The server's `archive_mode`: a drill copy must say `off`.
    pub archive_mode: String,
    /// Each check, in the order asked for (none when recovery did not finish).
    pub checks: Vec<CheckOutcome>,
    /// Milliseconds the checks took together.
    pub checks_milliseconds: u64,
}

/// The outcome of one check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// `amcheck` or `sql[<index>]`.
    pub name: String,
    pub passed: bool,
    /// What was found: the corruption pg_amcheck reports, the query's answer or its error.
    pub message: String,
}

impl DrillCheckReport {
    /// Why the restored copy fails the drill, or None when it passes: recovery that did not
    /// finish, a copy that archives WAL, or the failed checks.
    pub fn failure(&self) -> Option<String> {
        if !self.recovered {
            return Some("PostgreSQL did not finish recovery within the drill's time".to_string());
        }
        if self.archive_mode != "off" {
            return Some(format!(
                "the restored copy runs with archive_mode = {}: a drill host must never archive WAL",
                self.archive_mode
            ));
        }
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|check| !check.passed)
            .map(|check| format!("check {} failed: {}", check.name, check.message))
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> DrillCheckReport {
        DrillCheckReport {
            recovered: true,
            archive_mode: "off".into(),
            checks: vec![CheckOutcome { name: "amcheck".into(), passed: true, message: String::new() }],
            ..DrillCheckReport::default()
        }
    }

    #[test]
    fn a_copy_passes_only_recovered_not_archiving_and_with_every_check_passed() {
        assert_eq!(passing().failure(), None);
        let archiving = DrillCheckReport { archive_mode: "on".into(), ..passing() };
        assert!(archiving.failure().expect("fails").contains("archive_mode = on"));
        let recovering = DrillCheckReport { recovered: false, ..passing() };
        assert!(recovering.failure().expect("fails").contains("did not finish recovery"));
        let mut failed = passing();
        failed.checks.push(CheckOutcome { name: "sql[1]".into(), passed: false, message: "returned f".into() });
        assert_eq!(failed.failure().as_deref(), Some("check sql[1] failed: returned f"));
    }
}
