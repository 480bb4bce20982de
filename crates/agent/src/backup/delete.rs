//! `delete`: retention and garbage collection through [`pgec2_core::retention`] — a plan is
//! printed (the dry run) and applied only with `--confirm`.

use std::time::Duration;

use chrono::Utc;
use pgec2_core::catalog;
use pgec2_core::layout::Archive;
use pgec2_core::retention::{self, Boundary, DEFAULT_GARBAGE_GRACE, DeletionPlan, Policy};

use super::BackupError;
use crate::cli::DeleteTarget;

/// The policy a `delete` subcommand asks for.
pub fn policy_of(target: &DeleteTarget) -> Policy {
    match target {
        DeleteTarget::Retain { count } => Policy::Retain(*count),
        DeleteTarget::Before { boundary } => Policy::Before(Boundary::parse(boundary)),
        DeleteTarget::Garbage => Policy::Garbage,
        DeleteTarget::Everything => Policy::Everything,
    }
}

/// Parses a grace period: `0`, or a number followed by `s`, `m`, `h` or `d`.
pub fn parse_grace(text: Option<&str>) -> Result<Duration, BackupError> {
    let Some(text) = text else { return Ok(DEFAULT_GARBAGE_GRACE) };
    let invalid = || BackupError::Refused(format!("invalid --grace-period {text:?}: use e.g. 0, 90s, 30m, 6h or 2d"));
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// Plans `policy` against the archive and applies it when `confirm`.
pub async fn delete(
    archive: &Archive,
    policy: &Policy,
    grace: Duration,
    confirm: bool,
) -> Result<DeletionPlan, BackupError> {
    let backups = catalog::scan_backups(archive).await?;
    let wal = catalog::list_wal_archive(archive, backups.segment_size()).await?;
    let plan = retention::plan(policy, &backups, &wal, Utc::now(), grace)?;
    if confirm {
        retention::apply(archive, &backups, &plan).await?;
    }
    Ok(plan)
}

/// The plan as text: what goes (or went) and what stays.
pub fn render(plan: &DeletionPlan, confirm: bool) -> String {
    let verb = if confirm { "deleted" } else { "would delete" };
    let mut out = String::new();
    for backup in &plan.backups {
        out.push_str(&format!("{verb} backup {backup}\n"));
    }
    for backup in &plan.uncommitted {
        out.push_str(&format!("{verb} uncommitted backup {backup}\n"));
    }
    if let (Some(first), Some(last)) = (plan.wal.first(), plan.wal.last()) {
        out.push_str(&format!("{verb} {} WAL files ({first} to {last})\n", plan.wal.len()));
    }
    if plan.cluster_identity {
        out.push_str(&format!("{verb} the archive's owner record (cluster.json)\n"));
    }
    for backup in &plan.kept {
        out.push_str(&format!("keep backup {backup}\n"));
    }
    if let Some(boundary) = &plan.wal_boundary {
        out.push_str(&format!("keep WAL from {boundary} on, and every timeline history file\n"));
    }
    if plan.is_empty() {
        out.push_str("nothing to delete\n");
    } else if !confirm {
        out.push_str("dry run: pass --confirm to delete\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_read_like_durations() {
        assert_eq!(parse_grace(None).expect("default"), DEFAULT_GARBAGE_GRACE);
        assert_eq!(parse_grace(Some("0")).expect("zero"), Duration::ZERO);
        assert_eq!(parse_grace(Some("90s")).expect("seconds"), Duration::from_secs(90));
        assert_eq!(parse_grace(Some("2h")).expect("hours"), Duration::from_secs(7200));
        for bad in ["", "h", "10", "5w", "-1h"] {
            assert!(parse_grace(Some(bad)).is_err(), "{bad}");
        }
    }
}
