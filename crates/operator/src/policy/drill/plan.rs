//! The pure half of restore drills: the drill host a source gets, the point in time a
//! `randomInWindow` drill recovers to, and the result and condition a finished drill gives.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use pgec2_api::{
    ActiveDrill, BackupPolicy, Bootstrap, DRILL_POLICY_LABEL, DRILL_SOURCE_LABEL, DeletionPolicy, DrillCheckResult,
    DrillOutcome, DrillPhases, DrillResult, LATEST_BACKUP, PostgresHost, PostgresHostSpec, RecoveryBootstrap,
    RecoverySource, RecoveryTarget, RecoveryWindow, TargetAction, VolumeSpec,
};
use pgec2_core::drill_check::DrillCheckReport;
use sha2::Digest;

use crate::kube_layer::conditions::{ConditionUpdate, Truth};

/// How many finished drills `status.verification.results` keeps.
pub const KEPT_RESULTS: usize = 10;

/// Longest source-name part of a drill host's name (names stay well under 253 characters).
const NAME_PREFIX_MAX: usize = 200;

/// The name of the drill host of `source` for the drill tick `tick`: `<source>-drill-<time>`.
pub fn drill_host_name(source: &str, tick: Timestamp) -> String {
    let prefix: String = source.chars().take(NAME_PREFIX_MAX).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-drill-{}", tick.strftime("%Y%m%d-%H%M%S"))
}

/// The throwaway PostgresHost a drill restores `source`'s backups into: the source's version,
/// instance and PostgreSQL settings, a data volume deleted with the host, no `backup` (it
/// archives nothing), restored from the policy's archive of `source` to `target_time` or the
/// archive's end, then promoted.
pub fn drill_host(
    policy: &BackupPolicy,
    source: &PostgresHost,
    name: &str,
    target_time: Option<Timestamp>,
) -> PostgresHost {
    let labels = BTreeMap::from([
        (DRILL_POLICY_LABEL.to_string(), policy.name_any()),
        (DRILL_SOURCE_LABEL.to_string(), source.name_any()),
    ]);
    let target = target_time.map(|time| RecoveryTarget {
        time: Some(time.to_string()),
        lsn: None,
        xid: None,
        name: None,
        immediate: None,
    });
    let recovery = RecoveryBootstrap {
        source: RecoverySource { host: source.name_any(), policy: policy.name_any() },
        backup: LATEST_BACKUP.to_string(),
        target,
        target_action: TargetAction::Promote,
        fast_snapshot_restore: false,
    };
    let spec = PostgresHostSpec {
        postgres_version: source.spec.postgres_version,
        instance: source.spec.instance.clone(),
        storage: VolumeSpec { deletion_policy: DeletionPolicy::Delete, ..source.spec.storage.clone() },
        postgres: source.spec.postgres.clone(),
        backup: None,
        bootstrap: Bootstrap { initdb: None, recovery: Some(recovery) },
        standby: false,
        paused: false,
    };
    let mut host = PostgresHost::new(name, spec);
    host.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: source.namespace(),
        labels: Some(labels),
        owner_references: policy.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    };
    host
}

/// The point a `randomInWindow` drill recovers to: a whole second drawn uniformly from the
/// seconds after the window's first one up to its last, from a seed of the policy, the source
/// and the tick, so that a restarted operator draws the same point. Status times carry no
/// fraction, so the window's start may lie up to a second after `firstRecoverableTime`: its
/// own second is left out (a target before the oldest backup's end cannot be restored). None
/// when the window is not known yet or spans less than that.
pub fn random_target(window: &RecoveryWindow, seed: &str) -> Option<Timestamp> {
    let first = window.first_recoverable_time.as_ref()?.0;
    let last = window.last_recoverable_time.as_ref()?.0;
    let first_second = first.as_second() + 1;
    let span = last.as_second().checked_sub(first_second).filter(|span| *span >= 0)?;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let offset = u64::from_le_bytes(bytes) % (u64::try_from(span).ok()? + 1);
    Timestamp::from_second(first_second + i64::try_from(offset).ok()?).ok()
}

/// Whole seconds from `start` to `end`, rounded up; None when `end` is missing.
fn seconds_between(start: Timestamp, end: Option<Timestamp>) -> Option<i64> {
    let span = end?.duration_since(start);
    let millis = i64::try_from(span.as_millis()).ok()?.max(0);
    Some((millis + 999) / 1000)
}

/// A finished drill's result from the drill host's status and, when the checks ran, the
/// agent's report; `failure` is what failed before the checks could say anything.
pub fn result(
    active: &ActiveDrill,
    drill_host: Option<&PostgresHost>,
    report: Option<&DrillCheckReport>,
    failure: Option<String>,
    now: Timestamp,
) -> DrillResult {
    let start = active.start_time.0;
    let restore = drill_host.and_then(|host| host.status.as_ref()).and_then(|status| status.restore.as_ref());
    let recovered_at = report.and_then(|report| report.recovered_at).and_then(crate::archive::time);
    let failure = failure.or_else(|| report.and_then(DrillCheckReport::failure));
    let outcome = if failure.is_none() && report.is_some() { DrillOutcome::Passed } else { DrillOutcome::Failed };
    let phases = DrillPhases {
        data_directory_seconds: restore.and_then(|restore| restore.data_directory_seconds),
        accepting_connections_seconds: seconds_between(
            start,
            restore.and_then(|restore| restore.finish_time.as_ref()).map(|time| time.0),
        ),
        recovered_seconds: seconds_between(start, recovered_at.map(|time| time.0)),
        checks_seconds: report
            .map(|report| i64::try_from(report.checks_milliseconds.div_ceil(1000)).unwrap_or(i64::MAX)),
    };
    let message = match (&failure, &phases.recovered_seconds) {
        (Some(failure), _) => failure.clone(),
        (None, Some(seconds)) => format!("restored and recovered in {seconds}s; every check passed"),
        (None, None) => "every check passed".to_string(),
    };
    DrillResult {
        host: active.host.clone(),
        drill_host: active.drill_host.clone(),
        outcome,
        message,
        start_time: active.start_time.clone(),
        finish_time: Time(now),
        backup: restore.map(|restore| restore.backup.clone()),
        backup_kind: restore.map(|restore| restore.kind.clone()),
        target_time: active.target_time.clone(),
        recovered_to_lsn: report.and_then(|report| report.recovered_to_lsn.clone()),
        recovered_to_time: report.and_then(|report| report.recovered_to_time).and_then(crate::archive::time),
        phases,
        checks: report
            .map(|report| {
                report
                    .checks
                    .iter()
                    .map(|check| DrillCheckResult {
                        name: check.name.clone(),
                        passed: check.passed,
                        message: check.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Adds `result` as the newest of `results`, keeping at most [`KEPT_RESULTS`].
pub fn record(results: &mut Vec<DrillResult>, result: DrillResult) {
    results.insert(0, result);
    results.truncate(KEPT_RESULTS);
}

/// `RestoreVerified`: False when the newest drill of any host failed, True when the newest
/// drill of every host drilled passed, Unknown before the first drill.
pub fn verified_condition(results: &[DrillResult]) -> ConditionUpdate {
    let type_ = pgec2_api::condition::RESTORE_VERIFIED;
    let mut newest: Vec<&DrillResult> = Vec::new();
    for result in results {
        if !newest.iter().any(|seen| seen.host == result.host) {
            newest.push(result);
        }
    }
    let failed: Vec<String> = newest
        .iter()
        .filter(|result| result.outcome == DrillOutcome::Failed)
        .map(|result| format!("{} (drill host {}): {}", result.host, result.drill_host, result.message))
        .collect();
    if !failed.is_empty() {
        return ConditionUpdate::new(type_, Truth::False, "DrillFailed", failed.join("; "));
    }
    if newest.is_empty() {
        return ConditionUpdate::new(type_, Truth::Unknown, "NoDrillYet", "no restore drill has finished yet");
    }
    let passed: Vec<String> = newest
        .iter()
        .map(|result| match result.phases.recovered_seconds {
            Some(seconds) => format!("{} in {seconds}s", result.host),
            None => result.host.clone(),
        })
        .collect();
    ConditionUpdate::new(type_, Truth::True, "DrillPassed", format!("the newest drills passed: {}", passed.join(", ")))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
