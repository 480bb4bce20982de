//! `delete`: retention and garbage collection through [`pgec2_core::retention`] — a plan is
//! printed (the dry run) and applied only with `--confirm`. Leases of running restores and
//! standbys are honoured, damaged backups are kept unless named.

use std::time::Duration;

use chrono::Utc;
use pgec2_core::catalog;
use pgec2_core::layout::Archive;
use pgec2_core::leases;
use pgec2_core::retention::{
    self, Applied, Boundary, DEFAULT_GARBAGE_GRACE, DeletionPlan, MIN_GARBAGE_GRACE, PlanOptions, Policy, locks,
};
use pgec2_core::storage::lock::Locked;

use super::{BackupError, Refusal};
use crate::cli::DeleteTarget;

/// The policy a `delete` subcommand asks for.
pub fn policy_of(target: &DeleteTarget) -> Policy {
    match target {
        DeleteTarget::Retain { count } => Policy::Retain(*count),
        DeleteTarget::Before { boundary } => Policy::Before(Boundary::parse(boundary)),
        DeleteTarget::Garbage { .. } => Policy::Garbage,
        DeleteTarget::Everything => Policy::Everything,
    }
}

/// The damaged backups a `delete garbage NAME…` names.
pub fn damaged_of(target: &DeleteTarget) -> &[String] {
    match target {
        DeleteTarget::Garbage { damaged } => damaged,
        _ => &[],
    }
}

/// Parses a grace period, a number followed by `s`, `m`, `h` or `d`, of at least
/// [`MIN_GARBAGE_GRACE`].
pub fn parse_grace(text: Option<&str>) -> Result<Duration, BackupError> {
    let Some(text) = text else { return Ok(DEFAULT_GARBAGE_GRACE) };
    let invalid = || {
        let expected = "a duration such as 30m, 6h or 2d".to_string();
        BackupError::from(Refusal::InvalidOption { option: "--grace-period", value: text.to_string(), expected })
    };
    if !text.is_empty() && text.bytes().all(|byte| byte == b'0') {
        return Err(below_minimum(text));
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
    let grace = Duration::from_secs(number.saturating_mul(seconds));
    if grace < MIN_GARBAGE_GRACE {
        return Err(below_minimum(text));
    }
    Ok(grace)
}

fn below_minimum(text: &str) -> BackupError {
    Refusal::GraceTooShort { given: text.to_string() }.into()
}

/// What `delete` asks for besides the policy.
#[derive(Clone, Debug)]
pub struct DeleteOptions {
    pub grace: Duration,
    pub confirm: bool,
    /// Damaged backups to delete (garbage only).
    pub damaged: Vec<String>,
    pub ignore_leases: bool,
    /// WAL from this position on is kept whatever the policy: the start of the oldest wal-g
    /// backup when `storage.walg_prefix` is set, whose recovery may replay pgec2's WAL.
    pub keep_wal_from: Option<pgec2_core::wal::Lsn>,
}

/// Plans `policy` against the archive and applies it when `options.confirm`; what an object
/// lock still holds leaves the plan and is returned.
pub async fn delete(
    archive: &Archive,
    policy: &Policy,
    options: &DeleteOptions,
) -> Result<(DeletionPlan, Applied, Vec<Locked>), BackupError> {
    let backups = catalog::scan_backups(archive).await?;
    let wal = catalog::list_wal_archive(archive, backups.segment_size()).await?;
    let leases = leases::load(archive).await?;
    let plan_options = PlanOptions {
        grace: options.grace,
        damaged: &options.damaged,
        ignore_leases: options.ignore_leases,
        ..PlanOptions::new(Utc::now(), &leases)
    };
    let mut plan = retention::plan(policy, &backups, &wal, &plan_options)?;
    if let Some(floor) = options.keep_wal_from {
        pgec2_core::walg::retention::keep_wal_from(&mut plan, &wal, floor);
    }
    let locked = locks::hold_locked(archive, &backups, &wal, &mut plan, Utc::now()).await?;
    let applied = if options.confirm { retention::apply(archive, &backups, &plan).await? } else { Applied::default() };
    Ok((plan, applied, locked))
}

/// The plan as text: what goes (or went) and what stays.
pub fn render(plan: &DeletionPlan, applied: &Applied, locked: &[Locked], confirm: bool) -> String {
    let verb = if confirm { "deleted" } else { "would delete" };
    let mut out = String::new();
    for entry in locked {
        out.push_str(&format!("keep {}: locked until {}\n", entry.name, entry.until.to_rfc3339()));
    }
    let kept_at_deletion = |name: &str| applied.kept.iter().any(|kept| kept.name == name);
    for backup in plan.backups.iter().filter(|name| !kept_at_deletion(name)) {
        out.push_str(&format!("{verb} backup {backup}\n"));
    }
    for backup in plan.uncommitted.iter().filter(|name| !kept_at_deletion(name)) {
        out.push_str(&format!("{verb} uncommitted backup {backup}\n"));
    }
    for backup in plan.damaged.iter().filter(|name| !kept_at_deletion(name)) {
        out.push_str(&format!("{verb} damaged backup {backup}\n"));
    }
    for lease in &plan.leases {
        out.push_str(&format!("{verb} lease {lease}\n"));
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
    for damaged in &plan.kept_damaged {
        out.push_str(&format!(
            "keep damaged backup {} ({}: {}); delete it with: delete garbage {} --confirm\n",
            damaged.name, damaged.key, damaged.reason, damaged.name
        ));
    }
    for kept in &applied.kept {
        out.push_str(&format!("kept {}: {}\n", kept.name, kept.reason));
    }
    for lease in &plan.held_by {
        out.push_str(&format!("held by {lease}\n"));
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
        assert_eq!(parse_grace(Some("300s")).expect("seconds"), MIN_GARBAGE_GRACE);
        assert_eq!(parse_grace(Some("2h")).expect("hours"), Duration::from_secs(7200));
        for bad in ["", "h", "10", "5w", "-1h"] {
            let refused = parse_grace(Some(bad));
            assert!(
                matches!(&refused, Err(BackupError::Refused(Refusal::InvalidOption { option: "--grace-period", value, .. })) if value == bad),
                "{bad}: {refused:?}"
            );
        }
        for short in ["0", "0s", "90s", "4m"] {
            let refused = parse_grace(Some(short)).expect_err(short);
            assert!(matches!(&refused, BackupError::Refused(Refusal::GraceTooShort { given }) if given == short));
            assert!(refused.to_string().contains("below the minimum of 5m"), "{refused}");
        }
    }
}
