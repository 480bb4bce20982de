use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{BackupPolicyStatus, DrillOutcome, RestoreStatus, VerificationStatus};
use pgec2_core::drill_check::CheckOutcome;

use super::*;
use crate::schedule::Schedule;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn window(first: &str, last: &str) -> RecoveryWindow {
    RecoveryWindow {
        first_recoverable_time: Some(Time(at(first))),
        first_recoverable_lsn: None,
        last_recoverable_time: Some(Time(at(last))),
        last_recoverable_lsn: None,
    }
}

fn active(host: &str, start: &str) -> ActiveDrill {
    ActiveDrill {
        host: host.into(),
        drill_host: "db-drill-20260101-020000".into(),
        start_time: Time(at(start)),
        target_time: None,
        check_command_id: Some("cmd-1".into()),
    }
}

fn report(recovered_at: &str, checks: Vec<CheckOutcome>) -> DrillCheckReport {
    DrillCheckReport {
        recovered: true,
        recovered_at: Some(recovered_at.parse().expect("time")),
        recovered_to_lsn: Some("0/5000060".into()),
        recovered_to_time: None,
        archive_mode: "off".into(),
        checks,
        checks_milliseconds: 1500,
    }
}

fn passing_check() -> CheckOutcome {
    CheckOutcome { name: "amcheck".into(), passed: true, message: "no corruption".into() }
}

#[test]
fn a_nightly_drill_schedule_is_due_after_its_time_and_not_again_for_the_same_tick() {
    let schedule = Schedule::parse("0 2 * * *", None).expect("schedule");
    let created = at("2026-01-01T00:00:00Z");
    assert_eq!(schedule.due_tick(None, created, at("2026-01-01T01:59:59Z")), None, "not due before 02:00");
    let due = schedule.due_tick(None, created, at("2026-01-01T02:00:03Z"));
    assert_eq!(due, Some(at("2026-01-01T02:00:00Z")));
    assert_eq!(schedule.due_tick(due, created, at("2026-01-01T09:00:00Z")), None, "handled: not due again");
    assert_eq!(schedule.due_tick(due, created, at("2026-01-02T02:00:01Z")), Some(at("2026-01-02T02:00:00Z")));
}

#[test]
fn a_random_target_lies_within_the_window_and_is_the_same_for_the_same_seed() {
    let window = window("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z");
    let mut seen = std::collections::BTreeSet::new();
    for tick in 0..200 {
        let seed = format!("uid/default/db/{tick}");
        let target = random_target(&window, &seed).expect("a target");
        assert!(target > at("2026-01-01T00:00:00Z") && target <= at("2026-01-01T06:00:00Z"), "{target}");
        assert_eq!(random_target(&window, &seed), Some(target), "a restarted operator draws the same point");
        seen.insert(target);
    }
    assert!(seen.len() > 150, "the targets spread over the window: {} distinct", seen.len());
    let point = window_of_one_second();
    assert_eq!(random_target(&point, "x"), None, "no whole second surely inside it");
    // The window's first second may start after its (truncated) first time: it is left out.
    let two_seconds = window_of_two_seconds();
    assert_eq!(random_target(&two_seconds, "x"), Some(at("2026-01-01T00:00:01Z")));
    let unknown = RecoveryWindow { last_recoverable_time: None, ..window };
    assert_eq!(random_target(&unknown, "x"), None);
}

fn window_of_two_seconds() -> RecoveryWindow {
    window("2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")
}

fn window_of_one_second() -> RecoveryWindow {
    window("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
}

#[test]
fn the_drill_host_restores_the_source_from_the_policy_archives_nothing_and_goes_with_its_volume() {
    let mut nightly = policy("nightly").build();
    nightly.metadata.uid = Some("policy-uid".into());
    let source = host("orders").policy("nightly").parameter("work_mem", "64MB").build();
    let name = drill_host_name("orders", at("2026-01-01T02:00:00Z"));
    assert_eq!(name, "orders-drill-20260101-020000");
    let drill = drill_host(&nightly, &source, &name, Some(at("2026-01-01T01:30:00Z")));
    assert_eq!(drill.spec.backup, None, "a drill host archives nothing");
    assert_eq!(drill.spec.storage.deletion_policy, DeletionPolicy::Delete);
    assert_eq!(drill.spec.postgres, source.spec.postgres);
    let recovery = drill.spec.bootstrap.recovery.as_ref().expect("recovery");
    assert_eq!((recovery.source.host.as_str(), recovery.source.policy.as_str()), ("orders", "nightly"));
    assert_eq!(recovery.target.as_ref().and_then(|target| target.time.as_deref()), Some("2026-01-01T01:30:00Z"));
    assert_eq!(recovery.target_action, TargetAction::Promote);
    assert!(drill.spec.bootstrap.initdb.is_none());
    let labels = drill.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels.get(DRILL_POLICY_LABEL).map(String::as_str), Some("nightly"));
    assert_eq!(labels.get(DRILL_SOURCE_LABEL).map(String::as_str), Some("orders"));
    let owner = &drill.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("BackupPolicy", "policy-uid"));
    assert!(drill.spec.validate().is_ok(), "{:?}", drill.spec.validate());
    let long = "a".repeat(250);
    assert!(drill_host_name(&long, at("2026-01-01T02:00:00Z")).len() < 253);
}

#[test]
fn a_passing_drill_records_its_phases_from_the_drill_start() {
    let mut drill = host("db-drill-20260101-020000").build();
    drill.status = Some(pgec2_api::PostgresHostStatus {
        restore: Some(RestoreStatus {
            backup: "base_1".into(),
            kind: "objectStore".into(),
            finish_time: Some(Time(at("2026-01-01T02:00:41Z"))),
            data_directory_seconds: Some(12),
            ..RestoreStatus::default()
        }),
        ..Default::default()
    });
    let run = active("default/db", "2026-01-01T02:00:00Z");
    let report = report("2026-01-01T02:00:44.200Z", vec![passing_check()]);
    let result = result(&run, Some(&drill), Some(&report), None, at("2026-01-01T02:00:47Z"));
    assert_eq!(result.outcome, DrillOutcome::Passed);
    assert_eq!(result.backup.as_deref(), Some("base_1"));
    assert_eq!(result.phases.data_directory_seconds, Some(12));
    assert_eq!(result.phases.accepting_connections_seconds, Some(41));
    assert_eq!(result.phases.recovered_seconds, Some(45), "rounded up");
    assert_eq!(result.phases.checks_seconds, Some(2));
    assert_eq!(result.recovered_to_lsn.as_deref(), Some("0/5000060"));
    assert!(result.message.contains("45s"), "{}", result.message);
}

#[test]
fn a_failed_check_or_restore_fails_the_drill_with_what_failed() {
    let run = active("default/db", "2026-01-01T02:00:00Z");
    let failed_check = CheckOutcome { name: "sql[0]".into(), passed: false, message: "returned \"f\"".into() };
    let report = report("2026-01-01T02:00:44Z", vec![passing_check(), failed_check]);
    let checked = result(&run, None, Some(&report), None, at("2026-01-01T02:01:00Z"));
    assert_eq!(checked.outcome, DrillOutcome::Failed);
    assert_eq!(checked.message, "check sql[0] failed: returned \"f\"");
    assert_eq!(checked.checks.len(), 2);
    let restore = result(&run, None, None, Some("the restore failed: FATAL".into()), at("2026-01-01T02:01:00Z"));
    assert_eq!((restore.outcome, restore.message.as_str()), (DrillOutcome::Failed, "the restore failed: FATAL"));
}

#[test]
fn results_are_bounded_newest_first_and_the_condition_follows_each_hosts_newest_drill() {
    let run = |host: &str, outcome_failed: bool, seconds: i64| {
        let mut result = result(&active(host, "2026-01-01T02:00:00Z"), None, None, None, at("2026-01-01T02:01:00Z"));
        result.outcome = if outcome_failed { DrillOutcome::Failed } else { DrillOutcome::Passed };
        result.phases.recovered_seconds = Some(seconds);
        result
    };
    assert_eq!(verified_condition(&[]).status, Truth::Unknown);
    let mut results = Vec::new();
    record(&mut results, run("default/a", true, 10));
    record(&mut results, run("default/b", false, 20));
    assert_eq!(verified_condition(&results).status, Truth::False, "a's newest drill failed");
    record(&mut results, run("default/a", false, 30));
    let condition = verified_condition(&results);
    assert_eq!((condition.status, condition.reason.as_str()), (Truth::True, "DrillPassed"));
    assert!(condition.message.contains("default/a in 30s"), "{}", condition.message);
    for seconds in 0..20 {
        record(&mut results, run("default/a", false, seconds));
    }
    assert_eq!(results.len(), KEPT_RESULTS);
    assert_eq!(results[0].phases.recovered_seconds, Some(19), "newest first");
}

#[test]
fn the_verified_rto_is_the_newest_passing_drill_of_that_host() {
    let mut nightly = policy("nightly").build();
    let result_of = |host: &str, outcome: DrillOutcome, seconds: i64| {
        let mut result = result(&active(host, "2026-01-01T02:00:00Z"), None, None, None, at("2026-01-01T02:01:00Z"));
        result.outcome = outcome;
        result.phases.recovered_seconds = Some(seconds);
        result
    };
    let results = vec![
        result_of("default/db", DrillOutcome::Failed, 5),
        result_of("default/other", DrillOutcome::Passed, 7),
        result_of("default/db", DrillOutcome::Passed, 42),
        result_of("default/db", DrillOutcome::Passed, 99),
    ];
    nightly.status = Some(BackupPolicyStatus {
        verification: Some(VerificationStatus { results, ..VerificationStatus::default() }),
        ..BackupPolicyStatus::default()
    });
    assert_eq!(nightly.last_verified_rto("default/db"), Some(42));
    assert_eq!(nightly.last_verified_rto("default/none"), None);
}
